//! Attestation on the client side: the endorsement key (EK) and its certificates, the
//! attestation key (AK), TPM2_ActivateCredential for enrolment, and TPM2_Certify and
//! TPM2_Quote for certificate requests (docs/protocol.md; TPM 2.0 Part 3, 12.5, 18.2, 18.4).
//!
//! Every command here leaves the TPM as it found it: the EK and the AK are primaries made
//! again from their templates each time and flushed before the call returns.

use zeroize::Zeroizing;

use crate::device::Tpm;
use crate::error::{Error, Result};
use crate::secret::Pin;

/// The EK kinds whose certificates a TPM keeps in NV (TCG EK Credential Profile 2.x, 2.2.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EkKind {
    /// RSA 2048, template L-1, certificate at NV 0x01c00002.
    Rsa2048,
    /// ECC NIST P-256, template L-2, certificate at NV 0x01c0000a.
    EccP256,
    /// ECC NIST P-384, template H-3, certificate at NV 0x01c00016.
    EccP384,
}

impl EkKind {
    /// Every kind, in the order the certificates are looked for.
    pub const ALL: [EkKind; 3] = [EkKind::Rsa2048, EkKind::EccP256, EkKind::EccP384];

    /// The NV index that holds this kind's EK certificate.
    pub fn nv_index(self) -> u32 {
        match self {
            EkKind::Rsa2048 => 0x01c0_0002,
            EkKind::EccP256 => 0x01c0_000a,
            EkKind::EccP384 => 0x01c0_0016,
        }
    }
}

/// A signed attestation: what the TPM says, and its signature by the AK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// A TPMS_ATTEST (the contents of the TPM2B_ATTEST the TPM returned).
    pub attest: Vec<u8>,
    /// A marshalled TPMT_SIGNATURE over `attest`.
    pub signature: Vec<u8>,
}

/// A quote and the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub attestation: Attestation,
    /// SHA-256 bank: PCR index and value, in selection order (ascending).
    pub pcrs: Vec<(u8, Vec<u8>)>,
}

/// Which attestation key to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AkTemplate {
    /// The AK of docs/protocol.md ("The attestation key").
    Standard,
    /// The standard template with `unique.x` set to this byte: another key on the same
    /// TPM, for tests that need a second AK.
    Variant(u8),
}

fn not_yet(what: &str) -> Error {
    Error::Unsupported(format!("{what} is not implemented yet"))
}

impl Tpm {
    /// The EK certificates (DER) this TPM holds, of whichever kinds it has; empty if none.
    pub fn ek_certificates(&mut self) -> Result<Vec<(EkKind, Vec<u8>)>> {
        Err(not_yet("reading EK certificates"))
    }

    /// The marshalled TPMT_PUBLIC of the attestation key `ak`.
    pub fn attestation_key_public(&mut self, ak: AkTemplate) -> Result<Vec<u8>> {
        let _ = ak;
        Err(not_yet("the attestation key"))
    }

    /// The DER SubjectPublicKeyInfo of the EK this TPM makes from the standard template
    /// of `ek`.
    pub fn ek_public_key_der(&mut self, ek: EkKind) -> Result<Vec<u8>> {
        let _ = ek;
        Err(not_yet("the EK public key"))
    }

    /// TPM2_ActivateCredential: opens a credential made for the EK `ek` and the AK `ak`
    /// and returns the secret in it.
    pub fn activate_credential(
        &mut self,
        ek: EkKind,
        ak: AkTemplate,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let _ = (ek, ak, credential_blob, encrypted_secret);
        Err(not_yet("activating a credential"))
    }

    /// TPM2_Certify: the AK `ak` certifies that `key` lives in this TPM, over
    /// `qualifying_data`.
    pub fn certify_key(
        &mut self,
        key: &ssh_tpm_keyfile::TpmKey,
        pin: &Pin,
        ak: AkTemplate,
        qualifying_data: &[u8],
    ) -> Result<Attestation> {
        let _ = (key, pin, ak, qualifying_data);
        Err(not_yet("certifying a key"))
    }

    /// TPM2_Quote of the SHA-256 PCRs `pcrs` by the AK `ak`, with the values quoted.
    pub fn quote(&mut self, ak: AkTemplate, qualifying_data: &[u8], pcrs: &[u8]) -> Result<Quote> {
        let _ = (ak, qualifying_data, pcrs);
        Err(not_yet("quoting PCRs"))
    }
}
