//! Signatures by a TPM key over a TPM structure: the AK's signature over a `TPMS_ATTEST`.
//! The scheme must fit the key (RSASSA/RSAPSS for RSA, ECDSA for ECC) and, when the key names
//! a scheme, be exactly that scheme and hash, as the TPM itself would have enforced.

use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Sha256, Sha384};

use crate::error::{Error, Result};
use crate::tpm::public::left_pad;
use crate::tpm::{alg_label, curve, HashAlg, Public, PublicParams, Signature};

/// Verifies `sig` over `message` (hashed here with the signature's digest) by `signer`.
///
/// # Errors
///
/// [`Error::BadSignature`] when it does not verify or does not fit the key;
/// [`Error::Unsupported`] for keys other than RSA (2048–4096 bits) and ECC P-256/P-384.
pub fn verify_signature(signer: &Public, message: &[u8], sig: &Signature) -> Result<()> {
    if let Some(scheme) = signer.scheme() {
        if scheme.scheme != sig.scheme() || scheme.hash != sig.hash().id() {
            return Err(Error::BadSignature(format!(
                "{}-{} signature from a key whose scheme is {}-{}",
                alg_label(sig.scheme()),
                sig.hash().label(),
                alg_label(scheme.scheme),
                alg_label(scheme.hash)
            )));
        }
    }
    let digest = sig.hash().digest(message);
    match (&signer.params, sig) {
        (PublicParams::Rsa { .. }, Signature::RsaSsa { hash, sig }) => {
            let scheme = match hash {
                HashAlg::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
                _ => Pkcs1v15Sign::new::<Sha256>(),
            };
            rsa_key(signer)?
                .verify(scheme, &digest, sig)
                .map_err(|_| Error::BadSignature("RSASSA signature does not match".into()))
        }
        (PublicParams::Rsa { .. }, Signature::RsaPss { hash, sig }) => {
            // The salt is as long as the digest, as TPMs sign for FIPS 186-4 (swtpm does:
            // tests/verify.rs); a TPM using the longest possible salt would be refused.
            let scheme = match hash {
                HashAlg::Sha384 => Pss::new::<Sha384>(),
                _ => Pss::new::<Sha256>(),
            };
            rsa_key(signer)?
                .verify(scheme, &digest, sig)
                .map_err(|_| Error::BadSignature("RSAPSS signature does not match".into()))
        }
        (
            PublicParams::Ecc {
                curve: id, x, y, ..
            },
            Signature::Ecdsa { r, s, .. },
        ) => verify_ecdsa(*id, x, y, &digest, r, s),
        _ => Err(Error::BadSignature(format!(
            "{} signature from a key of another type",
            alg_label(sig.scheme())
        ))),
    }
}

fn rsa_key(signer: &Public) -> Result<RsaPublicKey> {
    let PublicParams::Rsa {
        key_bits,
        exponent,
        modulus,
        ..
    } = &signer.params
    else {
        return Err(Error::Unsupported("not an RSA key".into()));
    };
    if !(2048..=4096).contains(key_bits) || modulus.len() * 8 != usize::from(*key_bits) {
        return Err(Error::Unsupported(format!(
            "RSA signing key of {} bytes (keyBits {key_bits}); 2048 to 4096 bits are accepted",
            modulus.len()
        )));
    }
    let e = if *exponent == 0 { 65537 } else { *exponent };
    RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(e))
        .map_err(|e| Error::Unsupported(format!("RSA signing key: {e}")))
}

fn verify_ecdsa(id: u16, x: &[u8], y: &[u8], digest: &[u8], r: &[u8], s: &[u8]) -> Result<()> {
    use ecdsa::signature::hazmat::PrehashVerifier as _;

    let bad = || Error::BadSignature("ECDSA signature does not match".into());
    let size = match id {
        curve::NIST_P256 => 32,
        curve::NIST_P384 => 48,
        other => {
            return Err(Error::Unsupported(format!(
                "ECC signing key on curve 0x{other:04x}"
            )))
        }
    };
    let mut point = vec![4u8];
    point.extend_from_slice(&left_pad(x, size)?);
    point.extend_from_slice(&left_pad(y, size)?);
    let mut rs = left_pad(r, size).map_err(|_| bad())?;
    rs.extend_from_slice(&left_pad(s, size).map_err(|_| bad())?);
    let bad_key = |e: ecdsa::Error| Error::Unsupported(format!("ECC signing key: {e}"));
    if size == 32 {
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad_key)?;
        let sig = p256::ecdsa::Signature::from_slice(&rs).map_err(|_| bad())?;
        key.verify_prehash(digest, &sig).map_err(|_| bad())
    } else {
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad_key)?;
        let sig = p384::ecdsa::Signature::from_slice(&rs).map_err(|_| bad())?;
        key.verify_prehash(digest, &sig).map_err(|_| bad())
    }
}
