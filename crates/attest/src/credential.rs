//! MakeCredential (TPM 2.0 Part 1, 24), the CA side of enrolment: a secret that only the TPM
//! holding a given EK can recover with TPM2_ActivateCredential, and only for the key with a
//! given name (the AK).
//!
//! The steps, with the EK's name algorithm H and symmetric key size from its TCG template:
//! 1. A seed shared with the EK (Part 1, 11.4.9–11.4.10): for an RSA EK, |H| random bytes
//!    encrypted with RSA-OAEP(H, label "IDENTITY\0"); for an ECC EK, an ephemeral ECDH on the
//!    EK's curve and seed = KDFe(H, Z, "IDENTITY", ephemeral x, EK x, |H| bits), sent as the
//!    ephemeral `TPMS_ECC_POINT`. This is `encrypted_secret`.
//! 2. encIdentity = AES-CFB(KDFa(H, seed, "STORAGE", AK name, "", symbits), IV 0,
//!    `TPM2B_DIGEST(secret)`).
//! 3. outerHMAC = HMAC-H(KDFa(H, seed, "INTEGRITY", "", "", |H| bits), encIdentity ‖ AK name);
//!    `credential_blob` = `TPM2B_DIGEST(outerHMAC)` ‖ encIdentity.
//!
//! Labels end in a zero octet (Part 1, 11.4.10.2), as the TPM reference code hashes them.

use aes::{Aes128, Aes256};
use cfb_mode::cipher::{AsyncStreamCipher as _, KeyIvInit as _};
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::Digest;
use hmac::{Mac as _, SimpleHmac};
use p256::elliptic_curve::ecdh::EphemeralSecret;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ModulusSize, ToEncodedPoint};
use p256::elliptic_curve::{AffinePoint, CurveArithmetic, FieldBytesSize, PublicKey};
use rand_core::CryptoRngCore;
use sha2::{Sha256, Sha384};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::tpm::{curve, HashAlg, Public, PublicParams};

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

impl EkPublicKey {
    /// The EK's name algorithm, which MakeCredential uses throughout.
    pub fn name_alg(&self) -> HashAlg {
        match self {
            Self::Rsa2048 { .. } | Self::EccP256 { .. } => HashAlg::Sha256,
            Self::EccP384 { .. } => HashAlg::Sha384,
        }
    }

    /// The key size of the EK's symmetric algorithm (AES-CFB), in bytes.
    pub fn sym_key_bytes(&self) -> usize {
        match self {
            Self::Rsa2048 { .. } | Self::EccP256 { .. } => 16,
            Self::EccP384 { .. } => 32,
        }
    }

    /// The EK key from its public area, for tests and tools that read the EK from the TPM
    /// rather than from its certificate. The CA itself takes the key from the certificate.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] unless it is RSA 2048 with nameAlg SHA-256 and AES-128, ECC
    /// P-256 with SHA-256 and AES-128, or ECC P-384 with SHA-384 and AES-256.
    pub fn from_tpm_public(public: &Public) -> Result<Self> {
        let unsupported = || {
            Error::Unsupported(
                "EK public area: only the TCG templates L-1 (RSA 2048), L-2 (P-256) and H-3 \
                 (P-384)"
                    .into(),
            )
        };
        let (ek, symmetric) = match &public.params {
            PublicParams::Rsa {
                key_bits: 2048,
                exponent,
                modulus,
                symmetric,
                ..
            } => {
                let e = if *exponent == 0 { 65537 } else { *exponent };
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(modulus),
                    rsa::BigUint::from(e),
                )
                .map_err(|_| unsupported())?;
                (Self::Rsa2048 { key }, symmetric)
            }
            PublicParams::Ecc {
                curve: id,
                x,
                y,
                symmetric,
                ..
            } => {
                let point = |size| -> Result<Vec<u8>> {
                    let mut p = vec![4u8];
                    p.extend_from_slice(&crate::tpm::public::left_pad(x, size)?);
                    p.extend_from_slice(&crate::tpm::public::left_pad(y, size)?);
                    Ok(p)
                };
                let ek = match *id {
                    curve::NIST_P256 => Self::EccP256 {
                        key: p256::PublicKey::from_sec1_bytes(&point(32)?)
                            .map_err(|_| unsupported())?,
                    },
                    curve::NIST_P384 => Self::EccP384 {
                        key: p384::PublicKey::from_sec1_bytes(&point(48)?)
                            .map_err(|_| unsupported())?,
                    },
                    _ => return Err(unsupported()),
                };
                (ek, symmetric)
            }
            PublicParams::Rsa { .. } => return Err(unsupported()),
        };
        let sym_ok = symmetric.is_some_and(|s| {
            s.algorithm == crate::tpm::alg::AES
                && usize::from(s.key_bits) == ek.sym_key_bytes() * 8
                && s.mode == crate::tpm::alg::CFB
        });
        if public.name_alg != ek.name_alg() || !sym_ok {
            return Err(unsupported());
        }
        Ok(ek)
    }
}

/// Makes a credential for `ak_name` protected to `ek`: returns the contents of the
/// `TPM2B_ID_OBJECT` (`credential_blob`) and of the `TPM2B_ENCRYPTED_SECRET`
/// (`encrypted_secret`).
///
/// # Errors
///
/// [`Error::Unsupported`] for a secret that is empty or longer than the EK's name digest
/// (the TPM refuses those); [`Error::Crypto`] when the RSA encryption fails.
pub fn make_credential(
    ek: &EkPublicKey,
    ak_name: &[u8],
    secret: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let hash = ek.name_alg();
    if secret.is_empty() || secret.len() > hash.size() {
        return Err(Error::Unsupported(format!(
            "credential of {} bytes: 1 to {} bytes fit this EK",
            secret.len(),
            hash.size()
        )));
    }
    let (seed, encrypted_secret) = share_seed(ek, rng)?;
    let blob = match hash {
        HashAlg::Sha384 => protect::<Sha384>(&seed, ak_name, secret, ek.sym_key_bytes()),
        _ => protect::<Sha256>(&seed, ak_name, secret, ek.sym_key_bytes()),
    };
    Ok((blob, encrypted_secret))
}

/// Step 1: the seed and its encryption to the EK.
fn share_seed(
    ek: &EkPublicKey,
    rng: &mut impl CryptoRngCore,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    match ek {
        EkPublicKey::Rsa2048 { key } => {
            let mut seed = Zeroizing::new(vec![0u8; 32]);
            rng.fill_bytes(&mut seed);
            let padding = rsa::Oaep::new_with_label::<Sha256, _>("IDENTITY\0");
            let encrypted = key
                .encrypt(rng, padding, &seed)
                .map_err(|e| Error::Crypto(format!("RSA-OAEP to the EK: {e}")))?;
            Ok((seed, encrypted))
        }
        EkPublicKey::EccP256 { key } => ecdh_seed::<p256::NistP256, Sha256>(key, rng),
        EkPublicKey::EccP384 { key } => ecdh_seed::<p384::NistP384, Sha384>(key, rng),
    }
}

/// The ECC seed: ECDH of an ephemeral key with the EK, then KDFe over the shared x with the
/// ephemeral and EK x coordinates; the ephemeral point is what the TPM needs to redo it.
fn ecdh_seed<C, D>(
    ek: &PublicKey<C>,
    rng: &mut impl CryptoRngCore,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)>
where
    C: CurveArithmetic,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
    D: Digest,
{
    let ephemeral = EphemeralSecret::<C>::random(rng);
    let shared = ephemeral.diffie_hellman(ek);
    let ours = ephemeral.public_key().to_encoded_point(false);
    let theirs = ek.to_encoded_point(false);
    let (Some(x), Some(y), Some(ek_x)) = (ours.x(), ours.y(), theirs.x()) else {
        return Err(Error::Crypto("ECDH produced the point at infinity".into()));
    };
    let seed = kdfe::<D>(
        shared.raw_secret_bytes(),
        b"IDENTITY",
        x,
        ek_x,
        <D as Digest>::output_size(),
    );
    Ok((seed, ecc_point(x, y)))
}

/// `TPMS_ECC_POINT`: two `TPM2B_ECC_PARAMETER`s.
fn ecc_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + x.len() + y.len());
    put_tpm2b(&mut out, x);
    put_tpm2b(&mut out, y);
    out
}

fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every buffer here is a digest, a coordinate or a short credential.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Steps 2 and 3: the encrypted, integrity-protected credential.
fn protect<D>(seed: &[u8], name: &[u8], secret: &[u8], sym_bytes: usize) -> Vec<u8>
where
    D: Digest + BlockSizeUser,
{
    let sym_key = kdfa::<D>(seed, b"STORAGE", name, &[], sym_bytes);
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(2 + secret.len()));
    put_tpm2b(&mut enc_identity, secret);
    cfb_encrypt(&sym_key, &mut enc_identity);

    let mut blob = Vec::with_capacity(2 + <D as Digest>::output_size() + enc_identity.len());
    put_tpm2b(&mut blob, &outer_hmac::<D>(seed, &enc_identity, name));
    blob.extend_from_slice(&enc_identity);
    blob
}

/// outerHMAC = HMAC-H(KDFa(H, seed, "INTEGRITY", "", "", |H| bits), encIdentity ‖ name).
fn outer_hmac<D: Digest + BlockSizeUser>(seed: &[u8], enc_identity: &[u8], name: &[u8]) -> Vec<u8> {
    let key = kdfa::<D>(seed, b"INTEGRITY", &[], &[], <D as Digest>::output_size());
    let mut mac = hmac::<D>(&key);
    mac.update(enc_identity);
    mac.update(name);
    mac.finalize().into_bytes().to_vec()
}

fn hmac<D: Digest + BlockSizeUser>(key: &[u8]) -> SimpleHmac<D> {
    // SimpleHmac takes keys of any length.
    <SimpleHmac<D> as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// KDFa (Part 1, 11.4.10.2): HMAC-H(key, [i]₃₂ ‖ label ‖ 00 ‖ contextU ‖ contextV ‖
/// [bits]₃₂) for i = 1, 2, …, truncated to `bytes`.
pub(crate) fn kdfa<D: Digest + BlockSizeUser>(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bytes: usize,
) -> Zeroizing<Vec<u8>> {
    let bits = u32::try_from(bytes * 8).unwrap_or(u32::MAX).to_be_bytes();
    counter_mode(bytes, |i| {
        let mut mac = hmac::<D>(key);
        for part in [&i[..], label, &[0], context_u, context_v, &bits] {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    })
}

/// KDFe (Part 1, 11.4.10.3): H([i]₃₂ ‖ Z ‖ label ‖ 00 ‖ partyUInfo ‖ partyVInfo) for
/// i = 1, 2, …, truncated to `bytes`.
pub(crate) fn kdfe<D: Digest>(
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bytes: usize,
) -> Zeroizing<Vec<u8>> {
    counter_mode(bytes, |i| {
        let mut h = D::new();
        for part in [&i[..], z, label, &[0], party_u, party_v] {
            h.update(part);
        }
        h.finalize().to_vec()
    })
}

/// The counter mode both KDFs share: blocks for counters 1, 2, … until `bytes` are made.
fn counter_mode(bytes: usize, mut block: impl FnMut([u8; 4]) -> Vec<u8>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 64));
    for counter in 1u32.. {
        if out.len() >= bytes {
            break;
        }
        let b = Zeroizing::new(block(counter.to_be_bytes()));
        out.extend_from_slice(&b);
    }
    out.truncate(bytes);
    out
}

/// AES-CFB with a zero IV, the key size choosing AES-128 or AES-256.
fn cfb_encrypt(key: &[u8], data: &mut [u8]) {
    let iv = [0u8; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<Aes128>::new(key.into(), &iv.into()).encrypt(data),
        _ => cfb_mode::Encryptor::<Aes256>::new(key.into(), &iv.into()).encrypt(data),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// TPM2_ActivateCredential in software, given the seed the EK's private key recovers.
    pub(crate) fn unprotect<D>(
        seed: &[u8],
        name: &[u8],
        blob: &[u8],
        sym_bytes: usize,
    ) -> Option<Vec<u8>>
    where
        D: Digest + BlockSizeUser,
    {
        let size = usize::from(u16::from_be_bytes([*blob.first()?, *blob.get(1)?]));
        let (outer, enc) = blob.get(2..)?.split_at_checked(size)?;
        if outer_hmac::<D>(seed, enc, name) != outer {
            return None;
        }
        let mut plain = enc.to_vec();
        let key = kdfa::<D>(seed, b"STORAGE", name, &[], sym_bytes);
        let iv = [0u8; 16];
        match sym_bytes {
            16 => cfb_mode::Decryptor::<Aes128>::new(key.as_slice().into(), &iv.into())
                .decrypt(&mut plain),
            _ => cfb_mode::Decryptor::<Aes256>::new(key.as_slice().into(), &iv.into())
                .decrypt(&mut plain),
        }
        let len = usize::from(u16::from_be_bytes([*plain.first()?, *plain.get(1)?]));
        (plain.len() == 2 + len).then(|| plain[2..].to_vec())
    }

    #[test]
    fn kdfa_binds_every_input_and_counts_blocks() {
        let a = kdfa::<Sha256>(b"seed", b"STORAGE", b"name", b"", 16);
        assert_eq!(a.len(), 16);
        let long = kdfa::<Sha256>(b"seed", b"STORAGE", b"name", b"", 48);
        assert_eq!(long.len(), 48);
        // The bit count is an input, so a longer output is not an extension of a shorter one.
        assert_ne!(long[..16], a[..]);
        assert_ne!(a, kdfa::<Sha256>(b"seed", b"INTEGRITY", b"name", b"", 16));
        assert_ne!(a, kdfa::<Sha256>(b"seed", b"STORAGE", b"other", b"", 16));
        assert_ne!(a, kdfa::<Sha256>(b"seeD", b"STORAGE", b"name", b"", 16));
    }

    #[test]
    fn kdfa_by_hand() {
        let mut m = vec![0, 0, 0, 1];
        m.extend_from_slice(b"INTEGRITY\0ctx");
        m.extend_from_slice(&256u32.to_be_bytes());
        let expected = hmac::<Sha256>(b"k")
            .chain_update(&m)
            .finalize()
            .into_bytes();
        assert_eq!(
            kdfa::<Sha256>(b"k", b"INTEGRITY", b"ctx", b"", 32).as_slice(),
            expected.as_slice()
        );
    }

    #[test]
    fn kdfe_by_hand() {
        let mut m = vec![0, 0, 0, 1];
        m.extend_from_slice(b"ZIDENTITY\0UV");
        assert_eq!(
            kdfe::<Sha384>(b"Z", b"IDENTITY", b"U", b"V", 48).as_slice(),
            Sha384::digest(&m).as_slice()
        );
        assert_eq!(kdfe::<Sha256>(b"Z", b"L", b"U", b"V", 40).len(), 40);
    }

    fn rng() -> rand_core::OsRng {
        rand_core::OsRng
    }

    /// Makes a credential to a fresh key on the curve, then opens it with the private key as
    /// the TPM would: ECDH, KDFe, then the outer HMAC and the decryption.
    macro_rules! ecc_round_trip {
        ($curve:ident, $ek:ident, $hash:ty, $size:expr, $sym:expr) => {{
            let name = [0x00, 0x0b, 7, 7, 7];
            let secret = b"0123456789abcdef";
            let private = $curve::SecretKey::random(&mut rng());
            let public = EkPublicKey::$ek {
                key: private.public_key(),
            };
            let (blob, enc) = make_credential(&public, &name, secret, &mut rng()).unwrap();
            assert_eq!(blob.len(), 2 + $size + 2 + secret.len());
            let point = $curve::PublicKey::from_sec1_bytes(&sec1_of(&enc, $size)).unwrap();
            let z = $curve::ecdh::diffie_hellman(private.to_nonzero_scalar(), point.as_affine());
            let ek_x = private.public_key().to_encoded_point(false);
            let seed = kdfe::<$hash>(
                z.raw_secret_bytes(),
                b"IDENTITY",
                &enc[2..2 + $size],
                ek_x.x().unwrap(),
                $size,
            );
            let opened = unprotect::<$hash>(&seed, &name, &blob, $sym);
            assert_eq!(opened.unwrap(), secret);
            assert!(unprotect::<$hash>(&seed, &[0, 0x0b, 7], &blob, $sym).is_none());
        }};
    }

    #[test]
    fn ecc_credentials_unwrap_with_the_ek_private_key() {
        ecc_round_trip!(p256, EccP256, Sha256, 32, 16);
        ecc_round_trip!(p384, EccP384, Sha384, 48, 32);
    }

    fn sec1_of(point: &[u8], size: usize) -> Vec<u8> {
        assert_eq!(point.len(), 4 + 2 * size);
        let mut out = vec![4];
        out.extend_from_slice(&point[2..2 + size]);
        out.extend_from_slice(&point[4 + size..]);
        out
    }

    #[test]
    fn secrets_must_fit_the_digest() {
        let ek = EkPublicKey::EccP256 {
            key: p256::SecretKey::random(&mut rng()).public_key(),
        };
        assert!(make_credential(&ek, b"n", &[], &mut rng()).is_err());
        assert!(make_credential(&ek, b"n", &[1; 33], &mut rng()).is_err());
        assert!(make_credential(&ek, b"n", &[1; 32], &mut rng()).is_ok());
    }
}
