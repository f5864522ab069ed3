//! `TPMT_PUBLIC` (TPM 2.0 Part 2, 12.2.4) for RSA and ECC objects: the public area of the AK
//! and of the SSH key, whose name (Part 1, 16) is what certifications and credentials bind.

use ssh_key::public::{EcdsaPublicKey, KeyData, RsaPublicKey};
use ssh_key::Mpint;

use super::reader::Reader;
use super::{alg, alg_label, curve, HashAlg};
use crate::error::{Error, Result};

const WHAT: &str = "TPMT_PUBLIC";
/// `sizeof(TPMU_HA)`: the largest digest.
const MAX_DIGEST: usize = 64;
/// `MAX_RSA_KEY_BYTES` for 4096-bit keys.
const MAX_RSA_BYTES: usize = 512;
/// `MAX_ECC_KEY_BYTES` for P-521.
const MAX_ECC_BYTES: usize = 66;

/// `TPMA_OBJECT` (Part 2, 8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(pub u32);

#[allow(missing_docs)]
impl ObjectAttributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
    pub const X509_SIGN: u32 = 1 << 19;

    /// Whether every bit of `bits` is set.
    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    pub fn fixed_tpm(self) -> bool {
        self.contains(Self::FIXED_TPM)
    }
    pub fn fixed_parent(self) -> bool {
        self.contains(Self::FIXED_PARENT)
    }
    pub fn sensitive_data_origin(self) -> bool {
        self.contains(Self::SENSITIVE_DATA_ORIGIN)
    }
    pub fn restricted(self) -> bool {
        self.contains(Self::RESTRICTED)
    }
    pub fn decrypt(self) -> bool {
        self.contains(Self::DECRYPT)
    }
    pub fn sign(self) -> bool {
        self.contains(Self::SIGN_ENCRYPT)
    }
}

/// `TPMT_SYM_DEF_OBJECT` when not `TPM_ALG_NULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// AES, SM4 or Camellia.
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// Block mode, e.g. `TPM_ALG_CFB`.
    pub mode: u16,
}

/// An asymmetric or KDF scheme when not `TPM_ALG_NULL`: the scheme and its hash (and the
/// ECDAA count, 0 for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// The scheme's algorithm id, e.g. `TPM_ALG_ECDSA`.
    pub scheme: u16,
    /// Its hash algorithm id; 0 for RSAES, which has none.
    pub hash: u16,
    /// ECDAA's count; 0 otherwise.
    pub count: u16,
}

/// The type-specific part of a public area: parameters and unique field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicParams {
    /// `TPMS_RSA_PARMS` and `TPM2B_PUBLIC_KEY_RSA`.
    Rsa {
        /// Symmetric algorithm of a storage key; `None` for signing keys.
        symmetric: Option<SymDef>,
        /// `None` for `TPM_ALG_NULL`.
        scheme: Option<Scheme>,
        /// Modulus size in bits.
        key_bits: u16,
        /// Public exponent; 0 means 65537.
        exponent: u32,
        /// The modulus, big-endian.
        modulus: Vec<u8>,
    },
    /// `TPMS_ECC_PARMS` and `TPMS_ECC_POINT`.
    Ecc {
        /// Symmetric algorithm of a storage key; `None` for signing keys.
        symmetric: Option<SymDef>,
        /// `None` for `TPM_ALG_NULL`.
        scheme: Option<Scheme>,
        /// `TPM_ECC_CURVE`.
        curve: u16,
        /// `None` for `TPM_ALG_NULL`.
        kdf: Option<Scheme>,
        /// Affine x, big-endian (may be empty in a template).
        x: Vec<u8>,
        /// Affine y, big-endian.
        y: Vec<u8>,
    },
}

/// A decoded `TPMT_PUBLIC`, keeping its exact bytes for the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// `nameAlg`.
    pub name_alg: HashAlg,
    /// `objectAttributes`.
    pub attributes: ObjectAttributes,
    /// `authPolicy`.
    pub auth_policy: Vec<u8>,
    /// Parameters and unique field.
    pub params: PublicParams,
    encoded: Vec<u8>,
}

impl Public {
    /// Decodes a `TPMT_PUBLIC` (no outer `TPM2B` size), refusing trailing bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for truncated, oversized or invalid fields;
    /// [`Error::Unsupported`] for object types other than RSA and ECC and for name
    /// algorithms other than SHA-256, SHA-384 and SHA-512.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, WHAT);
        let object_type = r.u16("type")?;
        let name_alg_id = r.u16("nameAlg")?;
        let name_alg = HashAlg::from_id(name_alg_id).ok_or_else(|| {
            Error::Unsupported(format!(
                "nameAlg {} of a TPM object",
                alg_label(name_alg_id)
            ))
        })?;
        let attributes = ObjectAttributes(r.u32("objectAttributes")?);
        let auth_policy = r.tpm2b(MAX_DIGEST, "authPolicy")?.to_vec();
        let params = match object_type {
            alg::RSA => decode_rsa(&mut r)?,
            alg::ECC => decode_ecc(&mut r)?,
            other => {
                return Err(Error::Unsupported(format!(
                    "TPM object type {} (only RSA and ECC keys)",
                    alg_label(other)
                )))
            }
        };
        r.finish()?;
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            params,
            encoded: bytes.to_vec(),
        })
    }

    /// The exact bytes this was decoded from.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The object's name: `nameAlg ‖ H_nameAlg(TPMT_PUBLIC)` (Part 1, 16).
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.id().to_be_bytes().to_vec();
        name.extend_from_slice(&self.name_alg.digest(&self.encoded));
        name
    }

    /// The signing or encryption scheme, `None` for `TPM_ALG_NULL`.
    pub fn scheme(&self) -> Option<Scheme> {
        match &self.params {
            PublicParams::Rsa { scheme, .. } | PublicParams::Ecc { scheme, .. } => *scheme,
        }
    }

    /// The public key as SSH key data, for comparison with an SSH public key.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for curves other than NIST P-256/384/521 and for coordinates
    /// or moduli that do not fit the key size.
    pub fn ssh_key_data(&self) -> Result<KeyData> {
        match &self.params {
            PublicParams::Rsa {
                key_bits,
                exponent,
                modulus,
                ..
            } => {
                let exponent = if *exponent == 0 { 65537 } else { *exponent };
                if modulus.len() * 8 != usize::from(*key_bits) || modulus.first() == Some(&0) {
                    return Err(Error::Unsupported(format!(
                        "RSA modulus of {} bytes for a {key_bits}-bit key",
                        modulus.len()
                    )));
                }
                let mpint = |b: &[u8]| {
                    Mpint::from_positive_bytes(b)
                        .map_err(|e| Error::Unsupported(format!("RSA key: {e}")))
                };
                Ok(KeyData::Rsa(RsaPublicKey {
                    e: mpint(&exponent.to_be_bytes())?,
                    n: mpint(modulus)?,
                }))
            }
            PublicParams::Ecc {
                curve: id, x, y, ..
            } => {
                let size = match *id {
                    curve::NIST_P256 => 32,
                    curve::NIST_P384 => 48,
                    curve::NIST_P521 => 66,
                    other => {
                        return Err(Error::Unsupported(format!("ECC curve 0x{other:04x}")));
                    }
                };
                let mut sec1 = vec![4u8];
                sec1.extend_from_slice(&left_pad(x, size)?);
                sec1.extend_from_slice(&left_pad(y, size)?);
                EcdsaPublicKey::from_sec1_bytes(&sec1)
                    .map(KeyData::Ecdsa)
                    .map_err(|e| Error::Unsupported(format!("ECC point: {e}")))
            }
        }
    }
}

/// Left-pads a big-endian coordinate to the field size; refuses longer ones.
pub(crate) fn left_pad(bytes: &[u8], size: usize) -> Result<Vec<u8>> {
    let trimmed = bytes
        .iter()
        .position(|&b| b != 0)
        .map_or(&[][..], |i| &bytes[i..]);
    if trimmed.len() > size || bytes.is_empty() {
        return Err(Error::Unsupported(format!(
            "ECC value of {} bytes for a {size}-byte field",
            bytes.len()
        )));
    }
    let mut out = vec![0; size - trimmed.len()];
    out.extend_from_slice(trimmed);
    Ok(out)
}

fn decode_symmetric(r: &mut Reader<'_>) -> Result<Option<SymDef>> {
    let algorithm = r.u16("symmetric.algorithm")?;
    match algorithm {
        alg::NULL => Ok(None),
        alg::AES | alg::SM4 | alg::CAMELLIA => Ok(Some(SymDef {
            algorithm,
            key_bits: r.u16("symmetric.keyBits")?,
            mode: r.u16("symmetric.mode")?,
        })),
        other => Err(r.error(format!(
            "symmetric algorithm {} is not allowed",
            alg_label(other)
        ))),
    }
}

/// Reads a scheme selector and the details its union member carries.
fn decode_scheme(r: &mut Reader<'_>, allowed: &[u16], field: &str) -> Result<Option<Scheme>> {
    let scheme = r.u16(field)?;
    if scheme == alg::NULL {
        return Ok(None);
    }
    if !allowed.contains(&scheme) {
        return Err(r.error(format!("{field} {} is not allowed here", alg_label(scheme))));
    }
    let hash = if scheme == alg::RSAES {
        0
    } else {
        r.u16(field)?
    };
    let count = if scheme == alg::ECDAA {
        r.u16(field)?
    } else {
        0
    };
    Ok(Some(Scheme {
        scheme,
        hash,
        count,
    }))
}

fn decode_rsa(r: &mut Reader<'_>) -> Result<PublicParams> {
    let symmetric = decode_symmetric(r)?;
    let scheme = decode_scheme(
        r,
        &[alg::RSASSA, alg::RSAPSS, alg::RSAES, alg::OAEP],
        "scheme",
    )?;
    let key_bits = r.u16("keyBits")?;
    let exponent = r.u32("exponent")?;
    let modulus = r.tpm2b(MAX_RSA_BYTES, "unique.rsa")?.to_vec();
    Ok(PublicParams::Rsa {
        symmetric,
        scheme,
        key_bits,
        exponent,
        modulus,
    })
}

fn decode_ecc(r: &mut Reader<'_>) -> Result<PublicParams> {
    let symmetric = decode_symmetric(r)?;
    let scheme = decode_scheme(
        r,
        &[
            alg::ECDSA,
            alg::ECDH,
            alg::ECDAA,
            alg::SM2,
            alg::ECSCHNORR,
            alg::ECMQV,
        ],
        "scheme",
    )?;
    let curve = r.u16("curveID")?;
    let kdf = decode_scheme(
        r,
        &[
            alg::MGF1,
            alg::KDF1_SP800_56A,
            alg::KDF2,
            alg::KDF1_SP800_108,
        ],
        "kdf",
    )?;
    let x = r.tpm2b(MAX_ECC_BYTES, "unique.ecc.x")?.to_vec();
    let y = r.tpm2b(MAX_ECC_BYTES, "unique.ecc.y")?.to_vec();
    Ok(PublicParams::Ecc {
        symmetric,
        scheme,
        curve,
        kdf,
        x,
        y,
    })
}
