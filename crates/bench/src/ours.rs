//! Our side: keys made with `ssh-tpm-keygen`, served by `ssh-tpm-agent`, both reaching
//! swtpm through the counting proxy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent_client::AgentClient;
use crate::error::{Error, Result};
use crate::process::{self, Process};
use crate::proxy::{Counts, TpmProxy};

/// Where the release binaries are, and how a PIN reaches the agent.
#[derive(Debug, Clone)]
pub struct Ours {
    pub bin_dir: PathBuf,
    /// An `SSH_ASKPASS` program that prints the PIN (and counts its runs).
    pub askpass: PathBuf,
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    /// `ecdsa` or `rsa`.
    pub key_type: &'static str,
    pub bits: u32,
    pub pin: String,
}

impl Ours {
    /// `ssh-tpm-keygen -f DIR/NAME`, with the key's name as its comment.
    pub fn keygen(&self, tcti: &str, dir: &Path, key: &KeyRequest) -> Result<()> {
        process::run(
            "ssh-tpm-keygen",
            Command::new(self.bin_dir.join("ssh-tpm-keygen"))
                .args(["--tcti", tcti, "-t", key.key_type])
                .args(["-b", &key.bits.to_string(), "-N", &key.pin, "-C", &key.name])
                .arg("-f")
                .arg(dir.join(&key.name)),
        )
        .map(drop)
    }

    /// Starts the agent and waits until it lists `keys` keys. The start-up time runs from
    /// spawning the process to that answer.
    pub fn start_agent(
        &self,
        proxy: &TpmProxy,
        key_dir: &Path,
        socket: &Path,
        keys: usize,
        log: &Path,
    ) -> Result<RunningAgent> {
        let _ = std::fs::remove_file(socket);
        let before = proxy.counts();
        let started = Instant::now();
        let mut process = Process::spawn(
            "ssh-tpm-agent",
            Command::new(self.bin_dir.join("ssh-tpm-agent"))
                .args(["--tcti", &proxy.tcti()])
                .arg("-l")
                .arg(socket)
                .arg("--key-dir")
                .arg(key_dir)
                .env("SSH_ASKPASS", &self.askpass)
                .env("SSH_ASKPASS_REQUIRE", "force"),
            log,
        )?;
        let listed = process::wait_for(
            "ssh-tpm-agent to list its keys",
            Duration::from_secs(20),
            || {
                let mut client = AgentClient::connect(socket).ok()?;
                let count = client.list().ok()?.len();
                (count >= keys).then_some(count)
            },
        );
        let startup = started.elapsed();
        if let Err(e) = listed {
            process.check_running()?;
            return Err(e);
        }
        Ok(RunningAgent {
            startup,
            startup_counts: proxy.counts().since(&before),
            socket: socket.to_path_buf(),
            process,
        })
    }
}

/// A running `ssh-tpm-agent`.
pub struct RunningAgent {
    pub startup: Duration,
    /// TPM commands from spawning the agent to its first full key list.
    pub startup_counts: Counts,
    pub socket: PathBuf,
    process: Process,
}

impl RunningAgent {
    pub fn rss_kib(&self) -> u64 {
        process::rss_kib(self.process.pid())
    }

    /// Stops the agent (SIGTERM: it flushes what it loaded and closes the TPM).
    pub fn stop(mut self) -> Result<()> {
        self.process.check_running()?;
        self.process.stop();
        Ok(())
    }
}

/// Writes an askpass program that prints `pin` and appends a byte to `counter` each run.
pub fn write_askpass(path: &Path, counter: &Path, pin: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\nprintf x >> '{}'\necho '{pin}'\n",
        counter.display()
    );
    std::fs::write(path, script)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// How often the askpass program has run so far.
pub fn askpass_runs(counter: &Path) -> u64 {
    std::fs::metadata(counter).map_or(0, |m| m.len())
}
