//! End-to-end tests of PINs and the owner hierarchy: `ssh-tpm-keygen -p` changing a key's PIN
//! in place, checked by the agent signing with the new one; a TPM whose owner hierarchy has a
//! password (`-o`, `SSH_TPM_AGENT_OWNER_PASSWORD`); the agent serving a hierarchy's own
//! signing keys (`--hierarchy`). Each test runs its own swtpm.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use ssh_tpm_keyfile::TpmKey;
use support::{
    assert_ok, describe, keygen, mode, product, run, sign_file, ssh_add, stderr, stdout, tempdir,
    verify_file, write, write_askpass, Agent, KeyFiles, Swtpm,
};

/// The variable that holds the owner hierarchy's password.
const OWNER_PASSWORD_ENV: &str = "SSH_TPM_AGENT_OWNER_PASSWORD";

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
    let log = agent_signs(tpm, dir, key, pin, &[], &[]).unwrap_or_else(|e| panic!("{e}"));
    drop(log);
}

/// Starts `ssh-tpm-agent ARGS` with `env` on `tpm`, serving the keys in `dir` and answering
/// askpass with `askpass_answer` (or never asking, for `None`), and signs a message with
/// `key`. `Ok` with the agent's log when the signature verifies, else `Err` saying why.
fn agent_signs(
    tpm: &Swtpm,
    dir: &Path,
    key: &KeyFiles,
    askpass_answer: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, String> {
    let work = tempdir();
    let askpass = askpass_answer.map(|answer| write_askpass(work.path(), answer));
    let askpass_path = askpass.as_ref().map(|p| p.to_str().expect("UTF-8 askpass"));
    let mut all_env: Vec<(&str, &str)> = match askpass_path {
        Some(path) => vec![("SSH_ASKPASS", path), ("SSH_ASKPASS_REQUIRE", "force")],
        None => vec![("SSH_ASKPASS_REQUIRE", "never")],
    };
    all_env.extend_from_slice(env);
    let tcti = tpm.tcti();
    let dir = dir.to_str().expect("UTF-8 key dir");
    let mut all_args = vec!["--tcti", &tcti, "--key-dir", dir];
    all_args.extend_from_slice(args);
    let mut agent = Agent::start(&work.path().join("agent.sock"), &all_args, &all_env);

    let message = work.path().join("message.txt");
    write(&message, "signed through ssh-tpm-agent\n");
    let signed = sign_file(agent.socket(), &key.public, &message);
    let result = if signed.status.success() {
        let verified = verify_file(work.path(), &key.public_line(), &message);
        assert_ok(&verified, "ssh-keygen -Y verify");
        Ok(agent.stderr())
    } else {
        Err(format!(
            "signing failed: {}\nagent log:\n{}",
            describe(&signed),
            agent.stderr()
        ))
    };
    agent.stop();
    result
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

/// Gives the owner hierarchy of `tpm` the password `password`.
fn set_owner_password(tpm: &Swtpm, password: &str) {
    let out = tpm.tpm2("tpm2_changeauth", &["-c", "owner", password]);
    assert_ok(&out, "tpm2_changeauth -c owner");
}

#[test]
fn owner_password_is_needed_named_and_used() {
    let tpm = Swtpm::start();
    set_owner_password(&tpm, "NEWPASS");
    let keys = tempdir();
    let name = keys.path().join("id_ecdsa");
    let name = name.to_str().expect("UTF-8 key path");

    // Without the password: the message names both ways to give it, and no PIN.
    let out = keygen_env(&tpm, &["-f", name, "-N", "1234"], &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let text = stderr(&out);
    assert!(text.contains("-o/--owner-password"), "{text}");
    assert!(text.contains(OWNER_PASSWORD_ENV), "{text}");
    assert!(!text.contains("PIN"), "an owner password is no PIN: {text}");

    let out = keygen_env(
        &tpm,
        &["-f", name, "-N", "1234"],
        &[(OWNER_PASSWORD_ENV, "WRONG")],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rejected the owner hierarchy password"),
        "{}",
        describe(&out)
    );
    assert!(!KeyFiles::at(keys.path(), "id_ecdsa").tpm.exists());

    let out = keygen_env(
        &tpm,
        &["-f", name, "-N", "1234"],
        &[(OWNER_PASSWORD_ENV, "NEWPASS")],
    );
    assert_ok(&out, "ssh-tpm-keygen with the owner password");
    let key = KeyFiles::at(keys.path(), "id_ecdsa");

    // The agent needs it too, to make the storage key; without it the log says so.
    let failed = agent_signs(&tpm, keys.path(), &key, Some("1234"), &[], &[]);
    let log = failed.expect_err("signing without the owner password");
    assert!(log.contains(OWNER_PASSWORD_ENV), "{log}");
    assert!(!log.contains("wrong PIN"), "{log}");

    let env = [(OWNER_PASSWORD_ENV, "NEWPASS")];
    agent_signs(&tpm, keys.path(), &key, Some("1234"), &[], &env).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn agent_asks_for_the_owner_password_with_o() {
    let tpm = Swtpm::start();
    set_owner_password(&tpm, "NEWPASS");
    let keys = tempdir();
    let name = keys.path().join("id_ecdsa");
    let name = name.to_str().expect("UTF-8 key path");
    let out = keygen_env(
        &tpm,
        &["-f", name, "-N", ""],
        &[(OWNER_PASSWORD_ENV, "NEWPASS")],
    );
    assert_ok(&out, "ssh-tpm-keygen with the owner password");
    let key = KeyFiles::at(keys.path(), "id_ecdsa");

    // The key has no PIN: askpass is asked for the owner password only.
    agent_signs(&tpm, keys.path(), &key, Some("NEWPASS"), &["-o"], &[])
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Starts `ssh-tpm-agent --hierarchy HIERARCHY` with `env` and no key files; returns what
/// `ssh-add -L` lists, after signing with each listed key and verifying the signature.
fn hierarchy_keys_signing(tpm: &Swtpm, hierarchy: &str, env: &[(&str, &str)]) -> Vec<String> {
    let work = tempdir();
    let empty = tempdir();
    let tcti = tpm.tcti();
    let args = [
        "--tcti",
        &tcti,
        "--key-dir",
        empty.path().to_str().expect("UTF-8 dir"),
        "--hierarchy",
        hierarchy,
    ];
    let mut agent = Agent::start(&work.path().join("agent.sock"), &args, env);
    let listed = ssh_add(agent.socket(), &["-L"]);
    assert_ok(&listed, "ssh-add -L");
    let lines: Vec<String> = stdout(&listed).lines().map(str::to_owned).collect();
    for (i, line) in lines.iter().enumerate() {
        let public = work.path().join(format!("key{i}.pub"));
        write(&public, format!("{line}\n"));
        let message = work.path().join(format!("message{i}.txt"));
        write(&message, "signed with a hierarchy key\n");
        let signed = sign_file(agent.socket(), &public, &message);
        assert!(
            signed.status.success(),
            "signing with {line} failed: {}\nagent log:\n{}",
            describe(&signed),
            agent.stderr()
        );
        assert_ok(
            &verify_file(work.path(), line, &message),
            "ssh-keygen -Y verify",
        );
    }
    agent.stop();
    lines
}

#[test]
fn hierarchy_keys_are_the_same_at_every_start_and_sign() {
    let tpm = Swtpm::start();
    let first = hierarchy_keys_signing(&tpm, "owner", &[]);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first[0].starts_with("ecdsa-sha2-nistp256 "), "{first:?}");
    assert!(first[0].ends_with(" owner hierarchy ecdsa"), "{first:?}");
    assert!(first[1].starts_with("ssh-rsa "), "{first:?}");
    assert!(first[1].ends_with(" owner hierarchy rsa"), "{first:?}");

    // Same TPM, same keys; with an owner password set, given through the environment.
    set_owner_password(&tpm, "NEWPASS");
    let second = hierarchy_keys_signing(&tpm, "owner", &[(OWNER_PASSWORD_ENV, "NEWPASS")]);
    assert_eq!(first, second);

    let endorsement = hierarchy_keys_signing(&tpm, "endorsement", &[]);
    assert!(endorsement[0].ends_with(" endorsement hierarchy ecdsa"));
    assert_ne!(endorsement[0], first[0], "each hierarchy has its own seed");
}
