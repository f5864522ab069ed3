//! Attestation on the client side: the endorsement key (EK) and its certificates, the
//! attestation key (AK), TPM2_ActivateCredential for enrolment, and TPM2_Certify and
//! TPM2_Quote for certificate requests (docs/protocol.md; TPM 2.0 Part 3, 12.5, 18.2, 18.4).
//!
//! Every command here leaves the TPM as it found it: the EK and the AK are primaries made
//! again from their templates each time and flushed before the call returns.

use zeroize::Zeroizing;

mod ak;
mod certify;
mod credential;
mod ek;
mod quote;

use crate::device::Tpm;
use crate::error::Result;
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
    /// The TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE and the AK's signature.
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

impl Tpm {
    /// The EK certificates (DER) this TPM holds, of whichever kinds it has; empty if none.
    /// Each is read in as many TPM2_NV_Read calls as the TPM's NV buffer needs, and NV
    /// padding after the certificate is cut off.
    pub fn ek_certificates(&mut self) -> Result<Vec<(EkKind, Vec<u8>)>> {
        let result = self.busy_retried(|tpm| tpm.ek_certificates_once());
        self.note(result)
    }

    /// The marshalled TPMT_PUBLIC of the attestation key `ak`.
    pub fn attestation_key_public(&mut self, ak: AkTemplate) -> Result<Vec<u8>> {
        let result = self.busy_retried(|tpm| tpm.attestation_key_public_once(ak));
        self.note(result)
    }

    /// The DER SubjectPublicKeyInfo of the EK this TPM makes from the standard template
    /// of `ek`, to compare with the EK certificate's before enrolling.
    pub fn ek_public_key_der(&mut self, ek: EkKind) -> Result<Vec<u8>> {
        let result = self.busy_retried(|tpm| tpm.ek_public_key_der_once(ek));
        self.note(result)
    }

    /// TPM2_ActivateCredential: opens a credential made (TPM2_MakeCredential) for the EK of
    /// kind `ek` and the name of the AK `ak`, and returns the secret in it.
    ///
    /// # Errors
    ///
    /// A credential made for another EK or AK, or altered, is refused with a message that
    /// says so, or that this TPM's EK is not made from the standard template when that is
    /// the reason.
    pub fn activate_credential(
        &mut self,
        ek: EkKind,
        ak: AkTemplate,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let result = self.busy_retried(|tpm| {
            tpm.activate_credential_once(ek, ak, credential_blob, encrypted_secret)
        });
        self.note(result)
    }

    /// TPM2_Certify: the AK `ak` signs that `key` is loaded in this TPM, over
    /// `qualifying_data`. The key is authorized by `pin` (empty for keys without one).
    ///
    /// # Errors
    ///
    /// [`Error::WrongPin`] with the tries left, never retried; [`Error::PinRequired`] for a
    /// PIN key and an empty PIN; keys with a policy are not supported yet.
    pub fn certify_key(
        &mut self,
        key: &ssh_tpm_keyfile::TpmKey,
        pin: &Pin,
        ak: AkTemplate,
        qualifying_data: &[u8],
    ) -> Result<Attestation> {
        let result = self.busy_retried(|tpm| tpm.certify_key_once(key, pin, ak, qualifying_data));
        self.note(result)
    }

    /// TPM2_Quote of the SHA-256 PCRs `pcrs` by the AK `ak` over `qualifying_data`, with the
    /// values it covers: their SHA-256 in ascending order is the quote's pcrDigest.
    pub fn quote(&mut self, ak: AkTemplate, qualifying_data: &[u8], pcrs: &[u8]) -> Result<Quote> {
        let result = self.busy_retried(|tpm| tpm.quote_once(ak, qualifying_data, pcrs));
        self.note(result)
    }
}

impl Tpm {
    /// Runs one of the commands above again while the TPM answers that it is busy (see
    /// [`crate::error::retry_busy`]); each try leaves nothing loaded, so a retry starts clean.
    fn busy_retried<T>(&mut self, mut op: impl FnMut(&mut Tpm) -> Result<T>) -> Result<T> {
        crate::error::retry_busy(crate::error::BUSY_RETRY, || op(self), std::thread::sleep)
    }
}
