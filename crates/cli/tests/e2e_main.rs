//! End-to-end tests of the workstation half: keys made by `ssh-tpm-keygen` in a private swtpm,
//! served by `ssh-tpm-agent` to the real `ssh-add`, `ssh-keygen -Y`, `ssh` and `sshd`.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use support::{
    accepts_unix, askpass_calls, assert_ok, current_user, describe, fingerprint, is_root, key_blob,
    keygen, listed_keys, mode, open_socket_to_everyone, poll_until, product, run, run_with_stdin,
    run_within, sign_file, ssh_add, ssh_add_list_as_nobody, stderr, stdout, tempdir, tool,
    verify_file, write, write_askpass, Agent, Daemon, KeyFiles, Sshd, Swtpm, START_TIMEOUT,
};

/// What `ssh-add -L` prints for an agent without keys.
const NO_IDENTITIES: &str = "The agent has no identities.";

/// Stdout and stderr of `out` together.
fn all_output(out: &std::process::Output) -> String {
    stdout(out) + &stderr(out)
}

/// Asserts that `ssh-add -L` on `agent` lists exactly `expected` (type and blob, any order).
#[track_caller]
fn assert_lists(agent: &Agent, expected: &[(String, String)]) {
    let out = ssh_add(agent.socket(), &["-L"]);
    let log = agent.stderr();
    assert!(
        out.status.success(),
        "ssh-add -L: {}\nagent log:\n{log}",
        describe(&out)
    );
    let listed: BTreeSet<_> = listed_keys(&out).into_iter().collect();
    let expected: BTreeSet<_> = expected.iter().cloned().collect();
    assert_eq!(
        listed,
        expected,
        "ssh-add -L printed:\n{}\nagent log:\n{log}",
        stdout(&out)
    );
}

/// Asserts that a file signed through the agent verifies with the key's public half.
#[track_caller]
fn assert_signs_and_verifies(socket: &Path, key: &KeyFiles) {
    let work = tempdir();
    let message = work.path().join("message.txt");
    write(&message, "signed by a key that never left the TPM\n");

    let signed = sign_file(socket, &key.public, &message);
    assert_ok(&signed, "ssh-keygen -Y sign through the agent");
    let verified = verify_file(work.path(), &key.public_line(), &message);
    assert_ok(&verified, "ssh-keygen -Y verify");
    assert!(
        stdout(&verified).contains("Good"),
        "{}",
        describe(&verified)
    );
}

/// Asserts that `ssh` through the agent at `socket` logs in to `sshd`.
#[track_caller]
fn assert_logs_in(sshd: &Sshd, socket: &Path) {
    let out = sshd.login(socket, &[]);
    assert!(
        out.status.success(),
        "ssh login failed: {}\nsshd log:\n{}",
        describe(&out),
        sshd.log()
    );
    assert_eq!(
        stdout(&out).trim(),
        format!("logged-in-as {}", current_user())
    );
}

/// Asserts that `ssh` through the agent at `socket` does not log in to `sshd`.
#[track_caller]
fn assert_login_fails(sshd: &Sshd, socket: &Path) {
    let out = sshd.login(socket, &[]);
    assert!(!out.status.success(), "ssh logged in: {}", describe(&out));
    assert!(!stdout(&out).contains("logged-in-as"), "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------------
// One key type from keygen to login

/// keygen → agent on the key dir → `ssh-add -L` → `ssh-keygen -Y sign/verify` → `ssh` login.
fn key_serves_openssh(kind: &str, bits: &str, ssh_type: &str) {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let args = ["-t", kind, "-b", bits, "-N", "", "-C", "user@example"];
    let (key, made) = keygen(&tpm, keys.path(), "id", &args);

    let (key_type, _) = key.blob();
    assert_eq!(key_type, ssh_type, "{}", key.public_line());
    assert!(
        key.public_line().ends_with(" user@example"),
        "{}",
        key.public_line()
    );
    let printed = all_output(&made);
    assert!(
        printed.contains(&fingerprint(&key.public)),
        "keygen printed:\n{printed}"
    );

    let agent = Agent::serve(&tpm, keys.path(), &[]);
    assert_lists(&agent, &[key.blob()]);
    assert_signs_and_verifies(agent.socket(), &key);

    let sshd = Sshd::start(&key.public_line(), None);
    assert_logs_in(&sshd, agent.socket());
}

#[test]
fn ecdsa_p256_key_serves_openssh() {
    key_serves_openssh("ecdsa", "256", "ecdsa-sha2-nistp256");
}

#[test]
fn ecdsa_p384_key_serves_openssh() {
    key_serves_openssh("ecdsa", "384", "ecdsa-sha2-nistp384");
}

#[test]
fn ecdsa_p521_key_serves_openssh() {
    key_serves_openssh("ecdsa", "521", "ecdsa-sha2-nistp521");
}

#[test]
fn rsa_2048_key_serves_openssh() {
    key_serves_openssh("rsa", "2048", "ssh-rsa");
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A `NAME-cert.pub` beside the key is served too, and sshd trusting only the CA accepts it.
/// `validity` is `ssh-keygen -V`'s argument; without it the certificate is valid forever.
fn certificate_logs_in_to_sshd_that_trusts_the_ca(validity: Option<&str>) {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);

    let work = tempdir();
    let ca = work.path().join("ca");
    let out = run(tool("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f"])
        .arg(&ca));
    assert_ok(&out, "ssh-keygen for the CA");
    let mut sign = tool("ssh-keygen");
    sign.arg("-q")
        .arg("-s")
        .arg(&ca)
        .args(["-I", "e2e-cert", "-n", &current_user()]);
    if let Some(validity) = validity {
        sign.args(["-V", validity]);
    }
    assert_ok(&run(sign.arg(&key.public)), "ssh-keygen -s");
    let cert_line = fs::read_to_string(key.cert()).expect("ssh-keygen -s wrote NAME-cert.pub");
    let cert = key_blob(&cert_line);
    assert!(cert.0.ends_with("-cert-v01@openssh.com"), "{cert_line}");

    let agent = Agent::serve(&tpm, keys.path(), &[]);
    assert_lists(&agent, &[key.blob(), cert]);

    let sshd = Sshd::start("", Some(&work.path().join("ca.pub")));
    assert_logs_in(&sshd, agent.socket());
    let log = sshd.log();
    assert!(
        log.contains("e2e-cert"),
        "sshd did not log the certificate:\n{log}"
    );
}

/// OpenSSH's default: `ssh-keygen -s` without `-V` writes valid_before = 2^64 - 1, "forever".
#[test]
fn certificate_valid_forever_logs_in_to_sshd_that_trusts_the_ca() {
    certificate_logs_in_to_sshd_that_trusts_the_ca(None);
}

/// A short-lived certificate, as the organisation's CA issues them.
#[test]
fn certificate_valid_for_an_hour_logs_in_to_sshd_that_trusts_the_ca() {
    certificate_logs_in_to_sshd_that_trusts_the_ca(Some("-5m:+1h"));
}

// ---------------------------------------------------------------------------------------------
// PINs

/// Environment that makes the agent ask `askpass` for PINs, under `SSH_ASKPASS_REQUIRE=require`.
fn askpass_env<'a>(askpass: &'a Path, require: &'a str) -> [(&'a str, &'a str); 2] {
    let askpass = askpass.to_str().expect("UTF-8 askpass path");
    [("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", require)]
}

/// A TPM with a P-256 key whose PIN is 1234, and an sshd that accepts it.
fn pin_key_setup() -> (Swtpm, tempfile::TempDir, KeyFiles, Sshd) {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(
        &tpm,
        keys.path(),
        "id",
        &["-t", "ecdsa", "-b", "256", "-N", "1234"],
    );
    let sshd = Sshd::start(&key.public_line(), None);
    (tpm, keys, key, sshd)
}

#[test]
fn pin_from_askpass_unlocks_key_for_login() {
    let (tpm, keys, key, sshd) = pin_key_setup();
    let work = tempdir();
    let askpass = write_askpass(work.path(), "1234");

    let agent = Agent::serve(&tpm, keys.path(), &askpass_env(&askpass, "force"));
    assert_lists(&agent, &[key.blob()]);
    assert_logs_in(&sshd, agent.socket());
    assert!(
        askpass_calls(&askpass) >= 1,
        "the agent never ran SSH_ASKPASS"
    );
}

#[test]
fn wrong_pin_fails_login_and_agent_logs_wrong_pin() {
    let (tpm, keys, _key, sshd) = pin_key_setup();
    let work = tempdir();
    let askpass = write_askpass(work.path(), "9999");

    let mut agent = Agent::serve(&tpm, keys.path(), &askpass_env(&askpass, "force"));
    assert_login_fails(&sshd, agent.socket());
    assert!(
        askpass_calls(&askpass) >= 1,
        "the agent never ran SSH_ASKPASS"
    );
    let log = agent.stderr_once_it_contains("wrong PIN");
    assert!(log.contains("wrong PIN"), "agent stderr:\n{log}");
    assert!(agent.is_running(), "a wrong PIN stopped the agent:\n{log}");
}

/// With `SSH_ASKPASS_REQUIRE=never` the agent cannot get the PIN: it must fail the signature
/// without trying the TPM (no failed authorization counted), and the key stays usable.
#[test]
fn without_a_pin_prompt_the_tpm_is_not_asked() {
    let (tpm, keys, _key, sshd) = pin_key_setup();
    let work = tempdir();
    // The right PIN: an agent that ran it despite "never" would log in.
    let askpass = write_askpass(work.path(), "1234");

    let mut agent = Agent::serve(&tpm, keys.path(), &askpass_env(&askpass, "never"));
    assert_login_fails(&sshd, agent.socket());
    assert_eq!(
        askpass_calls(&askpass),
        0,
        "the agent ran SSH_ASKPASS despite never"
    );
    poll_until(Duration::from_secs(5), || agent.stderr().contains("PIN"));
    let log = agent.stderr();
    let lower = log.to_lowercase();
    assert!(
        lower.contains("pin") && (lower.contains("prompt") || lower.contains("askpass")),
        "agent stderr does not say that no PIN prompt could be shown:\n{log}"
    );
    assert!(
        !log.contains("wrong PIN"),
        "the agent tried the TPM with a guessed PIN:\n{log}"
    );

    // The agent holds swtpm's only connection: stop it before asking the TPM.
    agent.stop();
    assert_eq!(tpm.variable_property("TPM2_PT_LOCKOUT_COUNTER"), 0);

    let agent = Agent::serve(&tpm, keys.path(), &askpass_env(&askpass, "force"));
    assert_logs_in(&sshd, agent.socket());
}

// ---------------------------------------------------------------------------------------------
// ssh-tpm-add

#[test]
fn ssh_tpm_add_hands_keys_to_an_agent_started_with_no_load() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (first, _) = keygen(&tpm, keys.path(), "first", &["-N", ""]);
    let (second, _) = keygen(&tpm, keys.path(), "second", &["-N", ""]);

    let run_dir = tempdir();
    let socket = run_dir.path().join("agent.sock");
    let key_dir = keys.path().to_str().expect("UTF-8 key dir");
    let tcti = tpm.tcti();
    let agent = Agent::start(
        &socket,
        &["--key-dir", key_dir, "--no-load"],
        &[("SSH_TPM_TCTI", &tcti)],
    );

    let empty = ssh_add(agent.socket(), &["-L"]);
    assert_eq!(empty.status.code(), Some(1), "{}", describe(&empty));
    assert!(
        all_output(&empty).contains(NO_IDENTITIES),
        "{}",
        describe(&empty)
    );

    // SSH_TPM_AUTH_SOCK first, then the fallback to SSH_AUTH_SOCK.
    let added = run(product("ssh-tpm-add")
        .env("SSH_TPM_AUTH_SOCK", &socket)
        .arg(&first.tpm));
    assert_ok(&added, "ssh-tpm-add with SSH_TPM_AUTH_SOCK");
    assert_lists(&agent, &[first.blob()]);

    let added = run(product("ssh-tpm-add")
        .env("SSH_AUTH_SOCK", &socket)
        .arg(&second.tpm));
    assert_ok(&added, "ssh-tpm-add with SSH_AUTH_SOCK");
    assert_lists(&agent, &[first.blob(), second.blob()]);

    assert_signs_and_verifies(agent.socket(), &second);
}

// ---------------------------------------------------------------------------------------------
// ssh-tpm-keygen files

#[test]
fn keygen_asks_before_overwriting_and_keeps_files_unless_told_yes() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let original = (
        fs::read(&key.tpm).expect("read .tpm"),
        fs::read(&key.public).expect(".pub"),
    );

    let again = || {
        let mut cmd = product("ssh-tpm-keygen");
        cmd.arg("--tcti")
            .arg(tpm.tcti())
            .arg("-f")
            .arg(keys.path().join("id"));
        cmd.args(["-N", ""]);
        cmd
    };
    for answer in [&b"n\n"[..], b"no\n", b"\n", b""] {
        let out = run_with_stdin(&mut again(), answer);
        let shown = String::from_utf8_lossy(answer);
        assert!(
            !out.status.success(),
            "answer {shown:?} overwrote: {}",
            describe(&out)
        );
        assert!(
            all_output(&out).contains("Overwrite"),
            "no question: {}",
            describe(&out)
        );
        assert_eq!(
            fs::read(&key.tpm).expect("read .tpm"),
            original.0,
            "answer {shown:?}"
        );
        assert_eq!(
            fs::read(&key.public).expect("read .pub"),
            original.1,
            "answer {shown:?}"
        );
    }

    let out = run_with_stdin(&mut again(), b"y\n");
    assert_ok(&out, "keygen answered y");
    assert_ne!(
        fs::read(&key.tpm).expect("read .tpm"),
        original.0,
        ".tpm not replaced"
    );
    assert_ne!(
        fs::read(&key.public).expect("read .pub"),
        original.1,
        ".pub not replaced"
    );
    assert!(
        all_output(&out).contains(&fingerprint(&key.public)),
        "{}",
        describe(&out)
    );
}

#[test]
fn keygen_writes_private_0600_public_0644_and_strips_tpm_suffix() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let mut cmd = product("ssh-tpm-keygen");
    cmd.env("SSH_TPM_TCTI", tpm.tcti())
        .arg("-f")
        .arg(keys.path().join("id.tpm"));
    let out = run(cmd.args(["-N", ""]));
    assert_ok(&out, "ssh-tpm-keygen -f id.tpm with SSH_TPM_TCTI");

    let key = KeyFiles::at(keys.path(), "id");
    let mut names: Vec<_> = fs::read_dir(keys.path())
        .expect("list key dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["id.pub", "id.tpm"]);
    assert_eq!(mode(&key.tpm), 0o600, "mode of id.tpm");
    assert_eq!(mode(&key.public), 0o644, "mode of id.pub");

    let pem = fs::read_to_string(&key.tpm).expect("read id.tpm");
    assert!(pem.starts_with("-----BEGIN TSS2 PRIVATE KEY-----"), "{pem}");
    assert!(
        all_output(&out).contains(&fingerprint(&key.public)),
        "{}",
        describe(&out)
    );
}

#[test]
fn keygen_supported_lists_what_the_tpm_can_make() {
    let tpm = Swtpm::start();
    let sizes = |family: &str, tpm_name: &str, bits: &[&str]| {
        let usable: Vec<&str> = bits
            .iter()
            .copied()
            .filter(|b| tpm.supports(&format!("{tpm_name}{b}")))
            .collect();
        format!("{family} {}", usable.join(" "))
    };
    let ecdsa = sizes("ecdsa", "ecc", &["256", "384", "521"]);
    let rsa = sizes("rsa", "rsa", &["2048", "3072"]);

    let out = run(product("ssh-tpm-keygen")
        .arg("--tcti")
        .arg(tpm.tcti())
        .arg("--supported"));
    assert_ok(&out, "ssh-tpm-keygen --supported");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.contains(&ecdsa.as_str()),
        "expected {ecdsa:?} in:\n{text}"
    );
    assert!(
        lines.contains(&rsa.as_str()),
        "expected {rsa:?} in:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// The agent's socket

#[test]
fn agent_refuses_clients_of_another_uid() {
    assert!(
        is_root(),
        "this test switches to uid 65534 and must run as root"
    );
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let agent = Agent::serve(&tpm, keys.path(), &[]);
    assert_eq!(mode(agent.socket()), 0o600, "mode of the agent's socket");

    open_socket_to_everyone(agent.socket());
    let other = ssh_add_list_as_nobody(agent.socket());
    assert!(
        !other.status.success(),
        "uid 65534 was served: {}",
        describe(&other)
    );
    assert!(
        !stderr(&other).contains("Error connecting"),
        "{}",
        describe(&other)
    );
    assert!(
        !stdout(&other).contains(&key.blob().1),
        "{}",
        describe(&other)
    );

    assert_lists(&agent, &[key.blob()]);
}

#[test]
fn print_socket_prints_the_listen_path() {
    let tpm = Swtpm::start();
    let run_dir = tempdir();
    let keys = tempdir();
    let socket = run_dir.path().join("agent.sock");

    let mut cmd = product("ssh-tpm-agent");
    cmd.arg("--tcti").arg(tpm.tcti()).arg("-l").arg(&socket);
    cmd.arg("--key-dir")
        .arg(keys.path())
        .args(["--no-load", "--print-socket"]);
    let mut agent = Daemon::spawn("ssh-tpm-agent", &mut cmd, run_dir.path());
    // Whether the agent goes on serving after printing is left open; both are fine here.
    poll_until(START_TIMEOUT, || {
        agent.stdout().contains('\n') || !agent.is_running()
    });

    let printed = agent.stdout();
    let first_line = printed.lines().next().unwrap_or_default();
    assert_eq!(
        first_line,
        socket.to_str().expect("UTF-8 path"),
        "stderr:\n{}",
        agent.stderr()
    );
}

#[test]
fn stale_socket_is_replaced_but_a_live_one_is_kept() {
    let tpm = Swtpm::start();
    let run_dir = tempdir();
    let keys = tempdir();
    let socket = run_dir.path().join("agent.sock");
    drop(UnixListener::bind(&socket).expect("bind a socket to leave behind"));
    assert!(
        socket.exists() && !accepts_unix(&socket),
        "the stale socket should be dead"
    );

    let key_dir = keys.path().to_str().expect("UTF-8 key dir");
    let tcti = tpm.tcti();
    let mut agent = Agent::start(
        &socket,
        &["--tcti", &tcti, "--key-dir", key_dir, "--no-load"],
        &[],
    );
    let answer = ssh_add(&socket, &["-L"]);
    assert!(
        all_output(&answer).contains(NO_IDENTITIES),
        "{}",
        describe(&answer)
    );

    // A TPM of its own, so that the second agent cannot stall on the first one's connection.
    let other_tpm = Swtpm::start();
    let mut second = product("ssh-tpm-agent");
    second
        .arg("--tcti")
        .arg(other_tpm.tcti())
        .arg("-l")
        .arg(&socket);
    second.arg("--key-dir").arg(keys.path()).arg("--no-load");
    let refused = run_within(&mut second, b"", Duration::from_secs(20))
        .expect("a second agent kept running on a socket that a live agent serves");
    assert!(!refused.status.success(), "{}", describe(&refused));
    let path = socket.to_str().expect("UTF-8 path");
    assert!(
        stderr(&refused).contains(path),
        "error does not name the socket: {}",
        describe(&refused)
    );

    let answer = ssh_add(&socket, &["-L"]);
    assert!(
        all_output(&answer).contains(NO_IDENTITIES),
        "first agent lost its socket: {}",
        describe(&answer)
    );
    assert!(agent.is_running(), "first agent died:\n{}", agent.stderr());
}

#[test]
fn sigterm_stops_the_agent_and_removes_its_socket() {
    let tpm = Swtpm::start();
    let run_dir = tempdir();
    let keys = tempdir();
    let socket = run_dir.path().join("agent.sock");
    let key_dir = keys.path().to_str().expect("UTF-8 key dir");
    let tcti = tpm.tcti();
    let mut agent = Agent::start(
        &socket,
        &["--tcti", &tcti, "--key-dir", key_dir, "--no-load"],
        &[],
    );
    assert_eq!(mode(&socket), 0o600, "mode of the agent's socket");

    let status = agent.terminate();
    assert!(
        status.is_some(),
        "the agent ignored SIGTERM:\n{}",
        agent.stderr()
    );
    assert!(
        !socket.exists(),
        "the agent left its socket behind:\n{}",
        agent.stderr()
    );
}

#[test]
fn keygen_asks_for_the_file_and_end_of_input_creates_nothing() {
    let tpm = Swtpm::start();
    let home = tempdir();
    let keygen = || {
        let mut cmd = product("ssh-tpm-keygen");
        cmd.env("HOME", home.path())
            .arg("--tcti")
            .arg(tpm.tcti())
            .args(["-N", ""]);
        cmd
    };

    // End of input at the file question is not consent to the default.
    let out = run(&mut keygen());
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("Enter file in which to save the key"),
        "{}",
        describe(&out)
    );
    assert!(!home.path().join(".ssh").exists(), "nothing may be created");

    // An empty answer takes ssh-keygen's default, creating ~/.ssh 0700.
    let out = run_with_stdin(&mut keygen(), b"\n");
    assert_ok(&out, "keygen with the default file");
    assert_eq!(mode(&home.path().join(".ssh")), 0o700);
    assert!(home.path().join(".ssh/id_ecdsa.tpm").exists());

    // A typed name is used as given.
    let typed = home.path().join("typed");
    let answer = format!("{}\n", typed.display());
    assert_ok(
        &run_with_stdin(&mut keygen(), answer.as_bytes()),
        "keygen with a typed name",
    );
    assert!(home.path().join("typed.tpm").exists() && home.path().join("typed.pub").exists());

    // A directory is not a key name.
    let out = run(keygen().arg("-f").arg(home.path()));
    assert!(
        stderr(&out).contains("is a directory"),
        "{}",
        describe(&out)
    );
}

#[test]
fn rsa_key_signs_sha256_when_the_client_asks_for_it() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-t", "rsa", "-N", ""]);
    let agent = Agent::serve(&tpm, keys.path(), &[]);
    let sshd = Sshd::start(&key.public_line(), None);
    // sshd accepts only the one algorithm, so a signature made with the other hash fails.
    for algorithm in ["rsa-sha2-256", "rsa-sha2-512"] {
        let option = format!("PubkeyAcceptedAlgorithms={algorithm}");
        let out = sshd.login(agent.socket(), &["-o", &option]);
        assert!(
            out.status.success(),
            "{algorithm}: {}\n{}",
            describe(&out),
            sshd.log()
        );
    }
    let log = sshd.log();
    assert!(
        log.contains("RSA SHA256:"),
        "sshd accepted no RSA key:\n{log}"
    );
}

#[test]
fn socket_defaults_follow_the_environment() {
    let dir = tempdir();
    let print = |envs: &[(&str, &std::path::Path)]| {
        let mut cmd = product("ssh-tpm-agent");
        cmd.arg("--print-socket").env_remove("XDG_RUNTIME_DIR");
        for (name, value) in envs {
            cmd.env(name, value);
        }
        stdout(&run(&mut cmd)).trim().to_string()
    };
    let runtime = dir.path().join("run");
    let explicit = dir.path().join("explicit.sock");
    assert_eq!(
        print(&[("XDG_RUNTIME_DIR", &runtime)]),
        runtime.join("ssh-tpm-agent.sock").display().to_string()
    );
    assert_eq!(
        print(&[
            ("XDG_RUNTIME_DIR", &runtime),
            ("SSH_TPM_AUTH_SOCK", &explicit)
        ]),
        explicit.display().to_string()
    );
    let out = run(product("ssh-tpm-agent")
        .arg("--print-socket")
        .env_remove("XDG_RUNTIME_DIR"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("choose a socket with -l"),
        "{}",
        describe(&out)
    );
}

#[test]
fn ssh_tpm_add_refuses_what_is_not_a_regular_file() {
    let dir = tempdir();
    let fifo = dir.path().join("fifo.tpm");
    assert_ok(&run(tool("mkfifo").arg(&fifo)), "mkfifo");
    let mut add = product("ssh-tpm-add");
    add.env("SSH_TPM_AUTH_SOCK", dir.path().join("no-agent.sock"))
        .arg(&fifo);
    let out = run_within(&mut add, b"", Duration::from_secs(10)).expect("ssh-tpm-add hung");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a FIFO, not a key file"),
        "{}",
        describe(&out)
    );
}
