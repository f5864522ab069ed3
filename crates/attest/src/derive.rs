//! The values both sides derive from a session (docs/protocol.md, "Derived values"): the
//! device id, the OIDC nonce that binds an ID token to a CA session, and the qualifying data
//! that binds a quote and a key certification to the session and to the SSH key.

use sha2::{Digest as _, Sha256};

const OIDC_NONCE_LABEL: &[u8] = b"ssh-tpm-ca oidc nonce v1\0";
const QUALIFYING_DATA_LABEL: &[u8] = b"ssh-tpm-ca qualifying data v1\0";

/// Lowercase hex of SHA-256 over the EK certificate's DER `SubjectPublicKeyInfo`.
pub fn device_id(spki_der: &[u8]) -> String {
    hex(&Sha256::digest(spki_der))
}

/// `b64(SHA-256("ssh-tpm-ca oidc nonce v1\0" ‖ lp(session_id) ‖ lp(nonce)))`.
pub fn oidc_nonce(session_id: &str, nonce: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(OIDC_NONCE_LABEL);
    length_prefixed(&mut h, session_id.as_bytes());
    length_prefixed(&mut h, nonce);
    crate::b64::encode(&h.finalize())
}

/// `SHA-256("ssh-tpm-ca qualifying data v1\0" ‖ lp(session_id) ‖ lp(nonce) ‖
/// lp(ssh_key_blob))`, the `qualifyingData` of TPM2_Certify and TPM2_Quote.
pub fn qualifying_data(session_id: &str, nonce: &[u8], ssh_key_blob: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(QUALIFYING_DATA_LABEL);
    length_prefixed(&mut h, session_id.as_bytes());
    length_prefixed(&mut h, nonce);
    length_prefixed(&mut h, ssh_key_blob);
    h.finalize().into()
}

fn length_prefixed(h: &mut Sha256, bytes: &[u8]) {
    // Every input is far below 4 GiB (request bodies are capped at 64 KiB); saturate rather
    // than wrap should that ever change.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_is_lowercase_sha256_hex() {
        assert_eq!(
            device_id(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn inputs_are_length_prefixed() {
        // Moving a byte across the session id / nonce boundary changes the result.
        assert_ne!(oidc_nonce("ab", b"c"), oidc_nonce("a", b"bc"));
        assert_ne!(
            qualifying_data("s", b"n", b"k"),
            qualifying_data("s", b"nk", b"")
        );
        assert_eq!(oidc_nonce("s", b"n").len(), 43);
    }

    #[test]
    fn qualifying_data_by_hand() {
        let mut m = b"ssh-tpm-ca qualifying data v1\0".to_vec();
        m.extend_from_slice(&[0, 0, 0, 1, b's', 0, 0, 0, 2, 1, 2, 0, 0, 0, 0]);
        assert_eq!(
            qualifying_data("s", &[1, 2], b""),
            <[u8; 32]>::from(Sha256::digest(&m))
        );
    }
}
