//! Decoders for the TPM 2.0 structures a client sends (TPM 2.0 Part 2): `TPMT_PUBLIC`
//! ([`Public`]), `TPMS_ATTEST` ([`Attest`]) and `TPMT_SIGNATURE` ([`Signature`]).
//!
//! The bytes come from the network, so decoding is strict and total: trailing bytes, unknown
//! selectors, sizes above the structure's maximum and truncation are errors, nothing panics,
//! and nothing is allocated from a length that has not been checked against the input.
//! Only what the CA needs is supported: RSA and ECC objects, certify and quote attestations,
//! RSA and ECDSA signatures with SHA-256 or SHA-384.

mod attest;
pub(crate) mod public;
mod reader;
mod signature;

pub use attest::{Attest, Attested, ClockInfo, PcrSelection};
pub use public::{ObjectAttributes, Public, PublicParams, Scheme, SymDef};
pub use signature::Signature;

use sha2::Digest as _;

/// `TPM_GENERATED_VALUE`, the magic of every `TPMS_ATTEST` the TPM made itself (Part 2, 6.2).
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_CERTIFY` (Part 2, 6.9).
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;
/// `TPM_ST_ATTEST_QUOTE` (Part 2, 6.9).
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// `TPM_ALG_ID` values used here (Part 2, 6.3).
pub mod alg {
    #![allow(missing_docs)]
    pub const RSA: u16 = 0x0001;
    pub const SHA1: u16 = 0x0004;
    pub const HMAC: u16 = 0x0005;
    pub const AES: u16 = 0x0006;
    pub const MGF1: u16 = 0x0007;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const XOR: u16 = 0x000a;
    pub const SHA256: u16 = 0x000b;
    pub const SHA384: u16 = 0x000c;
    pub const SHA512: u16 = 0x000d;
    pub const NULL: u16 = 0x0010;
    pub const SM3_256: u16 = 0x0012;
    pub const SM4: u16 = 0x0013;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    pub const ECDAA: u16 = 0x001a;
    pub const SM2: u16 = 0x001b;
    pub const ECSCHNORR: u16 = 0x001c;
    pub const ECMQV: u16 = 0x001d;
    pub const KDF1_SP800_56A: u16 = 0x0020;
    pub const KDF2: u16 = 0x0021;
    pub const KDF1_SP800_108: u16 = 0x0022;
    pub const ECC: u16 = 0x0023;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const CAMELLIA: u16 = 0x0026;
    pub const CFB: u16 = 0x0043;
}

/// `TPM_ECC_CURVE` values (Part 2, 6.4).
pub mod curve {
    #![allow(missing_docs)]
    pub const NIST_P256: u16 = 0x0003;
    pub const NIST_P384: u16 = 0x0004;
    pub const NIST_P521: u16 = 0x0005;
}

/// The hash algorithms accepted as a name algorithm or a signature's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// `TPM_ALG_SHA256`.
    Sha256,
    /// `TPM_ALG_SHA384`.
    Sha384,
    /// `TPM_ALG_SHA512`.
    Sha512,
}

impl HashAlg {
    /// The algorithm with this `TPM_ALG_ID`, if supported.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            alg::SHA256 => Some(Self::Sha256),
            alg::SHA384 => Some(Self::Sha384),
            alg::SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Its `TPM_ALG_ID`.
    pub fn id(self) -> u16 {
        match self {
            Self::Sha256 => alg::SHA256,
            Self::Sha384 => alg::SHA384,
            Self::Sha512 => alg::SHA512,
        }
    }

    /// The digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// A short name for messages: "sha256".
    pub fn label(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }
}

/// A short name for an algorithm id in messages.
pub fn alg_label(id: u16) -> String {
    let known = match id {
        alg::RSA => "rsa",
        alg::SHA1 => "sha1",
        alg::HMAC => "hmac",
        alg::AES => "aes",
        alg::KEYEDHASH => "keyedhash",
        alg::SHA256 => "sha256",
        alg::SHA384 => "sha384",
        alg::SHA512 => "sha512",
        alg::NULL => "null",
        alg::SM3_256 => "sm3_256",
        alg::RSASSA => "rsassa",
        alg::RSAES => "rsaes",
        alg::RSAPSS => "rsapss",
        alg::OAEP => "oaep",
        alg::ECDSA => "ecdsa",
        alg::ECDH => "ecdh",
        alg::ECDAA => "ecdaa",
        alg::SM2 => "sm2",
        alg::ECSCHNORR => "ecschnorr",
        alg::ECC => "ecc",
        alg::SYMCIPHER => "symcipher",
        _ => return format!("algorithm 0x{id:04x}"),
    };
    known.to_owned()
}
