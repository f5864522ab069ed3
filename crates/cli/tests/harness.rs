//! Checks of the end-to-end harness itself, with plain OpenSSH and tpm2-tools only: when these
//! fail, the product tests' failures say nothing about the product.

mod support;

use std::path::Path;

use support::{
    assert_ok, current_user, describe, is_root, open_socket_to_everyone, run, ssh_add,
    ssh_add_list_as_nobody, stderr, stdout, tempdir, tool, Daemon, Sshd, Swtpm, START_TIMEOUT,
};

/// Two TPMs run side by side, each with the suite's lockout settings, and vanish on drop.
#[test]
fn swtpm_starts_private_with_relaxed_lockout_and_stops_on_drop() {
    let first = Swtpm::start();
    let second = Swtpm::start();
    assert_ne!(first.tcti(), second.tcti());

    for tpm in [&first, &second] {
        assert_eq!(tpm.variable_property("TPM2_PT_MAX_AUTH_FAIL"), 32);
        assert_eq!(tpm.variable_property("TPM2_PT_LOCKOUT_INTERVAL"), 1);
        assert_eq!(tpm.variable_property("TPM2_PT_LOCKOUT_RECOVERY"), 1);
        assert_eq!(tpm.variable_property("TPM2_PT_LOCKOUT_COUNTER"), 0);
    }

    let pids = [first.pid(), second.pid()];
    drop(first);
    drop(second);
    for pid in pids {
        let proc_dir = format!("/proc/{pid}");
        assert!(
            !Path::new(&proc_dir).exists(),
            "swtpm {pid} still exists after drop"
        );
    }
}

/// A plain ed25519 key in a plain ssh-agent logs in to the test sshd, and only when the key is
/// authorized: the login check of the product tests cannot pass by accident.
#[test]
fn plain_key_in_plain_ssh_agent_logs_in_to_test_sshd() {
    let dir = tempdir();
    let key = dir.path().join("id_ed25519");
    let out = run(tool("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    assert_ok(&out, "ssh-keygen");
    let public = std::fs::read_to_string(dir.path().join("id_ed25519.pub")).expect("read .pub");

    let agent_dir = tempdir();
    let socket = agent_dir.path().join("agent.sock");
    let mut cmd = tool("ssh-agent");
    cmd.arg("-D").arg("-a").arg(&socket);
    let mut agent = Daemon::spawn("ssh-agent", &mut cmd, dir.path());
    let up = support::poll_until(START_TIMEOUT, || support::accepts_unix(&socket));
    assert!(up, "ssh-agent did not start: {}", agent.stderr());
    assert_ok(
        &ssh_add(&socket, &[key.to_str().expect("UTF-8 path")]),
        "ssh-add",
    );

    // Sign and verify a file through the agent, as the product tests do.
    let message = dir.path().join("message");
    support::write(&message, "hello\n");
    let public_file = dir.path().join("id_ed25519.pub");
    assert_ok(
        &support::sign_file(&socket, &public_file, &message),
        "ssh-keygen -Y sign",
    );
    let verified = support::verify_file(dir.path(), &public, &message);
    assert_ok(&verified, "ssh-keygen -Y verify");
    assert!(
        stdout(&verified).contains("Good"),
        "{}",
        describe(&verified)
    );

    let sshd = Sshd::start(&public, None);
    let out = sshd.login(&socket, &[]);
    assert_ok(&out, &format!("ssh login; sshd log:\n{}", sshd.log()));
    assert_eq!(
        stdout(&out).trim(),
        format!("logged-in-as {}", current_user())
    );

    let closed = Sshd::start("", None);
    let out = closed.login(&socket, &[]);
    assert!(
        !out.status.success(),
        "login without authorized key: {}",
        describe(&out)
    );
    assert!(!stdout(&out).contains("logged-in-as"), "{}", describe(&out));

    assert!(agent.is_running(), "ssh-agent died: {}", agent.stderr());
}

/// The peer-uid recipe reaches the agent as another user: OpenSSH's own agent, which checks the
/// peer's uid too, is reached and hangs up, where a closed socket refuses the connect.
#[test]
fn other_user_reaches_an_opened_socket() {
    assert!(
        is_root(),
        "this test switches to uid 65534 and must run as root"
    );
    let dir = tempdir();
    let socket = dir.path().join("agent.sock");
    let mut cmd = tool("ssh-agent");
    cmd.arg("-D").arg("-a").arg(&socket);
    let mut agent = Daemon::spawn("ssh-agent", &mut cmd, dir.path());
    let up = support::poll_until(START_TIMEOUT, || support::accepts_unix(&socket));
    assert!(up, "ssh-agent did not start: {}", agent.stderr());

    let closed = ssh_add_list_as_nobody(&socket);
    assert!(
        stderr(&closed).contains("Permission denied"),
        "{}",
        describe(&closed)
    );

    open_socket_to_everyone(&socket);
    let refused = ssh_add_list_as_nobody(&socket);
    assert!(!refused.status.success(), "{}", describe(&refused));
    // ssh-add either reads the hang-up or dies of SIGPIPE writing into it; both come after a
    // successful connect, which ssh-add would otherwise report as "Error connecting to agent".
    assert!(
        !stderr(&refused).contains("Error connecting"),
        "{}",
        describe(&refused)
    );
    assert!(agent.is_running());
}
