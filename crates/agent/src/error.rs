//! Errors of the agent layer: why a request failed, in words for the agent's log.

use std::path::PathBuf;

/// What can go wrong while serving clients or loading keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no key in this agent matches the requested public key")]
    NoSuchKey,

    #[error("the agent is locked; unlock it with `ssh-add -X`")]
    Locked,

    #[error(
        "ssh-rsa (SHA-1) signatures are not offered; the client must ask for \
         rsa-sha2-256 or rsa-sha2-512"
    )]
    Sha1Refused,

    #[error("cannot ask for the PIN: {0}")]
    NoPrompt(String),

    #[error("the PIN prompt was cancelled or returned no PIN; the TPM was not asked")]
    PromptCancelled,

    #[error("{path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },

    #[error("socket {path}: {reason}")]
    Socket { path: PathBuf, reason: String },

    #[error("{0}")]
    Protocol(String),

    #[error(transparent)]
    Tpm(#[from] ssh_tpm_tpm::Error),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
