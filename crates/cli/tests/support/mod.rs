//! Harness for the end-to-end tests: a private swtpm, a throwaway sshd, our agent, and small
//! helpers that run binaries with a clean environment and a deadline.
//!
//! Every background process lives in a guard that stops it on drop, so a panicking test leaves
//! nothing running. Declare the `Swtpm` first in a test: locals drop in reverse order, and an
//! agent must let go of the TPM before the TPM is shut down.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod ca;
pub mod ca_world;

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use tempfile::TempDir;

/// How long one command may run before the harness kills it and fails the test.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a daemon may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Variables that would let the developer's own agent, TPM or logging leak into a test.
const LEAKY_ENV: &[&str] = &[
    "SSH_AUTH_SOCK",
    "SSH_TPM_AUTH_SOCK",
    "SSH_TPM_TCTI",
    "SSH_ASKPASS",
    "SSH_ASKPASS_REQUIRE",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "TPM2TOOLS_TCTI",
    "RUST_LOG",
];

/// Retries when a port picked as free was taken before the daemon could bind it.
const PORT_ATTEMPTS: usize = 8;

// ---------------------------------------------------------------------------------------------
// Running commands

/// A new private temporary directory; removed when the returned guard drops.
pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("ssh-tpm-e2e.")
        .tempdir()
        .expect("create a temporary directory")
}

/// A command for a system tool, without the variables listed in `LEAKY_ENV`.
pub fn tool(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in LEAKY_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Path of one of this package's binaries; panics if the package does not build it yet.
pub fn product_path(name: &str) -> &'static str {
    let path = match name {
        "ssh-tpm-keygen" => option_env!("CARGO_BIN_EXE_ssh-tpm-keygen"),
        "ssh-tpm-agent" => option_env!("CARGO_BIN_EXE_ssh-tpm-agent"),
        "ssh-tpm-add" => option_env!("CARGO_BIN_EXE_ssh-tpm-add"),
        "ssh-tpm-hostkeys" => option_env!("CARGO_BIN_EXE_ssh-tpm-hostkeys"),
        _ => None,
    };
    path.unwrap_or_else(|| panic!("the ssh-tpm package does not build a binary named {name}"))
}

/// A command for one of this package's binaries, with a clean environment like `tool`.
pub fn product(name: &str) -> Command {
    tool(product_path(name))
}

/// Runs `cmd` with empty stdin; panics if it runs longer than `COMMAND_TIMEOUT`.
pub fn run(cmd: &mut Command) -> Output {
    run_with_stdin(cmd, b"")
}

/// Runs `cmd` with `input` on stdin; panics if it runs longer than `COMMAND_TIMEOUT`.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let what = format!("{cmd:?}");
    run_within(cmd, input, COMMAND_TIMEOUT)
        .unwrap_or_else(|| panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"))
}

/// Runs `cmd` with `input` on stdin; kills it and returns `None` after `timeout`. Never panics
/// on a failing command, so that `Drop` impls may use it.
pub fn run_within(cmd: &mut Command, input: &[u8], timeout: Duration) -> Option<Output> {
    let spawned = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return Some(Output {
                status: failed_status(),
                stdout: Vec::new(),
                stderr: format!("cannot start {cmd:?}: {err}").into_bytes(),
            })
        }
    };

    // Feed stdin from a thread: a child that never reads must not block us.
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    thread::spawn(move || {
        // A child that exits without reading closes the pipe; that is its business.
        let _ = stdin.write_all(&input);
    });

    // Wait on another thread, so that we can kill the child when the deadline passes.
    let pid = Pid::from_child(&child);
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(timeout) {
        Ok(Ok(output)) => Some(output),
        Ok(Err(err)) => Some(Output {
            status: failed_status(),
            stdout: Vec::new(),
            stderr: format!("waiting for {cmd:?}: {err}").into_bytes(),
        }),
        Err(_) => {
            // The waiting thread has not reaped the child yet, so the pid is still its own.
            let _ = kill_process(pid, Signal::KILL);
            None
        }
    }
}

/// A non-zero exit status for commands that could not even be run.
fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(127 << 8)
}

/// Exit status, stdout and stderr of `out`, for panic messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}---",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Panics with the whole output unless the command exited 0.
#[track_caller]
pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

/// Stdout of `out` as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr of `out` as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Calls `done` every few milliseconds until it returns true (then true) or `timeout` passes.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The machine

/// Name of the user the tests run as (and log in to sshd as).
pub fn current_user() -> String {
    let out = run(tool("id").arg("-un"));
    assert_ok(&out, "id -un");
    stdout(&out).trim().to_owned()
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A port P such that P and P + 1 were both free a moment ago.
pub fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local address").port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts_tcp(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// True when something accepts connections on the unix socket at `path`.
pub fn accepts_unix(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// Absolute path of `program` found on PATH, or `fallback`.
pub fn which(program: &str, fallback: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(fallback))
}

/// Unix permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

/// Sets the unix permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Text of `path`, or an empty string when it cannot be read.
pub fn read_text(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Writes `text` to `path`, panicking on failure.
pub fn write(path: &Path, text: impl AsRef<[u8]>) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Background processes

/// A background process with stdout and stderr in files; SIGTERM, then SIGKILL, on drop.
pub struct Daemon {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `cmd` with stdin closed and its output in `log_dir`/`name`.{out,err}.
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Daemon {
        let stdout = log_dir.join(format!("{name}.out"));
        let stderr = log_dir.join(format!("{name}.err"));
        let open = |path: &Path| {
            fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_text(&self.stdout)
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_text(&self.stderr)
    }

    /// Exit status if the process has exited, reaping it.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || !self.is_running());
        self.exit_status()
    }

    /// Sends `signal` if the process still runs.
    pub fn signal(&mut self, signal: Signal) {
        if self.is_running() {
            // It can only have exited since; then there is nothing left to signal.
            let _ = kill_process(Pid::from_child(&self.child), signal);
        }
    }

    /// SIGTERM, then SIGKILL after `STOP_TIMEOUT`; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        if let Some(status) = self.wait_exit(STOP_TIMEOUT) {
            return status;
        }
        eprintln!(
            "{} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
            self.name
        );
        self.signal(Signal::KILL);
        let status = self.child.wait().unwrap_or_else(|_| failed_status());
        self.status = Some(status);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// swtpm

/// A private software TPM on 127.0.0.1, with dictionary-attack lockout relaxed so that the
/// wrong-PIN tests cannot lock the suite out. It serves one TCP connection at a time.
pub struct Swtpm {
    daemon: Daemon,
    port: u16,
    _dir: TempDir,
}

impl Swtpm {
    /// Starts a fresh TPM, retrying when the chosen ports were taken meanwhile.
    pub fn start() -> Swtpm {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Swtpm::try_start(None) {
                Ok(tpm) => return tpm,
                Err(log) => last_log = log,
            }
        }
        panic!("swtpm did not start in {PORT_ATTEMPTS} attempts; last output:\n{last_log}");
    }

    /// Starts a TPM on a copy of the swtpm state in `state` (committed test vectors: keys
    /// that other tools made in that TPM), so that the original is never changed.
    pub fn start_with_state(state: &Path) -> Swtpm {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Swtpm::try_start(Some(state)) {
                Ok(tpm) => return tpm,
                Err(log) => last_log = log,
            }
        }
        panic!("swtpm did not start in {PORT_ATTEMPTS} attempts; last output:\n{last_log}");
    }

    /// One attempt: `Err` with swtpm's output when it exited, as it does on a taken port.
    fn try_start(from: Option<&Path>) -> Result<Swtpm, String> {
        let dir = tempdir();
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("create swtpm state dir");
        if let Some(from) = from {
            for file in fs::read_dir(from).expect("read swtpm state") {
                let file = file.expect("swtpm state entry").path();
                let name = file.file_name().expect("state file name");
                fs::copy(&file, state.join(name)).expect("copy swtpm state");
            }
        }
        let port = free_port_pair();

        let mut cmd = tool("swtpm");
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"]);
        let mut daemon = Daemon::spawn("swtpm", &mut cmd, dir.path());

        let up = poll_until(START_TIMEOUT, || {
            !daemon.is_running() || (accepts_tcp(port + 1) && accepts_tcp(port))
        });
        if !daemon.is_running() {
            return Err(daemon.stderr() + &daemon.stdout());
        }
        assert!(
            up,
            "swtpm does not accept on port {port}: {}",
            daemon.stderr()
        );
        let tpm = Swtpm {
            daemon,
            port,
            _dir: dir,
        };

        // 32 tries, and a second to recover from a failure or from lockout.
        let lockout = [
            "--setup-parameters",
            "--max-tries=32",
            "--recovery-time=1",
            "--lockout-recovery-time=1",
        ];
        let out = tpm.tpm2("tpm2_dictionarylockout", &lockout);
        if !out.status.success() {
            let mut tpm = tpm;
            if !tpm.daemon.is_running() {
                return Err(describe(&out));
            }
            panic!(
                "setting swtpm's lockout parameters failed: {}",
                describe(&out)
            );
        }
        Ok(tpm)
    }

    /// TCTI string for tpm2-tools and our binaries.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Runs tpm2-tools' `tool` with `args` against this TPM.
    pub fn tpm2(&self, tool_name: &str, args: &[&str]) -> Output {
        run(tool(tool_name).arg("-T").arg(self.tcti()).args(args))
    }

    /// A TPM_PT property from `tpm2_getcap properties-variable`, e.g. `TPM2_PT_LOCKOUT_COUNTER`.
    /// Fails while an agent holds the TPM's only connection: stop agents first.
    pub fn variable_property(&self, name: &str) -> u32 {
        let out = self.tpm2("tpm2_getcap", &["properties-variable"]);
        assert_ok(&out, "tpm2_getcap properties-variable");
        let text = stdout(&out);
        let value = text
            .lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("{name} missing from tpm2_getcap output:\n{text}"));
        let value = value.trim();
        let parsed = match value.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => value.parse(),
        };
        parsed.unwrap_or_else(|e| panic!("{name}: cannot parse {value:?}: {e}"))
    }

    /// True when the TPM supports the algorithm spec (`tpm2_testparms`, e.g. `ecc521`).
    pub fn supports(&self, algorithm: &str) -> bool {
        self.tpm2("tpm2_testparms", &[algorithm]).status.success()
    }

    /// Process id of swtpm.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // Only talk to the ports while our swtpm still owns them.
        if self.daemon.is_running() {
            let timeout = Duration::from_secs(10);
            let tcti = self.tcti();
            let _ = run_within(tool("tpm2_shutdown").arg("-T").arg(tcti), b"", timeout);
            let ctrl = format!("127.0.0.1:{}", self.port + 1);
            let _ = run_within(
                tool("swtpm_ioctl").args(["--tcp", &ctrl, "-s"]),
                b"",
                timeout,
            );
            self.daemon.wait_exit(STOP_TIMEOUT);
        }
        // Dropping the daemon kills swtpm if it is still there.
    }
}

// ---------------------------------------------------------------------------------------------
// sshd

/// A throwaway sshd on 127.0.0.1 with its own host key, authorized_keys and optional user CA.
pub struct Sshd {
    daemon: Daemon,
    port: u16,
    dir: TempDir,
}

impl Sshd {
    /// Starts sshd accepting the public keys in `authorized_keys` (one per line, may be empty)
    /// and, when given, certificates signed by the CA public key at `trusted_ca`.
    pub fn start(authorized_keys: &str, trusted_ca: Option<&Path>) -> Sshd {
        let dir = tempdir();
        let host_key = dir.path().join("host_ed25519");
        let out = run(tool("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key));
        assert_ok(&out, "ssh-keygen for the sshd host key");
        let host_config = format!("HostKey {}\n", host_key.display());
        Sshd::launch(dir, authorized_keys, trusted_ca, &host_config)
    }

    /// Starts sshd with the host key lines `host_config` (say, `Include` of a snippet with
    /// `HostKeyAgent` and `HostKey` lines) instead of a host key of its own.
    pub fn start_with_host_config(authorized_keys: &str, host_config: &str) -> Sshd {
        Sshd::launch(tempdir(), authorized_keys, None, host_config)
    }

    fn launch(dir: TempDir, authorized_keys: &str, trusted_ca: Option<&Path>, host: &str) -> Sshd {
        let keys = dir.path().join("authorized_keys");
        write(&keys, authorized_keys);
        if is_root() {
            // sshd's privilege separation wants this directory.
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }

        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            write(&config, sshd_config(port, host, &keys, trusted_ca));
            let mut cmd = tool(which("sshd", "/usr/sbin/sshd"));
            cmd.args(["-D", "-e", "-f"]).arg(&config);
            let mut daemon = Daemon::spawn("sshd", &mut cmd, dir.path());
            let up = poll_until(START_TIMEOUT, || !daemon.is_running() || accepts_tcp(port));
            if daemon.is_running() {
                assert!(
                    up,
                    "sshd does not accept on port {port}: {}",
                    daemon.stderr()
                );
                return Sshd { daemon, port, dir };
            }
            last_log = daemon.stderr();
        }
        panic!("sshd did not start in {PORT_ATTEMPTS} attempts; last output:\n{last_log}");
    }

    /// Port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        self.daemon.stderr()
    }

    /// Runs `ssh` to this sshd as the current user, with identities only from the agent at
    /// `agent_socket`; the remote command prints `logged-in-as USER`.
    pub fn login(&self, agent_socket: &Path, extra_args: &[&str]) -> Output {
        let mut cmd = tool("ssh");
        cmd.args(["-F", "/dev/null"])
            .arg("-o")
            .arg(format!("IdentityAgent={}", agent_socket.display()))
            .args(["-o", "IdentitiesOnly=no"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "PasswordAuthentication=no"])
            .args(["-o", "ConnectTimeout=10"])
            .args(["-p", &self.port.to_string()])
            .args(extra_args)
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg("echo logged-in-as $(id -un)");
        run(&mut cmd)
    }
}

/// The whole sshd_config of a test sshd.
fn sshd_config(port: u16, host: &str, keys: &Path, trusted_ca: Option<&Path>) -> String {
    let mut config = format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         {host}\
         AuthorizedKeysFile {}\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PidFile none\n\
         PermitRootLogin prohibit-password\n\
         LogLevel VERBOSE\n",
        keys.display()
    );
    if let Some(ca) = trusted_ca {
        config.push_str(&format!("TrustedUserCAKeys {}\n", ca.display()));
    }
    config
}

// ---------------------------------------------------------------------------------------------
// ssh-tpm-agent

/// A running `ssh-tpm-agent`; SIGTERM on drop. Its stderr goes to a file the test can read.
pub struct Agent {
    daemon: Daemon,
    socket: PathBuf,
    _logs: TempDir,
    _socket_dir: Option<TempDir>,
}

impl Agent {
    /// Starts `ssh-tpm-agent -l SOCKET ARGS...` with the variables `env` set, and waits until
    /// the socket accepts; panics with the agent's stderr if it does not within `START_TIMEOUT`.
    pub fn start(socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = tempdir();
        let mut cmd = product("ssh-tpm-agent");
        cmd.arg("-l").arg(socket).args(args);
        cmd.envs(env.iter().copied());
        let mut daemon = Daemon::spawn("ssh-tpm-agent", &mut cmd, dir.path());

        let up = poll_until(START_TIMEOUT, || {
            !daemon.is_running() || accepts_unix(socket)
        });
        if let Some(status) = daemon.exit_status() {
            panic!(
                "ssh-tpm-agent exited with {status} at start:\n{}",
                daemon.stderr()
            );
        }
        assert!(
            up,
            "ssh-tpm-agent did not accept on {} within {START_TIMEOUT:?}:\n{}",
            socket.display(),
            daemon.stderr()
        );
        Agent {
            daemon,
            socket: socket.to_owned(),
            _logs: dir,
            _socket_dir: None,
        }
    }

    /// Starts an agent on `tpm` that loads the keys in `key_dir`, with its socket in a private
    /// temporary directory and the extra variables `env`.
    pub fn serve(tpm: &Swtpm, key_dir: &Path, env: &[(&str, &str)]) -> Agent {
        let socket_dir = tempdir();
        let socket = socket_dir.path().join("agent.sock");
        let tcti = tpm.tcti();
        let key_dir = key_dir.to_str().expect("UTF-8 key dir");
        let mut agent = Agent::start(&socket, &["--tcti", &tcti, "--key-dir", key_dir], env);
        // The agent owns the socket's directory from now on.
        agent._socket_dir = Some(socket_dir);
        agent
    }

    /// Path of the agent's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the agent wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.daemon.stdout()
    }

    /// What the agent logged so far.
    pub fn stderr(&self) -> String {
        self.daemon.stderr()
    }

    /// The agent's log once it contains `needle`, or as it is after a few seconds.
    pub fn stderr_once_it_contains(&self, needle: &str) -> String {
        poll_until(Duration::from_secs(5), || self.stderr().contains(needle));
        self.stderr()
    }

    /// True while the agent runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// Process id of the agent.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Sends SIGTERM and waits a few seconds; `None` if the agent is still running then.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.daemon.signal(Signal::TERM);
        self.daemon.wait_exit(STOP_TIMEOUT)
    }

    /// Sends SIGTERM and waits for the agent to exit (SIGKILL after a few seconds).
    pub fn stop(&mut self) -> ExitStatus {
        self.daemon.stop()
    }
}

// ---------------------------------------------------------------------------------------------
// Keys, agents and signatures

/// The two files of a key made by ssh-tpm-keygen.
#[derive(Clone, Debug)]
pub struct KeyFiles {
    /// `NAME.tpm`, the TSS2 PRIVATE KEY file.
    pub tpm: PathBuf,
    /// `NAME.pub`, the OpenSSH public key.
    pub public: PathBuf,
}

impl KeyFiles {
    /// The files of key `name` in `dir`.
    pub fn at(dir: &Path, name: &str) -> KeyFiles {
        KeyFiles {
            tpm: dir.join(format!("{name}.tpm")),
            public: dir.join(format!("{name}.pub")),
        }
    }

    /// `NAME-cert.pub` beside the key, where the agent looks for a certificate.
    pub fn cert(&self) -> PathBuf {
        let name = self
            .tpm
            .file_stem()
            .expect("key file name")
            .to_string_lossy();
        self.tpm.with_file_name(format!("{name}-cert.pub"))
    }

    /// The public key line, without its line break.
    pub fn public_line(&self) -> String {
        let text = fs::read_to_string(&self.public)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.public.display()));
        text.trim().to_owned()
    }

    /// Key type and base64 blob of the public key.
    pub fn blob(&self) -> (String, String) {
        key_blob(&self.public_line())
    }
}

/// Key type and base64 blob of an OpenSSH public key line (the comment is dropped).
pub fn key_blob(line: &str) -> (String, String) {
    let mut fields = line.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(blob)) => (kind.to_owned(), blob.to_owned()),
        _ => panic!("not an OpenSSH public key line: {line:?}"),
    }
}

/// Runs `ssh-tpm-keygen --tcti TPM -f DIR/NAME ARGS...`; panics unless it succeeds.
pub fn keygen(tpm: &Swtpm, dir: &Path, name: &str, args: &[&str]) -> (KeyFiles, Output) {
    let mut cmd = product("ssh-tpm-keygen");
    cmd.arg("--tcti")
        .arg(tpm.tcti())
        .arg("-f")
        .arg(dir.join(name))
        .args(args);
    let out = run(&mut cmd);
    assert_ok(
        &out,
        &format!("ssh-tpm-keygen -f {name} {}", args.join(" ")),
    );
    (KeyFiles::at(dir, name), out)
}

/// The `SHA256:...` fingerprint of a public key file, as `ssh-keygen -l` computes it.
pub fn fingerprint(public: &Path) -> String {
    let out = run(tool("ssh-keygen").arg("-lf").arg(public));
    assert_ok(&out, "ssh-keygen -lf");
    let text = stdout(&out);
    text.split_whitespace()
        .find(|field| field.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_owned()
}

/// Runs OpenSSH's `ssh-add ARGS...` against the agent at `socket`.
pub fn ssh_add(socket: &Path, args: &[&str]) -> Output {
    run(tool("ssh-add").env("SSH_AUTH_SOCK", socket).args(args))
}

/// Key type and blob of every line `ssh-add -L` printed.
pub fn listed_keys(out: &Output) -> Vec<(String, String)> {
    stdout(out)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(key_blob)
        .collect()
}

/// Lets every user reach `socket`: its directory 0755, the socket 0666. Only a check of the
/// peer's uid inside the agent then keeps other users out.
pub fn open_socket_to_everyone(socket: &Path) {
    chmod(socket.parent().expect("socket directory"), 0o755);
    chmod(socket, 0o666);
}

/// Runs `ssh-add -L` as uid/gid 65534 (nobody) against `socket`; needs root.
pub fn ssh_add_list_as_nobody(socket: &Path) -> Output {
    let mut cmd = tool("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "ssh-add",
        "-L",
    ])
    .env("SSH_AUTH_SOCK", socket);
    run(&mut cmd)
}

/// Signs `message` with `ssh-keygen -Y sign -n file`, through the agent at `socket` holding
/// the private half of `public`. The signature lands in `message`.sig.
pub fn sign_file(socket: &Path, public: &Path, message: &Path) -> Output {
    let mut cmd = tool("ssh-keygen");
    cmd.env("SSH_AUTH_SOCK", socket)
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(public)
        .arg(message);
    run(&mut cmd)
}

/// Verifies `message`.sig with `ssh-keygen -Y verify` for identity `user@example` whose key is
/// the public key line `public_line`; the allowed-signers file is written into `dir`.
pub fn verify_file(dir: &Path, public_line: &str, message: &Path) -> Output {
    let (kind, blob) = key_blob(public_line);
    let signers = dir.join("allowed_signers");
    write(&signers, format!("user@example {kind} {blob}\n"));
    let signature = PathBuf::from(format!("{}.sig", message.display()));
    let mut cmd = tool("ssh-keygen");
    cmd.args(["-Y", "verify", "-n", "file", "-I", "user@example", "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(&signature);
    let input = fs::read(message).unwrap_or_else(|e| panic!("read {}: {e}", message.display()));
    run_with_stdin(&mut cmd, &input)
}

/// Writes an executable `askpass-PIN` script into `dir` that prints `pin` and appends one line
/// per call to `askpass-PIN.calls` (see `askpass_calls`).
pub fn write_askpass(dir: &Path, pin: &str) -> PathBuf {
    let script = dir.join(format!("askpass-{pin}"));
    let calls = dir.join(format!("askpass-{pin}.calls"));
    write(
        &script,
        format!(
            "#!/bin/sh\necho \"called: $*\" >> '{}'\nprintf '%s\\n' '{pin}'\n",
            calls.display()
        ),
    );
    chmod(&script, 0o755);
    script
}

/// How many times the askpass script at `script` has been run.
pub fn askpass_calls(script: &Path) -> usize {
    let calls = PathBuf::from(format!("{}.calls", script.display()));
    read_text(&calls).lines().count()
}

// ---------------------------------------------------------------------------------------------
// Signals to the agent

impl Agent {
    /// Sends `signal` to the agent (SIGKILL to simulate a crash, SIGHUP to reload).
    pub fn send(&mut self, signal: Signal) {
        self.daemon.signal(signal);
    }

    /// Waits until the agent has exited; panics if it has not within a few seconds.
    pub fn wait_exited(&mut self) -> ExitStatus {
        self.daemon
            .wait_exit(STOP_TIMEOUT)
            .unwrap_or_else(|| panic!("ssh-tpm-agent did not exit:\n{}", self.stderr()))
    }
}
