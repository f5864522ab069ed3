//! Private keys from outside the TPM, read so that they can be imported into one or wrapped
//! for one: OpenSSH private keys (PROTOCOL.key, encrypted or not), PKCS#8 (RFC 5208),
//! SEC1 (RFC 5915) and PKCS#1 (RFC 8017) PEM.
//!
//! Only what a TPM can hold is accepted: ECDSA on NIST P-256, P-384 and P-521, and RSA with
//! 2048 or 3072 bits. The private parts live in [`SecretBytes`], wiped on drop and never
//! shown by `Debug`.

use std::fmt;

use p256::elliptic_curve;
use pkcs8::der::Decode as _;
use pkcs8::ObjectIdentifier;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::template::KeySpec;

mod openssh;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Secret bytes: a private scalar or prime, or a passphrase. Wiped on drop; `Debug` shows
/// only whether they are empty.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the caller keeps no copy.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// Copies `bytes`; the caller wipes its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        SecretBytes::new(bytes.to_vec())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for SecretBytes {
    fn from(text: String) -> Self {
        SecretBytes::new(text.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("SecretBytes(empty)")
        } else {
            f.write_str("SecretBytes(<redacted>)")
        }
    }
}

/// The numbers of a private key, as the TPM's public and sensitive areas take them.
#[derive(Debug, Clone)]
pub(crate) enum Material {
    /// An ECC key: the public point's coordinates and the private scalar, each padded to
    /// the curve's field size.
    Ecc {
        x: Vec<u8>,
        y: Vec<u8>,
        d: SecretBytes,
    },
    /// An RSA key: modulus, public exponent and one prime, padded to half the modulus.
    Rsa {
        n: Vec<u8>,
        exponent: u32,
        prime: SecretBytes,
    },
}

/// A private key read from a file, ready to be imported or wrapped.
#[derive(Debug, Clone)]
pub struct ExternalKey {
    spec: KeySpec,
    material: Material,
    comment: String,
}

impl ExternalKey {
    /// Reads a private key file: OpenSSH, or PEM with the label `PRIVATE KEY` (PKCS#8),
    /// `EC PRIVATE KEY` (SEC1) or `RSA PRIVATE KEY` (PKCS#1).
    ///
    /// # Errors
    ///
    /// [`Error::PassphraseRequired`] for an encrypted OpenSSH key when `passphrase` is
    /// `None`; [`Error::WrongPassphrase`] when it does not decrypt the key;
    /// [`Error::Unsupported`] for other formats and for keys a TPM cannot hold.
    pub fn from_bytes(data: &[u8], passphrase: Option<&SecretBytes>) -> Result<Self> {
        let text = std::str::from_utf8(data).map_err(|_| not_a_key())?;
        let label = pem_label(text).ok_or_else(not_a_key)?;
        match label {
            "OPENSSH PRIVATE KEY" => openssh::read(text, passphrase),
            "PRIVATE KEY" => from_pkcs8(&pem_block(text, label)?),
            "EC PRIVATE KEY" => {
                reject_legacy_encryption(text)?;
                from_sec1(&pem_block(text, label)?)
            }
            "RSA PRIVATE KEY" => {
                reject_legacy_encryption(text)?;
                let der = pem_block(text, label)?;
                rsa_key(rsa_from(rsa::pkcs1::DecodeRsaPrivateKey::from_pkcs1_der(
                    &der,
                ))?)
            }
            "ENCRYPTED PRIVATE KEY" => Err(Error::Unsupported(
                "encrypted PKCS#8 keys cannot be read; convert the key to an encrypted \
                 OpenSSH key with `ssh-keygen -p -f FILE` and import that"
                    .into(),
            )),
            "TSS2 PRIVATE KEY" => Err(Error::Unsupported(
                "this is a TPM key file, not a private key".into(),
            )),
            other => Err(Error::Unsupported(format!(
                "a PEM `{other}` is not a private key this tool can read; it reads OpenSSH, \
                 PKCS#8, SEC1 (EC PRIVATE KEY) and PKCS#1 (RSA PRIVATE KEY) keys"
            ))),
        }
    }

    /// What kind of key this is.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The comment an OpenSSH key carried; empty for other formats.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// The key's SSH public key.
    pub fn ssh_public_key(&self) -> Result<ssh_key::public::KeyData> {
        crate::public::ssh_public_key(&crate::import::imported_public(self, false)?)
    }

    pub(crate) fn material(&self) -> &Material {
        &self.material
    }
}

/// The label of the first PEM block in `text`, passing over the `EC PARAMETERS` block that
/// `openssl ecparam -genkey` writes before the key.
fn pem_label(text: &str) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let mut rest = text;
    loop {
        let start = rest.find(BEGIN)? + BEGIN.len();
        let end = start + rest[start..].find("-----")?;
        let label = &rest[start..end];
        if label != "EC PARAMETERS" {
            return Some(label);
        }
        rest = &rest[end..];
    }
}

/// The DER contents of the PEM block labelled `label`; text around it (such as the
/// `EC PARAMETERS` block `openssl ecparam -genkey` writes first) is ignored.
fn pem_block(text: &str, label: &str) -> Result<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let malformed = || Error::Unsupported(format!("the PEM `{label}` block is malformed"));
    let start = text.find(&begin).ok_or_else(malformed)?;
    let stop = start + text[start..].find(&end).ok_or_else(malformed)? + end.len();
    let (_, der) =
        pem_rfc7468::decode_vec(&text.as_bytes()[start..stop]).map_err(|_| malformed())?;
    Ok(Zeroizing::new(der))
}

/// OpenSSL's old encrypted PEM (`Proc-Type: 4,ENCRYPTED` headers) is not read.
fn reject_legacy_encryption(text: &str) -> Result<()> {
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::Unsupported(
            "keys in OpenSSL's old encrypted PEM format cannot be read; convert the key to \
             an encrypted OpenSSH key with `ssh-keygen -p -f FILE` and import that"
                .into(),
        ));
    }
    Ok(())
}

fn not_a_key() -> Error {
    Error::Unsupported(
        "not a private key file; give an OpenSSH, PKCS#8, SEC1 or PKCS#1 PEM private key".into(),
    )
}

fn from_pkcs8(der: &[u8]) -> Result<ExternalKey> {
    let info = pkcs8::PrivateKeyInfo::from_der(der)
        .map_err(|e| Error::Unsupported(format!("the PKCS#8 key is malformed: {e}")))?;
    match info.algorithm.oid {
        ID_EC_PUBLIC_KEY => {
            let curve = info.algorithm.parameters_oid().map_err(|_| {
                Error::Unsupported("the PKCS#8 EC key does not name its curve".into())
            })?;
            let inner = sec1::EcPrivateKey::from_der(info.private_key)
                .map_err(|e| Error::Unsupported(format!("the PKCS#8 EC key is malformed: {e}")))?;
            ecc_key(curve_spec(curve)?, inner.private_key)
        }
        RSA_ENCRYPTION => rsa_key(rsa_from(rsa::pkcs8::DecodePrivateKey::from_pkcs8_der(der))?),
        other => Err(Error::Unsupported(format!(
            "PKCS#8 keys of algorithm {other} cannot live in a TPM; only ECDSA and RSA keys \
             can be imported"
        ))),
    }
}

fn from_sec1(der: &[u8]) -> Result<ExternalKey> {
    let key = sec1::EcPrivateKey::from_der(der)
        .map_err(|e| Error::Unsupported(format!("the SEC1 EC key is malformed: {e}")))?;
    let curve = key
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or_else(|| Error::Unsupported("the SEC1 EC key does not name its curve".into()))?;
    ecc_key(curve_spec(curve)?, key.private_key)
}

fn curve_spec(curve: ObjectIdentifier) -> Result<KeySpec> {
    match curve {
        SECP256R1 => Ok(KeySpec::EcdsaP256),
        SECP384R1 => Ok(KeySpec::EcdsaP384),
        SECP521R1 => Ok(KeySpec::EcdsaP521),
        other => Err(Error::Unsupported(format!(
            "EC keys on curve {other} cannot be imported; only NIST P-256, P-384 and P-521"
        ))),
    }
}

/// An ECC key from its private scalar; the public point is computed from it.
fn ecc_key(spec: KeySpec, scalar: &[u8]) -> Result<ExternalKey> {
    fn parts<C>(scalar: &[u8]) -> Result<(Vec<u8>, Vec<u8>, SecretBytes)>
    where
        C: elliptic_curve::CurveArithmetic,
        elliptic_curve::AffinePoint<C>:
            elliptic_curve::sec1::ToEncodedPoint<C> + elliptic_curve::sec1::FromEncodedPoint<C>,
        elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
    {
        use elliptic_curve::sec1::ToEncodedPoint as _;
        let secret = elliptic_curve::SecretKey::<C>::from_slice(scalar)
            .map_err(|_| Error::Unsupported("the EC private key is out of range".into()))?;
        let point = secret.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(Error::Unsupported(
                "the EC public key is the identity".into(),
            ));
        };
        let mut bytes = secret.to_bytes();
        let d = SecretBytes::copy_from(&bytes);
        bytes.as_mut_slice().zeroize();
        Ok((x.to_vec(), y.to_vec(), d))
    }
    // Encoders drop leading zero bytes (OpenSSH's mpints do); the curve wants them back.
    let size = match spec {
        KeySpec::EcdsaP256 => 32,
        KeySpec::EcdsaP384 => 48,
        _ => 66,
    };
    let start = scalar.iter().position(|&b| b != 0).unwrap_or(scalar.len());
    let significant = &scalar[start..];
    if significant.len() > size {
        return Err(Error::Unsupported(
            "the EC private key is too long for its curve".into(),
        ));
    }
    let mut padded = Zeroizing::new(vec![0u8; size - significant.len()]);
    padded.extend_from_slice(significant);
    let scalar = padded.as_slice();
    let (x, y, d) = match spec {
        KeySpec::EcdsaP256 => parts::<p256::NistP256>(scalar)?,
        KeySpec::EcdsaP384 => parts::<p384::NistP384>(scalar)?,
        KeySpec::EcdsaP521 => parts::<p521::NistP521>(scalar)?,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 => unreachable!("called for ECC keys only"),
    };
    Ok(ExternalKey {
        spec,
        material: Material::Ecc { x, y, d },
        comment: String::new(),
    })
}

fn rsa_from<E: fmt::Display>(
    read: std::result::Result<rsa::RsaPrivateKey, E>,
) -> Result<rsa::RsaPrivateKey> {
    read.map_err(|e| Error::Unsupported(format!("the RSA private key is malformed: {e}")))
}

fn rsa_key(key: rsa::RsaPrivateKey) -> Result<ExternalKey> {
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    let [p, _q] = key.primes() else {
        return Err(Error::Unsupported(
            "multi-prime RSA keys cannot live in a TPM".into(),
        ));
    };
    let prime = SecretBytes::new(p.to_bytes_be());
    rsa_parts(key.n().to_bytes_be(), &key.e().to_bytes_be(), prime)
}

/// An RSA key from its modulus, public exponent and one prime (the TPM computes the rest).
fn rsa_parts(n: Vec<u8>, e: &[u8], prime: SecretBytes) -> Result<ExternalKey> {
    let spec = match n.len() * 8 {
        2048 => KeySpec::Rsa2048,
        3072 => KeySpec::Rsa3072,
        bits => {
            return Err(Error::Unsupported(format!(
                "RSA keys of {bits} bits cannot be imported; TPMs hold 2048 or 3072-bit keys"
            )))
        }
    };
    let exponent = match e {
        [] => 0,
        e if e.len() <= 4 => e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)),
        _ => u32::MAX,
    };
    if exponent < 3 || exponent % 2 == 0 || exponent == u32::MAX {
        return Err(Error::Unsupported(format!(
            "the RSA key's public exponent is not one a TPM takes ({} bytes)",
            e.len()
        )));
    }
    // The TPM takes a prime of exactly half the modulus size (TPM 2.0 Part 2, 12.3.2.2).
    let half = n.len() / 2;
    if prime.expose().len() > half || prime.is_empty() {
        return Err(Error::Unsupported(
            "the RSA key's primes are not half the modulus size".into(),
        ));
    }
    let mut padded = vec![0u8; half - prime.expose().len()];
    padded.extend_from_slice(prime.expose());
    Ok(ExternalKey {
        spec,
        material: Material::Rsa {
            n,
            exponent,
            prime: SecretBytes::new(padded),
        },
        comment: String::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_never_show() {
        let secret = SecretBytes::from("hunter2".to_string());
        assert_eq!(format!("{secret:?}"), "SecretBytes(<redacted>)");
        let key = ecc_key(KeySpec::EcdsaP256, &[7u8; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("7, 7, 7"), "{shown}");
    }

    #[test]
    fn ecc_public_point_is_derived_and_padded() {
        // d = 1 gives the generator; P-256's G.x starts 6B17D1F2.
        let mut one = [0u8; 32];
        one[31] = 1;
        let key = ecc_key(KeySpec::EcdsaP256, &one).unwrap();
        let Material::Ecc { x, y, d } = key.material() else {
            panic!("ECC")
        };
        assert_eq!(x[..4], [0x6B, 0x17, 0xD1, 0xF2]);
        assert_eq!((x.len(), y.len(), d.expose().len()), (32, 32, 32));
        let p521 = ecc_key(KeySpec::EcdsaP521, &one).unwrap();
        let Material::Ecc { x, d, .. } = p521.material() else {
            panic!("ECC")
        };
        assert_eq!((x.len(), d.expose().len()), (66, 66));
    }

    #[test]
    fn rsa_sizes_and_exponents() {
        let n = vec![0xC5; 256];
        let key = rsa_parts(n.clone(), &[1, 0, 1], SecretBytes::new(vec![0xF1; 127])).unwrap();
        assert_eq!(key.spec(), KeySpec::Rsa2048);
        let Material::Rsa {
            exponent, prime, ..
        } = key.material()
        else {
            panic!("RSA")
        };
        assert_eq!(*exponent, 65537);
        assert_eq!(prime.expose().len(), 128, "padded to half the modulus");
        assert!(rsa_parts(vec![0xC5; 512], &[1, 0, 1], SecretBytes::new(vec![1; 256])).is_err());
        assert!(rsa_parts(n, &[2], SecretBytes::new(vec![1; 128])).is_err());
    }

    #[test]
    fn pem_label_passes_over_ec_parameters() {
        let text = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n\
                    -----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(pem_label(text), Some("EC PRIVATE KEY"));
        assert_eq!(pem_label("no pem here"), None);
    }

    #[test]
    fn refuses_what_is_not_a_private_key() {
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = ExternalKey::from_bytes(public.as_bytes(), None).unwrap_err();
        assert!(err.to_string().contains("PUBLIC KEY"), "{err}");
        assert!(ExternalKey::from_bytes(b"\x30\x82", None).is_err());
        assert!(ExternalKey::from_bytes(b"hello", None).is_err());
    }
}
