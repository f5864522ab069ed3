//! The soak (issue 7): many clients signing through one `ssh-tpm-agent` for a long while,
//! each signature verified, with the agent's resident memory sampled every second. The
//! figures that matter are zero errors and a memory curve that stays flat.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent_client::{auth_data, AgentClient};
use crate::error::{Error, Result};
use crate::process::{self, Process};
use crate::swtpm::Swtpm;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Where ssh-tpm-agent and ssh-tpm-keygen are.
    pub bin_dir: PathBuf,
    /// Working directory: swtpm state, key, socket, logs.
    pub work: PathBuf,
    pub clients: usize,
    pub duration: Duration,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct SoakReport {
    pub clients: usize,
    pub duration: Duration,
    pub signatures: u64,
    pub errors: u64,
    /// The first few errors, as the clients saw them.
    pub first_errors: Vec<String>,
    /// (seconds since the start, agent VmRSS in KiB), once a second.
    pub rss: Vec<(u64, u64)>,
}

impl SoakReport {
    pub fn per_second(&self) -> f64 {
        self.signatures as f64 / self.duration.as_secs_f64()
    }

    /// VmRSS at the first sample, the middle one and the last one, in KiB.
    pub fn rss_start_middle_end(&self) -> (u64, u64, u64) {
        let at = |i: usize| self.rss.get(i).map_or(0, |s| s.1);
        let n = self.rss.len();
        (at(0), at(n / 2), at(n.saturating_sub(1)))
    }

    pub fn rss_max(&self) -> u64 {
        self.rss.iter().map(|s| s.1).max().unwrap_or(0)
    }

    /// The report as Markdown: one table row per figure.
    pub fn markdown(&self) -> String {
        let (start, middle, end) = self.rss_start_middle_end();
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        let mut out = String::new();
        out.push_str("| figure | value |\n|---|---|\n");
        out.push_str(&format!("| clients | {} |\n", self.clients));
        out.push_str(&format!("| duration | {} s |\n", self.duration.as_secs()));
        out.push_str(&format!(
            "| signatures (each verified) | {} |\n",
            self.signatures
        ));
        out.push_str(&format!("| signatures/s | {:.1} |\n", self.per_second()));
        out.push_str(&format!("| errors | {} |\n", self.errors));
        out.push_str(&format!(
            "| agent VmRSS start / middle / end / max | {} / {} / {} / {} |\n",
            mib(start),
            mib(middle),
            mib(end),
            mib(self.rss_max())
        ));
        out
    }
}

/// Runs the soak: a fresh swtpm, one ECDSA P-256 key without PIN, the agent, then
/// `clients` connections signing in a loop until `duration` has passed.
pub fn soak(config: &SoakConfig) -> Result<SoakReport> {
    let swtpm = Swtpm::start(&config.work.join("swtpm"))?;
    let keys = config.work.join("keys");
    std::fs::create_dir_all(&keys)
        .map_err(|e| Error::io(format!("creating {}", keys.display()), e))?;
    process::run(
        "ssh-tpm-keygen",
        Command::new(config.bin_dir.join("ssh-tpm-keygen"))
            .args([
                "--tcti",
                &swtpm.tcti(),
                "-t",
                "ecdsa",
                "-N",
                "",
                "-C",
                "soak",
                "-f",
            ])
            .arg(keys.join("soak")),
    )?;
    let socket = config.work.join("agent.sock");
    let _ = std::fs::remove_file(&socket);
    let mut agent = Process::spawn(
        "ssh-tpm-agent",
        Command::new(config.bin_dir.join("ssh-tpm-agent"))
            .args(["--tcti", &swtpm.tcti(), "-l"])
            .arg(&socket)
            .arg("--key-dir")
            .arg(&keys),
        &config.work.join("agent.log"),
    )?;
    let key = process::wait_for("the agent to list its key", Duration::from_secs(20), || {
        AgentClient::connect(&socket)
            .ok()?
            .list()
            .ok()?
            .into_iter()
            .next()
    })?
    .key;

    let report = run_clients(config, &socket, &key, agent.pid());
    agent.check_running()?;
    agent.stop();
    swtpm.shutdown();
    report
}

fn run_clients(
    config: &SoakConfig,
    socket: &Path,
    key: &ssh_key::public::KeyData,
    agent_pid: u32,
) -> Result<SoakReport> {
    let signatures = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_errors = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + config.duration;

    let mut threads = Vec::new();
    for client in 0..config.clients {
        let (signatures, errors, first_errors) = (
            Arc::clone(&signatures),
            Arc::clone(&errors),
            Arc::clone(&first_errors),
        );
        let (socket, key) = (socket.to_path_buf(), key.clone());
        threads.push(std::thread::spawn(move || {
            let mut connection = AgentClient::connect(&socket);
            let mut n = client as u64 * 1_000_000_000;
            while Instant::now() < deadline {
                n += 1;
                let signed = match &mut connection {
                    Ok(agent) => agent.sign_verified(&key, &auth_data(n), 0),
                    Err(e) => Err(Error::Setup(e.to_string())),
                };
                match signed {
                    Ok(()) => {
                        signatures.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_errors.lock().unwrap_or_else(|e| e.into_inner());
                        if first.len() < 5 {
                            first.push(format!("client {client}: {e}"));
                        }
                        // A broken connection is opened again, as ssh would.
                        connection = AgentClient::connect(&socket);
                    }
                }
            }
        }));
    }

    // Memory, once a second, until the clients are done.
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                samples.push((started.elapsed().as_secs(), process::rss_kib(agent_pid)));
                std::thread::sleep(Duration::from_secs(1));
            }
            samples.push((started.elapsed().as_secs(), process::rss_kib(agent_pid)));
            samples
        })
    };
    for thread in threads {
        let _ = thread.join();
    }
    let duration = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let rss = sampler.join().unwrap_or_default();
    let first_errors = first_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(SoakReport {
        clients: config.clients,
        duration,
        signatures: signatures.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_errors,
        rss,
    })
}
