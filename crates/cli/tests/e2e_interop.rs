//! Key files written by another TPM tool (Debian's tpm2-openssl provider) load in our agent
//! and sign for `ssh-keygen -Y verify`, on the same swtpm.

mod support;

use support::*;

/// Runs `openssl genpkey -provider tpm2 ARGS... -out PATH` against `tpm`.
fn openssl_genpkey(tpm: &Swtpm, path: &std::path::Path, args: &[&str]) {
    let mut cmd = tool("openssl");
    cmd.env("TPM2OPENSSL_TCTI", tpm.tcti())
        .args(["genpkey", "-provider", "tpm2", "-provider", "default"])
        .args(args)
        .arg("-out")
        .arg(path);
    assert_ok(&run(&mut cmd), "openssl genpkey -provider tpm2");
}

#[test]
fn tpm2_openssl_keys_load_and_sign() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    openssl_genpkey(
        &tpm,
        &keys.join("ossl-p256.tpm"),
        &["-algorithm", "EC", "-pkeyopt", "group:P-256"],
    );
    openssl_genpkey(
        &tpm,
        &keys.join("ossl-rsa.tpm"),
        &[
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "bits:2048",
            "-pkeyopt",
            "user-auth:4321",
        ],
    );
    let askpass = write_askpass(dir.path(), "4321");
    let askpass = askpass.to_str().expect("UTF-8 path");
    let env = [("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", "force")];
    let agent = Agent::serve(&tpm, &keys, &env);

    let listed = ssh_add(agent.socket(), &["-L"]);
    assert_ok(&listed, "ssh-add -L");
    let lines: Vec<String> = stdout(&listed).lines().map(str::to_owned).collect();
    let kinds: Vec<String> = lines.iter().map(|l| key_blob(l).0).collect();
    assert_eq!(kinds, ["ecdsa-sha2-nistp256", "ssh-rsa"], "{lines:?}");

    let message = dir.path().join("message");
    write(&message, "signed by a key tpm2-openssl made\n");
    for (i, line) in lines.iter().enumerate() {
        let public = dir.path().join(format!("listed-{i}.pub"));
        write(&public, format!("{line}\n"));
        let _ = std::fs::remove_file(dir.path().join("message.sig"));
        assert_ok(
            &sign_file(agent.socket(), &public, &message),
            "ssh-keygen -Y sign",
        );
        assert_ok(
            &verify_file(dir.path(), line, &message),
            "ssh-keygen -Y verify",
        );
    }
    // The RSA key has a PIN (user-auth): it came through askpass exactly once.
    assert_eq!(askpass_calls(std::path::Path::new(askpass)), 1);
}
