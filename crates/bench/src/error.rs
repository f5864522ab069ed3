//! Errors of the benchmark: what failed, and where to look.

use std::path::PathBuf;

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, socket or process could not be used.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A program the benchmark drives failed; the message names it and its log.
    #[error("{0}")]
    Setup(String),

    /// An agent refused or garbled a request.
    #[error("agent at {}: {reason}", socket.display())]
    Agent { socket: PathBuf, reason: String },

    /// The TPM, reached directly for the floor figures, failed.
    #[error("TPM ({op}): {reason}")]
    Tpm { op: &'static str, reason: String },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn tpm(op: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Tpm {
            op,
            reason: reason.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
