//! Key constraints: limits a client sets when it adds a key (draft-miller-ssh-agent 3.2.7,
//! OpenSSH PROTOCOL.agent). `ssh-tpm-add` sends them after the certificate in the
//! `tpm-add-key` extension, in the same encoding as ADD_ID_CONSTRAINED.
//!
//! A constraint the agent does not know is refused with the whole request, as OpenSSH's
//! ssh-agent does: ignoring one would serve the key with fewer limits than its owner asked for.

use ssh_encoding::{Decode, Encode, Reader};

use crate::error::{Error, Result};

/// SSH_AGENT_CONSTRAIN_LIFETIME: `uint32 seconds`.
const LIFETIME: u8 = 1;
/// SSH_AGENT_CONSTRAIN_CONFIRM: no data.
const CONFIRM: u8 = 2;
/// SSH_AGENT_CONSTRAIN_MAXSIGN (XMSS keys only).
const MAXSIGN: u8 = 3;
/// SSH_AGENT_CONSTRAIN_EXTENSION: `string name`, then data the extension defines.
const EXTENSION: u8 = 255;
/// The destination constraint extension (PROTOCOL.agent section 2), set by `ssh-add -h`.
pub const RESTRICT_DESTINATION: &str = "restrict-destination-v00@openssh.com";
/// At most this many destinations on one key, as OpenSSH's ssh-agent.
const MAX_DESTINATIONS: usize = 1024;

/// The constraints of one added key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// Seconds the key stays in the agent.
    pub lifetime: Option<u32>,
    /// Every use must be confirmed by the user.
    pub confirm: bool,
    /// Where the key may be used (`ssh-add -h`); empty means anywhere.
    pub destinations: Vec<Destination>,
}

/// One permitted hop: from a host (or this machine) to a host, optionally as some user
/// (PROTOCOL.agent section 2, `constraint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub from: Hop,
    pub to: Hop,
}

/// One end of a [`Destination`]: a host known by its host keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hop {
    /// Only on `to`: a pattern for the user logged in to (`user@host`).
    pub user: Option<String>,
    /// The name the user gave; `None` on `from` means this machine.
    pub hostname: Option<String>,
    /// The host's keys, as wire blobs.
    pub keys: Vec<Vec<u8>>,
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
                    if name != RESTRICT_DESTINATION {
                        return Err(unsupported(format!("the constraint extension {name:?}")));
                    }
                    if !constraints.destinations.is_empty() {
                        return Err(bad("the destinations are given twice"));
                    }
                    let list = Vec::<u8>::decode(reader).map_err(|_| bad("destinations"))?;
                    constraints.destinations = decode_destinations(&list)?;
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
        if !self.destinations.is_empty() {
            let mut list = Vec::new();
            for destination in &self.destinations {
                put_string(&mut list, &destination.encode());
            }
            out.push(EXTENSION);
            put_string(&mut out, RESTRICT_DESTINATION.as_bytes());
            put_string(&mut out, &list);
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
        if !self.destinations.is_empty() {
            let hops: Vec<String> = self
                .destinations
                .iter()
                .map(Destination::describe)
                .collect();
            parts.push(format!("only for {}", hops.join(", ")));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Destination {
    /// `string from`, `string to`, `string reserved` (empty).
    fn decode(mut bytes: &[u8]) -> Result<Self> {
        let reader = &mut bytes;
        let from = Vec::<u8>::decode(reader).map_err(|_| bad("destination origin"))?;
        let to = Vec::<u8>::decode(reader).map_err(|_| bad("destination"))?;
        let reserved = Vec::<u8>::decode(reader).map_err(|_| bad("destination"))?;
        if !reserved.is_empty() || !reader.is_empty() {
            return Err(unsupported("a destination with extensions".into()));
        }
        let destination = Destination {
            from: Hop::decode(&from)?,
            to: Hop::decode(&to)?,
        };
        // The checks of OpenSSH's ssh-agent (parse_dest_constraint).
        if destination.from.user.is_some()
            || destination.from.hostname.is_none() != destination.from.keys.is_empty()
        {
            return Err(bad("inconsistent origin of a destination"));
        }
        if destination.to.hostname.is_none() || destination.to.keys.is_empty() {
            return Err(bad("a destination without host or host keys"));
        }
        Ok(destination)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, &self.from.encode());
        put_string(&mut out, &self.to.encode());
        put_string(&mut out, b"");
        out
    }

    /// `host`, `user@host` or `a>b`, as given to `ssh-add -h`.
    pub fn describe(&self) -> String {
        match &self.from.hostname {
            Some(from) => format!("{from}>{}", self.to.describe()),
            None => self.to.describe(),
        }
    }
}

impl Hop {
    /// `string user`, `string hostname`, `string reserved` (empty), then
    /// (`string key blob`, `bool is_ca`) to the end.
    fn decode(mut bytes: &[u8]) -> Result<Self> {
        let reader = &mut bytes;
        let text = |reader: &mut &[u8]| {
            String::decode(reader)
                .map(|s| Some(s).filter(|s| !s.is_empty()))
                .map_err(|_| bad("destination host"))
        };
        let user = text(reader)?;
        let hostname = text(reader)?;
        let reserved = Vec::<u8>::decode(reader).map_err(|_| bad("destination host"))?;
        if !reserved.is_empty() {
            return Err(unsupported("a destination host with extensions".into()));
        }
        let mut keys = Vec::new();
        while !reader.is_empty() {
            let blob = Vec::<u8>::decode(reader).map_err(|_| bad("host key"))?;
            let is_ca = u8::decode(reader).map_err(|_| bad("host key"))?;
            if is_ca != 0 {
                return Err(unsupported(
                    "a host certificate authority (@cert-authority) as destination".into(),
                ));
            }
            keys.push(blob);
        }
        Ok(Hop {
            user,
            hostname,
            keys,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, self.user.as_deref().unwrap_or("").as_bytes());
        put_string(&mut out, self.hostname.as_deref().unwrap_or("").as_bytes());
        put_string(&mut out, b"");
        for key in &self.keys {
            put_string(&mut out, key);
            out.push(0);
        }
        out
    }

    fn describe(&self) -> String {
        let host = self.hostname.as_deref().unwrap_or("(this machine)");
        match &self.user {
            Some(user) => format!("{user}@{host}"),
            None => host.to_string(),
        }
    }
}

/// The destinations of a restrict-destination constraint: each one a `string`.
fn decode_destinations(mut list: &[u8]) -> Result<Vec<Destination>> {
    let reader = &mut list;
    let mut destinations = Vec::new();
    while !reader.is_empty() {
        if destinations.len() >= MAX_DESTINATIONS {
            return Err(bad("more than 1024 destinations"));
        }
        let one = Vec::<u8>::decode(reader).map_err(|_| bad("destination"))?;
        destinations.push(Destination::decode(&one)?);
    }
    if destinations.is_empty() {
        return Err(bad("an empty list of destinations"));
    }
    Ok(destinations)
}

/// Appends `value` as a wire `string`.
fn put_string(out: &mut Vec<u8>, value: &[u8]) {
    // Writing to a Vec fails only past 4 GiB, which these few host keys never reach.
    let _ = value.encode(out);
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
            ..Constraints::default()
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

    fn hop(user: Option<&str>, host: Option<&str>, keys: &[&[u8]]) -> Hop {
        Hop {
            user: user.map(str::to_string),
            hostname: host.map(str::to_string),
            keys: keys.iter().map(|k| k.to_vec()).collect(),
        }
    }

    #[test]
    fn destinations_round_trip_and_describe() {
        let constraints = Constraints {
            destinations: vec![
                Destination {
                    from: Hop::default(),
                    to: hop(None, Some("bastion"), &[b"key-a"]),
                },
                Destination {
                    from: hop(None, Some("bastion"), &[b"key-a"]),
                    to: hop(Some("deploy"), Some("db"), &[b"key-b", b"key-c"]),
                },
            ],
            ..Constraints::default()
        };
        let wire = constraints.encode();
        assert_eq!(wire[0], 255);
        assert_eq!(Constraints::decode(&wire).expect("decodes"), constraints);
        assert_eq!(
            constraints.describe(),
            "only for bastion, bastion>deploy@db"
        );
    }

    #[test]
    fn inconsistent_destinations_are_refused() {
        let cases = [
            (Hop::default(), Hop::default(), "without host"),
            (Hop::default(), hop(None, Some("h"), &[]), "without host"),
            (
                hop(Some("u"), Some("a"), &[b"k"]),
                hop(None, Some("h"), &[b"k"]),
                "origin",
            ),
            (
                hop(None, Some("a"), &[]),
                hop(None, Some("h"), &[b"k"]),
                "origin",
            ),
        ];
        for (from, to, expected) in cases {
            let wire = Constraints {
                destinations: vec![Destination { from, to }],
                ..Constraints::default()
            }
            .encode();
            let refused = Constraints::decode(&wire).expect_err("refused");
            assert!(refused.to_string().contains(expected), "{refused}");
        }
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
