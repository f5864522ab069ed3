//! The embedded default: `--swtpm` keeps its software TPM in the user's state directory, so
//! a key made by one run works in the next; and without any TPM the user is pointed at it.

mod support;

use std::path::Path;

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
