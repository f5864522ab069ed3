//! The embedded software TPM: a private `swtpm` whose state survives restarts.
//!
//! One process at a time owns the state directory (an exclusive `flock` on `lock`). swtpm
//! serves a single TCP connection at a time, so two ssh-tpm processes could not share one
//! instance anyway; the second is told who holds it. The instance is stopped in order
//! (TPM2_Shutdown by the caller, then the control channel's CMD_SHUTDOWN) so that its
//! dictionary-attack counter does not grow.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// swtpm control-channel command that saves state and exits (swtpm's `CMD_SHUTDOWN`).
const CMD_SHUTDOWN: u32 = 0x0003;
const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running swtpm owned by this process.
#[derive(Debug)]
pub struct EmbeddedSwtpm {
    child: Option<Child>,
    port: u16,
    _lock: File,
}

impl EmbeddedSwtpm {
    /// Starts swtpm on a free loopback port pair with its state in `state_dir`.
    pub fn start(state_dir: &Path) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| Error::io(format!("cannot create {}", state_dir.display()), e))?;
        let lock = take_lock(state_dir)?;
        stop_orphan(state_dir);

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port_pair()?;
            match spawn(state_dir, port) {
                Ok(child) => {
                    tracing::debug!(port, dir = %state_dir.display(), "embedded swtpm started");
                    return Ok(EmbeddedSwtpm {
                        child: Some(child),
                        port,
                        _lock: lock,
                    });
                }
                Err(e) => last_error = e,
            }
        }
        Err(Error::Swtpm(last_error))
    }

    /// The TCTI string that reaches this instance.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Asks swtpm to save its state and exit, then reaps it. The caller sends
    /// TPM2_Shutdown first, through its own connection, and closes that connection.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Err(e) = control(self.port + 1, CMD_SHUTDOWN) {
            tracing::debug!("swtpm control shutdown failed ({e}); killing it");
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for EmbeddedSwtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Takes the state directory's lock, or says which process holds it.
fn take_lock(state_dir: &Path) -> Result<File> {
    let path = state_dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(Error::Swtpm(format!(
            "the software TPM in {} is in use by another ssh-tpm process{}; stop it \
             (for example the running `ssh-tpm-agent --swtpm`) and try again",
            state_dir.display(),
            if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            },
        )));
    }
    file.set_len(0)
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(file)
}

/// Stops a swtpm left behind by a process that died while holding the lock.
fn stop_orphan(state_dir: &Path) {
    let pid_file = state_dir.join("swtpm.pid");
    let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let comm =
        fs::read_to_string(format!("/proc/{}/comm", pid.as_raw_nonzero())).unwrap_or_default();
    if comm.trim() == "swtpm" {
        tracing::warn!(
            pid = pid.as_raw_nonzero().get(),
            "stopping a leftover swtpm"
        );
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = fs::remove_file(pid_file);
}

/// A port `p` such that `p` and `p + 1` are both free on loopback right now.
fn free_port_pair() -> Result<u16> {
    for _ in 0..32 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("cannot bind a loopback port", e))?;
        let port = first
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))?
            .port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Swtpm("found no free pair of loopback ports".into()))
}

/// Starts swtpm and waits until its data port accepts connections.
fn spawn(state_dir: &Path, port: u16) -> std::result::Result<Child, String> {
    let pid_file: PathBuf = state_dir.join("swtpm.pid");
    let log_path = state_dir.join("swtpm.log");
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut child = Command::new("swtpm")
        .arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={}", state_dir.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .arg("--pid")
        .arg(format!("file={}", pid_file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "swtpm is not installed; install it (Debian: apt-get install swtpm swtpm-tools)"
                    .to_string()
            }
            _ => format!("cannot start swtpm: {e}"),
        })?;

    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("swtpm exited at start ({status}): {}", log.trim()));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("swtpm did not listen on port {port} within 5 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends one command on swtpm's control channel and reads its 4-byte result.
fn control(port: u16, command: u32) -> std::io::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(&command.to_be_bytes())?;
    let mut result = [0u8; 4];
    stream.read_exact(&mut result)?;
    match u32::from_be_bytes(result) {
        0 => Ok(()),
        rc => Err(std::io::Error::other(format!(
            "swtpm control result {rc:#x}"
        ))),
    }
}
