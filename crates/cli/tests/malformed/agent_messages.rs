//! Malformed agent messages sent to a running `ssh-tpm-agent` on swtpm: the client gets
//! SSH_AGENT_FAILURE (or the connection is closed, for a length out of bounds), the agent
//! logs the exact warning below and stays up, and the next client is served.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ssh_tpm_agent_core::addkey;
use ssh_tpm_agent_core::constraint::Constraints;
use ssh_tpm_keyfile::TpmKey;

use crate::support::{tempdir, Agent, Swtpm};

/// What the client gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Failure,
    /// SSH_AGENT_EXTENSION_FAILURE (draft-miller-ssh-agent 3.8).
    ExtensionFailure,
    Closed,
}

pub struct Case {
    pub name: &'static str,
    /// The message without its length prefix, or a whole raw frame when `raw`.
    pub message: Vec<u8>,
    pub raw: bool,
    pub reply: Reply,
    /// The agent's warning, from `WARN` on; empty when it logs none at the default level.
    pub log: &'static str,
}

fn string(bytes: &[u8]) -> Vec<u8> {
    [(bytes.len() as u32).to_be_bytes().to_vec(), bytes.to_vec()].concat()
}

fn message(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![kind];
    for field in fields {
        out.extend_from_slice(field);
    }
    out
}

fn extension(name: &str, details: &[u8]) -> Vec<u8> {
    message(27, &[&string(name.as_bytes()), details])
}

fn case(name: &'static str, message: Vec<u8>, reply: Reply, log: &'static str) -> Case {
    Case {
        name,
        message,
        raw: false,
        reply,
        log,
    }
}

fn raw(name: &'static str, frame: Vec<u8>, log: &'static str) -> Case {
    Case {
        name,
        message: frame,
        raw: true,
        reply: Reply::Closed,
        log,
    }
}

pub fn cases() -> Vec<Case> {
    use Reply::*;
    let key = TpmKey::from_bytes(&super::key_files::vector("ossl-p256-owner.tpm"))
        .expect("the vector reads");
    let add = addkey::encode(&key, None, &Constraints::default()).expect("encodes");
    let blob = string(b"not a key blob");
    let p256_blob = ssh_tpm_agent_core::AgentKey::new(key.clone(), None)
        .expect("an agent key")
        .public_blob;
    let with_bad_pem = {
        let mut out = vec![17];
        out.extend(string(b"TPMKEY"));
        out.extend(string(b"-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n"));
        out.extend(string(b""));
        out
    };
    let with_type = |kind: &[u8]| {
        let mut out = vec![17];
        out.extend(string(kind));
        out.extend(string(key.to_pem().as_bytes()));
        out.extend(string(b""));
        out
    };
    vec![
        case(
            "list with a body",
            vec![11, 0],
            Failure,
            r#"WARN request failed: malformed list request: 1 bytes after the message type, expected none"#,
        ),
        case(
            "sign, key blob cut",
            vec![13, 0, 0, 1, 0, 1],
            Failure,
            r#"WARN request failed: malformed sign request"#,
        ),
        case(
            "sign, no flags",
            message(13, &[&blob, &string(b"data")]),
            Failure,
            r#"WARN request failed: malformed sign request"#,
        ),
        case(
            "sign, trailing bytes",
            message(13, &[&blob, &string(b"data"), &[0, 0, 0, 0, 9]]),
            Failure,
            r#"WARN request failed: malformed sign request"#,
        ),
        case(
            "sign, unknown key",
            message(13, &[&string(&p256_blob), &string(b"data"), &[0; 4]]),
            Failure,
            r#"WARN request failed: no key in this agent or its -A agents is SHA256:g7kfT3+tD8ZwilgcrbqkJFRE6Suq0LRZuK3JvAm8W9M"#,
        ),
        case(
            "remove, trailing bytes",
            message(18, &[&blob, &[1]]),
            Failure,
            r#"WARN request failed: malformed remove request"#,
        ),
        case(
            "remove, unknown key",
            message(18, &[&blob]),
            Failure,
            r#"WARN request failed: no key in this agent or its -A agents is SHA256:JlrVCcaSiXARMgn6eZX6/2EGXCE2nM0r0GANCYzqpdI"#,
        ),
        case("protocol-1 request", vec![1], Failure, ""),
        case("unknown request type", vec![200, 1, 2], Failure, ""),
        case(
            "extension name cut",
            vec![27, 0, 0, 0, 9, b'q'],
            Failure,
            r#"WARN request failed: unreadable request of type 27: SSH encoding error: length invalid"#,
        ),
        case(
            "unknown extension",
            extension("nope@example.com", b""),
            ExtensionFailure,
            "",
        ),
        case(
            "tpm-add-key empty",
            extension(addkey::EXTENSION, b""),
            Failure,
            r#"WARN request failed: malformed tpm-add-key request: empty"#,
        ),
        case(
            "tpm-add-key message type",
            extension(addkey::EXTENSION, &[9]),
            Failure,
            r#"WARN request failed: malformed tpm-add-key request: message type 9, expected 17 or 25"#,
        ),
        case(
            "tpm-add-key key type",
            extension(addkey::EXTENSION, &with_type(b"ssh-ed25519")),
            Failure,
            r#"WARN request failed: malformed tpm-add-key request: key type "ssh-ed25519", expected "TPMKEY""#,
        ),
        case(
            "tpm-add-key broken PEM",
            extension(addkey::EXTENSION, &with_bad_pem),
            Failure,
            r#"WARN request failed: the key file's PEM encoding is broken: its `-----END TSS2 PRIVATE KEY-----` line is missing or damaged; copy the file again from where it was made"#,
        ),
        case(
            "tpm-add-key unknown constraint",
            extension(addkey::EXTENSION, &[add.clone(), vec![77]].concat()),
            Failure,
            r#"WARN request failed: constraint type 77 is not supported by this agent; the key was not added"#,
        ),
        case(
            "tpm-add-key lifetime cut",
            extension(addkey::EXTENSION, &[add.clone(), vec![1, 0]].concat()),
            Failure,
            r#"WARN request failed: malformed key constraints: truncated lifetime"#,
        ),
        case(
            "session-bind bad signature",
            extension(
                "session-bind@openssh.com",
                &[
                    string(&p256_blob),
                    string(&[7; 32]),
                    string(b"not a signature"),
                    vec![0],
                ]
                .concat(),
            ),
            Failure,
            r#"WARN request failed: session-bind refused: unreadable session-bind request: SSH key error: internal overflow error"#,
        ),
        case(
            "unlock, not locked",
            message(23, &[&string(b"pw")]),
            Failure,
            r#"WARN request failed: the agent is not locked"#,
        ),
        case(
            "lock, passphrase cut",
            vec![22, 0, 0, 0, 8, b'p'],
            Failure,
            r#"WARN request failed: unreadable request of type 22: SSH encoding error: length invalid"#,
        ),
        case(
            "plain key, no -A agent",
            message(17, &[&string(b"ssh-ed25519")]),
            Failure,
            r#"WARN request failed: plain (non-TPM) key cannot be held by this agent, which holds TPM keys only; add TPM keys with ssh-tpm-add, or start ssh-tpm-agent with -A SOCKET to hand other keys to another agent"#,
        ),
        case(
            "smartcard key",
            message(20, &[&string(b"/lib/p11.so"), &string(b"")]),
            Failure,
            r##"WARN request failed: smartcard (PKCS#11) key cannot be held by this agent, which holds TPM keys only; add TPM keys with ssh-tpm-add, or start ssh-tpm-agent with -A SOCKET to hand other keys to another agent"##,
        ),
        raw(
            "length over 256 KiB",
            vec![0, 4, 0, 1, 11],
            r#"WARN client sent an oversized or empty message; disconnecting length=262145"#,
        ),
        raw(
            "length zero",
            vec![0, 0, 0, 0],
            r#"WARN client sent an oversized or empty message; disconnecting length=0"#,
        ),
    ]
}

/// Sends `case` on a new connection; what came back.
fn send(socket: &std::path::Path, case: &Case) -> Reply {
    let mut stream = UnixStream::connect(socket).expect("connect to the agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let frame = if case.raw {
        case.message.clone()
    } else {
        string(&case.message)
    };
    stream.write_all(&frame).expect("send");
    let mut reply = Vec::new();
    let _ = stream.read_to_end_or_frame(&mut reply);
    match reply.as_slice() {
        [] => Reply::Closed,
        [0, 0, 0, 1, 5] => Reply::Failure,
        [0, 0, 0, 1, 28] => Reply::ExtensionFailure,
        other => panic!("{}: unexpected reply {other:?}", case.name),
    }
}

trait ReadFrame {
    fn read_to_end_or_frame(&mut self, out: &mut Vec<u8>) -> std::io::Result<()>;
}

impl ReadFrame for UnixStream {
    /// Reads one reply frame, or nothing when the agent closes the connection.
    fn read_to_end_or_frame(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut length = [0u8; 4];
        if self.read_exact(&mut length).is_err() {
            return Ok(());
        }
        let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
        self.read_exact(&mut body)?;
        out.extend_from_slice(&length);
        out.extend_from_slice(&body);
        Ok(())
    }
}

/// The warnings in `log`, from the level on.
fn warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| line.find("WARN").map(|at| line[at..].to_string()))
        .collect()
}

#[test]
fn malformed_agent_messages() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let agent = Agent::serve(&tpm, keys.path(), &[("SSH_ASKPASS_REQUIRE", "never")]);
    let mut results = Vec::new();
    for case in cases() {
        let before = warnings(&agent.stderr()).len();
        let reply = send(agent.socket(), &case);
        let after = warnings(&agent.stderr());
        let seen = after[before..].join(" | ");
        let seen = if reply == case.reply {
            seen
        } else {
            format!("(reply {reply:?}) {seen}")
        };
        results.push((case.name.to_string(), case.log.to_string(), seen));
    }
    // Still up: a plain list is answered.
    let list = send_list(agent.socket());
    assert_eq!(list, [0, 0, 0, 5, 12, 0, 0, 0, 0]);
    crate::check_all("agent-message", results);
}

fn send_list(socket: &std::path::Path) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).expect("connect to the agent");
    stream.write_all(&[0, 0, 0, 1, 11]).expect("send");
    let mut reply = vec![0u8; 9];
    stream.read_exact(&mut reply).expect("reply");
    reply
}
