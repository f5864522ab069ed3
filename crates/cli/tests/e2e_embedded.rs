//! The embedded default: `--swtpm` keeps its software TPM in the user's state directory, so
//! a key made by one run works in the next; and without any TPM the user is pointed at it.

mod support;

use std::path::Path;

use rustix::process::Signal;
use support::*;

/// An environment whose state directory is private to the test.
fn state_env(state: &Path) -> Vec<(&'static str, String)> {
    vec![("XDG_STATE_HOME", state.display().to_string())]
}

#[test]
fn swtpm_key_survives_into_a_later_agent() {
    let dir = tempdir();
    let state = dir.path().join("state");
    let env = state_env(&state);

    let mut keygen = product("ssh-tpm-keygen");
    keygen
        .args(["--swtpm", "-N", "", "-C", "embedded@test", "-f"])
        .arg(dir.path().join("id"));
    keygen.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    assert_ok(&run(&mut keygen), "ssh-tpm-keygen --swtpm");
    assert!(
        state.join("ssh-tpm/swtpm").is_dir(),
        "state directory was not used"
    );
    let key = KeyFiles::at(dir.path(), "id");

    // A second process, a new swtpm on the same state: the key must still load and sign.
    let socket = dir.path().join("agent.sock");
    let key_dir = dir.path().to_str().expect("UTF-8 path");
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut agent = Agent::start(&socket, &["--swtpm", "--key-dir", key_dir], &env_refs);
    let listed = ssh_add(&socket, &["-L"]);
    assert_ok(&listed, "ssh-add -L");
    assert_eq!(listed_keys(&listed), vec![key.blob()]);
    let message = dir.path().join("message");
    write(&message, "made in one run, signed in the next\n");
    assert_ok(
        &sign_file(&socket, &key.public, &message),
        "ssh-keygen -Y sign",
    );
    assert_ok(
        &verify_file(dir.path(), &key.public_line(), &message),
        "ssh-keygen -Y verify",
    );

    // While the agent holds the embedded TPM, keygen says who has it instead of hanging.
    let mut second = product("ssh-tpm-keygen");
    second
        .args(["--swtpm", "-N", "", "-f"])
        .arg(dir.path().join("other"));
    second.envs(env_refs.iter().copied());
    let out = run(&mut second);
    assert!(
        !out.status.success(),
        "keygen ran beside the agent: {}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("in use by another ssh-tpm process"),
        "{}",
        describe(&out)
    );
    assert!(!dir.path().join("other.tpm").exists());

    // Stopping the agent stops its swtpm in order: no swtpm is left on that state.
    assert!(
        agent.terminate().is_some_and(|s| s.success()),
        "{}",
        agent.stderr()
    );
    let leftover = run(tool("pgrep").args(["-f", &format!("dir={}", state.display())]));
    assert!(
        !leftover.status.success(),
        "swtpm still running: {}",
        stdout(&leftover)
    );
}

#[test]
fn no_tpm_says_so_and_suggests_swtpm() {
    let dir = tempdir();
    let mut keygen = product("ssh-tpm-keygen");
    keygen
        .args(["--tcti", "device:/dev/no-such-tpm", "-N", "", "-f"])
        .arg(dir.path().join("k"));
    let out = run(&mut keygen);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains("no TPM found at /dev/no-such-tpm") && err.contains("--swtpm"),
        "{err}"
    );
    assert!(!dir.path().join("k.tpm").exists());

    // With no flag at all the default device is used; on machines without one (CI, this
    // sandbox) the same one-line hint must appear.
    if !Path::new("/dev/tpmrm0").exists() {
        let mut agent = product("ssh-tpm-agent");
        agent
            .arg("-l")
            .arg(dir.path().join("a.sock"))
            .arg("--no-load");
        let out = run(&mut agent);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("no TPM found at /dev/tpmrm0") && err.contains("--swtpm"),
            "{err}"
        );
        assert!(!dir.path().join("a.sock").exists(), "socket left behind");
    }
}

/// Environment for an agent or keygen on the embedded TPM under `state`, with an askpass.
fn embedded_env(state: &Path, askpass: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("XDG_STATE_HOME", state.display().to_string()),
        ("SSH_ASKPASS", askpass.display().to_string()),
        ("SSH_ASKPASS_REQUIRE", "force".to_string()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The embedded TPM's loopback port, as the running swtpm recorded it.
fn embedded_port(state: &Path) -> String {
    read_text(&state.join("ssh-tpm/swtpm/swtpm.port"))
        .trim()
        .to_string()
}

#[test]
fn killed_agents_cost_no_pin_tries_and_other_users_cannot_clear_the_tpm() {
    let dir = tempdir();
    let state = dir.path().join("state");
    let askpass = write_askpass(dir.path(), "1234");
    let env = embedded_env(&state, &askpass);
    let mut keygen = product("ssh-tpm-keygen");
    keygen
        .args(["--swtpm", "-N", "1234", "-f"])
        .arg(dir.path().join("pin"));
    keygen.envs(as_refs(&env));
    assert_ok(&run(&mut keygen), "ssh-tpm-keygen --swtpm -N 1234");
    let key = KeyFiles::at(dir.path(), "pin");
    let message = dir.path().join("message");
    write(&message, "signed after a crash\n");
    let key_dir = dir.path().to_str().expect("UTF-8 path");

    // The embedded TPM allows 10 failures; 12 crashes after using a PIN key would lock it
    // if each crash left an unorderly shutdown behind.
    for round in 0..12 {
        let socket = dir.path().join(format!("agent-{round}.sock"));
        let mut agent = Agent::start(&socket, &["--swtpm", "--key-dir", key_dir], &as_refs(&env));
        let _ = std::fs::remove_file(dir.path().join("message.sig"));
        let signed = sign_file(&socket, &key.public, &message);
        assert_ok(
            &signed,
            &format!("sign in round {round}:\n{}", agent.stderr()),
        );
        if round == 0 {
            // Meanwhile, another user on the machine reaches the port but cannot clear it.
            let port = embedded_port(&state);
            let tcti = format!("swtpm:host=127.0.0.1,port={port}");
            for hierarchy in ["p", "l"] {
                let out = run(tool("tpm2_clear").args(["-T", &tcti, "-c", hierarchy]));
                assert!(!out.status.success(), "tpm2_clear -c {hierarchy} worked");
            }
        }
        agent.send(Signal::KILL);
        agent.wait_exited();
    }
    assert_eq!(askpass_calls(&askpass), 12, "one prompt per agent run");

    // The last crash left a swtpm behind; the next start stops it in order, and a clean
    // stop leaves nothing running on this state.
    let socket = dir.path().join("agent-last.sock");
    let mut agent = Agent::start(&socket, &["--swtpm", "--key-dir", key_dir], &as_refs(&env));
    assert!(
        agent.stderr().contains("left behind by a killed process"),
        "{}",
        agent.stderr()
    );
    assert!(
        agent.terminate().is_some_and(|s| s.success()),
        "{}",
        agent.stderr()
    );
    let leftover = run(tool("pgrep").args(["-f", &format!("dir={}", state.display())]));
    assert!(
        !leftover.status.success(),
        "swtpm still running: {}",
        stdout(&leftover)
    );
}

#[test]
fn agent_reconnects_after_the_tpm_goes_away() {
    let dir = tempdir();
    let state = dir.path().join("state");
    let askpass = write_askpass(dir.path(), "1234");
    let env = embedded_env(&state, &askpass);
    let mut keygen = product("ssh-tpm-keygen");
    keygen
        .args(["--swtpm", "-N", "", "-f"])
        .arg(dir.path().join("id"));
    keygen.envs(as_refs(&env));
    assert_ok(&run(&mut keygen), "ssh-tpm-keygen --swtpm");
    let key = KeyFiles::at(dir.path(), "id");
    let socket = dir.path().join("agent.sock");
    let key_dir = dir.path().to_str().expect("UTF-8 path");
    let agent = Agent::start(&socket, &["--swtpm", "--key-dir", key_dir], &as_refs(&env));
    let message = dir.path().join("message");
    write(&message, "signed across a TPM restart\n");
    assert_ok(
        &sign_file(&socket, &key.public, &message),
        "first signature",
    );

    let pid = read_text(&state.join("ssh-tpm/swtpm/swtpm.pid"));
    assert_ok(&run(tool("kill").args(["-KILL", pid.trim()])), "kill swtpm");

    // The request that meets the dead TPM may fail; the next one reconnects and signs.
    let _ = std::fs::remove_file(dir.path().join("message.sig"));
    let first = sign_file(&socket, &key.public, &message);
    if !first.status.success() {
        let log = agent.stderr_once_it_contains("lost the connection to the TPM");
        assert!(log.contains("lost the connection to the TPM"), "{log}");
        assert_ok(
            &sign_file(&socket, &key.public, &message),
            "signature after reconnect",
        );
    }
    assert_ok(
        &verify_file(dir.path(), &key.public_line(), &message),
        "verify",
    );
    assert!(agent
        .stderr_once_it_contains("reconnected")
        .contains("reconnected to the TPM"));
}

#[test]
fn swtpm_can_be_chosen_by_environment() {
    let dir = tempdir();
    let mut keygen = product("ssh-tpm-keygen");
    keygen.args(["-N", "", "-f"]).arg(dir.path().join("id"));
    keygen
        .env("SSH_TPM_AGENT_SWTPM", "1")
        .env("XDG_STATE_HOME", dir.path().join("state"));
    assert_ok(&run(&mut keygen), "SSH_TPM_AGENT_SWTPM=1 ssh-tpm-keygen");
    assert!(dir.path().join("id.tpm").exists());

    // A flag beats the environment: --tcti wins over SSH_TPM_AGENT_SWTPM.
    let mut keygen = product("ssh-tpm-keygen");
    keygen
        .args(["--tcti", "device:/dev/no-such-tpm", "-N", "", "-f"])
        .arg(dir.path().join("x"));
    keygen.env("SSH_TPM_AGENT_SWTPM", "1");
    let out = run(&mut keygen);
    assert!(
        stderr(&out).contains("no TPM found at /dev/no-such-tpm"),
        "{}",
        describe(&out)
    );

    // A TCTI option this build cannot honour is refused, not replaced by a default.
    let mut keygen = product("ssh-tpm-keygen");
    keygen
        .args(["--tcti", "swtpm:path=/tmp/x.sock", "-N", "", "-f"])
        .arg(dir.path().join("y"));
    let out = run(&mut keygen);
    assert!(
        stderr(&out).contains("option `path` is not supported"),
        "{}",
        describe(&out)
    );
}
