//! The agent's faults with PINs and key files, end to end against swtpm: a key file
//! rewritten with another PIN is asked for, never tried with the old cached PIN; a key file
//! whose public key is damaged is refused by name, and the other keys are still listed; two
//! signatures at once with one PIN key share one prompt; a key file that never answers a
//! read, or a FIFO named like one, is skipped by name, and the agent serves the others and
//! stops on SIGTERM.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh_tpm_agent_core::client;
use ssh_tpm_agent_core::constraint::Constraints;
use ssh_tpm_keyfile::TpmKey;
use support::{
    askpass_calls, assert_ok, chmod, describe, keygen, poll_until, product, run, sign_file,
    ssh_add, stderr, stdout, tempdir, verify_file, write, Agent, KeyFiles, Swtpm,
};

/// An executable askpass script in `dir` that prints the contents of the file it returns
/// (first `pin`), and counts its calls for `askpass_calls`.
fn askpass_from_file(dir: &Path, pin: &str) -> (PathBuf, PathBuf) {
    askpass_answering_after(dir, pin, 0)
}

/// As [`askpass_from_file`], answering only `delay` seconds after it was called.
fn askpass_answering_after(dir: &Path, pin: &str, delay: u32) -> (PathBuf, PathBuf) {
    let script = dir.join("askpass");
    let answer = dir.join("askpass.answer");
    let calls = dir.join("askpass.calls");
    write(&answer, format!("{pin}\n"));
    write(
        &script,
        format!(
            "#!/bin/sh\necho \"called: $*\" >> '{}'\nsleep {delay}\ncat '{}'\n",
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

/// A copy of a no-PIN ECDSA key file with one byte of its public point changed, next to a
/// good key: the agent refuses the damaged file by name, and `ssh-add -l` lists the good
/// key (one bad key used to make OpenSSH refuse the whole list). `ssh-tpm-add` of the
/// damaged file is refused too, and the list still works after.
#[test]
fn a_key_file_whose_point_is_off_the_curve_is_refused_and_the_others_are_listed() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (good, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let damaged = keys.path().join("damaged.tpm");
    let mut key = TpmKey::from_bytes(&fs::read(&good.tpm).expect("read")).expect("key file");
    let last = key.pubkey.len() - 1;
    key.pubkey[last] ^= 0x01;
    write(&damaged, key.to_pem());

    let agent = Agent::serve(&tpm, keys.path(), &[]);
    let listed = ssh_add(agent.socket(), &["-l"]);
    assert_ok(&listed, "ssh-add -l");
    let fingerprint = support::fingerprint(&good.public);
    assert_eq!(stdout(&listed).lines().count(), 1, "{}", describe(&listed));
    assert!(
        stdout(&listed).contains(&fingerprint),
        "{}",
        describe(&listed)
    );
    let log = agent.stderr();
    let line = log
        .lines()
        .find(|l| l.contains(&*damaged.to_string_lossy()))
        .unwrap_or_else(|| panic!("the damaged file is not named:\n{log}"));
    assert!(
        line.contains("the public key is damaged: its ECDSA point is not on the NIST P-256 curve"),
        "{log}"
    );

    // ssh-tpm-add refuses it before it asks the agent; the agent refuses it as well.
    let added = run(product("ssh-tpm-add")
        .env("SSH_TPM_AUTH_SOCK", agent.socket())
        .arg(&damaged));
    assert!(!added.status.success(), "{}", describe(&added));
    let expected = format!(
        "{}: the public key is damaged: its ECDSA point is not on the NIST P-256 curve",
        damaged.display()
    );
    assert!(stderr(&added).contains(&expected), "{}", describe(&added));
    let sent = client::add_key(agent.socket(), &key, None, &Constraints::default());
    assert!(sent.is_err(), "the agent took the damaged key");
    let log = agent.stderr_once_it_contains("request failed");
    assert!(
        log.lines()
            .any(|l| l.contains("request failed") && l.contains("not on the NIST P-256 curve")),
        "{log}"
    );
    let listed = ssh_add(agent.socket(), &["-l"]);
    assert_ok(&listed, "ssh-add -l after ssh-tpm-add");
    assert_eq!(stdout(&listed).lines().count(), 1, "{}", describe(&listed));
}

/// Two signatures at once with one PIN key, while the PIN is not cached yet: one prompt
/// opens, and the request that waited for it signs with the PIN it got accepted.
#[test]
fn two_signatures_at_once_share_one_prompt() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", "1234"]);
    let work = tempdir();
    // The prompt stays open long enough for the second request to arrive meanwhile.
    let (askpass, _) = askpass_answering_after(work.path(), "1234", 2);
    let askpass_path = askpass.to_str().expect("UTF-8 path");
    let env = [
        ("SSH_ASKPASS", askpass_path),
        ("SSH_ASKPASS_REQUIRE", "force"),
    ];
    let agent = Agent::serve(&tpm, keys.path(), &env);

    let signers: Vec<_> = ["one", "two"]
        .into_iter()
        .map(|name| {
            let message = work.path().join(name);
            write(&message, format!("signed at the same time: {name}\n"));
            let (socket, public) = (agent.socket().to_owned(), key.public.clone());
            let signer = std::thread::spawn(move || sign_file(&socket, &public, &message));
            (name, signer)
        })
        .collect();
    for (name, signer) in signers {
        let out = signer.join().expect("signer thread");
        assert!(
            out.status.success(),
            "{name}: {}\nagent log:\n{}",
            describe(&out),
            agent.stderr()
        );
        let message = work.path().join(name);
        assert_ok(
            &verify_file(work.path(), &key.public_line(), &message),
            name,
        );
    }
    assert_eq!(askpass_calls(&askpass), 1, "{}", agent.stderr());
}

/// A key file that never answers a read (a link to /proc/kmsg; needs root, skipped
/// otherwise): the agent names it, serves the good key beside it, and stops on SIGTERM.
/// Reading /proc/kmsg takes kernel messages from whoever else reads them, for as long as
/// the agent runs; the test keeps that short.
#[test]
fn a_key_file_that_blocks_is_skipped_and_the_agent_still_serves_and_stops() {
    let readable = fs::File::open("/proc/kmsg").is_ok();
    if !support::is_root() || !readable {
        eprintln!("skipped: /proc/kmsg needs root");
        return;
    }
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (good, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let blocking = keys.path().join("kmsg.tpm");
    std::os::unix::fs::symlink("/proc/kmsg", &blocking).expect("symlink");

    let mut agent = Agent::serve(&tpm, keys.path(), &[]);
    let listed = ssh_add(agent.socket(), &["-l"]);
    assert_ok(&listed, "ssh-add -l");
    let fingerprint = support::fingerprint(&good.public);
    assert!(
        stdout(&listed).contains(&fingerprint),
        "{}",
        describe(&listed)
    );
    let log = agent.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("kmsg.tpm") && l.contains("did not finish within 2 s")),
        "{log}"
    );
    assert!(
        agent.terminate().is_some(),
        "SIGTERM did not stop the agent"
    );
}

/// A FIFO named like a key file, which no one writes: the agent names it without opening
/// it (opening a FIFO waits for a writer), serves the good key, and stops on SIGTERM.
#[test]
fn a_fifo_named_like_a_key_is_skipped_and_the_agent_still_serves_and_stops() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (good, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let fifo = keys.path().join("fifo.tpm");
    assert_ok(&run(support::tool("mkfifo").arg(&fifo)), "mkfifo");

    let mut agent = Agent::serve(&tpm, keys.path(), &[]);
    let listed = ssh_add(agent.socket(), &["-l"]);
    assert_ok(&listed, "ssh-add -l");
    let fingerprint = support::fingerprint(&good.public);
    assert!(
        stdout(&listed).contains(&fingerprint),
        "{}",
        describe(&listed)
    );
    let log = agent.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("fifo.tpm: a FIFO, not a key file")),
        "{log}"
    );
    assert!(
        agent.terminate().is_some(),
        "SIGTERM did not stop the agent"
    );
}
