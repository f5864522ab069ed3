//! base64url without padding (RFC 4648 §5), the encoding of every binary field in the
//! protocol. Decoding is strict: padding, whitespace and the standard alphabet are refused.

use base64ct::{Base64UrlUnpadded, Encoding as _};

use crate::error::{Error, Result};

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// Decodes unpadded base64url.
///
/// # Errors
///
/// [`Error::Malformed`] for any character outside the URL-safe alphabet, padding, or
/// non-canonical trailing bits.
pub fn decode(text: &str) -> Result<Vec<u8>> {
    Base64UrlUnpadded::decode_vec(text)
        .map_err(|_| Error::malformed("base64url", "expected unpadded base64url (RFC 4648 §5)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        assert_eq!(encode(b"\xfb\xff"), "-_8");
        assert_eq!(decode("-_8").unwrap(), b"\xfb\xff");
        assert!(decode("-_8=").is_err());
        assert!(decode("+/8").is_err());
        assert!(decode("-_9").is_err(), "non-zero trailing bits");
        assert!(decode("a b").is_err());
        assert_eq!(decode("").unwrap(), b"");
    }
}
