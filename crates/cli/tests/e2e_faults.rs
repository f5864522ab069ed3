//! Faults, end to end: 1,000 clients at once keep the agent's memory bounded and do not keep
//! others out; swtpm killed in the middle of a signature fails that request clearly and the
//! agent signs again once swtpm is back, without a restart, even after an outage longer than a
//! request waits; a key file written into a read-only or a full directory leaves the old file
//! as it was and says why.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};
use support::{
    accepts_tcp, assert_ok, describe, free_port_pair, is_root, poll_until, product, read_text, run,
    run_with_stdin, sign_file, stderr, tempdir, tool, verify_file, Agent, Daemon, KeyFiles, Swtpm,
    START_TIMEOUT,
};

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = read_text(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}:\n{status}"))
}

/// Lets this test process hold a few thousand sockets.
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.map_or(4096, |hard| hard.min(4096));
    if limit.current.is_some_and(|soft| soft < wanted) {
        let raised = Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE");
    }
}

fn keygen_at(tcti: &str, dir: &Path, name: &str) -> KeyFiles {
    let out = run(product("ssh-tpm-keygen")
        .args(["--tcti", tcti, "-N", "", "-f"])
        .arg(dir.join(name)));
    assert_ok(&out, "ssh-tpm-keygen");
    KeyFiles::at(dir, name)
}

const LIST: [u8; 5] = [0, 0, 0, 1, 11];

/// 1,000 connections at once, half of them stalled in the middle of a message that claims
/// the largest size (256 KiB): the agent serves another client meanwhile, and its resident
/// memory grows by less than 32 MiB.
///
/// The bound: per connection the agent holds a task, its socket and, for a started message,
/// a buffer sized by the bytes that arrived (1 KiB here), a few KiB in all; 1,000 of them
/// measured 4 MiB (17 -> 21 MiB). 32 MiB leaves room for allocator slack on other machines
/// and still fails an agent that keeps 32 KiB per connection, or that fills each announced
/// 256 KiB (128 MiB for the 500 stalled ones).
#[test]
fn a_thousand_connections_keep_memory_bounded() {
    raise_open_files();
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let key = keygen_at(&tpm.tcti(), &keys, "id");
    let agent = Agent::serve(&tpm, &keys, &[]);
    let message = dir.path().join("message");
    support::write(&message, "signed while 1000 clients wait\n");
    assert_ok(
        &sign_file(agent.socket(), &key.public, &message),
        "warm-up signature",
    );
    let before = rss_kib(agent.pid());

    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut stream = UnixStream::connect(agent.socket()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.write_all(&LIST).expect("list");
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).expect("a list answer");
        let mut body = vec![0u8; u32::from_be_bytes(reply) as usize];
        stream.read_exact(&mut body).expect("the list");
        if i % 2 == 0 {
            // A sign request announced at 256 KiB, of which 1 KiB arrives.
            let mut partial = (256u32 * 1024).to_be_bytes().to_vec();
            partial.push(13);
            partial.resize(4 + 1024, 0);
            stream.write_all(&partial).expect("partial message");
        }
        clients.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib(agent.pid());

    // Another client is served meanwhile.
    let _ = std::fs::remove_file(dir.path().join("message.sig"));
    assert_ok(
        &sign_file(agent.socket(), &key.public, &message),
        "signature with 1000 clients connected",
    );
    assert_ok(
        &verify_file(dir.path(), &key.public_line(), &message),
        "verify",
    );
    drop(clients);
    let log = agent.stderr();
    assert!(
        !log.contains("too many clients"),
        "1000 clients hit the limit:\n{log}"
    );
    let growth = during.saturating_sub(before);
    eprintln!("agent VmRSS: {before} KiB before, {during} KiB with 1000 clients");
    assert!(
        growth < 32 * 1024,
        "VmRSS grew by {growth} KiB with 1000 clients ({before} -> {during} KiB)"
    );
}

/// A TCP proxy in front of swtpm's two ports that, when armed, kills swtpm as soon as a
/// TPM2_Sign command passes (so that the command never gets an answer) and drops the
/// connection. The TPM behind it can be replaced: `target` is the port swtpm listens on.
struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    armed: Arc<AtomicBool>,
    victim: Arc<AtomicU32>,
}

/// TPM_CC_Sign (TPM 2.0 Part 2, 6.5.2), as it stands at bytes 6..10 of a command.
const TPM_CC_SIGN: [u8; 4] = [0, 0, 0x01, 0x5D];

impl Proxy {
    fn start(target: u16) -> Proxy {
        let port = free_port_pair();
        let proxy = Proxy {
            port,
            target: Arc::new(AtomicU16::new(target)),
            armed: Arc::new(AtomicBool::new(false)),
            victim: Arc::new(AtomicU32::new(0)),
        };
        for offset in [0, 1] {
            let listener =
                TcpListener::bind(("127.0.0.1", port + offset)).expect("bind the proxy port");
            let (target, armed, victim) = (
                Arc::clone(&proxy.target),
                Arc::clone(&proxy.armed),
                Arc::clone(&proxy.victim),
            );
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let to = target.load(Ordering::SeqCst) + offset;
                    let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                        continue;
                    };
                    let watch = (offset == 0).then(|| (Arc::clone(&armed), Arc::clone(&victim)));
                    pipe(client, server, watch);
                }
            });
        }
        proxy
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

/// Copies bytes both ways between `client` and `server`; with `watch`, a TPM2_Sign from
/// the client while armed kills the victim instead of passing on.
fn pipe(client: TcpStream, server: TcpStream, watch: Option<(Arc<AtomicBool>, Arc<AtomicU32>)>) {
    let (mut client_in, mut server_out) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let (mut server_in, mut client_out) = (server, client);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = client_in.read(&mut buffer) {
            if n == 0 {
                break;
            }
            if let Some((armed, victim)) = &watch {
                if n >= 10 && buffer[6..10] == TPM_CC_SIGN && armed.swap(false, Ordering::SeqCst) {
                    let pid = Pid::from_raw(victim.load(Ordering::SeqCst) as i32);
                    if let Some(pid) = pid {
                        let _ = kill_process(pid, Signal::KILL);
                    }
                    let _ = client_in.shutdown(std::net::Shutdown::Both);
                    let _ = server_out.shutdown(std::net::Shutdown::Both);
                    break;
                }
            }
            if server_out.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(std::net::Shutdown::Both);
    });
}

/// swtpm on `state`, on a fresh port pair; stopped in order by [`stop_swtpm`].
fn start_swtpm(state: &Path, logs: &Path) -> (Daemon, u16) {
    let port = free_port_pair();
    let mut cmd = tool("swtpm");
    cmd.args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .args(["--flags", "not-need-init,startup-clear"]);
    let mut daemon = Daemon::spawn("swtpm", &mut cmd, logs);
    let up = poll_until(START_TIMEOUT, || {
        !daemon.is_running() || (accepts_tcp(port) && accepts_tcp(port + 1))
    });
    assert!(up && daemon.is_running(), "swtpm: {}", daemon.stderr());
    (daemon, port)
}

fn stop_swtpm(mut daemon: Daemon, port: u16) {
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let _ = run(tool("tpm2_shutdown").arg("-T").arg(tcti));
    let ctrl = format!("127.0.0.1:{}", port + 1);
    let _ = run(tool("swtpm_ioctl").args(["--tcp", &ctrl, "-s"]));
    daemon.wait_exit(Duration::from_secs(5));
}

#[test]
fn swtpm_killed_mid_signature_fails_that_request_and_the_next_signs() {
    let dir = tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let (swtpm, port) = start_swtpm(&state, dir.path());
    let proxy = Proxy::start(port);
    proxy.victim.store(swtpm.pid(), Ordering::SeqCst);

    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let key = keygen_at(&proxy.tcti(), &keys, "id");
    let socket = dir.path().join("agent.sock");
    let key_dir = keys.to_str().expect("UTF-8 path");
    let mut agent = Agent::start(
        &socket,
        &["--tcti", &proxy.tcti(), "--key-dir", key_dir],
        &[],
    );
    let message = dir.path().join("message");
    support::write(&message, "signed across a swtpm crash\n");
    assert_ok(
        &sign_file(&socket, &key.public, &message),
        "first signature",
    );
    let agent_pid = agent.pid();

    // swtpm dies while the TPM2_Sign command is on its way.
    proxy.armed.store(true, Ordering::SeqCst);
    let _ = std::fs::remove_file(dir.path().join("message.sig"));
    let failed = sign_file(&socket, &key.public, &message);
    assert!(!failed.status.success(), "{}", describe(&failed));
    assert!(
        !proxy.armed.load(Ordering::SeqCst),
        "no TPM2_Sign went past"
    );
    let log = agent.stderr_once_it_contains("lost the connection");
    let expected = "lost the connection to the TPM during signing; the next request reconnects \
                    (if this repeats, check that the TPM or swtpm is running)";
    let line = log
        .lines()
        .find(|l| l.contains("request failed: key SHA256:"))
        .unwrap_or_default();
    assert!(line.ends_with(expected), "{log}");
    drop(swtpm);

    // swtpm is back (same state, another port); the agent, unrestarted, signs.
    let (swtpm, port) = start_swtpm(&state, dir.path());
    proxy.target.store(port, Ordering::SeqCst);
    assert_ok(
        &sign_file(&socket, &key.public, &message),
        "signature after swtpm came back",
    );
    assert_ok(
        &verify_file(dir.path(), &key.public_line(), &message),
        "verify",
    );
    assert!(agent.is_running());
    assert_eq!(agent.pid(), agent_pid);
    assert!(agent
        .stderr_once_it_contains("reconnected")
        .contains("reconnected to the TPM"));
    agent.stop();
    stop_swtpm(swtpm, port);
}

/// The TPM away for longer than a request waits for it (a few seconds): each request in the
/// outage fails within seconds, saying the next one reconnects, and the agent never stops
/// trying; once the TPM is reachable again it signs, unrestarted. (It used to wait a minute,
/// then stop its TPM thread for good.)
#[test]
fn a_long_tpm_outage_fails_requests_quickly_and_the_agent_signs_after_it() {
    let dir = tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let (swtpm, port) = start_swtpm(&state, dir.path());
    let proxy = Proxy::start(port);
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let key = keygen_at(&proxy.tcti(), &keys, "id");
    let socket = dir.path().join("agent.sock");
    let key_dir = keys.to_str().expect("UTF-8 path");
    let mut agent = Agent::start(
        &socket,
        &["--tcti", &proxy.tcti(), "--key-dir", key_dir],
        &[],
    );
    let message = dir.path().join("message");
    support::write(&message, "signed across a TPM outage\n");
    assert_ok(&sign_file(&socket, &key.public, &message), "before");

    // The outage: swtpm stops in order.
    stop_swtpm(swtpm, port);
    assert!(!sign_file(&socket, &key.public, &message).status.success());
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(8) {
        let started = std::time::Instant::now();
        let failed = sign_file(&socket, &key.public, &message);
        let took = started.elapsed();
        assert!(!failed.status.success(), "{}", describe(&failed));
        assert!(
            took < Duration::from_secs(6),
            "a request in the outage took {took:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = agent.stderr();
    let expected = "lost the connection to the TPM during a reconnection attempt; the next \
                    request reconnects";
    assert!(log.contains(expected), "{log}");
    assert!(!log.contains("thread"), "{log}");

    // swtpm is back, on the same state.
    let (swtpm, port) = start_swtpm(&state, dir.path());
    proxy.target.store(port, Ordering::SeqCst);
    let _ = std::fs::remove_file(dir.path().join("message.sig"));
    let after = sign_file(&socket, &key.public, &message);
    assert!(
        after.status.success(),
        "{}\n{}",
        describe(&after),
        agent.stderr()
    );
    assert_ok(
        &verify_file(dir.path(), &key.public_line(), &message),
        "verify",
    );
    assert!(agent
        .stderr_once_it_contains("reconnected")
        .contains("reconnected to the TPM"));
    assert!(agent.is_running());
    agent.stop();
    stop_swtpm(swtpm, port);
}

/// Runs `ssh-tpm-keygen` to replace `dir`/id (answering yes to the overwrite question);
/// returns its output.
fn regenerate(tcti: &str, dir: &Path) -> std::process::Output {
    let mut cmd = product("ssh-tpm-keygen");
    cmd.args(["--tcti", tcti, "-N", "", "-f"])
        .arg(dir.join("id"));
    run_with_stdin(&mut cmd, b"y\n")
}

fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A directory the key cannot be written to, for real: immutable (chattr +i) when root,
/// which no permission bit would stop, or mode 555 otherwise.
#[test]
fn a_read_only_directory_keeps_the_old_key_and_says_why() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    keygen_at(&tpm.tcti(), &keys, "id");
    let old = files_of(&keys);

    let locked = if is_root() {
        run(tool("chattr").arg("+i").arg(&keys))
    } else {
        run(tool("chmod").arg("555").arg(&keys))
    };
    assert_ok(&locked, "make the key directory read-only");
    let out = regenerate(&tpm.tcti(), &keys);
    let _ = run(tool("chattr").arg("-i").arg(&keys));
    let _ = run(tool("chmod").arg("755").arg(&keys));

    assert!(!out.status.success(), "{}", describe(&out));
    let why = if is_root() {
        "Operation not permitted"
    } else {
        "Permission denied"
    };
    let first = stderr(&out).lines().last().unwrap_or_default().to_string();
    let expected = format!("cannot write {}/id.tpm", keys.display());
    assert!(
        first.contains(&expected) && first.contains(why),
        "{}",
        describe(&out)
    );
    assert_eq!(files_of(&keys), old, "the old key files changed");
}

/// A full file system, for real: a 64 KiB tmpfs in a private mount namespace (needs root;
/// skipped otherwise), filled up after the old key was written there.
#[test]
fn a_full_directory_keeps_the_old_key_and_says_why() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let old_dir = dir.path().join("old");
    std::fs::create_dir(&old_dir).expect("old dir");
    keygen_at(&tpm.tcti(), &old_dir, "id");
    let old = files_of(&old_dir);
    let keygen = support::product_path("ssh-tpm-keygen");

    // In the namespace: mount, copy the old key in, fill the rest, replace the key, and
    // show what is left.
    let script = format!(
        "set -e
         mount -t tmpfs -o size=64k tmpfs '{keys}'
         cp '{old}'/id.tpm '{old}'/id.pub '{keys}'/
         dd if=/dev/zero of='{keys}'/filler bs=1k 2>/dev/null || true
         rm -f '{keys}'/filler.small; : > '{keys}'/filler.small || true
         set +e
         printf 'y\\n' | '{keygen}' --tcti '{tcti}' -N '' -f '{keys}'/id
         echo \"exit=$?\"
         cp '{keys}'/id.tpm '{keys}'/id.pub '{out}'/",
        keys = keys.display(),
        old = old_dir.display(),
        tcti = tpm.tcti(),
        out = dir.path().display(),
    );
    let out = run(tool("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(&script));
    let text = stderr(&out);
    if text.contains("mount:") && text.contains("permission denied") {
        eprintln!("skipped: no mount rights here:\n{text}");
        return;
    }
    assert!(
        support::stdout(&out).contains("exit=1"),
        "{}",
        describe(&out)
    );
    let expected = format!(
        "cannot write {}/id.tpm: No space left on device (os error 28)",
        keys.display()
    );
    assert!(text.contains(&expected), "{}", describe(&out));
    for (path, bytes) in &old {
        let name = path.file_name().expect("name");
        let now = std::fs::read(dir.path().join(name)).expect("the key after");
        assert_eq!(&now, bytes, "{} changed", name.to_string_lossy());
    }
}

/// After TPM2_Clear the owner seed is new: the agent says that the key is gone, and why.
#[test]
fn a_cleared_tpm_says_the_keys_are_gone_and_why() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let key = keygen_at(&tpm.tcti(), &keys, "id");
    assert_ok(&tpm.tpm2("tpm2_clear", &["-c", "p"]), "tpm2_clear");

    let agent = Agent::serve(&tpm, &keys, &[]);
    let message = dir.path().join("message");
    support::write(&message, "made before the clear\n");
    let out = sign_file(agent.socket(), &key.public, &message);
    assert!(!out.status.success(), "{}", describe(&out));
    let log = agent.stderr_once_it_contains("request failed");
    let expected = "this key belongs to a different TPM, or the TPM was cleared, or its parent \
                    is not the one in the key file; the key cannot be used here. A cleared TPM \
                    (tpm2_clear, a firmware reset) has new seeds, so every key made before is \
                    gone for good: make new keys with ssh-tpm-keygen";
    let line = log
        .lines()
        .find(|l| l.contains("request failed: key SHA256:"))
        .unwrap_or_default();
    assert!(line.ends_with(expected), "{log}");
}

/// In dictionary-attack lockout the agent says when it ends: the TPM forgets a failure
/// every 600 s here, so the lockout lasts at most 10 minutes.
#[test]
fn lockout_is_reported_with_the_time_it_ends() {
    let tpm = Swtpm::start();
    let lockout = [
        "--setup-parameters",
        "--max-tries=1",
        "--recovery-time=600",
        "--lockout-recovery-time=1",
    ];
    assert_ok(&tpm.tpm2("tpm2_dictionarylockout", &lockout), "lockout");
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let out = run(product("ssh-tpm-keygen")
        .args(["--tcti", &tpm.tcti(), "-N", "1234", "-f"])
        .arg(keys.join("id")));
    assert_ok(&out, "ssh-tpm-keygen with a PIN");
    let key = KeyFiles::at(&keys, "id");
    let askpass = support::write_askpass(dir.path(), "9999");
    let askpass = askpass.to_str().expect("UTF-8 path");
    let env = [("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", "force")];
    let agent = Agent::serve(&tpm, &keys, &env);
    let message = dir.path().join("message");
    support::write(&message, "never signed\n");

    // The one wrong PIN the TPM takes; then the lockout.
    assert!(!sign_file(agent.socket(), &key.public, &message)
        .status
        .success());
    agent.stderr_once_it_contains("now locking PIN keys");
    assert!(!sign_file(agent.socket(), &key.public, &message)
        .status
        .success());
    let log = agent.stderr_once_it_contains("dictionary-attack lockout");
    let expected = "the TPM is in dictionary-attack lockout and refuses PINs for at most 10 \
                    minutes more; try again then; or reset it with the lockout password \
                    (`tpm2_dictionarylockout --clear-lockout`)";
    let line = log
        .lines()
        .find(|l| l.contains("dictionary-attack lockout"))
        .unwrap_or_default();
    assert!(line.ends_with(expected), "{log}");
}
