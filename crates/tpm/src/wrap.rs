//! Wrapping a private key for another machine's TPM, in software and with no TPM at hand:
//! the duplication of TPM 2.0 Part 1, 23.3, done as TPM2_Duplicate would do it, producing an
//! importable key file (OID 2.23.133.10.1.4) that only the TPM holding the parent can import.
//!
//! The steps, for a parent with nameAlg SHA-256 and AES-128-CFB (the TCG H-2 storage key,
//! and tpm2-tools' default RSA-2048 SRK):
//! 1. A seed shared with the parent (Part 1, 11.4.10): for an ECC P-256 parent, ECDH with an
//!    ephemeral key and seed = KDFe(SHA-256, Z, "DUPLICATE", ephemeral x, parent x, 256)
//!    (Part 1, C.6.1), inSymSeed = the ephemeral point; for an RSA parent, 32 random bytes
//!    encrypted with RSA-OAEP, SHA-256, label "DUPLICATE" (Part 1, B.10.3).
//! 2. The outer wrapper (Part 1, 23.3.2.2): symKey = KDFa(SHA-256, seed, "STORAGE", name,
//!    "", 128), dupSensitive = AES-128-CFB(symKey, IV 0, TPM2B_SENSITIVE); hmacKey =
//!    KDFa(SHA-256, seed, "INTEGRITY", "", "", 256), outerHMAC = HMAC(hmacKey, dupSensitive
//!    ‖ name); duplicate = TPM2B(outerHMAC) ‖ dupSensitive. No inner wrapper.
//!
//! Labels end in a zero octet, as the TPM reference code sends them (Part 1, 11.4.10.2).

use aes::Aes128;
use cfb_mode::cipher::{AsyncStreamCipher as _, KeyIvInit as _};
use hmac::{Hmac, Mac as _};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use pkcs8::der::Decode as _;
use pkcs8::ObjectIdentifier;
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use ssh_tpm_keyfile::{handle, KeyType, TpmKey};
use tss_esapi::structures::PublicBuffer;
use tss_esapi::traits::Marshall as _;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::external::ExternalKey;
use crate::import::{imported_public, object_name, put_tpm2b, sensitive_area};
use crate::secret::Pin;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Size of the seed and of the HMAC key: the digest size of the parent's nameAlg, SHA-256.
const SEED_BYTES: usize = 32;

/// The public key of the storage key a wrapped key is meant for.
#[derive(Debug, Clone)]
pub struct WrapParent {
    key: ParentKey,
}

#[derive(Debug, Clone)]
enum ParentKey {
    Ecc(p256::PublicKey),
    Rsa(rsa::RsaPublicKey),
}

impl WrapParent {
    /// Reads the parent's public key from PEM (`PUBLIC KEY`, as `tpm2_readpublic -f pem`
    /// writes it, or `RSA PUBLIC KEY`).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for anything but an ECC P-256 or an RSA public key of at
    /// least 2048 bits.
    pub fn from_pem(text: &str) -> Result<Self> {
        let malformed = |what: String| {
            Error::Unsupported(format!(
                "the parent's public key is not usable: {what}; export it with \
                 `tpm2_readpublic -c HANDLE -o parent.pem -f pem`"
            ))
        };
        let (label, der) = pem_rfc7468::decode_vec(text.trim_start().as_bytes())
            .map_err(|e| malformed(e.to_string()))?;
        let key = match label {
            "PUBLIC KEY" => {
                let info = pkcs8::spki::SubjectPublicKeyInfoRef::from_der(&der)
                    .map_err(|e| malformed(e.to_string()))?;
                match (info.algorithm.oid, info.algorithm.parameters_oid().ok()) {
                    (ID_EC_PUBLIC_KEY, Some(SECP256R1)) => ParentKey::Ecc(
                        p256::PublicKey::from_sec1_bytes(info.subject_public_key.raw_bytes())
                            .map_err(|e| malformed(e.to_string()))?,
                    ),
                    (ID_EC_PUBLIC_KEY, curve) => {
                        return Err(malformed(format!(
                            "ECC parents must be on NIST P-256 (the H-2 storage key), not {}",
                            curve.map_or("an unnamed curve".into(), |c| c.to_string())
                        )))
                    }
                    (RSA_ENCRYPTION, _) => ParentKey::Rsa(
                        rsa::pkcs8::DecodePublicKey::from_public_key_der(&der)
                            .map_err(|e| malformed(e.to_string()))?,
                    ),
                    (other, _) => return Err(malformed(format!("unknown algorithm {other}"))),
                }
            }
            "RSA PUBLIC KEY" => ParentKey::Rsa(
                rsa::pkcs1::DecodeRsaPublicKey::from_pkcs1_der(&der)
                    .map_err(|e| malformed(e.to_string()))?,
            ),
            other => return Err(malformed(format!("a PEM `{other}` is not a public key"))),
        };
        if let ParentKey::Rsa(rsa) = &key {
            use rsa::traits::PublicKeyParts as _;
            if rsa.size() < 256 {
                return Err(malformed("RSA parents must have at least 2048 bits".into()));
            }
        }
        Ok(WrapParent { key })
    }

    /// Whether the parent is an RSA key (which must then be a persistent key: hierarchy
    /// parents in key files stand for the ECC H-2 key).
    pub fn is_rsa(&self) -> bool {
        matches!(self.key, ParentKey::Rsa(_))
    }

    /// The seed and inSymSeed (the TPM2B_ENCRYPTED_SECRET's contents) for one duplication.
    fn share_seed(&self) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        match &self.key {
            ParentKey::Ecc(parent) => {
                let ephemeral = p256::SecretKey::random(&mut OsRng);
                let point = ephemeral.public_key().to_encoded_point(false);
                let shared =
                    p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), parent.as_affine());
                let parent_point = parent.to_encoded_point(false);
                let (Some(x), Some(y), Some(parent_x)) = (point.x(), point.y(), parent_point.x())
                else {
                    return Err(Error::Unsupported(
                        "the parent's public key is the identity".into(),
                    ));
                };
                let seed = kdfe(
                    shared.raw_secret_bytes(),
                    b"DUPLICATE",
                    x,
                    parent_x,
                    SEED_BYTES,
                );
                // TPMS_ECC_POINT (Part 2, 11.2.5.2).
                let mut encrypted = Vec::with_capacity(4 + x.len() + y.len());
                put_tpm2b(&mut encrypted, x);
                put_tpm2b(&mut encrypted, y);
                Ok((seed, encrypted))
            }
            ParentKey::Rsa(parent) => {
                let seed = random_bytes(SEED_BYTES)?;
                let padding = rsa::Oaep::new_with_label::<Sha256, _>("DUPLICATE\0");
                let encrypted = parent
                    .encrypt(&mut OsRng, padding, &seed)
                    .map_err(|e| Error::Unsupported(format!("RSA-OAEP of the seed failed: {e}")))?;
                Ok((seed, encrypted))
            }
        }
    }
}

/// Wraps `key` for the TPM that holds `parent` (found there at `parent_handle`), with `pin`
/// as its PIN. No TPM is used.
///
/// # Errors
///
/// An RSA parent named by a hierarchy handle, a PIN longer than 32 bytes (the SHA-256
/// nameAlg's limit), or a failure of the system's random source.
pub fn wrap_key(
    key: &ExternalKey,
    pin: &Pin,
    parent: &WrapParent,
    parent_handle: u32,
) -> Result<TpmKey> {
    if parent.is_rsa() && !handle::is_persistent(parent_handle) {
        return Err(Error::Unsupported(format!(
            "an RSA parent must be a persistent key, not {parent_handle:#010x}; give its \
             handle with --parent-handle, e.g. 0x81000001"
        )));
    }
    if pin.expose().len() > SEED_BYTES {
        return Err(Error::Unsupported(format!(
            "a wrapped key's PIN can be at most {SEED_BYTES} bytes (the SHA-256 digest size)"
        )));
    }
    let public = imported_public(key, !pin.is_empty())?;
    let name = object_name(&public)?;
    let sensitive = sensitive_area(key, pin)?;
    let (seed, encrypted_seed) = parent.share_seed()?;
    let duplicate = outer_wrap(&seed, &name, &sensitive)?;

    let pubkey = PublicBuffer::try_from(public)
        .and_then(|p| p.marshall())
        .map_err(|e| Error::tss("encoding the wrapped key", e))?;
    let mut privkey = Vec::with_capacity(2 + duplicate.len());
    put_tpm2b(&mut privkey, &duplicate);
    Ok(TpmKey {
        key_type: KeyType::Importable,
        secret: Some(encrypted_seed),
        ..TpmKey::new_loadable(parent_handle, pubkey, privkey, pin.is_empty())
    })
}

/// The duplicate with an outer wrapper only (Part 1, 23.3.2.2).
fn outer_wrap(seed: &[u8], name: &[u8], sensitive: &[u8]) -> Result<Vec<u8>> {
    let sym_key = kdfa(seed, b"STORAGE", name, &[], 16);
    let mut dup_sensitive = Zeroizing::new(sensitive.to_vec());
    cfb_encrypt(&sym_key, &mut dup_sensitive);
    let hmac_key = kdfa(seed, b"INTEGRITY", &[], &[], SEED_BYTES);
    let outer_hmac = hmac_sha256(&hmac_key)
        .chain_update(dup_sensitive.as_slice())
        .chain_update(name)
        .finalize()
        .into_bytes();
    let mut duplicate = Vec::with_capacity(2 + outer_hmac.len() + dup_sensitive.len());
    put_tpm2b(&mut duplicate, &outer_hmac);
    duplicate.extend_from_slice(&dup_sensitive);
    Ok(duplicate)
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length")
}

/// KDFa with SHA-256 (Part 1, 11.4.10.2): HMAC(key, [i]₃₂ ‖ label ‖ 00 ‖ contextU ‖
/// contextV ‖ [bits]₃₂) for i = 1, 2, ..., truncated to `bytes`.
pub(crate) fn kdfa(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bytes: usize,
) -> Zeroizing<Vec<u8>> {
    let bits = (bytes as u32) * 8;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 32));
    let mut counter = 1u32;
    while out.len() < bytes {
        let block = hmac_sha256(key)
            .chain_update(counter.to_be_bytes())
            .chain_update(label)
            .chain_update([0])
            .chain_update(context_u)
            .chain_update(context_v)
            .chain_update(bits.to_be_bytes())
            .finalize()
            .into_bytes();
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// KDFe with SHA-256 (Part 1, 11.4.10.3): H([i]₃₂ ‖ Z ‖ label ‖ 00 ‖ partyUInfo ‖
/// partyVInfo) for i = 1, 2, ..., truncated to `bytes`.
pub(crate) fn kdfe(
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bytes: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 32));
    let mut counter = 1u32;
    while out.len() < bytes {
        let block = Sha256::new()
            .chain_update(counter.to_be_bytes())
            .chain_update(z)
            .chain_update(label)
            .chain_update([0])
            .chain_update(party_u)
            .chain_update(party_v)
            .finalize();
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// AES-128-CFB encryption in place with a zero IV, as the TPM's duplication wrappers use
/// it (Part 1, 23.3.2). `key` must be 16 bytes.
pub(crate) fn cfb_encrypt(key: &[u8], data: &mut [u8]) {
    cfb_mode::Encryptor::<Aes128>::new_from_slices(key, &[0u8; 16])
        .expect("AES-128 keys are made 16 bytes long")
        .encrypt(data);
}

/// The inverse of [`cfb_encrypt`].
#[cfg(test)]
pub(crate) fn cfb_decrypt(key: &[u8], data: &mut [u8]) {
    cfb_mode::Decryptor::<Aes128>::new_from_slices(key, &[0u8; 16])
        .expect("AES-128 keys are made 16 bytes long")
        .decrypt(data);
}

/// `len` bytes from the operating system's random source.
pub(crate) fn random_bytes(len: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::Unsupported(format!("the system's random source failed: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::FromEncodedPoint as _;

    fn test_key() -> ExternalKey {
        crate::import::tests::p256_key()
    }

    #[test]
    fn kdfa_counts_blocks_and_binds_its_inputs() {
        let a = kdfa(b"seed", b"STORAGE", b"name", b"", 16);
        assert_eq!(a.len(), 16);
        let long = kdfa(b"seed", b"STORAGE", b"name", b"", 48);
        assert_eq!(long.len(), 48);
        // The requested size is part of the input, so a shorter key is not a prefix.
        assert_ne!(a[..], long[..16]);
        assert_ne!(a, kdfa(b"seed", b"INTEGRITY", b"name", b"", 16));
        // One block, by hand: HMAC(seed, 00000001 ‖ "STORAGE" ‖ 00 ‖ "name" ‖ 00000080).
        let by_hand = hmac_sha256(b"seed")
            .chain_update(b"\x00\x00\x00\x01STORAGE\x00name\x00\x00\x00\x80")
            .finalize()
            .into_bytes();
        assert_eq!(a[..], by_hand[..16]);
    }

    #[test]
    fn kdfe_by_hand() {
        let seed = kdfe(b"Z", b"DUPLICATE", b"U", b"V", 32);
        let by_hand = Sha256::digest(b"\x00\x00\x00\x01ZDUPLICATE\x00UV");
        assert_eq!(seed[..], by_hand[..]);
    }

    /// What the target TPM does on TPM2_Import, with the parent's private key in software:
    /// recover the seed, check the outer HMAC, decrypt.
    #[test]
    fn ecc_wrap_unwraps_with_the_parent_private_key() {
        let parent_secret = p256::SecretKey::random(&mut OsRng);
        let parent = WrapParent {
            key: ParentKey::Ecc(parent_secret.public_key()),
        };
        let pin = Pin::from("1234".to_string());
        let wrapped = wrap_key(&test_key(), &pin, &parent, handle::OWNER).unwrap();
        assert_eq!(wrapped.key_type, KeyType::Importable);
        assert!(!wrapped.empty_auth);

        // inSymSeed is the ephemeral point.
        let secret = wrapped.secret.clone().unwrap();
        assert_eq!(secret.len(), 2 + 32 + 2 + 32);
        let (x, y) = (&secret[2..34], &secret[36..68]);
        let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
        let ephemeral = p256::PublicKey::from_encoded_point(&point).unwrap();
        let z =
            p256::ecdh::diffie_hellman(parent_secret.to_nonzero_scalar(), ephemeral.as_affine());
        let parent_x = parent_secret.public_key().to_encoded_point(false);
        let seed = kdfe(
            z.raw_secret_bytes(),
            b"DUPLICATE",
            x,
            parent_x.x().unwrap(),
            32,
        );

        let public = crate::public::decode_public(&wrapped.pubkey).unwrap();
        let name = object_name(&public).unwrap();
        let duplicate = &wrapped.privkey[2..];
        assert_eq!(duplicate[..2], [0, 32]);
        let (mac, encrypted) = (&duplicate[2..34], &duplicate[34..]);
        let expected = hmac_sha256(&kdfa(&seed, b"INTEGRITY", &[], &[], 32))
            .chain_update(encrypted)
            .chain_update(&name)
            .finalize()
            .into_bytes();
        assert_eq!(mac, expected.as_slice());
        let mut sensitive = encrypted.to_vec();
        cfb_decrypt(&kdfa(&seed, b"STORAGE", &name, &[], 16), &mut sensitive);
        // TPM2B_SENSITIVE: size, TPM_ALG_ECC, authValue "1234".
        assert_eq!(sensitive[2..10], *b"\x00\x23\x00\x041234");
    }

    #[test]
    fn rsa_parents_must_be_persistent() {
        // A throwaway RSA-2048 public key: `openssl genrsa 2048 | openssl rsa -pubout`.
        let pem = "-----BEGIN PUBLIC KEY-----\n\
            MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwIidTZOAzTB9CjKXXXai\n\
            HM9oo4VGS2X0EMQSJLOup1iDRdiJVrDd83q3zQBdHmR0/dFRbrRrfoYPuxyxcKFm\n\
            DZGNICvvHTFOygXp6Bv9/FcNXrDwXhK+8zOTZJqeA70QBGEVncXX4BOxKjwDGjMK\n\
            h4zDWYFv9u5NY6vTLfWLPcK8JSDdOJ/4TylEhc9IjY/MfcE4pIu4tP9yuUlK77HO\n\
            R72Zc2TtV3PRbKYP2aMHPJ3jJlV9FxppnrnlCy1MQ5XRqmbX99bkYkBIo3a+xssR\n\
            W+wdpWNL7aRuW02pFyCAAChhrxVMbZU5yMCQYstx+sD2z+V3DrLEL4DqgZIt2Xgx\n\
            QQIDAQAB\n\
            -----END PUBLIC KEY-----\n";
        let parent = WrapParent::from_pem(pem).unwrap();
        assert!(parent.is_rsa());
        let pin = Pin::empty();
        let err = wrap_key(&test_key(), &pin, &parent, handle::OWNER).unwrap_err();
        assert!(err.to_string().contains("--parent-handle"), "{err}");
        let wrapped = wrap_key(&test_key(), &pin, &parent, 0x8100_0001).unwrap();
        assert_eq!(wrapped.secret.unwrap().len(), 256);
        assert!(wrapped.empty_auth);
    }

    #[test]
    fn refuses_other_parents() {
        // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 | openssl pkey -pubout`
        let p384 = "-----BEGIN PUBLIC KEY-----\n\
            MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEfYgEX6mpvDbh3LmnL9FoLMTMHvf7r9fQ\n\
            wjUU6qTySGRrOR2P67Zk/vD5j+UFb8Jx0dpxm0ZvOU8cCjg9WIZFLSdDLkMvXtf3\n\
            vhYtEQJN0GL4XTRxAxKl29fxiVKr87J2\n\
            -----END PUBLIC KEY-----\n";
        let err = WrapParent::from_pem(p384).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
        assert!(WrapParent::from_pem(p384).is_err());
        assert!(WrapParent::from_pem("not pem").is_err());
    }
}
