//! End-to-end tests of the agent as part of the system: it follows its key directory while it
//! runs, starts from a socket systemd hands it, and serves TPM host keys to sshd.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;
use support::{
    assert_ok, current_user, describe, key_blob, keygen, listed_keys, poll_until, product,
    product_path, run, ssh_add, stdout, tempdir, tool, which, Agent, Daemon, Swtpm, START_TIMEOUT,
};

/// How long the agent may take to notice a change in its key directory.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `ssh-add -L` lists on `socket`, as key type and blob.
fn listed(socket: &Path) -> BTreeSet<(String, String)> {
    let out = ssh_add(socket, &["-L"]);
    if stdout(&out).starts_with("The agent has no identities") {
        return BTreeSet::new();
    }
    listed_keys(&out).into_iter().collect()
}

/// Waits until the agent lists exactly `expected`; panics with what it lists and its log.
#[track_caller]
fn assert_lists_soon(agent: &Agent, expected: &[(String, String)], what: &str) {
    let expected: BTreeSet<_> = expected.iter().cloned().collect();
    let reached = poll_until(NOTICE_TIMEOUT, || listed(agent.socket()) == expected);
    assert!(
        reached,
        "{what}: the agent lists\n{:?}\ninstead of\n{expected:?}\nagent log:\n{}",
        listed(agent.socket()),
        agent.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// Following the key directory

/// Keys, certificates and removals under --key-dir reach the agent without a signal; SIGHUP
/// still reloads, and keys a client added stay when their file goes.
#[test]
fn agent_follows_key_files_added_changed_and_removed() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let agent = Agent::serve(&tpm, keys.path(), &[]);
    assert_lists_soon(&agent, &[], "at start");

    // A new key, in a subdirectory made after the agent started.
    let sub = keys.path().join("work");
    fs::create_dir(&sub).expect("create a subdirectory");
    let (first, _) = keygen(&tpm, &sub, "first", &["-N", ""]);
    assert_lists_soon(&agent, &[first.blob()], "after ssh-tpm-keygen");

    // Its certificate.
    let work = tempdir();
    let ca = work.path().join("ca");
    let out = run(tool("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f"])
        .arg(&ca));
    assert_ok(&out, "ssh-keygen for the CA");
    let mut sign = tool("ssh-keygen");
    sign.args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "e2e-cert", "-n", &current_user()])
        .arg(&first.public);
    assert_ok(&run(&mut sign), "ssh-keygen -s");
    let cert = key_blob(&fs::read_to_string(first.cert()).expect("NAME-cert.pub"));
    assert_lists_soon(
        &agent,
        &[first.blob(), cert.clone()],
        "after the certificate",
    );

    // The certificate goes, then the key.
    fs::remove_file(first.cert()).expect("remove the certificate");
    assert_lists_soon(&agent, &[first.blob()], "after removing the certificate");
    fs::remove_file(&first.tpm).expect("remove the key file");
    assert_lists_soon(&agent, &[], "after removing the key file");

    // The same name now holds another key: the old one must not linger.
    let (second, _) = keygen(&tpm, keys.path(), "second", &["-N", ""]);
    let second_blob = second.blob();
    assert_lists_soon(
        &agent,
        std::slice::from_ref(&second_blob),
        "after a second key",
    );
    let (other, _) = keygen(&tpm, work.path(), "other", &["-N", "", "-t", "rsa"]);
    fs::rename(&other.public, &second.public).expect("replace second.pub");
    fs::rename(&other.tpm, &second.tpm).expect("replace second.tpm");
    let replaced = second.clone();
    assert_ne!(replaced.blob(), second_blob);
    assert_lists_soon(&agent, &[replaced.blob()], "after replacing the key file");

    // SIGHUP reloads too.
    let mut agent = agent;
    agent.send(Signal::HUP);
    let log = agent.stderr_once_it_contains("SIGHUP: reloading keys");
    assert!(log.contains("SIGHUP: reloading keys"), "{log}");
    assert_lists_soon(&agent, &[replaced.blob()], "after SIGHUP");

    // A key a client added stays when its file goes.
    let added = run(support::product("ssh-tpm-add")
        .env("SSH_TPM_AUTH_SOCK", agent.socket())
        .arg(&replaced.tpm));
    assert_ok(&added, "ssh-tpm-add");
    fs::remove_file(&replaced.tpm).expect("remove the key file");
    agent.send(Signal::HUP);
    std::thread::sleep(Duration::from_secs(1));
    let out = ssh_add(agent.socket(), &["-L"]);
    assert!(
        stdout(&out).contains(&replaced.blob().1),
        "{}\n{}",
        describe(&out),
        agent.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// systemd socket activation

/// Under `systemd-socket-activate` the agent serves on the socket it is handed, binds none of
/// its own, and leaves the socket in place when it stops.
#[test]
fn agent_serves_the_socket_systemd_passes() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let dir = tempdir();
    let passed = dir.path().join("activated.sock");
    let own = dir.path().join("own.sock");

    let mut cmd = tool(which(
        "systemd-socket-activate",
        "/usr/lib/systemd/systemd-socket-activate",
    ));
    cmd.arg("-l")
        .arg(&passed)
        .arg(product_path("ssh-tpm-agent"))
        .arg("-l")
        .arg(&own)
        .args(["--tcti", &tpm.tcti(), "--key-dir"])
        .arg(keys.path());
    let mut activated = Daemon::spawn("systemd-socket-activate", &mut cmd, dir.path());
    assert!(
        poll_until(START_TIMEOUT, || passed.exists()),
        "{}",
        activated.stderr()
    );

    // The first connection starts the agent, which answers on the passed socket.
    let out = ssh_add(&passed, &["-L"]);
    assert_ok(&out, &format!("ssh-add -L\n{}", activated.stderr()));
    assert_eq!(listed_keys(&out), [key.blob()], "{}", activated.stderr());
    assert!(!own.exists(), "the agent bound -l as well");
    let log = activated.stderr();
    assert!(
        log.contains("listening on the socket systemd passed"),
        "{log}"
    );

    let status = activated.stop();
    assert!(status.success(), "{status}: {}", activated.stderr());
    assert!(passed.exists(), "the agent removed systemd's socket");
}

/// Activation variables meant for another process are ignored: the agent binds its own socket.
#[test]
fn activation_variables_for_another_process_are_ignored() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let env = [("LISTEN_PID", "1"), ("LISTEN_FDS", "1")];
    let agent = Agent::serve(&tpm, keys.path(), &env);
    assert_lists_soon(&agent, &[key.blob()], "with LISTEN_PID=1");
}

/// `--install-user-units` writes a socket and a sandboxed service that systemd accepts, says
/// what to run next, and replaces them only with `--force`.
#[test]
fn install_user_units_writes_units_systemd_accepts() {
    let config = tempdir();
    let install = |extra: &[&str]| {
        run(product("ssh-tpm-agent")
            .env("XDG_CONFIG_HOME", config.path())
            .arg("--install-user-units")
            .args(extra))
    };
    let out = install(&[]);
    assert_ok(&out, "ssh-tpm-agent --install-user-units");
    assert!(
        stdout(&out).contains("systemctl --user enable --now ssh-tpm-agent.socket"),
        "{}",
        describe(&out)
    );

    let units = config.path().join("systemd/user");
    let socket = fs::read_to_string(units.join("ssh-tpm-agent.socket")).expect("socket unit");
    let service = fs::read_to_string(units.join("ssh-tpm-agent.service")).expect("service unit");
    assert!(
        socket.contains("\nListenStream=%t/ssh-tpm-agent.sock\n"),
        "{socket}"
    );
    let exec = format!("\nExecStart={}\n", product_path("ssh-tpm-agent"));
    for line in [
        exec.as_str(),
        "\nProtectSystem=strict\n",
        "\nNoNewPrivileges=yes\n",
        "\nProtectHome=read-only\n",
    ] {
        assert!(service.contains(line), "{line:?} missing from\n{service}");
    }

    // systemd reads them without a complaint (it warns on stderr, and exits 0, for unknown
    // keys).
    let analyze = which("systemd-analyze", "/usr/bin/systemd-analyze");
    if analyze.exists() {
        let out = run(tool(analyze)
            .arg("verify")
            .arg(units.join("ssh-tpm-agent.socket"))
            .arg(units.join("ssh-tpm-agent.service")));
        assert_ok(&out, "systemd-analyze verify");
        assert!(
            support::stderr(&out).trim().is_empty(),
            "{}",
            describe(&out)
        );
    } else {
        eprintln!("systemd-analyze is not installed; checked the units' key lines only");
    }

    let again = install(&[]);
    assert!(!again.status.success(), "{}", describe(&again));
    assert!(
        support::stderr(&again).contains("add --force"),
        "{}",
        describe(&again)
    );
    assert_ok(&install(&["--force"]), "--install-user-units --force");
}

// ---------------------------------------------------------------------------------------------
// Host keys

/// `ssh-tpm-hostkeys --install-system-units` writes a system socket on the default
/// `HostKeyAgent` path and a sandboxed root service serving the host keys, which systemd
/// accepts; it replaces them only with `--force`.
#[test]
fn install_system_units_writes_units_systemd_accepts() {
    let units = tempdir();
    let install = |extra: &[&str]| {
        run(product("ssh-tpm-hostkeys")
            .arg("--install-system-units")
            .arg("--unit-dir")
            .arg(units.path())
            .args(extra))
    };
    let out = install(&[]);
    assert_ok(&out, "ssh-tpm-hostkeys --install-system-units");
    assert!(
        stdout(&out).contains(
            "systemctl daemon-reload && systemctl enable --now ssh-tpm-agent-hostkeys.socket"
        ),
        "{}",
        describe(&out)
    );

    let socket_path = units.path().join("ssh-tpm-agent-hostkeys.socket");
    let service_path = units.path().join("ssh-tpm-agent-hostkeys.service");
    let socket = fs::read_to_string(&socket_path).expect("socket unit");
    let service = fs::read_to_string(&service_path).expect("service unit");
    // The path --install-sshd-config names in HostKeyAgent by default.
    assert!(
        socket.contains("\nListenStream=/var/tmp/ssh-tpm-agent.sock\n"),
        "{socket}"
    );
    let exec = format!(
        "\nExecStart={} -l /var/tmp/ssh-tpm-agent.sock --key-dir /etc/ssh\n",
        product_path("ssh-tpm-agent")
    );
    for line in [
        exec.as_str(),
        "\nProtectSystem=strict\n",
        "\nNoNewPrivileges=yes\n",
        "\nPrivateTmp=yes\n",
        "\nDeviceAllow=/dev/tpmrm0 rw\n",
        "\nReadOnlyPaths=/etc/ssh\n",
    ] {
        assert!(service.contains(line), "{line:?} missing from\n{service}");
    }

    let analyze = which("systemd-analyze", "/usr/bin/systemd-analyze");
    if analyze.exists() {
        let out = run(tool(analyze)
            .arg("verify")
            .arg(&socket_path)
            .arg(&service_path));
        assert_ok(&out, "systemd-analyze verify");
        assert!(
            support::stderr(&out).trim().is_empty(),
            "{}",
            describe(&out)
        );
    } else {
        eprintln!("systemd-analyze is not installed; checked the units' key lines only");
    }

    fs::write(&service_path, "edited").expect("edit the service");
    let again = install(&[]);
    assert!(!again.status.success(), "{}", describe(&again));
    assert!(
        support::stderr(&again).contains("add --force"),
        "{}",
        describe(&again)
    );
    assert_eq!(
        fs::read_to_string(&service_path).expect("service"),
        "edited"
    );
    assert_ok(&install(&["--force"]), "--install-system-units --force");
    assert_eq!(fs::read_to_string(&service_path).expect("service"), service);
}

/// `ssh-tpm-keygen -A` makes TPM host keys, `ssh-tpm-hostkeys --install-sshd-config` points
/// sshd at them through the agent, and a client that knows only those keys logs in with
/// StrictHostKeyChecking=yes.
#[test]
fn sshd_serves_tpm_host_keys_through_the_agent() {
    let tpm = Swtpm::start();
    let hostdir = tempdir();
    let hostdir_arg = hostdir.path().to_str().expect("UTF-8 path");
    let made = run(product("ssh-tpm-keygen").args([
        "--tcti",
        &tpm.tcti(),
        "-A",
        "--host-key-dir",
        hostdir_arg,
    ]));
    assert_ok(&made, "ssh-tpm-keygen -A");
    let ecdsa = support::KeyFiles::at(hostdir.path(), "ssh_tpm_host_ecdsa_key");
    let rsa = support::KeyFiles::at(hostdir.path(), "ssh_tpm_host_rsa_key");
    for key in [&ecdsa, &rsa] {
        assert!(key.tpm.is_file() && key.public.is_file(), "{key:?}");
    }
    assert_eq!(ecdsa.blob().0, "ecdsa-sha2-nistp256");
    assert_eq!(rsa.blob().0, "ssh-rsa");

    // Existing host keys are kept.
    let before = fs::read(&ecdsa.tpm).expect("read the host key");
    let again = run(product("ssh-tpm-keygen").args([
        "--tcti",
        &tpm.tcti(),
        "-A",
        "--host-key-dir",
        hostdir_arg,
    ]));
    assert_ok(&again, "ssh-tpm-keygen -A again");
    assert_eq!(fs::read(&ecdsa.tpm).expect("read the host key"), before);

    // The user's key lives beside them, so that one agent serves both.
    let (user, _) = keygen(&tpm, hostdir.path(), "id", &["-N", ""]);
    let agent = Agent::serve(&tpm, hostdir.path(), &[]);

    let listed = run(product("ssh-tpm-hostkeys").args(["--host-key-dir", hostdir_arg]));
    assert_ok(&listed, "ssh-tpm-hostkeys");
    let text = stdout(&listed);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains(&support::fingerprint(&ecdsa.public)),
        "{text}"
    );

    let config_dir = tempdir();
    let installed = run(product("ssh-tpm-hostkeys")
        .args(["--host-key-dir", hostdir_arg, "--install-sshd-config", "-l"])
        .arg(agent.socket())
        .arg("--sshd-config-dir")
        .arg(config_dir.path()));
    assert_ok(&installed, "ssh-tpm-hostkeys --install-sshd-config");
    let snippet = config_dir.path().join("10-ssh-tpm-hostkeys.conf");
    let snippet_text = fs::read_to_string(&snippet).expect("the sshd_config.d snippet");
    assert!(
        snippet_text.contains(&format!("HostKeyAgent {}\n", agent.socket().display())),
        "{snippet_text}"
    );
    assert!(
        snippet_text.contains(&format!("HostKey {}\n", ecdsa.public.display())),
        "{snippet_text}"
    );

    let sshd = support::Sshd::start_with_host_config(
        &user.public_line(),
        &format!("Include {}\n", snippet.display()),
    );
    let known_hosts = config_dir.path().join("known_hosts");
    let port = sshd.port();
    let mut lines = String::new();
    for key in [&ecdsa, &rsa] {
        let (kind, blob) = key.blob();
        lines.push_str(&format!("[127.0.0.1]:{port} {kind} {blob}\n"));
    }
    support::write(&known_hosts, lines);

    let mut ssh = tool("ssh");
    ssh.args(["-F", "/dev/null", "-v"])
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.socket().display()))
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "PasswordAuthentication=no"])
        .args(["-o", "ConnectTimeout=10", "-p", &port.to_string()])
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("echo logged-in");
    let out = run(&mut ssh);
    assert_ok(
        &out,
        &format!("ssh with the TPM host key\nsshd log:\n{}", sshd.log()),
    );
    assert_eq!(stdout(&out).trim(), "logged-in");
    let log = support::stderr(&out);
    let ecdsa_print = support::fingerprint(&ecdsa.public);
    let rsa_print = support::fingerprint(&rsa.public);
    assert!(
        log.contains(&ecdsa_print) || log.contains(&rsa_print),
        "the server did not present a TPM host key:\n{log}"
    );
}

/// `ssh-add -d` and `-D` hold against file changes: a reload prompted by inotify does not
/// bring removed keys back; an explicit SIGHUP does.
#[test]
fn keys_a_client_removed_stay_removed_until_sighup() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (first, _) = keygen(&tpm, keys.path(), "first", &["-N", ""]);
    let mut agent = Agent::serve(&tpm, keys.path(), &[]);
    assert_lists_soon(&agent, &[first.blob()], "at start");
    assert_ok(&ssh_add(agent.socket(), &["-D"]), "ssh-add -D");
    assert_lists_soon(&agent, &[], "after ssh-add -D");

    // Another file appears: it is loaded, the removed one stays removed.
    let other = tempdir();
    let (second, _) = keygen(&tpm, other.path(), "second", &["-N", ""]);
    for suffix in ["tpm", "pub"] {
        fs::copy(
            other.path().join(format!("second.{suffix}")),
            keys.path().join(format!("second.{suffix}")),
        )
        .expect("copy key file");
    }
    let second_blob = key_blob(&fs::read_to_string(&second.public).expect("read .pub"));
    assert_lists_soon(
        &agent,
        std::slice::from_ref(&second_blob),
        "after a new file",
    );

    agent.send(Signal::HUP);
    assert_lists_soon(&agent, &[first.blob(), second_blob], "after SIGHUP");
}
