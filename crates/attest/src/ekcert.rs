//! EK certificates (TCG EK Credential Profile): parsing, the device id, the EK public key, and
//! the signature by a manufacturer CA the operator configured.
//!
//! What [`EkCertificate::verify_chain`] checks: the certificate's signature by a configured
//! certificate whose subject is its issuer (RSA PKCS#1 v1.5 or ECDSA P-256/P-384, with SHA-256
//! or SHA-384). Every configured certificate is a trust anchor, root or intermediate: an
//! operator who trusts a manufacturer's intermediate configures it (a bundle with the root
//! and its intermediates works as is), because clients send the EK certificate alone.
//!
//! What it deliberately does not check:
//! - validity dates, of the EK certificate and of the anchors: manufacturers write odd ones
//!   (swtpm's end in 9999, some start after the TPM was made), an EK lives as long as the chip,
//!   and a device's trust is revoked by retiring it in the inventory, not by a date;
//! - extensions: the critical subjectAltName of directoryName form that EK certificates carry
//!   (TPM manufacturer, model, version) is neither parsed nor refused, nor are key usage and
//!   basic constraints, of the EK certificate or of the configured anchors (the inventory's
//!   `device add` asks [`EkCertificate::not_an_ek`], to catch a wrong file early);
//! - revocation (CRLs, OCSP): the CA has no network path to manufacturers; retire the device.
//!
//! Certificates must be strict DER, as `x509-cert` reads them; one whose encoding is not is
//! refused as malformed rather than read leniently.

use der::{Decode as _, Encode as _};
use rsa::pkcs8::DecodePublicKey as _;
use spki::ObjectIdentifier;
use x509_cert::Certificate;

use crate::credential::EkPublicKey;
use crate::error::{Error, Result};
use crate::tpm::HashAlg;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

/// Splits PEM text into its `-----BEGIN …` to `-----END …` blocks, ignoring text between them
/// (as `openssl x509 -text` output has). An unterminated block is returned as is, so that its
/// decoding fails.
fn pem_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let end = block
            .find("-----END ")
            .and_then(|e| {
                block[e..]
                    .find('\n')
                    .map(|n| e + n + 1)
                    .or(Some(block.len()))
            })
            .unwrap_or(block.len());
        blocks.push(&block[..end]);
        rest = &block[end..];
    }
    blocks
}

/// Whether two names are equal when directory strings are compared by their text, whatever
/// their string type (RFC 5280, 7.1, without the case folding).
fn same_name(a: &x509_cert::name::Name, b: &x509_cert::name::Name) -> bool {
    let text = |v: &der::Any| -> Vec<u8> {
        use der::{Tag, Tagged as _};
        match v.tag() {
            Tag::PrintableString | Tag::Utf8String | Tag::Ia5String | Tag::TeletexString => {
                [b"text:", v.value()].concat()
            }
            _ => v.to_der().unwrap_or_default(),
        }
    };
    a.0.len() == b.0.len()
        && a.0.iter().zip(&b.0).all(|(x, y)| {
            x.0.len() == y.0.len()
                && x.0
                    .iter()
                    .zip(y.0.iter())
                    .all(|(p, q)| p.oid == q.oid && text(&p.value) == text(&q.value))
        })
}

/// The named curve of an `id-ecPublicKey` algorithm identifier.
fn curve_oid(alg: &spki::AlgorithmIdentifierOwned) -> Option<ObjectIdentifier> {
    alg.parameters
        .as_ref()?
        .decode_as::<ObjectIdentifier>()
        .ok()
}

/// A certificate with the DER of the parts its checks need.
#[derive(Debug, Clone)]
struct Parsed {
    cert: Certificate,
    der: Vec<u8>,
    tbs_der: Vec<u8>,
    spki_der: Vec<u8>,
    issuer_der: Vec<u8>,
    subject_der: Vec<u8>,
}

impl Parsed {
    fn from_der(der: &[u8], what: &'static str) -> Result<Self> {
        let cert = Certificate::from_der(der)
            .map_err(|e| Error::malformed(what, format!("not a DER X.509 certificate: {e}")))?;
        let encode = |r: der::Result<Vec<u8>>| r.map_err(|e| Error::malformed(what, e.to_string()));
        let tbs = &cert.tbs_certificate;
        // The strict DER decoder only accepts canonical encodings, so these re-encodings are
        // the bytes that were signed.
        Ok(Self {
            tbs_der: encode(tbs.to_der())?,
            spki_der: encode(tbs.subject_public_key_info.to_der())?,
            issuer_der: encode(tbs.issuer.to_der())?,
            subject_der: encode(tbs.subject.to_der())?,
            der: der.to_vec(),
            cert,
        })
    }

    /// Verifies that `issuer`'s key made this certificate's signature.
    fn signed_by(&self, issuer: &Parsed) -> Result<()> {
        if self.cert.signature_algorithm != self.cert.tbs_certificate.signature {
            return Err(Error::BadSignature(
                "the signature algorithm differs from the signed one".into(),
            ));
        }
        let sig_alg = self.cert.signature_algorithm.oid;
        let sig =
            self.cert.signature.as_bytes().ok_or_else(|| {
                Error::malformed("X.509 certificate", "signature with unused bits")
            })?;
        let (hash, is_rsa) = match sig_alg {
            SHA256_WITH_RSA => (HashAlg::Sha256, true),
            SHA384_WITH_RSA => (HashAlg::Sha384, true),
            ECDSA_SHA256 => (HashAlg::Sha256, false),
            ECDSA_SHA384 => (HashAlg::Sha384, false),
            other => {
                return Err(Error::Unsupported(format!(
                    "certificate signature algorithm {other} (RSA PKCS#1 v1.5 or ECDSA with \
                     SHA-256/384)"
                )))
            }
        };
        let digest = hash.digest(&self.tbs_der);
        let bad = || Error::BadSignature("certificate signature does not match".into());
        let issuer_spki = &issuer.cert.tbs_certificate.subject_public_key_info;
        match (is_rsa, issuer_spki.algorithm.oid) {
            (true, RSA_ENCRYPTION) => {
                let key = rsa::RsaPublicKey::from_public_key_der(&issuer.spki_der)
                    .map_err(|e| Error::Unsupported(format!("issuer RSA key: {e}")))?;
                let scheme = match hash {
                    HashAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    _ => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                };
                key.verify(scheme, &digest, sig).map_err(|_| bad())
            }
            (false, EC_PUBLIC_KEY) => {
                use ecdsa::signature::hazmat::PrehashVerifier as _;
                match curve_oid(&issuer_spki.algorithm) {
                    Some(SECP256R1) => {
                        let key = p256::ecdsa::VerifyingKey::from_public_key_der(&issuer.spki_der)
                            .map_err(|e| Error::Unsupported(format!("issuer P-256 key: {e}")))?;
                        let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
                        key.verify_prehash(&digest, &sig).map_err(|_| bad())
                    }
                    Some(SECP384R1) => {
                        let key = p384::ecdsa::VerifyingKey::from_public_key_der(&issuer.spki_der)
                            .map_err(|e| Error::Unsupported(format!("issuer P-384 key: {e}")))?;
                        let sig = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
                        key.verify_prehash(&digest, &sig).map_err(|_| bad())
                    }
                    _ => Err(Error::Unsupported(
                        "issuer ECC key on a curve other than P-256 and P-384".into(),
                    )),
                }
            }
            _ => Err(Error::BadSignature(
                "the signature algorithm does not fit the issuer's key".into(),
            )),
        }
    }
}

/// A parsed EK certificate.
#[derive(Debug, Clone)]
pub struct EkCertificate {
    parsed: Parsed,
}

impl EkCertificate {
    /// Parses a DER certificate. Extensions, including a critical directoryName
    /// subjectAltName, are not interpreted.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when it is not a DER X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        Ok(Self {
            parsed: Parsed::from_der(der, "EK certificate")?,
        })
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.parsed.der
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.parsed.spki_der
    }

    /// The device id: lowercase hex of SHA-256 over [`Self::spki_der`].
    pub fn device_id(&self) -> String {
        crate::derive::device_id(&self.parsed.spki_der)
    }

    /// Why this certificate cannot be a TPM's EK certificate, when its own extensions say so:
    /// it is a CA certificate (basicConstraints cA), it is self-issued (its issuer is its
    /// subject), or its key usage allows neither keyEncipherment (RSA EKs) nor keyAgreement
    /// (ECC EKs), one of which every EK needs for MakeCredential (TCG EK Credential Profile).
    /// An extension that cannot be decoded says nothing here.
    pub fn not_an_ek(&self) -> Option<String> {
        use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

        let tbs = &self.parsed.cert.tbs_certificate;
        let extension = |oid: ObjectIdentifier| {
            tbs.extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == oid)
                .map(|e| e.extn_value.as_bytes())
        };
        let basic =
            extension(BASIC_CONSTRAINTS).and_then(|der| BasicConstraints::from_der(der).ok());
        if basic.is_some_and(|b| b.ca) {
            return Some("it is a CA certificate (basicConstraints CA:TRUE)".into());
        }
        if same_name(&tbs.issuer, &tbs.subject) {
            return Some(format!(
                "it is self-issued (issuer and subject are {:?})",
                self.issuer()
            ));
        }
        let usage = extension(KEY_USAGE).and_then(|der| KeyUsage::from_der(der).ok());
        if usage.is_some_and(|u| !u.key_encipherment() && !u.key_agreement()) {
            return Some(
                "its key usage allows neither keyEncipherment nor keyAgreement, which an EK \
                 needs"
                    .into(),
            );
        }
        None
    }

    /// The issuer's distinguished name, for messages ("CN=swtpm-localca").
    pub fn issuer(&self) -> String {
        self.parsed.cert.tbs_certificate.issuer.to_string()
    }

    /// The EK public key, for MakeCredential.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for keys other than RSA 2048, ECC P-256 and P-384.
    pub fn public_key(&self) -> Result<EkPublicKey> {
        let spki = &self.parsed.cert.tbs_certificate.subject_public_key_info;
        let der = &self.parsed.spki_der;
        let bad = |e: String| Error::Unsupported(format!("EK public key: {e}"));
        match spki.algorithm.oid {
            RSA_ENCRYPTION => {
                let key =
                    rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| bad(e.to_string()))?;
                if rsa::traits::PublicKeyParts::size(&key) != 256 {
                    return Err(bad("RSA keys must be 2048 bits (template L-1)".into()));
                }
                Ok(EkPublicKey::Rsa2048 { key })
            }
            EC_PUBLIC_KEY => match curve_oid(&spki.algorithm) {
                Some(SECP256R1) => Ok(EkPublicKey::EccP256 {
                    key: p256::PublicKey::from_public_key_der(der)
                        .map_err(|e| bad(e.to_string()))?,
                }),
                Some(SECP384R1) => Ok(EkPublicKey::EccP384 {
                    key: p384::PublicKey::from_public_key_der(der)
                        .map_err(|e| bad(e.to_string()))?,
                }),
                _ => Err(bad("ECC keys must be on NIST P-256 or P-384".into())),
            },
            other => Err(bad(format!("algorithm {other}"))),
        }
    }

    /// Verifies that the certificate was signed by one of `anchors` (see the module doc for
    /// what is and is not checked).
    ///
    /// # Errors
    ///
    /// [`Error::Untrusted`] when no configured certificate with the issuer's name signed it.
    pub fn verify_chain(&self, anchors: &TrustAnchors) -> Result<()> {
        // Names are compared by their text too, as encoders differ in the string type they
        // use for the same name (PrintableString or UTF8String); the signature decides.
        let issuer = &self.parsed.cert.tbs_certificate.issuer;
        let named = |a: &&Parsed| {
            a.subject_der == self.parsed.issuer_der
                || same_name(&a.cert.tbs_certificate.subject, issuer)
        };
        let mut reasons = Vec::new();
        for anchor in anchors.certs.iter().filter(named) {
            match self.parsed.signed_by(anchor) {
                Ok(()) => return Ok(()),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        let issuer = self.issuer();
        Err(Error::Untrusted(if reasons.is_empty() {
            format!("no configured manufacturer CA is named {issuer:?}")
        } else {
            format!(
                "the configured CA {issuer:?} did not sign it: {}",
                reasons.join("; ")
            )
        }))
    }
}

/// The manufacturer CA certificates the operator trusts, roots and intermediates alike.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    certs: Vec<Parsed>,
}

impl TrustAnchors {
    /// An empty set, which trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one or more PEM `CERTIFICATE`s.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when the text holds no certificate or a broken one.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let malformed = |detail: String| Error::malformed("trust anchor PEM", detail);
        let text = std::str::from_utf8(pem).map_err(|_| malformed("not UTF-8 text".into()))?;
        let mut out = Self::new();
        for block in pem_blocks(text) {
            let (label, der) =
                pem_rfc7468::decode_vec(block.as_bytes()).map_err(|e| malformed(e.to_string()))?;
            if label != "CERTIFICATE" {
                return Err(malformed(format!(
                    "a {label} block where a CERTIFICATE belongs"
                )));
            }
            out.add_der(&der)?;
        }
        if out.is_empty() {
            return Err(malformed("no CERTIFICATE in it".into()));
        }
        Ok(out)
    }

    /// Adds one DER certificate.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when it is not a DER X.509 certificate.
    pub fn add_der(&mut self, der: &[u8]) -> Result<()> {
        self.certs.push(Parsed::from_der(der, "trust anchor")?);
        Ok(())
    }

    /// How many certificates are configured.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The subjects of the configured certificates, for a start-up log line.
    pub fn subjects(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| c.cert.tbs_certificate.subject.to_string())
            .collect()
    }
}
