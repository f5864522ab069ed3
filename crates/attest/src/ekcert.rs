//! EK certificates: parsing, the device id, the EK public key, and the signature chain to the
//! manufacturer CAs the operator configured.

use crate::credential::EkPublicKey;
use crate::error::{Error, Result};

/// A parsed EK certificate.
#[derive(Debug, Clone)]
pub struct EkCertificate {
    der: Vec<u8>,
    spki_der: Vec<u8>,
}

impl EkCertificate {
    /// Parses a DER certificate.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when it is not an X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let _ = der;
        Err(Error::NotImplemented("EkCertificate::from_der"))
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The device id: lowercase hex of SHA-256 over [`Self::spki_der`].
    pub fn device_id(&self) -> String {
        crate::derive::device_id(&self.spki_der)
    }

    /// The EK public key, for MakeCredential.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for keys other than RSA 2048, ECC P-256 and P-384.
    pub fn public_key(&self) -> Result<EkPublicKey> {
        Err(Error::NotImplemented("EkCertificate::public_key"))
    }

    /// Verifies that the certificate was signed by one of `anchors`.
    ///
    /// # Errors
    ///
    /// [`Error::Untrusted`] when no anchor signed it.
    pub fn verify_chain(&self, anchors: &TrustAnchors) -> Result<()> {
        let _ = anchors;
        Err(Error::NotImplemented("EkCertificate::verify_chain"))
    }
}

/// The manufacturer CA certificates the operator trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    certs: Vec<Vec<u8>>,
}

impl TrustAnchors {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one or more PEM `CERTIFICATE`s.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when the text holds no certificate or a broken one.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let _ = pem;
        Err(Error::NotImplemented("TrustAnchors::from_pem"))
    }

    /// Adds one DER certificate.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when it is not an X.509 certificate.
    pub fn add_der(&mut self, der: &[u8]) -> Result<()> {
        let _ = der;
        Err(Error::NotImplemented("TrustAnchors::add_der"))
    }

    /// How many certificates are configured.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}
