//! The embedded software TPM: a private `swtpm` whose state survives restarts.
//!
//! swtpm listens on a random loopback TCP port pair: tss-esapi 7.7 can only reach swtpm over
//! TCP (it drops tpm2-tss's `path=` option), so other local users can reach the port too.
//! What they could do there is limited: the platform hierarchy gets a random password at
//! every start and the lockout hierarchy one at first start (kept in the 0700 state
//! directory), so nobody else can clear the TPM, reset or tune its dictionary-attack
//! protection; key files are 0600. Another user can still make the TPM count failed PIN
//! tries with objects of their own, a denial of service, not a theft.
//!
//! One process at a time owns the directory (an exclusive `flock` on `lock`), and swtpm
//! serves one connection at a time anyway; a second process is told who holds it. Stops
//! are orderly (TPM2_Shutdown, then swtpm's CMD_SHUTDOWN), also for a swtpm left behind by
//! a process that was killed: an unorderly stop would count as a failed PIN try.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// swtpm control-channel command that saves state and exits (swtpm's `CMD_SHUTDOWN`).
const CMD_SHUTDOWN: u32 = 0x0003;
/// TPM2_Shutdown(TPM_SU_CLEAR) as raw bytes (TPM 2.0 Part 3, 9.4): no sessions, 12 bytes.
const TPM2_SHUTDOWN_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0];
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

const START_ATTEMPTS: usize = 5;

/// A running swtpm owned by this process.
#[derive(Debug)]
pub struct EmbeddedSwtpm {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    _lock: File,
}

impl EmbeddedSwtpm {
    /// Starts swtpm with its state and sockets in `state_dir`.
    pub fn start(state_dir: &Path) -> Result<Self> {
        let dir_error = |e| Error::io(format!("cannot create {}", state_dir.display()), e);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(dir_error)?;
        fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700)).map_err(dir_error)?;
        let lock = take_lock(state_dir)?;
        stop_orphan(state_dir);

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port_pair()?;
            match spawn(state_dir, port) {
                Ok(child) => {
                    tracing::debug!(port, dir = %state_dir.display(), "embedded swtpm started");
                    let mut swtpm = EmbeddedSwtpm {
                        child: Some(child),
                        dir: state_dir.to_path_buf(),
                        port,
                        _lock: lock,
                    };
                    swtpm.protect()?;
                    return Ok(swtpm);
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

    /// Locks other local users out of the hierarchies that could clear the TPM or change
    /// its lockout policy (see the module docs).
    fn protect(&mut self) -> Result<()> {
        provision(self.port, &self.dir)?;
        let platform = random_auth()?;
        hierarchy_change_auth(self.port, TPM_RH_PLATFORM, &[], &platform)
            .map_err(|e| Error::Swtpm(format!("cannot protect the platform hierarchy: {e}")))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        if !wait_for(Duration::from_secs(3), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for EmbeddedSwtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

const TPM_RH_LOCKOUT: u32 = 0x4000_000A;
const TPM_RH_PLATFORM: u32 = 0x4000_000C;

/// The loopback port swtpm was started on, kept so that a later process can stop it.
fn port_file(dir: &Path) -> PathBuf {
    dir.join("swtpm.port")
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

/// Stops, in order, a swtpm left behind by a process that died while holding the lock;
/// a swtpm that does not answer is terminated.
fn stop_orphan(state_dir: &Path) {
    let pid_file = state_dir.join("swtpm.pid");
    let pid = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let raw = pid.as_raw_nonzero().get();
        let alive = || is_running(raw);
        let comm = fs::read_to_string(format!("/proc/{raw}/comm")).unwrap_or_default();
        let port = fs::read_to_string(port_file(state_dir))
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        if let (true, Some(port)) = (comm.trim() == "swtpm", port) {
            tracing::warn!(
                pid = raw,
                "stopping a software TPM left behind by a killed process"
            );
            let orderly = shutdown_tpm(port).and_then(|()| control(port + 1, CMD_SHUTDOWN));
            if orderly.is_err() || !wait_for(Duration::from_secs(2), || !alive()) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                wait_for(Duration::from_secs(2), || !alive());
            }
        }
    }
    for leftover in [pid_file, port_file(state_dir)] {
        let _ = fs::remove_file(leftover);
    }
}

/// Whether process `pid` exists and is not a zombie (an exited orphan whose parent never
/// reaped it, common in containers).
fn is_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Sends TPM2_Shutdown(CLEAR) over the data port.
fn shutdown_tpm(port: u16) -> std::io::Result<()> {
    raw_command(port, &TPM2_SHUTDOWN_CLEAR).map(drop)
}

/// Gives a new embedded TPM a gentler dictionary-attack policy than swtpm's default (3
/// failures, then 1000 s): 10 failures, one forgiven every 10 minutes, and an hour after a
/// failed lockout authorization; then a random lockout password, kept in `lockout-auth`
/// (0600). Done once, before anyone else talks to the new TPM; a marker file records it.
fn provision(port: u16, state_dir: &Path) -> Result<()> {
    let marker = state_dir.join("provisioned");
    if marker.exists() {
        return Ok(());
    }
    // TPM2_DictionaryAttackParameters (TPM 2.0 Part 3, 25.3); tss-esapi 7.7 lacks it.
    let mut parameters = Vec::new();
    for value in [10u32, 600, 3600] {
        parameters.extend_from_slice(&value.to_be_bytes());
    }
    authorized_command(port, 0x0000_013A, TPM_RH_LOCKOUT, &[], &parameters)
        .map_err(|e| Error::Swtpm(format!("cannot set the lockout policy: {e}")))?;

    let lockout = random_auth()?;
    let auth_path = state_dir.join("lockout-auth");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&auth_path)
        .map_err(|e| Error::io(format!("cannot create {}", auth_path.display()), e))?;
    file.write_all(&lockout)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", auth_path.display()), e))?;
    hierarchy_change_auth(port, TPM_RH_LOCKOUT, &[], &lockout)
        .map_err(|e| Error::Swtpm(format!("cannot protect the lockout hierarchy: {e}")))?;
    fs::write(
        &marker,
        "lockout policy set: 10 tries, 600 s, 3600 s; lockout password set\n",
    )
    .map_err(|e| Error::io(format!("cannot write {}", marker.display()), e))
}

/// TPM2_HierarchyChangeAuth (TPM 2.0 Part 3, 24.8) from `old` to `new`.
fn hierarchy_change_auth(port: u16, hierarchy: u32, old: &[u8], new: &[u8]) -> std::io::Result<()> {
    let mut parameters = (new.len() as u16).to_be_bytes().to_vec();
    parameters.extend_from_slice(new);
    authorized_command(port, 0x0000_0129, hierarchy, old, &parameters)
}

/// Sends a command with one handle authorized by a password session (TPM_RS_PW) and
/// checks that the TPM accepted it.
fn authorized_command(
    port: u16,
    command_code: u32,
    handle: u32,
    password: &[u8],
    parameters: &[u8],
) -> std::io::Result<()> {
    let auth_size = 4 + 2 + 1 + 2 + password.len();
    let size = 10 + 4 + 4 + auth_size + parameters.len();
    let mut command = Vec::with_capacity(size);
    command.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    command.extend_from_slice(&(size as u32).to_be_bytes());
    command.extend_from_slice(&command_code.to_be_bytes());
    command.extend_from_slice(&handle.to_be_bytes());
    command.extend_from_slice(&(auth_size as u32).to_be_bytes());
    command.extend_from_slice(&0x4000_0009u32.to_be_bytes()); // TPM_RS_PW
    command.extend_from_slice(&[0, 0, 0]); // empty nonce, no session attributes
    command.extend_from_slice(&(password.len() as u16).to_be_bytes());
    command.extend_from_slice(password);
    command.extend_from_slice(parameters);
    let response = raw_command(port, &command)?;
    match u32::from_be_bytes([response[6], response[7], response[8], response[9]]) {
        0 => Ok(()),
        rc => Err(std::io::Error::other(format!("TPM response code {rc:#x}"))),
    }
}

/// Sends one command over the data port and returns the whole response.
fn raw_command(port: u16, command: &[u8]) -> std::io::Result<Vec<u8>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(command)?;
    let mut response = vec![0u8; 10];
    stream.read_exact(&mut response)?;
    let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]) as usize;
    if !(10..=4096).contains(&size) {
        return Err(std::io::Error::other(format!(
            "malformed TPM response of {size} bytes"
        )));
    }
    response.resize(size, 0);
    stream.read_exact(&mut response[10..])?;
    Ok(response)
}

/// 32 random bytes from the kernel, for hierarchy passwords.
fn random_auth() -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("cannot read /dev/urandom", e))?;
    Ok(bytes)
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

/// Starts swtpm and waits until its data socket accepts connections.
fn spawn(state_dir: &Path, port: u16) -> std::result::Result<Child, String> {
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
        .arg(format!("file={}", state_dir.join("swtpm.pid").display()))
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

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let ready = wait_for(READY_TIMEOUT, || {
        matches!(child.try_wait(), Ok(Some(_)))
            || TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    });
    if let Ok(Some(status)) = child.try_wait() {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        return Err(format!(
            "swtpm exited at start ({status}): {}; its state is in {}",
            log.trim(),
            state_dir.display()
        ));
    }
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("swtpm did not listen on port {port} within 5 s"));
    }
    let _ = fs::write(port_file(state_dir), port.to_string());
    Ok(child)
}

/// Sends one command on swtpm's control channel and reads its 4-byte result.
fn control(port: u16, command: u32) -> std::io::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
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

/// Polls `done` every 10 ms until it holds or `timeout` passes; returns whether it held.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
