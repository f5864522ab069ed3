//! End-to-end tests of the agent protocol beyond list and sign: key constraints set with
//! `ssh-tpm-add -c` and `-t`, the `query` extension, and standing in front of OpenSSH's own
//! `ssh-agent` with `-A`. Driven by the real `ssh-add`, `ssh-keygen`, `ssh-agent`, `ssh` and
//! `sshd` against `ssh-tpm-agent` on a private swtpm.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ssh_agent_lib::proto::extension::QueryResponse;
use ssh_agent_lib::proto::{Extension, Request, Response};
use ssh_agent_lib::ssh_encoding::{Decode, Encode};
use support::{
    accepts_unix, assert_ok, chmod, describe, fingerprint, keygen, listed_keys, poll_until,
    product, read_text, run, sign_file, ssh_add, stderr, stdout, tempdir, tool, verify_file, write,
    Agent, Daemon, KeyFiles, Sshd, Swtpm, START_TIMEOUT,
};
use tempfile::TempDir;

/// What `ssh-add -L` prints for an agent without keys.
const NO_IDENTITIES: &str = "The agent has no identities.";

/// The keys `ssh-add -L` lists on `socket` (type and blob); empty when there are none.
fn listed(socket: &Path) -> Vec<(String, String)> {
    let out = ssh_add(socket, &["-L"]);
    if out.status.success() {
        return listed_keys(&out);
    }
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains(NO_IDENTITIES),
        "ssh-add -L: {}",
        describe(&out)
    );
    Vec::new()
}

/// Sorted, for comparing lists whatever their order.
fn sorted(mut keys: Vec<(String, String)>) -> Vec<(String, String)> {
    keys.sort();
    keys
}

/// Runs `ssh-tpm-add ARGS... KEY.tpm` against the agent at `socket`.
fn tpm_add(socket: &Path, args: &[&str], key: &KeyFiles) -> Output {
    run(product("ssh-tpm-add")
        .env("SSH_TPM_AUTH_SOCK", socket)
        .args(args)
        .arg(&key.tpm))
}

/// Signs a message with `key` through `socket`; the output of `ssh-keygen -Y sign` and, when it
/// worked, whether the signature verifies.
fn sign_and_verify(socket: &Path, key: &KeyFiles) -> (Output, bool) {
    let work = tempdir();
    let message = work.path().join("message.txt");
    write(&message, "signed through ssh-tpm-agent\n");
    let signed = sign_file(socket, &key.public, &message);
    let verified = signed.status.success()
        && verify_file(work.path(), &key.public_line(), &message)
            .status
            .success();
    (signed, verified)
}

/// An agent on `tpm` serving `key_dir`, with extra `args` and `env`; the directory holds its
/// socket and must outlive it.
fn serve(tpm: &Swtpm, key_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (TempDir, Agent) {
    let socket_dir = tempdir();
    let socket = socket_dir.path().join("agent.sock");
    let tcti = tpm.tcti();
    let key_dir = key_dir.to_str().expect("UTF-8 key dir");
    let mut all_args = vec!["--tcti", &tcti, "--key-dir", key_dir];
    all_args.extend_from_slice(args);
    let agent = Agent::start(&socket, &all_args, env);
    (socket_dir, agent)
}

// ---------------------------------------------------------------------------------------------
// Confirmation (-c)

/// An askpass program for confirmations: it records `SSH_ASKPASS_PROMPT` and the prompt (line
/// breaks as `|`) in `confirm.calls`, and allows unless the file `deny` exists beside it.
fn write_confirm_askpass(dir: &Path) -> PathBuf {
    let script = dir.join("confirm-askpass");
    let calls = dir.join("confirm.calls");
    let deny = dir.join("deny");
    write(
        &script,
        format!(
            "#!/bin/sh\n\
             printf '%s: %s\\n' \"$SSH_ASKPASS_PROMPT\" \"$(printf '%s' \"$1\" | tr '\\n' '|')\" \
             >> '{}'\n\
             [ ! -e '{}' ]\n",
            calls.display(),
            deny.display()
        ),
    );
    chmod(&script, 0o755);
    script
}

/// The confirmations asked so far, one line each: `SSH_ASKPASS_PROMPT: prompt`.
fn confirmations(dir: &Path) -> Vec<String> {
    read_text(&dir.join("confirm.calls"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A key added with `ssh-tpm-add -c` asks before each use, through askpass in confirm mode,
/// naming the key, its fingerprint and the process asking (ssh-keygen, with its pid); a refusal
/// fails the signature. A key loaded from --key-dir has no constraints and asks nothing.
#[test]
fn confirm_asks_before_each_use_and_a_refusal_fails() {
    let tpm = Swtpm::start();
    let served = tempdir();
    let (plain_key, _) = keygen(&tpm, served.path(), "served", &["-N", ""]);
    let added = tempdir();
    let (key, _) = keygen(
        &tpm,
        added.path(),
        "confirmed",
        &["-N", "", "-C", "work key"],
    );
    let work = tempdir();
    let askpass = write_confirm_askpass(work.path());
    let env = [
        ("SSH_ASKPASS", askpass.to_str().expect("UTF-8 path")),
        ("SSH_ASKPASS_REQUIRE", "force"),
    ];
    let (_socket_dir, agent) = serve(&tpm, served.path(), &[], &env);

    let out = tpm_add(agent.socket(), &["-c"], &key);
    assert_ok(&out, "ssh-tpm-add -c");
    assert!(
        stdout(&out).contains("The user must confirm each use of the key"),
        "{}",
        describe(&out)
    );

    // Allowed: it signs, after one confirmation that names key and requester.
    let (signed, verified) = sign_and_verify(agent.socket(), &key);
    assert!(
        verified,
        "{}\nagent log:\n{}",
        describe(&signed),
        agent.stderr()
    );
    let asked = confirmations(work.path());
    assert_eq!(asked.len(), 1, "{asked:#?}");
    let prompt = &asked[0];
    assert!(
        prompt.starts_with("confirm: Allow use of key work key?"),
        "{prompt}"
    );
    assert!(prompt.contains(&fingerprint(&key.public)), "{prompt}");
    assert!(prompt.contains("Requested by ssh-keygen (pid "), "{prompt}");

    // Each use asks again.
    let (signed, verified) = sign_and_verify(agent.socket(), &key);
    assert!(verified, "{}", describe(&signed));
    assert_eq!(confirmations(work.path()).len(), 2);

    // Refused: the signature fails, and the log says why.
    write(&work.path().join("deny"), "");
    let (signed, _) = sign_and_verify(agent.socket(), &key);
    assert!(!signed.status.success(), "signed without confirmation");
    assert_eq!(confirmations(work.path()).len(), 3);
    let log = agent.stderr_once_it_contains("did not allow");
    assert!(log.contains("did not allow this use of the key"), "{log}");

    // The key from --key-dir is served without constraints: no prompt, even when denying.
    let (signed, verified) = sign_and_verify(agent.socket(), &plain_key);
    assert!(verified, "{}", describe(&signed));
    assert_eq!(
        confirmations(work.path()).len(),
        3,
        "an unconstrained key asked"
    );
}

/// With no way to ask (SSH_ASKPASS_REQUIRE=never), a key added with -c is not used.
#[test]
fn confirm_without_a_prompt_refuses() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let empty = tempdir();
    let (_socket_dir, agent) = serve(&tpm, empty.path(), &[], &[("SSH_ASKPASS_REQUIRE", "never")]);
    assert_ok(&tpm_add(agent.socket(), &["-c"], &key), "ssh-tpm-add -c");
    let (signed, _) = sign_and_verify(agent.socket(), &key);
    assert!(!signed.status.success(), "signed without confirmation");
    let log = agent.stderr_once_it_contains("SSH_ASKPASS_REQUIRE=never");
    assert!(log.contains("did not allow this use of the key"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Lifetime (-t)

/// A key added with `-t 2` is listed at once and removed two seconds later, on time, without
/// any client asking meanwhile; its sign requests fail after that. The key loaded from
/// --key-dir stays.
#[test]
fn lifetime_removes_the_key_on_time() {
    let tpm = Swtpm::start();
    let served = tempdir();
    let (kept, _) = keygen(&tpm, served.path(), "kept", &["-N", ""]);
    let added = tempdir();
    let (key, _) = keygen(&tpm, added.path(), "brief", &["-N", ""]);
    let (_socket_dir, agent) = serve(&tpm, served.path(), &[], &[]);

    let out = tpm_add(agent.socket(), &["-t", "2"], &key);
    let added_at = Instant::now();
    assert_ok(&out, "ssh-tpm-add -t 2");
    assert!(
        stdout(&out).contains("Lifetime set to 2 seconds"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        sorted(listed(agent.socket())),
        sorted(vec![kept.blob(), key.blob()])
    );
    let (signed, verified) = sign_and_verify(agent.socket(), &key);
    assert!(verified, "{}", describe(&signed));

    // No request meanwhile: the agent removes the key by itself.
    let expired = poll_until(Duration::from_secs(10), || {
        agent.stderr().contains("key expired")
    });
    let took = added_at.elapsed();
    assert!(expired, "the key did not expire:\n{}", agent.stderr());
    assert!(
        took >= Duration::from_millis(1900),
        "expired after {took:?}"
    );
    assert!(took < Duration::from_secs(6), "expired only after {took:?}");

    assert_eq!(listed(agent.socket()), [kept.blob()]);
    let (signed, _) = sign_and_verify(agent.socket(), &key);
    assert!(!signed.status.success(), "an expired key signed");
}

// ---------------------------------------------------------------------------------------------
// The query extension

/// Sends one request to the agent at `socket` and decodes the answer.
fn call(socket: &Path, request: &Request) -> Response {
    let mut stream = UnixStream::connect(socket).expect("connect to the agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set a read timeout");
    let mut frame = Vec::new();
    let length = request.encoded_len().expect("length") as u32;
    length.encode(&mut frame).expect("encode length");
    request.encode(&mut frame).expect("encode request");
    stream.write_all(&frame).expect("send");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("answer length");
    let mut answer = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).expect("answer");
    Response::decode(&mut &answer[..]).expect("decode the answer")
}

/// `query` (draft-miller-ssh-agent 3.8.1) lists the extensions the agent answers.
#[test]
fn query_lists_the_supported_extensions() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (_socket_dir, agent) = serve(&tpm, keys.path(), &[], &[]);

    let query = Request::Extension(Extension {
        name: "query".into(),
        details: Vec::new().into(),
    });
    let answer = match call(agent.socket(), &query) {
        Response::ExtensionResponse(answer) => answer,
        other => panic!("query answered {other:?}\nagent log:\n{}", agent.stderr()),
    };
    let names = answer
        .parse_message::<QueryResponse>()
        .expect("a query answer")
        .expect("named query")
        .extensions;
    assert!(names.contains(&"query".to_string()), "{names:?}");
    assert!(names.contains(&"tpm-add-key".to_string()), "{names:?}");

    let unknown = Request::Extension(Extension {
        name: "no-such-extension@example.com".into(),
        details: Vec::new().into(),
    });
    assert_eq!(call(agent.socket(), &unknown), Response::ExtensionFailure);
}

// ---------------------------------------------------------------------------------------------
// Standing in front of another agent (-A)

/// OpenSSH's `ssh-agent -D` on a socket; SIGTERM on drop.
struct OpensshAgent {
    daemon: Daemon,
    socket: PathBuf,
}

impl OpensshAgent {
    fn start(socket: &Path, log_dir: &Path) -> OpensshAgent {
        let mut cmd = tool("ssh-agent");
        cmd.arg("-D").arg("-a").arg(socket);
        let mut daemon = Daemon::spawn("ssh-agent", &mut cmd, log_dir);
        let up = poll_until(START_TIMEOUT, || {
            !daemon.is_running() || accepts_unix(socket)
        });
        assert!(
            up && daemon.is_running(),
            "ssh-agent did not start: {}",
            daemon.stderr()
        );
        OpensshAgent {
            daemon,
            socket: socket.to_owned(),
        }
    }

    fn stop(mut self) {
        self.daemon.stop();
        // ssh-agent -D leaves its socket behind when killed; a new one would refuse the path.
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A plain ed25519 key made by ssh-keygen: (private key path, public key line).
fn plain_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let out = run(tool("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "plain key", "-f"])
        .arg(&key));
    assert_ok(&out, "ssh-keygen -t ed25519");
    let public = read_text(&dir.join("id_ed25519.pub")).trim().to_owned();
    (key, public)
}

/// `ssh-tpm-agent -A SOCKET` in front of OpenSSH's ssh-agent: a plain key added with ssh-add
/// through us lands in ssh-agent, both keys are listed, and ssh logs in with the plain key
/// through us. When ssh-agent restarts (and so forgets the key), the list shows our key only,
/// adding the key while ssh-agent is down fails visibly, and after re-adding it the login
/// works again. Removing through us removes from ssh-agent.
#[test]
fn proxy_to_openssh_agent_survives_its_restart() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (tpm_key, _) = keygen(&tpm, keys.path(), "tpm", &["-N", ""]);
    let work = tempdir();
    let (plain, plain_public) = plain_key(work.path());
    let plain_blob = support::key_blob(&plain_public);
    let plain = plain.to_str().expect("UTF-8 path");

    let upstream_dir = tempdir();
    let upstream_socket = upstream_dir.path().join("ssh-agent.sock");
    let upstream = OpensshAgent::start(&upstream_socket, work.path());
    let upstream_arg = upstream_socket.to_str().expect("UTF-8 path");
    let (_socket_dir, agent) = serve(&tpm, keys.path(), &["-A", upstream_arg], &[]);
    let ours = agent.socket();

    let added = ssh_add(ours, &[plain]);
    assert_ok(&added, "ssh-add of a plain key through ssh-tpm-agent");
    assert_eq!(listed(&upstream_socket), std::slice::from_ref(&plain_blob));
    assert_eq!(
        sorted(listed(ours)),
        sorted(vec![tpm_key.blob(), plain_blob.clone()])
    );

    let sshd = Sshd::start(&format!("{plain_public}\n"), None);
    let login = sshd.login(ours, &[]);
    assert!(
        stdout(&login).contains("logged-in-as"),
        "login with the plain key through ssh-tpm-agent: {}\nagent log:\n{}",
        describe(&login),
        agent.stderr()
    );

    // ssh-agent restarts, and forgets the key.
    upstream.stop();
    assert_eq!(listed(ours), [tpm_key.blob()], "ssh-agent is down");
    let lost = ssh_add(ours, &[plain]);
    assert!(
        !lost.status.success(),
        "adding to a stopped ssh-agent reported success: {}",
        describe(&lost)
    );
    let log = agent.stderr_once_it_contains("cannot connect");
    assert!(
        log.contains(&format!("the agent at {upstream_arg}: cannot connect")),
        "{log}"
    );

    let upstream = OpensshAgent::start(&upstream_socket, work.path());
    assert_eq!(
        listed(ours),
        [tpm_key.blob()],
        "a new ssh-agent has no keys"
    );
    assert_ok(&ssh_add(ours, &[plain]), "ssh-add after the restart");
    let login = sshd.login(ours, &[]);
    assert!(
        stdout(&login).contains("logged-in-as"),
        "login after ssh-agent restarted: {}\nagent log:\n{}",
        describe(&login),
        agent.stderr()
    );

    // Removing one key, then all, reaches ssh-agent too.
    let plain_pub = format!("{plain}.pub");
    assert_ok(&ssh_add(ours, &["-d", &plain_pub]), "ssh-add -d plain key");
    assert_eq!(listed(&upstream_socket), []);
    assert_eq!(listed(ours), [tpm_key.blob()]);
    assert_ok(&ssh_add(ours, &[plain]), "ssh-add again");
    assert_ok(&ssh_add(ours, &["-D"]), "ssh-add -D");
    assert_eq!(listed(&upstream_socket), []);
    assert_eq!(listed(ours), []);
    upstream.stop();
}

/// Without -A, a plain key from ssh-add is refused, and the log says what to do.
#[test]
fn plain_key_without_proxy_is_refused_with_a_reason() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (_socket_dir, agent) = serve(&tpm, keys.path(), &[], &[]);
    let work = tempdir();
    let (plain, _) = plain_key(work.path());
    let out = ssh_add(agent.socket(), &[plain.to_str().expect("UTF-8 path")]);
    assert!(!out.status.success(), "{}", describe(&out));
    let log = agent.stderr_once_it_contains("-A SOCKET");
    assert!(log.contains("holds TPM keys only"), "{log}");
    assert!(log.contains("-A SOCKET"), "{log}");
}
