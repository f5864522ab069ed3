//! The agent's listening socket: where it lives, who may create it, and who may talk to it.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The socket path: `-l`, else `$SSH_TPM_AUTH_SOCK`, else
/// `$XDG_RUNTIME_DIR/ssh-tpm-agent.sock`.
pub fn resolve(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = env("SSH_TPM_AUTH_SOCK") {
        return Ok(PathBuf::from(path));
    }
    match env("XDG_RUNTIME_DIR") {
        Some(dir) => Ok(PathBuf::from(dir).join("ssh-tpm-agent.sock")),
        None => Err(Error::Socket {
            path: PathBuf::from("$XDG_RUNTIME_DIR/ssh-tpm-agent.sock"),
            reason: "XDG_RUNTIME_DIR is not set; choose a socket with -l PATH".into(),
        }),
    }
}

/// Binds the socket (mode 0600). A missing directory is created 0700. A socket that
/// still answers belongs to a running agent and is left alone; one that does not is
/// stale and replaced. Anything else at the path is never removed.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let fail = |reason: String| Error::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(fail(
                    "an agent is already listening there; stop it or choose another -l".into(),
                ))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "replacing a stale socket");
                std::fs::remove_file(path)
                    .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
            }
            Err(e) => return Err(fail(format!("cannot tell whether it is in use: {e}"))),
        },
        Ok(_) => {
            return Err(fail(
                "the path exists and is not a socket; remove it or choose another -l".into(),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(format!("cannot listen: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("cannot make it private: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(format!("cannot configure it: {e}")))?;
    Ok(listener)
}

/// Whether a peer with this uid may use the agent: the same user, or root (who can read
/// the user's files anyway), as OpenSSH's ssh-agent decides.
pub fn peer_allowed(peer_uid: u32) -> bool {
    let own = rustix::process::getuid().as_raw();
    peer_uid == own || peer_uid == 0
}
