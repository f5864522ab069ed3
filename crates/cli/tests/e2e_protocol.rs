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
    assert!(
        names.contains(&"session-bind@openssh.com".to_string()),
        "{names:?}"
    );

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

// ---------------------------------------------------------------------------------------------
// Destination constraints (-h) and session binding

/// The host key line (`type base64`) of the sshd on `port`, from ssh-keyscan.
fn host_key_line(port: u16) -> String {
    let out = run(tool("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string()])
        .arg("127.0.0.1"));
    assert_ok(&out, "ssh-keyscan");
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|line| !line.starts_with('#') && line.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("no host key from ssh-keyscan: {}", describe(&out)));
    let mut fields = line.split_whitespace().skip(1);
    match (fields.next(), fields.next()) {
        (Some(kind), Some(blob)) => format!("{kind} {blob}"),
        _ => panic!("not a known_hosts line: {line:?}"),
    }
}

/// Options for an ssh that knows hosts only from `known_hosts`, under the name `alias`.
fn ssh_options(known_hosts: &Path, alias: &str, port: u16) -> Vec<String> {
    [
        "-F".to_string(),
        "/dev/null".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("HostKeyAlias={alias}"),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "PasswordAuthentication=no".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-p".into(),
        port.to_string(),
    ]
    .into()
}

/// Runs `ssh` through the agent at `socket` to the sshd on `port` (known as `alias`), with
/// the agent forwarded when `forward`, running `command` there.
fn ssh_via(
    socket: &Path,
    known_hosts: &Path,
    alias: &str,
    port: u16,
    forward: bool,
    command: &str,
) -> Output {
    let mut cmd = tool("ssh");
    cmd.env("SSH_AUTH_SOCK", socket)
        .args(ssh_options(known_hosts, alias, port))
        .arg("-o")
        .arg(format!("IdentityAgent={}", socket.display()))
        .arg(if forward { "-A" } else { "-a" })
        .arg(format!("{}@127.0.0.1", support::current_user()))
        .arg(command);
    run(&mut cmd)
}

/// The command that, run on host A with the forwarded agent, logs in to B and says so.
fn hop_command(known_hosts: &Path, port: u16) -> String {
    format!(
        "ssh {} {}@127.0.0.1 echo reached-b",
        ssh_options(known_hosts, "hostB", port).join(" "),
        support::current_user()
    )
}

/// `ssh-tpm-add -h` keys follow OpenSSH's destination rules, checked against the sessions
/// ssh binds to the agent: with `-h hostA` the key logs in to A, but neither to B directly
/// nor to B from A through the forwarded agent; it is listed, but does not sign, on a
/// connection no session is bound to. Added again with `-h hostA -h 'hostA>hostB'`, the hop
/// from A to B works, and B directly still does not.
#[test]
fn destinations_allow_only_the_listed_hops() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let authorized = format!("{}\n", key.public_line());
    let a = Sshd::start(&authorized, None);
    let b = Sshd::start(&authorized, None);
    let work = tempdir();
    let known_hosts = work.path().join("known_hosts");
    write(
        &known_hosts,
        format!(
            "hostA {}\nhostB {}\n",
            host_key_line(a.port()),
            host_key_line(b.port())
        ),
    );
    let known = known_hosts.to_str().expect("UTF-8 path");
    let empty = tempdir();
    let (_socket_dir, agent) = serve(&tpm, empty.path(), &["-d"], &[]);
    let socket = agent.socket();
    let hop = hop_command(&known_hosts, b.port());

    let out = tpm_add(socket, &["-h", "hostA", "-H", known], &key);
    assert_ok(&out, "ssh-tpm-add -h hostA");
    assert!(
        stdout(&out).contains("Restricted to destination hostA"),
        "{}",
        describe(&out)
    );

    let direct_a = ssh_via(
        socket,
        &known_hosts,
        "hostA",
        a.port(),
        false,
        "echo reached-a",
    );
    assert!(
        stdout(&direct_a).contains("reached-a"),
        "login to A: {}\nagent log:\n{}",
        describe(&direct_a),
        agent.stderr()
    );
    let direct_b = ssh_via(
        socket,
        &known_hosts,
        "hostB",
        b.port(),
        false,
        "echo reached-b",
    );
    assert!(
        !stdout(&direct_b).contains("reached-b"),
        "logged in to B: {}",
        describe(&direct_b)
    );
    let through_a = ssh_via(socket, &known_hosts, "hostA", a.port(), true, &hop);
    assert!(
        !stdout(&through_a).contains("reached-b"),
        "reached B through A without 'hostA>hostB': {}",
        describe(&through_a)
    );

    // Local use: listed, but no signature without a bound session.
    assert_eq!(listed(socket), [key.blob()]);
    let (signed, _) = sign_and_verify(socket, &key);
    assert!(!signed.status.success(), "signed on an unbound connection");
    let log = agent.stderr_once_it_contains("no ssh session is bound");
    assert!(log.contains("no ssh session is bound"), "{log}");

    let out = tpm_add(
        socket,
        &["-h", "hostA", "-h", "hostA>hostB", "-H", known],
        &key,
    );
    assert_ok(&out, "ssh-tpm-add -h hostA -h hostA>hostB");
    let through_a = ssh_via(socket, &known_hosts, "hostA", a.port(), true, &hop);
    assert!(
        stdout(&through_a).contains("reached-b"),
        "hop from A to B: {}\nagent log:\n{}",
        describe(&through_a),
        agent.stderr()
    );
    let direct_b = ssh_via(
        socket,
        &known_hosts,
        "hostB",
        b.port(),
        false,
        "echo reached-b",
    );
    assert!(
        !stdout(&direct_b).contains("reached-b"),
        "logged in to B: {}",
        describe(&direct_b)
    );
}

/// Reads every message a client sends on one connection to `listener`, answering SUCCESS.
fn record_requests(listener: std::os::unix::net::UnixListener) -> Vec<Vec<u8>> {
    let (mut stream, _) = listener.accept().expect("accept ssh-add");
    let mut messages = Vec::new();
    loop {
        let mut length = [0u8; 4];
        if stream.read_exact(&mut length).is_err() {
            return messages;
        }
        let mut message = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut message).expect("message");
        messages.push(message);
        stream.write_all(&[0, 0, 0, 1, 6]).expect("answer");
    }
}

/// The destination constraint real `ssh-add -h` sends is read by our decoder as the hops and
/// host keys it names, and our encoder writes it back byte for byte, so that ssh-tpm-add's
/// constraints are OpenSSH's.
#[test]
fn destination_constraints_match_ssh_add_byte_for_byte() {
    use ssh_agent_lib::ssh_encoding::Decode as _;
    use ssh_tpm_agent_core::constraint::Constraints;

    let work = tempdir();
    let mut host_lines = Vec::new();
    let mut host_blobs = Vec::new();
    for name in ["host_a", "host_b"] {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        let (_, public) = plain_key(&dir);
        let key = ssh_key::PublicKey::from_openssh(&public).expect("a public key");
        let mut blob = Vec::new();
        key.key_data().encode(&mut blob).expect("encode");
        host_blobs.push(blob);
        let (kind, base64) = support::key_blob(&public);
        host_lines.push(format!("{kind} {base64}"));
    }
    let known_hosts = work.path().join("known_hosts");
    write(
        &known_hosts,
        format!("hostA {}\nhostB {}\n", host_lines[0], host_lines[1]),
    );
    let (plain, _) = plain_key(work.path());

    let socket = work.path().join("recorder.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let recorder = std::thread::spawn(move || record_requests(listener));
    let out = ssh_add(
        &socket,
        &[
            "-h",
            "hostA",
            "-h",
            "hostA>deploy@hostB",
            "-H",
            known_hosts.to_str().expect("UTF-8 path"),
            plain.to_str().expect("UTF-8 path"),
        ],
    );
    assert_ok(&out, "ssh-add -h to the recorder");
    let messages = recorder.join().expect("recorder thread");
    let added = messages
        .iter()
        .find(|m| m.first() == Some(&25))
        .unwrap_or_else(|| panic!("no ADD_ID_CONSTRAINED among {} messages", messages.len()));

    // Skip the ed25519 private key (type, public, private, comment) to the constraints.
    let mut reader = &added[1..];
    for _ in 0..4 {
        Vec::<u8>::decode(&mut reader).expect("key field");
    }
    let constraints = Constraints::decode(reader).expect("our decoder reads ssh-add's");
    let blob = |i: usize| host_blobs[i].clone();
    let hops: Vec<_> = constraints
        .destinations
        .iter()
        .map(|d| {
            (
                d.from.hostname.clone(),
                d.from.keys.clone(),
                d.to.user.clone(),
                d.to.hostname.clone(),
                d.to.keys.clone(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            (None, vec![], None, Some("hostA".into()), vec![blob(0)]),
            (
                Some("hostA".into()),
                vec![blob(0)],
                Some("deploy".into()),
                Some("hostB".into()),
                vec![blob(1)]
            ),
        ]
    );
    assert_eq!(
        constraints.encode(),
        reader,
        "our encoding differs from ssh-add's"
    );
}

/// A `-A` socket that leads back to this agent through a symlink is refused at connection
/// time: the request fails at once instead of calling itself without end.
#[test]
fn a_proxy_socket_that_is_a_link_to_ourselves_is_refused() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let dir = tempdir();
    let own = dir.path().join("agent.sock");
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&own, &link).expect("symlink");
    let tcti = tpm.tcti();
    let key_dir = keys.path().to_str().expect("UTF-8 path");
    let link_arg = link.to_str().expect("UTF-8 path");
    let agent = Agent::start(
        &own,
        &["--tcti", &tcti, "--key-dir", key_dir, "-A", link_arg],
        &[],
    );

    let started = Instant::now();
    let listed = ssh_add(&own, &["-L"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "listing took {:?}",
        started.elapsed()
    );
    assert_eq!(
        listed_keys(&listed),
        vec![key.blob()],
        "{}",
        describe(&listed)
    );
    let log = agent.stderr_once_it_contains("connection from this agent itself");
    assert!(log.contains("a -A socket is ours"), "{log}");
    assert!(
        log.lines().count() < 50,
        "the loop logged {} lines",
        log.lines().count()
    );
}
