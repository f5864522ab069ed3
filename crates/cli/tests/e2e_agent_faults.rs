//! The agent's faults with PINs and key files, end to end against swtpm: a key file
//! rewritten with another PIN is asked for, never tried with the old cached PIN.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    askpass_calls, assert_ok, chmod, describe, keygen, poll_until, product, run, sign_file,
    tempdir, verify_file, write, Agent, KeyFiles, Swtpm,
};

/// An executable askpass script in `dir` that prints the contents of the file it returns
/// (first `pin`), and counts its calls for `askpass_calls`.
fn askpass_from_file(dir: &Path, pin: &str) -> (PathBuf, PathBuf) {
    let script = dir.join("askpass");
    let answer = dir.join("askpass.answer");
    let calls = dir.join("askpass.calls");
    write(&answer, format!("{pin}\n"));
    write(
        &script,
        format!(
            "#!/bin/sh\necho \"called: $*\" >> '{}'\ncat '{}'\n",
            calls.display(),
            answer.display()
        ),
    );
    chmod(&script, 0o755);
    (script, answer)
}

/// The TPM forgets a failed PIN try only after 10 minutes, so that one shows in
/// TPM2_PT_LOCKOUT_COUNTER until the test reads it.
fn remember_failures(tpm: &Swtpm) {
    let slow = [
        "--setup-parameters",
        "--max-tries=32",
        "--recovery-time=600",
        "--lockout-recovery-time=1",
    ];
    assert_ok(
        &tpm.tpm2("tpm2_dictionarylockout", &slow),
        "lockout parameters",
    );
}

fn lockout_counter(tpm: &Swtpm) -> u32 {
    tpm.variable_property("TPM2_PT_LOCKOUT_COUNTER")
}

/// Signs `message` through `agent` with `key` and checks the signature.
fn assert_signs(agent: &Agent, key: &KeyFiles, message: &Path, what: &str) {
    let _ = fs::remove_file(format!("{}.sig", message.display()));
    let out = sign_file(agent.socket(), &key.public, message);
    assert!(
        out.status.success(),
        "{what}: {}\nagent log:\n{}",
        describe(&out),
        agent.stderr()
    );
    let dir = message.parent().expect("message directory");
    assert_ok(&verify_file(dir, &key.public_line(), message), what);
}

/// `ssh-tpm-keygen -p` changes the PIN of a copy of the served key file, and the copy
/// replaces it once the agent cached the old PIN (renamed into place, as keygen writes).
/// The agent reloads it, and the PIN it cached for the old file is not sent: the next
/// signature asks, and the TPM counts no failed try.
#[test]
fn a_key_file_rewritten_with_another_pin_is_asked_for_not_tried_with_the_old_pin() {
    let tpm = Swtpm::start();
    remember_failures(&tpm);
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", "1234"]);
    let work = tempdir();
    let (askpass, answer) = askpass_from_file(work.path(), "1234");
    let failures_before = lockout_counter(&tpm);
    // The same key with another PIN, made now: swtpm has no room for keygen while the
    // agent holds its objects.
    let copy = KeyFiles::at(work.path(), "id");
    fs::copy(&key.tpm, &copy.tpm).expect("copy the key file");
    let file = copy.tpm.to_str().expect("UTF-8 path");
    let changed = run(product("ssh-tpm-keygen").args([
        "--tcti",
        &tpm.tcti(),
        "-p",
        "-f",
        file,
        "-P",
        "1234",
        "-N",
        "5678",
    ]));
    assert_ok(&changed, "ssh-tpm-keygen -p");

    let askpass_path = askpass.to_str().expect("UTF-8 path");
    let env = [
        ("SSH_ASKPASS", askpass_path),
        ("SSH_ASKPASS_REQUIRE", "force"),
    ];
    let mut agent = Agent::serve(&tpm, keys.path(), &env);
    let message = work.path().join("message");
    write(&message, "signed before and after the PIN changed\n");
    assert_signs(&agent, &key, &message, "first signature");
    assert_signs(&agent, &key, &message, "with the cached PIN");
    assert_eq!(askpass_calls(&askpass), 1, "the PIN was not cached");

    fs::rename(&copy.tpm, &key.tpm).expect("replace the served key file");
    let reloaded = poll_until(Duration::from_secs(5), || {
        agent.stderr().matches("key loaded").count() >= 2
    });
    assert!(reloaded, "no reload:\n{}", agent.stderr());

    write(&answer, "5678\n");
    assert_signs(&agent, &key, &message, "after the PIN changed");
    assert_eq!(askpass_calls(&askpass), 2, "the new PIN was not asked for");
    agent.stop();
    assert_eq!(
        lockout_counter(&tpm),
        failures_before,
        "the old PIN was sent:\n{}",
        agent.stderr()
    );
    assert!(!agent.stderr().contains("wrong PIN"), "{}", agent.stderr());
}
