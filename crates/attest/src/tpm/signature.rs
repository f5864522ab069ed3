//! `TPMT_SIGNATURE` (TPM 2.0 Part 2, 11.3.4) for RSASSA, RSAPSS and ECDSA with SHA-256 or
//! SHA-384: the forms an AK's certify and quote signatures take.

use super::reader::Reader;
use super::{alg, alg_label, HashAlg};
use crate::error::{Error, Result};

const WHAT: &str = "TPMT_SIGNATURE";
/// `MAX_RSA_KEY_BYTES` for 4096-bit keys.
const MAX_RSA_BYTES: usize = 512;
/// `MAX_ECC_KEY_BYTES` for P-521.
const MAX_ECC_BYTES: usize = 66;

/// A decoded `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// The digest algorithm.
        hash: HashAlg,
        /// The signature, big-endian, the modulus' size.
        sig: Vec<u8>,
    },
    /// RSASSA-PSS.
    RsaPss {
        /// The digest algorithm.
        hash: HashAlg,
        /// The signature, big-endian, the modulus' size.
        sig: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// The digest algorithm.
        hash: HashAlg,
        /// `signatureR`, big-endian.
        r: Vec<u8>,
        /// `signatureS`, big-endian.
        s: Vec<u8>,
    },
}

impl Signature {
    /// Decodes a `TPMT_SIGNATURE`, refusing trailing bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for truncated or oversized fields; [`Error::Unsupported`] for
    /// other signature schemes and digests.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, WHAT);
        let sig_alg = r.u16("sigAlg")?;
        if ![alg::RSASSA, alg::RSAPSS, alg::ECDSA].contains(&sig_alg) {
            return Err(Error::Unsupported(format!(
                "signature scheme {} (only rsassa, rsapss and ecdsa)",
                alg_label(sig_alg)
            )));
        }
        let hash_id = r.u16("hash")?;
        let hash = match HashAlg::from_id(hash_id) {
            Some(h @ (HashAlg::Sha256 | HashAlg::Sha384)) => h,
            _ => {
                return Err(Error::Unsupported(format!(
                    "signature digest {} (only sha256 and sha384)",
                    alg_label(hash_id)
                )))
            }
        };
        let out = match sig_alg {
            alg::RSASSA => Self::RsaSsa {
                hash,
                sig: r.tpm2b(MAX_RSA_BYTES, "sig")?.to_vec(),
            },
            alg::RSAPSS => Self::RsaPss {
                hash,
                sig: r.tpm2b(MAX_RSA_BYTES, "sig")?.to_vec(),
            },
            _ => Self::Ecdsa {
                hash,
                r: r.tpm2b(MAX_ECC_BYTES, "signatureR")?.to_vec(),
                s: r.tpm2b(MAX_ECC_BYTES, "signatureS")?.to_vec(),
            },
        };
        r.finish()?;
        Ok(out)
    }

    /// The digest algorithm of the signature.
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } | Self::Ecdsa { hash, .. } => {
                *hash
            }
        }
    }

    /// The `TPM_ALG_ID` of the scheme.
    pub fn scheme(&self) -> u16 {
        match self {
            Self::RsaSsa { .. } => alg::RSASSA,
            Self::RsaPss { .. } => alg::RSAPSS,
            Self::Ecdsa { .. } => alg::ECDSA,
        }
    }
}
