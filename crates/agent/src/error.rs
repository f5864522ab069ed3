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

    /// The last wrong PIN the TPM accepted before its dictionary-attack lockout.
    #[error(
        "wrong PIN, and that was the last try: the TPM is now locking PIN keys; wait for the \
         lockout to end, or reset it with the lockout password \
         (`tpm2_dictionarylockout --clear-lockout`)"
    )]
    PinLockedOut,

    /// The key file's emptyAuth flag says "no PIN", but the TPM object has one.
    #[error(
        "the key file claims the key has no PIN (emptyAuth TRUE), but the TPM refused an \
         empty one and counted a failed try; the file's emptyAuth flag is wrong: re-create \
         the key file, or report a bug to the program that wrote it"
    )]
    EmptyAuthRefused,

    /// A key added with `-c` whose use the user refused, or could not be asked about.
    #[error("the user did not allow this use of the key (it was added with -c)")]
    NotConfirmed,

    /// A key with destinations (`-h`) asked to do something they do not allow.
    #[error("its destinations (set with -h) do not allow to {0}")]
    NotPermitted(String),

    /// Another agent (`-A SOCKET`) failed or refused.
    #[error("the agent at {socket}: {reason}")]
    Upstream { socket: PathBuf, reason: String },

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
