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
    /// What went wrong, without the words a message that names the field already says
    /// ("ak_public is not a usable TPMT_PUBLIC: truncated …", "the quote is not signed by the
    /// device's AK: ECDSA signature does not match").
    pub fn reason(&self) -> String {
        match self {
            Self::Malformed { detail, .. } | Self::BadSignature(detail) => detail.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_leaves_out_the_structure() {
        let e = Error::malformed("TPMT_PUBLIC", "3 trailing bytes at byte 88");
        assert_eq!(
            e.to_string(),
            "malformed TPMT_PUBLIC: 3 trailing bytes at byte 88"
        );
        assert_eq!(e.reason(), "3 trailing bytes at byte 88");
        let e = Error::Unsupported("TPM object type keyedhash".into());
        assert_eq!(e.reason(), "unsupported TPM object type keyedhash");
        let e = Error::BadSignature("ECDSA signature does not match".into());
        assert_eq!(e.reason(), "ECDSA signature does not match");
    }
}
