//! A software TPM manufactured like a real one: `swtpm_setup --create-ek-cert
//! --create-platform-cert` provisions an RSA-2048 EK certificate (NV 0x01c00002), an ECC
//! P-384 one (NV 0x01c00016) and a platform certificate, signed by a local CA whose state
//! lives next to the TPM state.
//!
//! Manufacturing takes a second or two, so it happens once and is kept under cargo's
//! per-target temporary directory (tests may run as separate processes, so an exclusive
//! lock file guards it); each test starts swtpm on its own copy of the state, on random
//! loopback ports.

// Each test binary uses a different part of the helper.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where the manufactured state is kept, with `tpm/` (swtpm's state) and `ca/` (the local
/// CA: `issuercert.pem`, `swtpm-localca-rootca-cert.pem`).
fn manufactured_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ssh-tpm-swtpm-with-ek-certs")
}

/// The manufactured state, made on first use.
pub fn manufactured() -> PathBuf {
    let dir = manufactured_dir();
    fs::create_dir_all(dir.parent().expect("has a parent")).expect("create the target tmp dir");
    let lock_path = dir.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .expect("open the manufacturing lock");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .expect("take the manufacturing lock");
    if !dir.join("done").exists() {
        let _ = fs::remove_dir_all(&dir);
        manufacture(&dir);
        fs::write(dir.join("done"), "manufactured\n").expect("mark the state done");
    }
    drop(lock);
    dir
}

fn manufacture(dir: &Path) {
    let tpm = dir.join("tpm");
    let ca = dir.join("ca");
    fs::create_dir_all(&tpm).expect("create the TPM state dir");
    fs::create_dir_all(&ca).expect("create the CA state dir");
    let localca = dir.join("swtpm-localca.conf");
    fs::write(
        &localca,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n\
             certserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .expect("write swtpm-localca.conf");
    let setup = dir.join("swtpm_setup.conf");
    fs::write(
        &setup,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
             create_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
            localca.display()
        ),
    )
    .expect("write swtpm_setup.conf");
    let out = run(Command::new("swtpm_setup")
        .args([
            "--tpm2",
            "--create-ek-cert",
            "--create-platform-cert",
            "--tpmstate",
        ])
        .arg(&tpm)
        .arg("--config")
        .arg(&setup)
        .arg("--logfile")
        .arg(dir.join("swtpm_setup.log")));
    let log = fs::read_to_string(dir.join("swtpm_setup.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "swtpm_setup failed: {}\n{log}",
        describe(&out)
    );
}

/// A swtpm on 127.0.0.1 on a copy of the manufactured state; stopped in order on drop.
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let source = manufactured().join("tpm");
        let mut last = String::new();
        for _ in 0..8 {
            match Swtpm::try_start(&source) {
                Ok(tpm) => return tpm,
                Err(e) => last = e,
            }
        }
        panic!("swtpm did not start: {last}");
    }

    fn try_start(source: &Path) -> Result<Swtpm, String> {
        let dir = tempfile::Builder::new()
            .prefix("ssh-tpm-attestation.")
            .tempdir()
            .expect("create a temporary directory");
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("create the state dir");
        for entry in fs::read_dir(source).expect("read the manufactured state") {
            let path = entry.expect("state entry").path();
            fs::copy(&path, state.join(path.file_name().expect("file name")))
                .expect("copy the state");
        }
        let port = free_port_pair();
        let log = File::create(dir.path().join("swtpm.log")).expect("create swtpm.log");
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run swtpm: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(dir.path().join("swtpm.log")).unwrap_or_default();
                return Err(format!("swtpm exited ({status}): {log}"));
            }
            if accepts(port) && accepts(port + 1) {
                return Ok(Swtpm { child, port, dir });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("swtpm did not listen on {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A scratch directory that lives as long as the TPM.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a tpm2-tools command against this TPM (only while nobody else is connected:
    /// swtpm serves one connection at a time).
    pub fn tpm2(&self, tool: &str, args: &[&str]) -> Output {
        let out = run(Command::new(tool).arg("-T").arg(self.tcti()).args(args));
        assert!(out.status.success(), "{tool} {args:?}: {}", describe(&out));
        out
    }

    /// The transient objects loaded in the TPM (`tpm2_getcap handles-transient`).
    pub fn transient_handles(&self) -> Vec<String> {
        let out = self.tpm2("tpm2_getcap", &["handles-transient"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().trim_start_matches("- ").to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("tpm2_shutdown")
                .arg("-T")
                .arg(self.tcti())
                .stdin(Stdio::null())
                .output();
            let _ = Command::new("swtpm_ioctl")
                .args(["--tcp", &format!("127.0.0.1:{}", self.port + 1), "-s"])
                .stdin(Stdio::null())
                .output();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` with stdin closed and tpm2-tools' environment cleared.
pub fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("TPM2TOOLS_TCTI")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn accepts(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A port `p` with `p` and `p + 1` free on loopback right now.
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
        let port = first.local_addr().expect("local addr").port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}
