//! The `tpm-add-key` extension: how `ssh-tpm-add` hands a key file to the agent.
//!
//! The wire format is the Go ssh-tpm-agent's, so its scripts keep working: the extension
//! (SSH_AGENTC_EXTENSION, draft-miller-ssh-agent 3.8) named `tpm-add-key` carries
//! `byte 17 (or 25)`, `string "TPMKEY"`, `string key file`, `string certificate blob`
//! (empty for none), then key constraints to the end (see [`crate::constraint`]). Like the
//! Go tool, the first byte is 17 even when constraints follow.

use ssh_encoding::{Decode, Encode};
use ssh_tpm_keyfile::TpmKey;

use crate::cert::CertBlob;
use crate::constraint::Constraints;
use crate::error::{Error, Result};

/// The extension name.
pub const EXTENSION: &str = "tpm-add-key";
const KEY_TYPE: &str = "TPMKEY";
const ADD_IDENTITY: u8 = 17;
const ADD_ID_CONSTRAINED: u8 = 25;

/// A decoded `tpm-add-key` request.
#[derive(Debug)]
pub struct AddKey {
    pub key: TpmKey,
    pub certificate: Option<CertBlob>,
    pub constraints: Constraints,
}

/// Encodes the extension contents for `key` (PEM), an optional certificate and the key's
/// constraints.
pub fn encode(
    key: &TpmKey,
    certificate: Option<&CertBlob>,
    constraints: &Constraints,
) -> Result<Vec<u8>> {
    let mut out = vec![ADD_IDENTITY];
    let cert = certificate.map_or(&[][..], CertBlob::as_bytes);
    let pem = key.to_pem();
    let fields: [&[u8]; 3] = [KEY_TYPE.as_bytes(), pem.as_bytes(), cert];
    for field in fields {
        field
            .encode(&mut out)
            .map_err(|e| Error::Protocol(e.to_string()))?;
    }
    out.extend_from_slice(&constraints.encode());
    Ok(out)
}

/// Decodes the extension contents.
pub fn decode(mut contents: &[u8]) -> Result<AddKey> {
    let bad = |what: &str| Error::Protocol(format!("malformed tpm-add-key request: {what}"));
    let reader = &mut contents;
    match u8::decode(reader).map_err(|_| bad("empty"))? {
        ADD_IDENTITY | ADD_ID_CONSTRAINED => {}
        other => return Err(bad(&format!("message type {other}, expected 17 or 25"))),
    }
    let key_type = String::decode(reader).map_err(|_| bad("key type"))?;
    if key_type != KEY_TYPE {
        return Err(bad(&format!("key type {key_type:?}, expected \"TPMKEY\"")));
    }
    let key_bytes = Vec::<u8>::decode(reader).map_err(|_| bad("key file"))?;
    let cert_bytes = Vec::<u8>::decode(reader).map_err(|_| bad("certificate"))?;
    let key = TpmKey::from_bytes(&key_bytes).map_err(|e| Error::Protocol(e.to_string()))?;
    let certificate = if cert_bytes.is_empty() {
        None
    } else {
        Some(CertBlob::from_bytes(cert_bytes)?)
    };
    let constraints = Constraints::decode(reader)?;
    Ok(AddKey {
        key,
        certificate,
        constraints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_without_certificate() {
        let key = TpmKey::new_loadable(0x4000_0001, vec![0, 2, 1, 2], vec![0, 1, 7], true);
        let wire = encode(&key, None, &Constraints::default()).expect("encodes");
        assert_eq!(wire[0], 17);
        assert_eq!(&wire[1..11], b"\0\0\0\x06TPMKEY");
        let decoded = decode(&wire).expect("decodes");
        assert_eq!(decoded.key, key);
        assert!(decoded.certificate.is_none());
        assert!(decoded.constraints.is_empty());
    }

    /// Constraints follow the (empty) certificate string, as the Go tool writes them.
    #[test]
    fn constraints_follow_the_certificate() {
        let key = TpmKey::new_loadable(0x4000_0001, vec![0, 2, 1, 2], vec![0, 1, 7], true);
        let constraints = Constraints {
            lifetime: Some(2),
            confirm: true,
            ..Constraints::default()
        };
        let wire = encode(&key, None, &constraints).expect("encodes");
        assert_eq!(wire[0], 17, "the Go tool sends 17 with constraints too");
        assert!(wire.ends_with(&[0, 0, 0, 0, 1, 0, 0, 0, 2, 2]), "{wire:?}");
        assert_eq!(decode(&wire).expect("decodes").constraints, constraints);

        let mut unknown = wire.clone();
        unknown.push(9);
        let refused = decode(&unknown).expect_err("unknown constraint");
        assert!(
            refused.to_string().contains("constraint type 9"),
            "{refused}"
        );
    }

    #[test]
    fn refuses_other_key_types() {
        let mut wire = vec![17];
        "ssh-ed25519".encode(&mut wire).expect("encodes");
        let err = decode(&wire).expect_err("refused");
        assert!(err.to_string().contains("expected \"TPMKEY\""), "{err}");
    }
}
