//! The error of the CA's commands: what went wrong and what to do, in a line or two.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::store::StoreError;

/// Why an `ssh-tpm-ca` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The CA key, TLS key or trust anchors cannot be used.
    #[error("{0}")]
    Setup(String),
    /// The command's output could not be written (a closed pipe is not an error).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// The server stopped with an error.
    #[error("server error: {0}")]
    Serve(String),
}

impl CaError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
