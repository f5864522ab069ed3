//! systemd socket activation, as sd_listen_fds(3) describes it: when `LISTEN_PID` is this
//! process and `LISTEN_FDS` is 1, the listening socket is file descriptor 3, bound by systemd.
//! The agent then neither binds nor removes a socket; systemd owns it.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The variables of the protocol; cleared once read, so that no child sees them.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The socket systemd passed, if it passed one to this process. Variables meant for another
/// process (a `LISTEN_PID` that is not ours) are ignored. Call this early, before other threads
/// start, as it clears the variables.
///
/// # Errors
///
/// When systemd passed sockets to us but not exactly one listening Unix stream socket.
pub fn listener() -> Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let ours = pid
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if !ours {
        return Ok(None);
    }
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    let fail = |reason: String| Error::Socket {
        path: "(socket from systemd)".into(),
        reason,
    };
    match count.as_deref().map(str::trim) {
        Some("1") => {}
        other => {
            return Err(fail(format!(
                "systemd passed LISTEN_FDS={}; the agent listens on exactly one socket, so give \
                 its .socket unit a single ListenStream=",
                other.unwrap_or("(unset)")
            )))
        }
    }
    // SAFETY: LISTEN_PID names this process, so systemd opened descriptor 3 for it, and no
    // other part of the agent knows of it: this `OwnedFd` is its only owner.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    check_listening_unix_stream(&fd).map_err(fail)?;
    let mut flags = rustix::io::fcntl_getfd(&fd).map_err(|e| fail(e.to_string()))?;
    flags |= rustix::io::FdFlags::CLOEXEC;
    rustix::io::fcntl_setfd(&fd, flags).map_err(|e| fail(e.to_string()))?;
    let listener = UnixListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(format!("cannot configure it: {e}")))?;
    Ok(Some(listener))
}

/// Where the socket systemd passed lives, when it has a path (not an abstract name).
pub fn socket_path(listener: &UnixListener) -> Option<PathBuf> {
    let address = listener.local_addr().ok()?;
    address.as_pathname().map(PathBuf::from)
}

/// Refuses a descriptor 3 that is not a listening Unix stream socket (say, a TCP socket from
/// a unit with `ListenStream=2222`), with the reason.
fn check_listening_unix_stream(fd: &OwnedFd) -> std::result::Result<(), String> {
    use rustix::net::{sockopt, AddressFamily, SocketType};

    let stat = rustix::fs::fstat(fd).map_err(|e| format!("descriptor 3: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err("descriptor 3 is not a socket".into());
    }
    let unix = rustix::net::getsockname(fd)
        .map(|address| address.address_family() == AddressFamily::UNIX)
        .unwrap_or(false);
    let stream = sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::STREAM);
    let listening = sockopt::socket_acceptconn(fd).unwrap_or(false);
    if unix && stream && listening {
        Ok(())
    } else {
        Err("descriptor 3 is not a listening Unix stream socket; use ListenStream=PATH".into())
    }
}
