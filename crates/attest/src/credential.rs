//! MakeCredential (TPM 2.0 Part 1, 24): a secret only the TPM holding a given EK can recover,
//! and only for a key with a given name, through TPM2_ActivateCredential.

use rand_core::CryptoRngCore;

use crate::error::{Error, Result};

/// The public part of an EK, from its certificate, with the parameters of the TCG EK
/// Credential Profile template for its type (docs/protocol.md, "The endorsement key").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkPublicKey {
    /// Template L-1: SHA-256, AES-128-CFB.
    Rsa2048 {
        /// The key.
        key: rsa::RsaPublicKey,
    },
    /// Template L-2: SHA-256, AES-128-CFB.
    EccP256 {
        /// The key.
        key: p256::PublicKey,
    },
    /// Template H-3: SHA-384, AES-256-CFB.
    EccP384 {
        /// The key.
        key: p384::PublicKey,
    },
}

/// Makes a credential for `ak_name` protected to `ek`: returns the contents of the
/// `TPM2B_ID_OBJECT` (`credential_blob`) and of the `TPM2B_ENCRYPTED_SECRET`
/// (`encrypted_secret`).
///
/// # Errors
///
/// [`Error::Unsupported`] for a secret that is empty or longer than the EK's name digest.
pub fn make_credential(
    ek: &EkPublicKey,
    ak_name: &[u8],
    secret: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let _ = (ek, ak_name, secret, rng);
    Err(Error::NotImplemented("make_credential"))
}
