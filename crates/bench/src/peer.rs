//! The peer: OpenSSH's `ssh-agent` with Debian's tpm2-pkcs11 module, on a swtpm of its own.
//!
//! The token is made with `tpm2_ptool`, which drives tpm2-tools; they leave objects loaded,
//! which a bare swtpm (3 slots, no resource manager) runs out of, so set-up goes through
//! `tpm2-abrmd` on a private D-Bus session bus. Then both stop, and the module inside
//! `ssh-pkcs11-helper` talks to swtpm directly, through the counting proxy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent_client::AgentClient;
use crate::error::{Error, Result};
use crate::process::{self, Process};

/// Debian's tpm2-pkcs11 module (package libtpm2-pkcs11-1).
pub const MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";

/// Creates a tpm2-pkcs11 store in `store` with one token whose user PIN is `pin` and one
/// key of `algorithm` (a `tpm2_ptool` name such as `ecc256`, also the key's label), on the
/// swtpm reached by `tcti`.
///
/// One key per token and swtpm: the module keeps its primary, its PIN-wrapping object and
/// every key it used loaded, and swtpm has three object slots and no resource manager, so
/// a second key fails with TPM_RC_OBJECT_MEMORY. A real TPM has the kernel's resource
/// manager in front of it, and no such limit.
pub fn make_token(tcti: &str, store: &Path, pin: &str, algorithm: &str, logs: &Path) -> Result<()> {
    std::fs::create_dir_all(store)
        .map_err(|e| Error::io(format!("creating {}", store.display()), e))?;
    let bus_output = process::run(
        "dbus-daemon",
        Command::new("dbus-daemon").args([
            "--session",
            "--fork",
            "--print-address=1",
            "--print-pid=1",
        ]),
    )?;
    let mut lines = bus_output.lines();
    let (Some(address), Some(pid)) = (lines.next(), lines.next()) else {
        return Err(Error::Setup(format!("dbus-daemon printed {bus_output:?}")));
    };
    let _bus = ForkedDaemon(pid.trim().parse().unwrap_or(0));

    let mut abrmd = Command::new("tpm2-abrmd");
    abrmd
        .args(["--session", "--flush-all"])
        .arg(format!("--tcti={tcti}"))
        .env("DBUS_SESSION_BUS_ADDRESS", address);
    if rustix::process::getuid().is_root() {
        abrmd.arg("--allow-root");
    }
    let mut abrmd = Process::spawn("tpm2-abrmd", &mut abrmd, &logs.join("abrmd.log"))?;

    let ptool = |args: &[&str]| {
        let mut command = Command::new("tpm2_ptool");
        command
            .args(args)
            .arg(format!("--path={}", store.display()))
            .env("DBUS_SESSION_BUS_ADDRESS", address)
            .env("TPM2TOOLS_TCTI", "tabrmd:bus_type=session")
            .env("TSS2_LOG", "all+NONE");
        command
    };
    // tpm2-abrmd takes a moment to claim its bus name.
    process::wait_for("tpm2-abrmd to answer", Duration::from_secs(10), || {
        process::run("tpm2_ptool init", &mut ptool(&["init"])).ok()
    })
    .map_err(|e| match abrmd.check_running() {
        Ok(()) => e,
        Err(died) => died,
    })?;
    let user_pin = format!("--userpin={pin}");
    process::run(
        "tpm2_ptool addtoken",
        &mut ptool(&[
            "addtoken",
            "--pid=1",
            "--label=bench",
            "--sopin=bench-so",
            &user_pin,
        ]),
    )?;
    process::run(
        "tpm2_ptool addkey",
        &mut ptool(&[
            "addkey",
            "--label=bench",
            &format!("--algorithm={algorithm}"),
            &format!("--key-label={algorithm}"),
            &user_pin,
        ]),
    )?;
    abrmd.stop();
    Ok(())
}

/// A daemon that forked away from us, known by its pid: sent SIGTERM when dropped.
struct ForkedDaemon(i32);

impl Drop for ForkedDaemon {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// `ssh-agent -D` with the tpm2-pkcs11 token added.
pub struct Pkcs11Agent {
    pub socket: PathBuf,
    /// From spawning ssh-agent to listing the token's keys, `ssh-add -s` included.
    pub startup: Duration,
    askpass: PathBuf,
    process: Process,
}

impl Pkcs11Agent {
    /// Starts ssh-agent, adds the token with `ssh-add -s` (the PIN comes from `askpass`),
    /// and waits for its keys to be listed.
    pub fn start(
        tcti: &str,
        store: &Path,
        socket: &Path,
        askpass: &Path,
        log: &Path,
    ) -> Result<Self> {
        let _ = std::fs::remove_file(socket);
        let started = Instant::now();
        let process = Process::spawn(
            "ssh-agent",
            Command::new("ssh-agent")
                .arg("-D")
                .arg("-a")
                .arg(socket)
                .env("TPM2_PKCS11_TCTI", tcti)
                .env("TPM2_PKCS11_STORE", store)
                .env("TSS2_LOG", "all+NONE"),
            log,
        )?;
        process::wait_for("ssh-agent's socket", Duration::from_secs(10), || {
            AgentClient::connect(socket).ok()
        })?;
        let agent = Pkcs11Agent {
            socket: socket.to_path_buf(),
            startup: Duration::ZERO,
            askpass: askpass.to_path_buf(),
            process,
        };
        agent.ssh_add(&["-s", MODULE])?;
        let listed = AgentClient::connect(socket)?.list()?.len();
        if listed == 0 {
            return Err(Error::Setup(format!(
                "ssh-agent lists no key after ssh-add -s {MODULE}; see {}",
                log.display()
            )));
        }
        Ok(Pkcs11Agent {
            startup: started.elapsed(),
            ..agent
        })
    }

    /// Runs `ssh-add ARGS` against this agent.
    pub fn ssh_add(&self, args: &[&str]) -> Result<()> {
        process::run(
            "ssh-add",
            Command::new("ssh-add")
                .args(args)
                .env("SSH_AUTH_SOCK", &self.socket)
                .env("SSH_ASKPASS", &self.askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0"),
        )
        .map(drop)
    }

    /// Adds a plain software key (`ssh-keygen`, no passphrase) named `sw-STEM` for the
    /// reference rows; `stem` is `p256`, `p384` or `rsa2048`.
    pub fn add_software_key(&self, dir: &Path, stem: &str) -> Result<()> {
        let (key_type, bits) = match stem {
            "p256" => ("ecdsa", "256"),
            "p384" => ("ecdsa", "384"),
            _ => ("rsa", "2048"),
        };
        let name = format!("sw-{stem}");
        let path = dir.join(&name);
        process::run(
            "ssh-keygen",
            Command::new("ssh-keygen")
                .args([
                    "-q", "-t", key_type, "-b", bits, "-N", "", "-C", &name, "-f",
                ])
                .arg(&path),
        )?;
        let path = path.to_string_lossy().into_owned();
        self.ssh_add(&["-q", &path])
    }

    /// RSS of ssh-agent and of its ssh-pkcs11-helper, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let agent = self.process.pid();
        let helpers: u64 = process::children(agent)
            .into_iter()
            .map(process::rss_kib)
            .sum();
        (process::rss_kib(agent), helpers)
    }

    /// Stops ssh-agent and its pkcs11 helper.
    pub fn stop(mut self) {
        let helpers = process::children(self.process.pid());
        self.process.stop();
        for pid in helpers {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
}
