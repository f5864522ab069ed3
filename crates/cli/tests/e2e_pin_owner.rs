//! End-to-end tests of PINs and the owner hierarchy: `ssh-tpm-keygen -p` changing a key's PIN
//! in place, checked by the agent signing with the new one. Each test runs its own swtpm.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use ssh_tpm_keyfile::TpmKey;
use support::{
    assert_ok, describe, keygen, mode, product, run, sign_file, stderr, tempdir, verify_file,
    write, write_askpass, Agent, KeyFiles, Swtpm,
};

/// Runs `ssh-tpm-keygen --tcti TPM ARGS...` with the variables `env` set.
fn keygen_env(tpm: &Swtpm, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = product("ssh-tpm-keygen");
    cmd.arg("--tcti").arg(tpm.tcti()).args(args);
    cmd.envs(env.iter().copied());
    run(&mut cmd)
}

/// Runs `ssh-tpm-keygen -p -f KEY -P OLD -N NEW`.
fn change_pin(tpm: &Swtpm, key: &KeyFiles, old: &str, new: &str) -> Output {
    let file = key.tpm.to_str().expect("UTF-8 key path");
    keygen_env(tpm, &["-p", "-f", file, "-P", old, "-N", new], &[])
}

/// The key file as the agent and keygen read it.
fn key_file(key: &KeyFiles) -> TpmKey {
    TpmKey::from_bytes(&fs::read(&key.tpm).expect("read key file")).expect("valid key file")
}

/// Starts an agent on `tpm` serving the keys in `dir`, asking `pin` through askpass (or
/// never asking, for `None`), and signs and verifies a message with `key`.
fn assert_agent_signs(tpm: &Swtpm, dir: &Path, key: &KeyFiles, pin: Option<&str>) {
    let work = tempdir();
    let askpass = pin.map(|pin| write_askpass(work.path(), pin));
    let askpass_path = askpass.as_ref().map(|p| p.to_str().expect("UTF-8 askpass"));
    let env: Vec<(&str, &str)> = match askpass_path {
        Some(path) => vec![("SSH_ASKPASS", path), ("SSH_ASKPASS_REQUIRE", "force")],
        None => vec![("SSH_ASKPASS_REQUIRE", "never")],
    };
    let mut agent = Agent::serve(tpm, dir, &env);
    let message = work.path().join("message.txt");
    write(&message, "signed after a PIN change\n");
    let signed = sign_file(agent.socket(), &key.public, &message);
    assert!(
        signed.status.success(),
        "signing failed: {}\nagent log:\n{}",
        describe(&signed),
        agent.stderr()
    );
    assert_ok(
        &verify_file(work.path(), &key.public_line(), &message),
        "ssh-keygen -Y verify",
    );
    agent.stop();
}

#[test]
fn changed_pin_signs_and_replaces_the_file_atomically() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id_ecdsa", &["-N", "1234"]);
    let public_before = fs::read(&key.public).expect("read .pub");
    let inode_before = fs::metadata(&key.tpm).expect("stat").ino();
    let before = key_file(&key);

    let out = change_pin(&tpm, &key, "1234", "5678");
    assert_ok(&out, "ssh-tpm-keygen -p");
    assert!(!stderr(&out).contains("noDA"), "{}", describe(&out));

    // A new file renamed into place, not the old one rewritten; the rest of the key is kept.
    assert_ne!(fs::metadata(&key.tpm).expect("stat").ino(), inode_before);
    assert_eq!(mode(&key.tpm), 0o600);
    let after = key_file(&key);
    assert_ne!(
        after.privkey, before.privkey,
        "the private blob must change"
    );
    assert_eq!(after.pubkey, before.pubkey);
    assert_eq!(after.parent, before.parent);
    assert!(!after.empty_auth);
    assert_eq!(fs::read(&key.public).expect("read .pub"), public_before);
    let leftovers: Vec<_> = fs::read_dir(keys.path()).expect("list").collect();
    assert_eq!(leftovers.len(), 2, "no temporary file may remain");

    assert_agent_signs(&tpm, keys.path(), &key, Some("5678"));
}

#[test]
fn wrong_old_pin_fails_and_leaves_the_file() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id_ecdsa", &["-N", "1234"]);
    let before = fs::read(&key.tpm).expect("read key");

    let out = change_pin(&tpm, &key, "9999", "5678");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("wrong PIN"), "{}", describe(&out));
    assert!(stderr(&out).contains("unchanged"), "{}", describe(&out));
    assert_eq!(fs::read(&key.tpm).expect("read key"), before);

    assert_agent_signs(&tpm, keys.path(), &key, Some("1234"));
}

#[test]
fn pin_removed_and_set_again() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id_ecdsa", &["-N", "1234"]);

    assert_ok(&change_pin(&tpm, &key, "1234", ""), "-p 1234 -> ''");
    assert!(key_file(&key).empty_auth, "emptyAuth follows the new PIN");
    assert_agent_signs(&tpm, keys.path(), &key, None);

    assert_ok(&change_pin(&tpm, &key, "", "1234"), "-p '' -> 1234");
    assert!(!key_file(&key).empty_auth);
    assert_agent_signs(&tpm, keys.path(), &key, Some("1234"));
}

#[test]
fn pin_added_to_a_key_made_without_one_warns_about_noda() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id_ecdsa", &["-N", ""]);

    let out = change_pin(&tpm, &key, "", "1234");
    assert_ok(&out, "-p '' -> 1234");
    assert!(stderr(&out).contains("noDA"), "{}", describe(&out));
    assert_agent_signs(&tpm, keys.path(), &key, Some("1234"));
}
