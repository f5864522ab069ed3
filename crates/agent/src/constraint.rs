//! Key constraints: limits a client sets when it adds a key (draft-miller-ssh-agent 3.2.7,
//! OpenSSH PROTOCOL.agent). `ssh-tpm-add` sends them after the certificate in the
//! `tpm-add-key` extension, in the same encoding as ADD_ID_CONSTRAINED.
//!
//! A constraint the agent does not know is refused with the whole request, as OpenSSH's
//! ssh-agent does: ignoring one would serve the key with fewer limits than its owner asked for.

use ssh_encoding::{Decode, Reader};

use crate::error::{Error, Result};

/// SSH_AGENT_CONSTRAIN_LIFETIME: `uint32 seconds`.
const LIFETIME: u8 = 1;
/// SSH_AGENT_CONSTRAIN_CONFIRM: no data.
const CONFIRM: u8 = 2;
/// SSH_AGENT_CONSTRAIN_MAXSIGN (XMSS keys only).
const MAXSIGN: u8 = 3;
/// SSH_AGENT_CONSTRAIN_EXTENSION: `string name`, then data the extension defines.
const EXTENSION: u8 = 255;

/// The constraints of one added key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// Seconds the key stays in the agent.
    pub lifetime: Option<u32>,
    /// Every use must be confirmed by the user.
    pub confirm: bool,
}

impl Constraints {
    /// True when the key is served without limits.
    pub fn is_empty(&self) -> bool {
        *self == Constraints::default()
    }

    /// Reads the constraints that fill `bytes` to the end.
    pub fn decode(mut bytes: &[u8]) -> Result<Self> {
        let reader = &mut bytes;
        let mut constraints = Constraints::default();
        while !reader.is_finished() {
            let kind = u8::decode(reader).map_err(|_| bad("truncated"))?;
            match kind {
                LIFETIME if constraints.lifetime.is_some() => {
                    return Err(bad("the lifetime is given twice"))
                }
                LIFETIME => {
                    let seconds = u32::decode(reader).map_err(|_| bad("truncated lifetime"))?;
                    constraints.lifetime = Some(seconds);
                }
                CONFIRM if constraints.confirm => return Err(bad("confirm is given twice")),
                CONFIRM => constraints.confirm = true,
                MAXSIGN => {
                    return Err(unsupported(
                        "a maximum signature count (for XMSS keys only)".into(),
                    ))
                }
                EXTENSION => {
                    let name = String::decode(reader).map_err(|_| bad("extension name"))?;
                    return Err(unsupported(format!("the constraint extension {name:?}")));
                }
                other => return Err(unsupported(format!("constraint type {other}"))),
            }
        }
        Ok(constraints)
    }

    /// The wire form, as [`Constraints::decode`] reads it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(seconds) = self.lifetime {
            out.push(LIFETIME);
            out.extend_from_slice(&seconds.to_be_bytes());
        }
        if self.confirm {
            out.push(CONFIRM);
        }
        out
    }

    /// For log lines: `lifetime 60 s, confirm each use`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(seconds) = self.lifetime {
            parts.push(format!("lifetime {seconds} s"));
        }
        if self.confirm {
            parts.push("confirm each use".to_string());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

fn bad(what: &str) -> Error {
    Error::Protocol(format!("malformed key constraints: {what}"))
}

fn unsupported(what: String) -> Error {
    Error::Protocol(format!(
        "{what} is not supported by this agent; the key was not added"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_and_confirm_round_trip() {
        let constraints = Constraints {
            lifetime: Some(90),
            confirm: true,
        };
        let wire = constraints.encode();
        assert_eq!(wire, [1, 0, 0, 0, 90, 2]);
        assert_eq!(Constraints::decode(&wire).expect("decodes"), constraints);
        assert_eq!(constraints.describe(), "lifetime 90 s, confirm each use");
    }

    /// What OpenSSH's ssh-add sends for `-c -t 2`: confirm, then lifetime.
    #[test]
    fn order_does_not_matter() {
        let decoded = Constraints::decode(&[2, 1, 0, 0, 0, 2]).expect("decodes");
        assert_eq!(decoded.lifetime, Some(2));
        assert!(decoded.confirm);
    }

    #[test]
    fn none_is_empty() {
        let decoded = Constraints::decode(&[]).expect("decodes");
        assert!(decoded.is_empty());
        assert!(decoded.encode().is_empty());
        assert_eq!(decoded.describe(), "none");
    }

    #[test]
    fn duplicates_truncation_and_unknown_constraints_are_refused() {
        let cases: [(&[u8], &str); 6] = [
            (&[2, 2], "twice"),
            (&[1, 0, 0, 0, 1, 1, 0, 0, 0, 1], "twice"),
            (&[1, 0, 0], "truncated lifetime"),
            (&[3, 0, 0, 0, 9], "XMSS"),
            (&[7], "constraint type 7"),
            (
                &[
                    255, 0, 0, 0, 23, b's', b'k', b'-', b'p', b'r', b'o', b'v', b'i', b'd', b'e',
                    b'r', b'@', b'o', b'p', b'e', b'n', b's', b's', b'h', b'.', b'c', b'o', b'm',
                ],
                "sk-provider@openssh.com",
            ),
        ];
        for (wire, expected) in cases {
            let refused = Constraints::decode(wire).expect_err("refused");
            assert!(
                refused.to_string().contains(expected),
                "{wire:?}: {refused}"
            );
        }
    }
}
