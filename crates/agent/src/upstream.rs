//! Other agents this one stands in front of (`ssh-tpm-agent -A SOCKET`): their keys are
//! listed with ours, and requests for keys we do not hold are passed to them as the bytes the
//! client sent (draft-miller-ssh-agent framing, section 3).
//!
//! Each request dials the other agent afresh, so an agent that restarted is reached again at
//! the next request. An agent that cannot be reached, or refuses, makes the request fail with
//! its socket named: it is never reported as a success.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64ct::Encoding;
use sha2::{Digest, Sha256};
use ssh_encoding::Decode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::server::MAX_MESSAGE;

/// How long another agent may take to list its keys.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long another agent may take to sign, add or remove: it may be asking its user.
pub const USE_TIMEOUT: Duration = Duration::from_secs(120);

/// SSH_AGENT_IDENTITIES_ANSWER (draft-miller-ssh-agent 3.4).
const IDENTITIES_ANSWER: u8 = 12;
/// The request for it: SSH_AGENTC_REQUEST_IDENTITIES.
const REQUEST_IDENTITIES: [u8; 1] = [11];
/// SSH_AGENT_SUCCESS.
const SUCCESS: u8 = 6;

/// The agents to pass requests to, in the order given.
#[derive(Debug, Default)]
pub struct Upstreams {
    sockets: Vec<PathBuf>,
}

/// One identity as another agent listed it, kept as the bytes it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub blob: Vec<u8>,
    pub comment: Vec<u8>,
}

impl Upstreams {
    /// Agents listening on `sockets`, asked in this order.
    pub fn new(sockets: Vec<PathBuf>) -> Self {
        Upstreams { sockets }
    }

    /// The sockets, in order.
    pub fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }

    /// The agent plain keys are added to.
    pub fn first(&self) -> Option<&Path> {
        self.sockets.first().map(PathBuf::as_path)
    }
}

/// Sends `message` (without its length) to the agent at `socket` on a new connection, and
/// returns the body of its answer. The client's session-bind requests (`binds`) go first, so
/// that the other agent applies its own destination constraints to the same sessions; an
/// agent that refuses them (one without that extension) is still asked.
pub async fn call(
    socket: &Path,
    binds: &[Vec<u8>],
    message: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| failed(socket, format!("cannot connect: {e}")))?;
        for bind in binds {
            let answer = exchange(socket, &mut stream, bind).await?;
            if answer != [SUCCESS] {
                tracing::debug!(agent = %socket.display(), "session-bind not accepted");
            }
        }
        exchange(socket, &mut stream, message).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(failed(
                socket,
                format!("no answer within {} s", timeout.as_secs()),
            ))
        })
}

/// One request and its answer on an open connection.
async fn exchange(socket: &Path, stream: &mut UnixStream, message: &[u8]) -> Result<Vec<u8>> {
    // The message may hold a private key (ssh-add); the copy is wiped after sending.
    let mut frame = Zeroizing::new(Vec::with_capacity(4 + message.len()));
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    stream
        .write_all(&frame)
        .await
        .map_err(|e| failed(socket, format!("cannot send: {e}")))?;

    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .await
        .map_err(|e| failed(socket, format!("no answer: {e}")))?;
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > MAX_MESSAGE {
        return Err(failed(socket, format!("answered with {length} bytes")));
    }
    let mut answer = vec![0u8; length];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|e| failed(socket, format!("truncated answer: {e}")))?;
    Ok(answer)
}

/// The keys of the agent at `socket`, as it shows them to a client bound by `binds`.
pub async fn list(socket: &Path, binds: &[Vec<u8>]) -> Result<Vec<Listed>> {
    let answer = call(socket, binds, &REQUEST_IDENTITIES, LIST_TIMEOUT).await?;
    decode_identities(&answer)
        .ok_or_else(|| failed(socket, "answered the key list with something else".into()))
}

/// SSH_AGENT_IDENTITIES_ANSWER: `byte 12`, `uint32 count`, then count × (`string key blob`,
/// `string comment`).
fn decode_identities(mut answer: &[u8]) -> Option<Vec<Listed>> {
    let reader = &mut answer;
    if u8::decode(reader).ok()? != IDENTITIES_ANSWER {
        return None;
    }
    let count = u32::decode(reader).ok()?;
    // Each entry takes at least 8 bytes, so a lying count cannot make us allocate much.
    let mut keys = Vec::with_capacity((count as usize).min(reader.len() / 8));
    for _ in 0..count {
        keys.push(Listed {
            blob: Vec::decode(reader).ok()?,
            comment: Vec::decode(reader).ok()?,
        });
    }
    reader.is_empty().then_some(keys)
}

/// `SHA256:...` of a key blob, as ssh-keygen -l prints it, for keys only another agent holds.
pub fn fingerprint(blob: &[u8]) -> String {
    let digest = Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64ct::Base64Unpadded::encode_string(&digest)
    )
}

fn failed(socket: &Path, reason: String) -> Error {
    Error::Upstream {
        socket: socket.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_answer_is_read_and_checked() {
        let mut answer = vec![12, 0, 0, 0, 2];
        for (blob, comment) in [(&b"key-1"[..], &b"one"[..]), (b"key-2", b"")] {
            answer.extend_from_slice(&(blob.len() as u32).to_be_bytes());
            answer.extend_from_slice(blob);
            answer.extend_from_slice(&(comment.len() as u32).to_be_bytes());
            answer.extend_from_slice(comment);
        }
        let keys = decode_identities(&answer).expect("decodes");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].blob, b"key-1");
        assert_eq!(keys[0].comment, b"one");
        assert_eq!(keys[1].comment, b"");

        let mut trailing = answer.clone();
        trailing.push(0);
        assert_eq!(decode_identities(&trailing), None);
        assert_eq!(decode_identities(&answer[..answer.len() - 1]), None);
        assert_eq!(decode_identities(&[5]), None, "FAILURE is not a list");
        assert_eq!(
            decode_identities(&[12, 0xff, 0xff, 0xff, 0xff]),
            None,
            "a count beyond the message"
        );
    }

    /// The fingerprint ssh-keygen -l prints for the same blob (an ed25519 key of zeros).
    #[test]
    fn fingerprint_matches_ssh_keygen() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[0; 32]);
        let expected = ssh_key::public::KeyData::decode(&mut &blob[..])
            .expect("an ed25519 key")
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string();
        assert_eq!(fingerprint(&blob), expected);
    }

    /// A socket nobody listens on is an error that names it.
    #[tokio::test]
    async fn unreachable_agent_is_an_error_naming_its_socket() {
        let socket = std::env::temp_dir().join(format!(
            "ssh-tpm-upstream-missing-{}.sock",
            std::process::id()
        ));
        let error = list(&socket, &[]).await.expect_err("nothing listens there");
        let text = error.to_string();
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
    }
}
