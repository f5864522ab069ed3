//! The one error type of this crate's building blocks (decoders, signatures, credentials,
//! certificates). The CA's policy checks wrap these in a [`crate::Rejection`] that carries the
//! protocol's refusal code.

/// What went wrong while decoding, verifying or computing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not the structure they claim to be.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The structure being read, e.g. "TPMT_PUBLIC".
        what: &'static str,
        /// Where and why it failed.
        detail: String,
    },
    /// A well-formed structure using an algorithm or form this crate does not accept.
    #[error("unsupported {0}")]
    Unsupported(String),
    /// A signature that does not verify.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    /// An EK certificate that does not chain to a configured trust anchor.
    #[error("EK certificate is not trusted: {0}")]
    Untrusted(String),
    /// A cryptographic operation failed (bad key, RNG failure).
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }
}
