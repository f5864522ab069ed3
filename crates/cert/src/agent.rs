//! Handing a renewed certificate to a running ssh-tpm-agent, with its key, through the
//! agent's `tpm-add-key` extension (the message `ssh-tpm-add` sends), so that the agent
//! serves the key with the new certificate at once.

use std::path::{Path, PathBuf};

use ssh_key::PublicKey;
use ssh_tpm_agent_core::cert::CertBlob;
use ssh_tpm_agent_core::client;
use ssh_tpm_agent_core::constraint::Constraints;
use ssh_tpm_agent_core::keyring::sibling;
use ssh_tpm_keyfile::TpmKey;

/// What became of the hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// The agent at this socket now serves the key with the certificate.
    Added(PathBuf),
    /// Neither `SSH_TPM_AUTH_SOCK` nor `SSH_AUTH_SOCK` is set.
    NoAgent,
    /// The agent at this socket is not ssh-tpm-agent (OpenSSH's ssh-agent, say): it does not
    /// answer the `query` extension, and cannot hold TPM keys.
    NotTpmAgent(PathBuf),
    /// The agent could not take it (not running, or it refused); why, in words.
    Failed(PathBuf, String),
}

impl std::fmt::Display for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handover::Added(socket) => write!(
                f,
                "the agent at {} now serves the key with the new certificate",
                socket.display()
            ),
            Handover::NoAgent => f.write_str(
                "no agent to tell (SSH_AUTH_SOCK is not set); ssh-tpm-agent picks the \
                 certificate up when it starts",
            ),
            Handover::NotTpmAgent(socket) => write!(
                f,
                "the agent at {} is not ssh-tpm-agent (OpenSSH's ssh-agent?) and cannot hold \
                 TPM keys; point SSH_TPM_AUTH_SOCK or SSH_AUTH_SOCK at ssh-tpm-agent's socket, \
                 or use --no-agent",
                socket.display()
            ),
            Handover::Failed(socket, reason) => write!(
                f,
                "could not give the certificate to the agent at {}: {reason}; ssh-tpm-add \
                 KEY.tpm adds key and certificate by hand",
                socket.display()
            ),
        }
    }
}

/// Sends the key file `key_path` (already read as `key`) and the certificate line `cert`
/// to the agent named by `$SSH_TPM_AUTH_SOCK` or `$SSH_AUTH_SOCK`. Never fails: the
/// certificate is on disk already, and the outcome says what happened.
pub fn hand_over(key_path: &Path, key: &TpmKey, cert: &str) -> Handover {
    let Ok(socket) = client::socket_from_env() else {
        return Handover::NoAgent;
    };
    let certificate = match CertBlob::from_openssh(cert.trim()) {
        Ok(certificate) => certificate,
        Err(e) => return Handover::Failed(socket, e.to_string()),
    };
    // The agent shows the key's description: the .pub comment, as ssh-tpm-add sends it.
    let mut key = key.clone();
    key.description = std::fs::read_to_string(sibling(key_path, ".pub"))
        .ok()
        .and_then(|text| PublicKey::from_openssh(text.trim()).ok())
        .map(|public| public.comment().to_string())
        .filter(|c| !c.is_empty())
        .or_else(|| Some(key_path.display().to_string()));
    match client::add_key(&socket, &key, Some(&certificate), &Constraints::default()) {
        Ok(()) => Handover::Added(socket),
        // An agent that answered, but no: is it ssh-tpm-agent at all?
        Err(e @ ssh_tpm_agent_core::Error::Protocol(_)) => match answers_query(&socket) {
            Some(false) => Handover::NotTpmAgent(socket),
            _ => Handover::Failed(socket, e.to_string()),
        },
        Err(e) => Handover::Failed(socket, e.to_string()),
    }
}

/// Whether the agent at `socket` answers the `query` extension (draft-miller-ssh-agent,
/// 3.8.1) with SSH_AGENT_EXTENSION_RESPONSE, as ssh-tpm-agent does; OpenSSH's ssh-agent
/// answers SSH_AGENT_FAILURE. `None` when the agent cannot be asked.
fn answers_query(socket: &Path) -> Option<bool> {
    use std::io::{Read as _, Write as _};
    const SSH_AGENTC_EXTENSION: u8 = 27;
    const SSH_AGENT_EXTENSION_RESPONSE: u8 = 29;

    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let timeout = Some(std::time::Duration::from_secs(5));
    stream.set_read_timeout(timeout).ok()?;
    stream.set_write_timeout(timeout).ok()?;
    let name = b"query";
    let mut message = vec![SSH_AGENTC_EXTENSION];
    message.extend_from_slice(&(name.len() as u32).to_be_bytes());
    message.extend_from_slice(name);
    let mut frame = (message.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&message);
    stream.write_all(&frame).ok()?;

    // The length, then the first byte: the answer's type.
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).ok()?;
    Some(head[4] == SSH_AGENT_EXTENSION_RESPONSE)
}
