//! The binaries' error type: one line for the user, naming what to do next.

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error(transparent)]
    Tpm(#[from] ssh_tpm_tpm::Error),

    #[error(transparent)]
    Agent(#[from] ssh_tpm_agent_core::Error),

    #[error("{path}: {source}")]
    KeyFile {
        path: String,
        source: ssh_tpm_keyfile::Error,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The user declined, or input was invalid; the message says which.
    #[error("{0}")]
    Usage(String),
}

pub use ssh_tpm_agent_core::keyring::UNREADABLE_KEY_HINT;

impl CliError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            what: what.into(),
            source,
        }
    }

    /// `cannot read PATH: ...` for a key file; a permission error gets
    /// [`UNREADABLE_KEY_HINT`] after it.
    pub fn read_key_file(path: &std::path::Path, source: std::io::Error) -> Self {
        let source = if source.kind() == std::io::ErrorKind::PermissionDenied {
            std::io::Error::new(source.kind(), format!("{source}; {UNREADABLE_KEY_HINT}"))
        } else {
            source
        };
        CliError::io(format!("cannot read {}", path.display()), source)
    }
}
