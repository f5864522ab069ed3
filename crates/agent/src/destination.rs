//! Where a key may be used: the ssh sessions a client connection is bound to
//! (`session-bind@openssh.com`, OpenSSH PROTOCOL.agent section 1), and the check of a key's
//! destinations (`ssh-add -h`, section 2) against them, with the rules of OpenSSH's ssh-agent
//! (`identity_permitted` and `process_sign_request2` in ssh-agent.c, OpenSSH 8.9 and later).
//!
//! ssh binds each agent connection to the session it authenticates or forwards for, with the
//! server's signature of the session id. A connection that was forwarded through hosts A then
//! B carries the bindings A (forwarding) and B (authentication); a key restricted to
//! `A` and `A>B` may sign there, one restricted to `A` may not.

use ssh_agent_lib::proto::extension::SessionBind;
use ssh_encoding::Decode;

use crate::cert::key_blob;
use crate::constraint::Destination;
use crate::error::{Error, Result};
use crate::upstream::fingerprint;

/// The extension name.
pub const SESSION_BIND: &str = "session-bind@openssh.com";
/// At most this many bindings on one connection, as OpenSSH's ssh-agent.
const MAX_BINDINGS: usize = 16;
/// Session ids are hashes; OpenSSH's ssh-agent takes at most 128 bytes.
const MAX_SESSION_ID: usize = 128;
/// SSH_MSG_USERAUTH_REQUEST (RFC 4252).
const USERAUTH_REQUEST: u8 = 50;

/// One ssh session a connection is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The server's host key, as a wire blob.
    pub host_key: Vec<u8>,
    pub session_id: Vec<u8>,
    /// Bound to forward the agent onwards, rather than to authenticate to this host.
    pub forwarded: bool,
}

impl Binding {
    /// Reads a session-bind request (`string host key`, `string session id`, `string
    /// signature`, `bool is_forwarding`) and checks the host's signature of the session id.
    pub fn decode_and_verify(details: &[u8]) -> Result<Self> {
        let bind = SessionBind::decode(&mut &details[..])
            .map_err(|e| refused(format!("unreadable session-bind request: {e}")))?;
        let host_key =
            key_blob(&bind.host_key).map_err(|e| refused(format!("unreadable host key: {e}")))?;
        if bind.session_id.is_empty() || bind.session_id.len() > MAX_SESSION_ID {
            return Err(refused(format!(
                "a session id of {} bytes",
                bind.session_id.len()
            )));
        }
        bind.verify_signature().map_err(|_| {
            refused(format!(
                "the host key {} did not sign this session id",
                fingerprint(&host_key)
            ))
        })?;
        Ok(Binding {
            host_key,
            session_id: bind.session_id,
            forwarded: bind.is_forwarding,
        })
    }
}

/// Adds `binding` to a connection's `bindings`. False when it was there already; an error
/// when the connection was bound for authentication, or the session id is reused with
/// another host key (OpenSSH's `process_ext_session_bind`).
pub fn record(bindings: &mut Vec<Binding>, binding: Binding) -> Result<bool> {
    for old in bindings.iter() {
        if !old.forwarded {
            return Err(refused(
                "this connection is already bound to a session for authentication".into(),
            ));
        }
        if old.session_id == binding.session_id {
            if old.host_key == binding.host_key {
                return Ok(false);
            }
            return Err(refused(
                "this session id is bound to another host key".into(),
            ));
        }
    }
    if bindings.len() >= MAX_BINDINGS {
        return Err(refused(format!(
            "more than {MAX_BINDINGS} sessions on one connection"
        )));
    }
    bindings.push(binding);
    Ok(true)
}

/// Whether a key with `destinations` may be seen or used on a connection with `bindings`;
/// `user` is given for signatures only. Unconstrained keys, and connections that are not
/// bound (local use), pass. On success, the host the last hop goes to.
pub fn permitted(
    destinations: &[Destination],
    bindings: &[Binding],
    user: Option<&str>,
) -> std::result::Result<Option<String>, String> {
    let Some(last) = bindings.last() else {
        return Ok(None);
    };
    if destinations.is_empty() {
        return Ok(None);
    }
    let mut from: Option<&[u8]> = None;
    let mut host = None;
    for (i, binding) in bindings.iter().enumerate() {
        let is_last = i + 1 == bindings.len();
        // The user is known only for a signature, and only the last hop logs in.
        let test_user = if is_last {
            if binding.forwarded && user.is_some() {
                return Err("asked to sign on a hop bound for forwarding".into());
            }
            user
        } else if !binding.forwarded {
            return Err("asked to forward through a hop bound for authentication".into());
        } else {
            None
        };
        let Some(matched) = matching(destinations, from, Some(&binding.host_key), test_user) else {
            return Err(format!(
                "no destination allows {}host key {}{}",
                from.map(|k| format!("going from host key {} to ", fingerprint(k)))
                    .unwrap_or_default(),
                fingerprint(&binding.host_key),
                test_user
                    .map(|u| format!(" as user {u:?}"))
                    .unwrap_or_default()
            ));
        };
        host = matched.to.hostname.clone();
        from = Some(&binding.host_key);
    }
    // A key allowed to reach the last host but not to go beyond it stays hidden from a
    // connection forwarded to that host.
    if last.forwarded && user.is_none() && matching(destinations, from, None, None).is_none() {
        return Err("allowed at the last host, but not from there onwards".into());
    }
    Ok(host)
}

/// The first destination that allows going from `from` (this machine when `None`) to `to`
/// (any host when `None`) as `user`.
fn matching<'d>(
    destinations: &'d [Destination],
    from: Option<&[u8]>,
    to: Option<&[u8]>,
    user: Option<&str>,
) -> Option<&'d Destination> {
    destinations.iter().find(|d| {
        let from_ok = match from {
            None => d.from.hostname.is_none() && d.from.keys.is_empty(),
            Some(key) => d.from.keys.iter().any(|k| k == key),
        };
        let to_ok = to.is_none_or(|key| d.to.keys.iter().any(|k| k == key));
        let user_ok = match (&d.to.user, user) {
            (Some(pattern), Some(user)) => glob(user.as_bytes(), pattern.as_bytes()),
            _ => true,
        };
        from_ok && to_ok && user_ok
    })
}

/// OpenSSH's `match_pattern`: `*` is any run of characters, `?` any one.
pub(crate) fn glob(text: &[u8], pattern: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(&text[skip..], rest)),
        Some((&p, rest)) => match text.split_first() {
            Some((&t, text_rest)) if p == b'?' || p == t => glob(text_rest, rest),
            _ => false,
        },
    }
}

/// The parts of an ssh user authentication request (RFC 4252 7, and OpenSSH's
/// `publickey-hostbound-v00@openssh.com`) that a destination check needs.
#[derive(Debug, PartialEq, Eq)]
pub struct UserAuth {
    pub user: String,
    pub session_id: Vec<u8>,
    /// The server's host key, in the host-bound method.
    pub host_key: Option<Vec<u8>>,
}

/// Reads `data`, the bytes to sign, as a public-key user authentication for `key_blob`;
/// `None` when it is anything else (OpenSSH's `parse_userauth_request`).
pub fn parse_userauth(mut data: &[u8], key_blob: &[u8]) -> Option<UserAuth> {
    let reader = &mut data;
    let session_id = Vec::<u8>::decode(reader).ok().filter(|s| !s.is_empty())?;
    if u8::decode(reader).ok()? != USERAUTH_REQUEST {
        return None;
    }
    let user = String::decode(reader).ok()?;
    let service = String::decode(reader).ok()?;
    let method = String::decode(reader).ok()?;
    let signature_follows = u8::decode(reader).ok()?;
    let algorithm = String::decode(reader).ok()?;
    let key = Vec::<u8>::decode(reader).ok()?;
    if service != "ssh-connection"
        || signature_follows != 1
        || key != key_blob
        || !algorithm_fits(&algorithm, key_blob)
    {
        return None;
    }
    let host_key = match method.as_str() {
        "publickey-hostbound-v00@openssh.com" => Some(Vec::<u8>::decode(reader).ok()?),
        "publickey" => None,
        _ => return None,
    };
    reader.is_empty().then_some(UserAuth {
        user,
        session_id,
        host_key,
    })
}

/// Whether a signature algorithm is one for the key type the blob names (RFC 8332 adds the
/// SHA-2 names for RSA keys and certificates).
fn algorithm_fits(algorithm: &str, key_blob: &[u8]) -> bool {
    let Ok(key_type) = String::decode(&mut &key_blob[..]) else {
        return false;
    };
    algorithm == key_type
        || match key_type.as_str() {
            "ssh-rsa" => matches!(algorithm, "rsa-sha2-256" | "rsa-sha2-512"),
            "ssh-rsa-cert-v01@openssh.com" => matches!(
                algorithm,
                "rsa-sha2-256-cert-v01@openssh.com" | "rsa-sha2-512-cert-v01@openssh.com"
            ),
            _ => false,
        }
}

fn refused(reason: String) -> Error {
    Error::Protocol(format!("session-bind refused: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraint::Hop;

    const A: &[u8] = b"host-key-A";
    const B: &[u8] = b"host-key-B";
    const C: &[u8] = b"host-key-C";

    fn hop(host: &str, key: &[u8]) -> Hop {
        Hop {
            user: None,
            hostname: Some(host.into()),
            keys: vec![key.to_vec()],
        }
    }

    fn bound(key: &[u8], session: u8, forwarded: bool) -> Binding {
        Binding {
            host_key: key.to_vec(),
            session_id: vec![session; 32],
            forwarded,
        }
    }

    /// `ssh-add -h a -h 'a>b'`.
    fn a_then_b() -> Vec<Destination> {
        vec![
            Destination {
                from: Hop::default(),
                to: hop("a", A),
            },
            Destination {
                from: hop("a", A),
                to: hop("b", B),
            },
        ]
    }

    #[test]
    fn local_use_and_unconstrained_keys_pass() {
        assert_eq!(permitted(&a_then_b(), &[], Some("me")), Ok(None));
        assert_eq!(permitted(&[], &[bound(C, 1, false)], Some("me")), Ok(None));
    }

    #[test]
    fn hops_must_each_be_allowed() {
        let direct = [bound(A, 1, false)];
        assert_eq!(
            permitted(&a_then_b(), &direct, Some("me")),
            Ok(Some("a".into()))
        );
        let through_a = [bound(A, 1, true), bound(B, 2, false)];
        assert_eq!(
            permitted(&a_then_b(), &through_a, Some("me")),
            Ok(Some("b".into()))
        );
        // B directly, C through A, and B through C are not allowed.
        for bindings in [
            vec![bound(B, 1, false)],
            vec![bound(A, 1, true), bound(C, 2, false)],
            vec![bound(C, 1, true), bound(B, 2, false)],
        ] {
            let refused = permitted(&a_then_b(), &bindings, Some("me"));
            assert!(refused.is_err(), "{bindings:?}: {refused:?}");
        }
    }

    #[test]
    fn signing_needs_an_authentication_binding_last() {
        let forwarding_last = [bound(A, 1, true)];
        let refused = permitted(&a_then_b(), &forwarding_last, Some("me"));
        assert!(refused.expect_err("refused").contains("forwarding"));
        // Listing on that connection shows the key: it may go on from A to B.
        assert!(permitted(&a_then_b(), &forwarding_last, None).is_ok());
        // Restricted to A alone, the key is hidden from a connection forwarded to A.
        let only_a = &a_then_b()[..1];
        let hidden = permitted(only_a, &forwarding_last, None);
        assert!(hidden.expect_err("hidden").contains("onwards"));
    }

    #[test]
    fn user_patterns_are_matched_on_the_last_hop() {
        let mut destinations = a_then_b();
        destinations[0].to.user = Some("dep*".into());
        let direct = [bound(A, 1, false)];
        assert!(permitted(&destinations, &direct, Some("deploy")).is_ok());
        assert!(permitted(&destinations, &direct, Some("root")).is_err());
        assert!(permitted(&destinations, &direct, None).is_ok(), "lists");
        assert!(glob(b"abc", b"a?c") && glob(b"", b"*") && !glob(b"ab", b"a"));
    }

    #[test]
    fn bindings_follow_openssh_rules() {
        let mut bindings = Vec::new();
        assert!(record(&mut bindings, bound(A, 1, true)).expect("first"));
        assert!(!record(&mut bindings, bound(A, 1, true)).expect("again"));
        assert!(record(&mut bindings, bound(B, 1, true)).is_err(), "same id");
        assert!(record(&mut bindings, bound(B, 2, false)).expect("to B"));
        assert!(
            record(&mut bindings, bound(C, 3, true)).is_err(),
            "after auth"
        );
        assert_eq!(bindings.len(), 2);
    }

    /// A user authentication request as ssh builds it, in the host-bound method.
    fn userauth(key: &[u8], algorithm: &str, method: &str) -> Vec<u8> {
        use ssh_encoding::Encode;
        let mut data = Vec::new();
        [7u8; 32].as_slice().encode(&mut data).expect("encode");
        data.push(USERAUTH_REQUEST);
        for text in ["deploy", "ssh-connection", method] {
            text.encode(&mut data).expect("encode");
        }
        data.push(1);
        algorithm.encode(&mut data).expect("encode");
        key.encode(&mut data).expect("encode");
        if method != "publickey" {
            B.encode(&mut data).expect("encode");
        }
        data
    }

    #[test]
    fn userauth_requests_are_recognised() {
        let mut key = Vec::new();
        ssh_encoding::Encode::encode(&"ssh-rsa", &mut key).expect("encode");
        key.extend_from_slice(b"rest of the key");
        let hostbound = "publickey-hostbound-v00@openssh.com";
        let parsed = parse_userauth(&userauth(&key, "rsa-sha2-512", hostbound), &key);
        assert_eq!(
            parsed,
            Some(UserAuth {
                user: "deploy".into(),
                session_id: vec![7; 32],
                host_key: Some(B.to_vec()),
            })
        );
        let plain = parse_userauth(&userauth(&key, "ssh-rsa", "publickey"), &key);
        assert_eq!(plain.expect("publickey").host_key, None);

        assert_eq!(
            parse_userauth(&userauth(&key, "ssh-ed25519", hostbound), &key),
            None
        );
        assert_eq!(
            parse_userauth(&userauth(&key, "rsa-sha2-256", "password"), &key),
            None
        );
        assert_eq!(
            parse_userauth(&userauth(&key, "rsa-sha2-256", hostbound), b"x"),
            None
        );
        assert_eq!(parse_userauth(b"SSHSIG", &key), None);
    }
}
