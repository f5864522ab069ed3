//! ssh-tpm-add and the certificate beside a key: one it cannot use (too large, not a file)
//! is named in a warning and left out, and the key is added all the same, as the agent
//! does with `--key-dir`.

mod support;

use std::path::Path;

use support::{assert_ok, describe, keygen, run, stderr, stdout, tempdir, tool, Agent, Swtpm};

/// The agent's limit for key files and their companions.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Runs `ssh-tpm-add KEY` against `agent` and checks that the key is in the agent after.
fn add_and_list(agent: &Agent, key: &support::KeyFiles) -> std::process::Output {
    let out = run(support::product("ssh-tpm-add")
        .env("SSH_TPM_AUTH_SOCK", agent.socket())
        .arg(&key.tpm));
    assert_ok(&out, "ssh-tpm-add");
    let listed = run(tool("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", agent.socket()));
    assert_ok(&listed, "ssh-add -L");
    let (_, blob) = key.blob();
    assert!(stdout(&listed).contains(&blob), "{}", describe(&listed));
    out
}

fn expect_warning(out: &std::process::Output, cert: &Path, reason: &str) {
    let expected = format!(
        "ssh-tpm-add: warning: {}: {reason}; adding the key without its certificate\n",
        cert.display()
    );
    assert_eq!(stderr(out), expected, "{}", describe(out));
    assert!(
        !stdout(out).contains("Certificate added"),
        "{}",
        describe(out)
    );
}

/// A 200 MB `-cert.pub` (sparse, so the test is cheap): not read, a warning, the key added.
#[test]
fn a_huge_certificate_is_not_read_and_the_key_is_added() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let cert = key.cert();
    let size = 200 * 1024 * 1024;
    std::fs::File::create(&cert)
        .and_then(|f| f.set_len(size))
        .expect("huge certificate");
    let empty = tempdir();
    let agent = Agent::serve(&tpm, empty.path(), &[]);

    let out = add_and_list(&agent, &key);
    let reason = format!(
        "{size} bytes is too large for a certificate (at most {MAX_KEY_FILE} bytes); not read"
    );
    expect_warning(&out, &cert, &reason);
}

/// A `-cert.pub` that is a directory, or not a certificate: a warning, the key added.
#[test]
fn an_unreadable_certificate_is_named_and_the_key_is_added() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let cert = key.cert();
    let empty = tempdir();
    let agent = Agent::serve(&tpm, empty.path(), &[]);

    std::fs::create_dir(&cert).expect("a directory as the certificate");
    let out = add_and_list(&agent, &key);
    expect_warning(&out, &cert, "a directory, not a certificate");

    std::fs::remove_dir(&cert).expect("remove the directory");
    std::fs::write(&cert, "not a certificate\n").expect("garbage certificate");
    let out = add_and_list(&agent, &key);
    let text = stderr(&out);
    let head = format!(
        "ssh-tpm-add: warning: {}: unreadable certificate: ",
        cert.display()
    );
    assert!(text.starts_with(&head), "{}", describe(&out));
    assert!(
        text.ends_with("; adding the key without its certificate\n"),
        "{}",
        describe(&out)
    );
}
