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
    /// The agent could not take it (not running, or not ssh-tpm-agent); why, in words.
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
        Err(e) => Handover::Failed(socket, e.to_string()),
    }
}
