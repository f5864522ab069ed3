//! A throwaway swtpm for one benchmark phase: fresh state, TCP data and control ports on
//! loopback (the proxy sits in front of them), stopped and its state left to the caller.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{self, Process};

/// swtpm's control command that saves the state and exits (CMD_SHUTDOWN).
const CMD_SHUTDOWN: u32 = 0x0003;

/// A running swtpm; stopped when dropped.
pub struct Swtpm {
    port: u16,
    process: Process,
}

impl Swtpm {
    /// Starts swtpm with its state in `dir` (created if missing) on a free port pair.
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port_pair()?;
            let mut process = Process::spawn(
                "swtpm",
                Command::new("swtpm")
                    .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
                    .arg("--tpmstate")
                    .arg(format!("dir={}", dir.display()))
                    .arg("--server")
                    .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                    .arg("--ctrl")
                    .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1)),
                &dir.join("swtpm.log"),
            )?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let ready = process::wait_for("swtpm to listen", Duration::from_secs(5), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok()
            });
            match ready.and_then(|_| process.check_running()) {
                Ok(()) => return Ok(Swtpm { port, process }),
                // Someone took the port between our check and swtpm's bind: try another.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Setup("swtpm did not start".into())))
    }

    /// The data port; the control port is the next one.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCTI string that reaches this swtpm directly.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stops swtpm in order (its control channel's CMD_SHUTDOWN saves the state), so that
    /// its state directory can be copied or reused.
    pub fn shutdown(mut self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port + 1));
        let ordered =
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(&CMD_SHUTDOWN.to_be_bytes())?;
                let mut result = [0u8; 4];
                s.read_exact(&mut result)
            });
        if ordered.is_ok() {
            let _ = process::wait_for("swtpm to exit", Duration::from_secs(3), || {
                self.process.check_running().err()
            });
        }
        self.process.stop();
    }
}

/// Copies the files of a stopped swtpm's state directory (not its log) into `to`, so that
/// a second swtpm has the same seeds and loads the same key files.
pub fn copy_state(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("tpm2-") {
            std::fs::copy(entry.path(), to.join(&name))
                .map_err(|e| Error::io(format!("copying {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}

/// A port `p` such that `p` and `p + 1` are both free on loopback right now.
fn free_port_pair() -> Result<u16> {
    for _ in 0..64 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding a loopback port", e))?;
        let port = first
            .local_addr()
            .map_err(|e| Error::io("binding a loopback port", e))?
            .port();
        if port < u16::MAX - 1 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Setup("found no free pair of loopback ports".into()))
}
