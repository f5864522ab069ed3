//! Secrets stay out of the agent's output: an agent at debug level (`-d`) goes through a PIN
//! prompt, a lock with a wrong and a right unlock, and the import of a plain private key by
//! ssh-add (passed on to the `-A` agent), and nothing it prints holds the PIN, a passphrase
//! or any run of the private key's bytes.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use ssh_key::private::KeypairData;
use ssh_key::PrivateKey;
use support::{
    accepts_unix, assert_ok, describe, poll_until, read_text, run, run_with_stdin, sign_file,
    tempdir, tool, verify_file, write_askpass, Agent, Daemon, KeyFiles, Swtpm, START_TIMEOUT,
};

const PIN: &str = "pin-7351-secret";
const LOCK: &str = "lock-phrase-9911";
const WRONG_UNLOCK: &str = "wrong-phrase-5820";
const KEY_PASSPHRASE: &str = "import-phrase-4471";

/// Sends one agent message (without its length) and returns the reply's body.
fn call(socket: &Path, message: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).expect("connect");
    let mut frame = (message.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    stream.write_all(&frame).expect("send");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("reply length");
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).expect("reply");
    body
}

/// SSH_AGENTC_LOCK (22) or UNLOCK (23) with `passphrase`.
fn lock_message(kind: u8, passphrase: &str) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend_from_slice(&(passphrase.len() as u32).to_be_bytes());
    message.extend_from_slice(passphrase.as_bytes());
    message
}

/// Every form in which `secret` bytes could show in a log: raw, lowercase and uppercase
/// hex, and Rust's `[1, 2, 3]` debug form, for each 8-byte run.
fn forms(secret: &[u8]) -> Vec<String> {
    let mut forms = Vec::new();
    for run in secret.windows(8).step_by(4) {
        let hex: String = run.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
        let list: Vec<String> = run.iter().map(u8::to_string).collect();
        forms.push(list.join(", "));
        if let Ok(text) = std::str::from_utf8(run) {
            forms.push(text.to_string());
        }
    }
    forms
}

#[test]
fn debug_output_holds_no_pin_passphrase_or_private_key_byte() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let out = run(tool(support::product_path("ssh-tpm-keygen"))
        .args(["--tcti", &tpm.tcti(), "-N", PIN, "-f"])
        .arg(keys.join("id")));
    assert_ok(&out, "ssh-tpm-keygen with a PIN");
    let key = KeyFiles::at(&keys, "id");

    // A plain ssh-agent behind ours, for the import.
    let upstream = dir.path().join("upstream.sock");
    let mut cmd = tool("ssh-agent");
    cmd.arg("-D").arg("-a").arg(&upstream);
    let mut plain = Daemon::spawn("ssh-agent", &mut cmd, dir.path());
    assert!(poll_until(START_TIMEOUT, || accepts_unix(&upstream)));

    let askpass = write_askpass(dir.path(), PIN);
    let askpass = askpass.to_str().expect("UTF-8 path");
    let socket = dir.path().join("agent.sock");
    let upstream_arg = upstream.to_str().expect("UTF-8 path");
    let key_dir = keys.to_str().expect("UTF-8 path");
    let tcti = tpm.tcti();
    let args = [
        "-d",
        "--tcti",
        &tcti,
        "--key-dir",
        key_dir,
        "-A",
        upstream_arg,
    ];
    let env = [("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", "force")];
    let mut agent = Agent::start(&socket, &args, &env);

    // A signature through the PIN prompt.
    let message = dir.path().join("message");
    support::write(&message, "signed with a PIN\n");
    assert_ok(&sign_file(&socket, &key.public, &message), "sign");
    assert_ok(
        &verify_file(dir.path(), &key.public_line(), &message),
        "verify",
    );

    // Lock, a wrong unlock, the right one.
    assert_eq!(call(&socket, &lock_message(22, LOCK)), [6]);
    assert_eq!(call(&socket, &lock_message(23, WRONG_UNLOCK)), [5]);
    assert_eq!(call(&socket, &lock_message(23, LOCK)), [6]);

    // The import: ssh-add sends an encrypted key's private half, which we pass on.
    let plain_key = dir.path().join("plain");
    let made = run(tool("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ecdsa",
            "-N",
            KEY_PASSPHRASE,
            "-C",
            "plain",
            "-f",
        ])
        .arg(&plain_key));
    assert_ok(&made, "ssh-keygen");
    let mut add = tool("setsid");
    add.args(["-w", "ssh-add"])
        .arg(&plain_key)
        .env("SSH_AUTH_SOCK", &socket)
        .env("SSH_ASKPASS", write_askpass(dir.path(), KEY_PASSPHRASE))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    let added = run_with_stdin(&mut add, b"");
    assert_ok(&added, "ssh-add through the agent");
    let listed = run(tool("ssh-add").arg("-l").env("SSH_AUTH_SOCK", &upstream));
    assert!(
        support::stdout(&listed).contains("plain"),
        "{}",
        describe(&listed)
    );

    agent.stop();
    plain.stop();
    let output = agent.stderr() + &agent.stdout();
    assert!(
        output.contains("sign request") && output.contains("agent unlocked"),
        "the agent did not log at debug level:\n{output}"
    );

    let private = PrivateKey::read_openssh_file(&plain_key)
        .expect("read the plain key")
        .decrypt(KEY_PASSPHRASE)
        .expect("decrypt");
    let KeypairData::Ecdsa(pair) = private.key_data() else {
        panic!("not an ECDSA key");
    };
    let scalar = pair.private_key_bytes().to_vec();
    let key_file = read_text(&plain_key);
    let base64_lines = key_file.lines().filter(|l| !l.starts_with("-----"));
    let mut secrets: Vec<String> = vec![
        PIN.into(),
        LOCK.into(),
        WRONG_UNLOCK.into(),
        KEY_PASSPHRASE.into(),
    ];
    secrets.extend(forms(&scalar));
    secrets.extend(base64_lines.map(|l| l[..20.min(l.len())].to_string()));
    for secret in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "the agent's output holds a secret ({secret:?}):\n{output}"
        );
    }
}
