//! OpenSSH certificates (PROTOCOL.certkeys) kept as the bytes they came in.
//!
//! The agent only hands certificates to clients and matches sign requests against them, so
//! it never needs more than their blob and the key inside. Keeping the blob also works around
//! ssh-key 0.6, which refuses certificates valid "forever" (valid_before = 2^64-1, what
//! `ssh-keygen -s` writes without `-V`); see RustCrypto/SSH#503, fixed after 0.6.7. When
//! ssh-key 0.7 is released, parsing could move back to `ssh_key::Certificate`.

use base64ct::Encoding;
use ssh_encoding::{Decode, Encode, Reader};
use ssh_key::public::KeyData;

use crate::error::{Error, Result};

const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// A certificate's wire blob, checked to be a certificate for some key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBlob(Vec<u8>);

impl CertBlob {
    /// Reads a `NAME-cert.pub` line: `TYPE BASE64 [COMMENT]`.
    pub fn from_openssh(line: &str) -> Result<Self> {
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(data)) = (fields.next(), fields.next()) else {
            return Err(bad(
                "not a certificate line (expected `TYPE BASE64 [COMMENT]`)",
            ));
        };
        let blob = base64ct::Base64::decode_vec(data)
            .map_err(|_| bad("the certificate's base64 is invalid"))?;
        let cert = CertBlob::from_bytes(blob)?;
        if cert.cert_type()? != kind {
            return Err(bad("the certificate's type does not match its line"));
        }
        Ok(cert)
    }

    /// Checks that `blob` starts like a certificate and keeps it.
    pub fn from_bytes(blob: Vec<u8>) -> Result<Self> {
        let cert = CertBlob(blob);
        let kind = cert.cert_type()?;
        if !kind.ends_with(CERT_SUFFIX) {
            return Err(bad("this is a plain key, not a certificate"));
        }
        Ok(cert)
    }

    /// The wire blob.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this certifies `key`: same algorithm, and the certificate's key fields
    /// (right after its nonce) are the key's.
    pub fn certifies(&self, key: &KeyData) -> bool {
        let Ok(plain) = key_blob(key) else {
            return false;
        };
        let mut plain_reader = &plain[..];
        let Ok(plain_type) = String::decode(&mut plain_reader) else {
            return false;
        };
        let mut reader = &self.0[..];
        let header = String::decode(&mut reader)
            .and_then(|kind| Ok((kind, Vec::<u8>::decode(&mut reader)?)));
        match header {
            Ok((cert_type, _nonce)) => {
                cert_type == format!("{}{CERT_SUFFIX}", plain_type.trim_end_matches(CERT_SUFFIX))
                    && reader.starts_with(plain_reader)
            }
            Err(_) => false,
        }
    }

    fn cert_type(&self) -> Result<String> {
        let mut reader = &self.0[..];
        let kind = String::decode(&mut reader).map_err(|_| bad("the certificate is truncated"))?;
        if reader.remaining_len() == 0 {
            return Err(bad("the certificate is truncated"));
        }
        Ok(kind)
    }
}

fn bad(reason: &str) -> Error {
    Error::Protocol(reason.to_string())
}

/// The wire encoding of a public key (RFC 4253 6.6): algorithm name, then its fields.
pub fn key_blob(key: &KeyData) -> ssh_encoding::Result<Vec<u8>> {
    let mut out = Vec::new();
    key.encode(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key and a certificate for it made by `ssh-keygen -s ca -I test -n user id.pub`
    /// (no -V: valid forever, which ssh-key 0.6 cannot parse).
    const KEY: &str = concat!(
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNNgaQDLQUVSTc2",
        "YDAesfFV7IiBxLDvk1lSqqX1i4VKye0W9MF0g0dGBeDyZkPduMX5HxllEQEaFmHWMrUO8tOE=",
    );

    fn key() -> KeyData {
        ssh_key::PublicKey::from_openssh(KEY)
            .expect("valid key")
            .key_data()
            .clone()
    }

    #[test]
    fn forever_certificate_is_kept_and_matched() {
        let cert = CertBlob::from_openssh(include_str!("../tests/fixtures/forever-cert.pub"))
            .expect("a forever certificate is accepted");
        assert!(cert.certifies(&key()));
        let other = ssh_key::PublicKey::from_openssh(concat!(
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD2MpILe",
            "ZjObbw9kMuOePaUH91MGDx+1HY6LyYZl5KYZj3/PGSEerHTDVfgeqsyxb+5hZc+MFyPG26iK+RCWL+E=",
        ))
        .expect("valid key");
        assert!(!cert.certifies(other.key_data()));
    }

    #[test]
    fn plain_keys_and_garbage_are_refused() {
        assert!(CertBlob::from_openssh(KEY).is_err());
        assert!(CertBlob::from_openssh("ecdsa-sha2-nistp256-cert-v01@openssh.com !!!").is_err());
        assert!(CertBlob::from_bytes(vec![0, 0, 0, 40]).is_err());
    }
}
