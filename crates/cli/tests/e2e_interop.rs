//! Interop with other TPM tools, end to end.
//!
//! In: key files written by tpm2-openssl, tpm2-tools and in the layouts of the Go agent and
//! openssl_tpm2_engine (tool × key type × PIN × parent) load in our agent, list with the
//! public key the other tool derived, and sign for `ssh-keygen -Y verify`. They run twice:
//! the committed vectors on a copy of the swtpm state they were made in (reproducible), and
//! a set the vector script makes now with the installed tools.
//! Out: tpm2-openssl signs with keys from our keygen.
//! And each refusal (sealed data, unsupported policy, another TPM, a wrong parent, a broken
//! file, PCRs that moved) names its cause.

mod support;

use std::path::{Path, PathBuf};

use ssh_tpm_keyfile::{handle, TpmKey};
use support::*;

/// The PIN of every vector that has one.
const VECTOR_PIN: &str = "4321";

/// The committed vectors and their script.
fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../keyfile/tests/fixtures/interop")
}

/// Copies vectors `names` (NAME.tpm, and NAME.pub when there is one) from `from` into `to`.
fn copy_vectors(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).expect("key dir");
    for name in names {
        for ext in ["tpm", "pub"] {
            let file = from.join(format!("{name}.{ext}"));
            if ext == "tpm" || file.exists() {
                std::fs::copy(&file, to.join(format!("{name}.{ext}")))
                    .unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
            }
        }
    }
}

/// The vectors the agent must serve: all but the refused ones, and but the tpm2-tools key
/// whose file says "PIN" for a key without one (see `refusals_name_their_cause`).
fn signable(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("vector dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "tpm"))
        .map(|path| {
            path.file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !name.starts_with("refused-") && name != "tools-p256-persistent")
        .collect();
    names.sort();
    names
}

/// Runs `openssl ARGS...` with tpm2-openssl pointed at `tpm`.
fn openssl(tpm: &Swtpm, args: &[&str]) -> std::process::Output {
    run(tool("openssl")
        .env("TPM2OPENSSL_TCTI", tpm.tcti())
        .args(args))
}

/// Runs `openssl genpkey -provider tpm2 ARGS... -out PATH` against `tpm`.
fn openssl_genpkey(tpm: &Swtpm, path: &Path, args: &[&str]) {
    let path = path.to_str().expect("UTF-8 path");
    let mut all = vec!["genpkey", "-provider", "tpm2", "-provider", "default"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-out", path]);
    assert_ok(&openssl(tpm, &all), "openssl genpkey -provider tpm2");
}

/// The matrix: every signable vector in `from`, on a swtpm started from `from`/swtpm-state,
/// is listed with the public key in its .pub (derived by the writing tool and ssh-keygen)
/// and signs for `ssh-keygen -Y verify`. PINs come through askpass, once per PIN key; the
/// tpm2-tools noDA key whose file wrongly claims a PIN signs without a prompt.
fn check_vectors(from: &Path) {
    let tpm = Swtpm::start_with_state(&from.join("swtpm-state"));
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let names = signable(from);
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    copy_vectors(from, &keys, &name_refs);
    let askpass = write_askpass(dir.path(), VECTOR_PIN);
    let askpass_text = askpass.to_str().expect("UTF-8 path");
    let env = [
        ("SSH_ASKPASS", askpass_text),
        ("SSH_ASKPASS_REQUIRE", "force"),
    ];
    let agent = Agent::serve(&tpm, &keys, &env);

    // Listed: exactly the public keys the other tools derived.
    let listed = ssh_add(agent.socket(), &["-L"]);
    assert_ok(&listed, "ssh-add -L");
    let mut listed_blobs: Vec<(String, String)> = listed_keys(&listed);
    let mut expected: Vec<(String, String)> = names
        .iter()
        .map(|name| KeyFiles::at(&keys, name).blob())
        .collect();
    listed_blobs.sort();
    expected.sort();
    assert_eq!(listed_blobs, expected, "agent log:\n{}", agent.stderr());

    // Signed: each key, verified by ssh-keygen against the other tool's public key.
    let message = dir.path().join("message");
    write(&message, "signed in the TPM, verified by OpenSSH\n");
    for name in &names {
        let files = KeyFiles::at(&keys, name);
        let _ = std::fs::remove_file(dir.path().join("message.sig"));
        let signed = sign_file(agent.socket(), &files.public, &message);
        assert!(
            signed.status.success(),
            "{name}: ssh-keygen -Y sign: {}\nagent log:\n{}",
            describe(&signed),
            agent.stderr()
        );
        let verified = verify_file(dir.path(), &files.public_line(), &message);
        assert_ok(&verified, &format!("{name}: ssh-keygen -Y verify"));
    }

    // One prompt per PIN key (the agent caches PINs), none for the others.
    let pin_keys = names.iter().filter(|n| n.ends_with("-auth")).count();
    assert_eq!(
        askpass_calls(&askpass),
        pin_keys,
        "agent log:\n{}",
        agent.stderr()
    );
}

#[test]
fn committed_vectors_load_list_and_sign() {
    check_vectors(&vectors());
}

/// The vector script, run now against the installed tools into a temporary directory: the
/// same matrix holds for files these versions write today.
#[test]
fn vectors_made_now_by_the_installed_tools_load_list_and_sign() {
    let dir = tempdir();
    let out = dir.path().join("vectors");
    std::fs::create_dir(&out).expect("vector dir");
    let script = vectors().join("make-interop.sh");
    let made = run(tool("sh")
        .arg(&script)
        .env("OUT_DIR", &out)
        .env("SWTPM_PORT", free_port_pair().to_string()));
    assert_ok(&made, "make-interop.sh");
    let committed = signable(&vectors());
    assert_eq!(
        signable(&out),
        committed,
        "the script makes every committed vector"
    );
    check_vectors(&out);
}

/// Keys bound to PCR 16 sign while it holds its start-up value; once it is extended, the
/// agent says which policy command failed and why. Both PolicyPCR layouts are covered: the
/// engine's (with PolicyAuthValue and an RSA parent) and the draft's, and PolicyPCR inside a
/// signed policy.
#[test]
fn pcr_bound_keys_stop_signing_when_the_pcr_moves() {
    let tpm = Swtpm::start_with_state(&vectors().join("swtpm-state"));
    let extend = format!("16:sha256={}", "11".repeat(32));
    assert_ok(&tpm.tpm2("tpm2_pcrextend", &[&extend]), "tpm2_pcrextend");

    let dir = tempdir();
    let keys = dir.path().join("keys");
    let names = [
        "draft-p384-owner-pcr",
        "engine-p256-rsaparent-pcr-auth",
        "signed-p256-owner-authpolicy",
    ];
    copy_vectors(&vectors(), &keys, &names);
    let askpass = write_askpass(dir.path(), VECTOR_PIN);
    let askpass = askpass.to_str().expect("UTF-8 path");
    let env = [("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", "force")];
    let agent = Agent::serve(&tpm, &keys, &env);

    let message = dir.path().join("message");
    write(&message, "must not be signed\n");
    for name in names {
        let public = KeyFiles::at(&keys, name).public;
        let signed = sign_file(agent.socket(), &public, &message);
        assert!(
            !signed.status.success(),
            "{name} signed: {}",
            describe(&signed)
        );
    }
    poll_until(std::time::Duration::from_secs(5), || {
        agent.stderr().matches("TPM2_PolicyPCR failed").count() == names.len()
    });
    let log = agent.stderr();
    for name in names {
        assert!(
            failure(&log, name).contains("TPM2_PolicyPCR failed"),
            "{name}: agent log:\n{log}"
        );
    }
    assert!(
        log.contains("no longer hold the values the key was bound to"),
        "agent log:\n{log}"
    );
}

/// Files the agent cannot use are reported by name with the reason, at load time; the other
/// files still load. A tpm2-tools file that claims a PIN for a key that has none prompts;
/// an empty answer is refused without asking the TPM, which counts no failure.
#[test]
fn refusals_name_their_cause() {
    let tpm = Swtpm::start_with_state(&vectors().join("swtpm-state"));
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let names = [
        "refused-sealed",
        "refused-authpolicy",
        "refused-locality",
        "refused-old-label",
        "tools-p256-persistent",
    ];
    copy_vectors(&vectors(), &keys, &names);
    let askpass = write_askpass(dir.path(), "");
    let askpass_text = askpass.to_str().expect("UTF-8 path");
    let env = [
        ("SSH_ASKPASS", askpass_text),
        ("SSH_ASKPASS_REQUIRE", "force"),
    ];
    let mut agent = Agent::serve(&tpm, &keys, &env);

    let log = agent.stderr_once_it_contains("refused-sealed.tpm");
    let expected = [
        ("refused-sealed.tpm", "TPM-sealed data, not a key"),
        ("refused-old-label.tpm", "old-format ssh-tpm-agent key"),
        (
            "refused-old-label.tpm",
            "recreate the key with ssh-tpm-keygen",
        ),
        (
            "refused-authpolicy.tpm",
            "TPM2_PolicyAuthorize (command code 0x0000016a)",
        ),
        (
            "refused-locality.tpm",
            "TPM2_PolicyLocality (command code 0x0000016f)",
        ),
    ];
    for (file, reason) in expected {
        assert!(
            log.lines().any(|l| l.contains(file) && l.contains(reason)),
            "no line with {file:?} and {reason:?} in the agent log:\n{log}"
        );
    }

    // Only the tpm2-tools key is served; its empty PIN is refused before the TPM.
    let listed = ssh_add(agent.socket(), &["-L"]);
    assert_ok(&listed, "ssh-add -L");
    let tools = KeyFiles::at(&keys, "tools-p256-persistent");
    assert_eq!(listed_keys(&listed), [tools.blob()]);
    let message = dir.path().join("message");
    write(&message, "needs a PIN\n");
    let signed = sign_file(agent.socket(), &tools.public, &message);
    assert!(!signed.status.success(), "{}", describe(&signed));
    let log = agent.stderr_once_it_contains("returned no PIN");
    assert!(log.contains("the TPM was not asked"), "agent log:\n{log}");
    assert_eq!(askpass_calls(&askpass), 1);

    agent.stop();
    assert_eq!(tpm.variable_property("TPM2_PT_LOCKOUT_COUNTER"), 0);
}

/// A signed policy whose signature does not verify: the agent says which command failed.
#[test]
fn a_forged_signed_policy_is_named() {
    let tpm = Swtpm::start_with_state(&vectors().join("swtpm-state"));
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    write_variant(&keys, "signed-p256-owner-authpolicy", "forged", |key| {
        let signed = &mut key.auth_policy[0].policy;
        let authorize = signed.last_mut().expect("PolicyAuthorize");
        let last = authorize.command_policy.last_mut().expect("a signature");
        *last ^= 0x01;
    });
    let agent = Agent::serve(&tpm, &keys, &[]);
    let message = dir.path().join("message");
    write(&message, "must not be signed\n");
    let log = failed_signatures(&agent, &keys, &["forged"], &message);
    assert!(
        failure(&log, "forged").contains("TPM2_PolicyAuthorize failed (the authority's signature"),
        "{log}"
    );
}

/// The vector `name`, changed by `edit`, into `dir`/`file`.tpm, with its public key in
/// `file`.pub under the comment `file`.
fn write_variant(dir: &Path, name: &str, file: &str, edit: impl FnOnce(&mut TpmKey)) {
    let text = std::fs::read(vectors().join(format!("{name}.tpm"))).expect("read vector");
    let mut key = TpmKey::from_bytes(&text).expect("vector parses");
    edit(&mut key);
    write(&dir.join(format!("{file}.tpm")), key.to_pem());
    let public = KeyFiles::at(&vectors(), name).public_line();
    let (kind, blob) = key_blob(&public);
    write(
        &dir.join(format!("{file}.pub")),
        format!("{kind} {blob} {file}\n"),
    );
}

/// The vector `name`, rewritten with `parent`, into `dir`/`file`.tpm with the same .pub.
fn with_parent(dir: &Path, name: &str, file: &str, parent: u32) {
    write_variant(dir, name, file, |key| key.parent = parent);
}

/// Signs `message` with each key and returns the agent's log once every failure is in it.
fn failed_signatures(agent: &Agent, keys: &Path, names: &[&str], message: &Path) -> String {
    for name in names {
        let public = KeyFiles::at(keys, name).public;
        let signed = sign_file(agent.socket(), &public, message);
        assert!(
            !signed.status.success(),
            "{name} signed: {}",
            describe(&signed)
        );
    }
    poll_until(std::time::Duration::from_secs(5), || {
        let log = agent.stderr();
        names.iter().all(|name| !failure(&log, name).is_empty())
    });
    agent.stderr()
}

/// The agent's log line saying why a request for the key with comment `name` failed, or
/// an empty string.
fn failure(log: &str, name: &str) -> String {
    let key = format!("({name})");
    log.lines()
        .find(|l| l.contains("request failed") && l.contains(&key))
        .unwrap_or_default()
        .to_owned()
}

/// A key from another TPM, a key whose file names the wrong parent, a key whose persistent
/// parent is gone, and a key from a TPM that was cleared since: each failure says so.
#[test]
fn keys_from_elsewhere_say_where_they_belong() {
    let dir = tempdir();
    let message = dir.path().join("message");
    write(&message, "must not be signed\n");

    // Another TPM: a fresh swtpm has other seeds and no 0x81000001.
    let other = Swtpm::start();
    let keys = dir.path().join("other");
    copy_vectors(
        &vectors(),
        &keys,
        &["ossl-p256-owner", "ossl-p256-persistent"],
    );
    let mut agent = Agent::serve(&other, &keys, &[]);
    let log = failed_signatures(
        &agent,
        &keys,
        &["ossl-p256-owner", "ossl-p256-persistent"],
        &message,
    );
    assert!(
        failure(&log, "ossl-p256-owner")
            .contains("belongs to a different TPM, or the TPM was cleared"),
        "{log}"
    );
    assert!(
        failure(&log, "ossl-p256-persistent").contains("parent 0x81000001 is not in this TPM"),
        "{log}"
    );
    agent.stop();
    drop(other);

    // The right TPM, wrong parents in the files: one that exists, one that does not.
    let tpm = Swtpm::start_with_state(&vectors().join("swtpm-state"));
    let keys = dir.path().join("wrong-parent");
    std::fs::create_dir(&keys).expect("key dir");
    with_parent(&keys, "ossl-p256-persistent", "to-owner", handle::OWNER);
    with_parent(&keys, "ossl-p256-owner", "to-0x81000002", 0x8100_0002);
    let mut agent = Agent::serve(&tpm, &keys, &[]);
    let log = failed_signatures(&agent, &keys, &["to-owner", "to-0x81000002"], &message);
    assert!(
        failure(&log, "to-owner").contains("its parent is not the one in the key file"),
        "{log}"
    );
    assert!(
        failure(&log, "to-0x81000002").contains("parent 0x81000002 is not in this TPM"),
        "{log}"
    );
    agent.stop();

    // The same TPM after TPM2_Clear: its owner seed, and so every owner key, is new.
    assert_ok(&tpm.tpm2("tpm2_clear", &["-c", "l"]), "tpm2_clear");
    let keys = dir.path().join("cleared");
    copy_vectors(&vectors(), &keys, &["ossl-p256-owner"]);
    let agent = Agent::serve(&tpm, &keys, &[]);
    let log = failed_signatures(&agent, &keys, &["ossl-p256-owner"], &message);
    assert!(
        failure(&log, "ossl-p256-owner")
            .contains("belongs to a different TPM, or the TPM was cleared"),
        "{log}"
    );
}

/// A truncated file and a corrupt one: the agent's log and ssh-tpm-add both name the field
/// and the byte offset; the good file beside them still loads.
#[test]
fn broken_files_name_the_field_and_offset() {
    let tpm = Swtpm::start_with_state(&vectors().join("swtpm-state"));
    let dir = tempdir();
    let keys = dir.path().join("keys");
    copy_vectors(&vectors(), &keys, &["ossl-p256-owner"]);
    let text = std::fs::read(vectors().join("ossl-p256-owner.tpm")).expect("read vector");
    let der = TpmKey::from_bytes(&text).expect("parses").to_der();

    // Cut inside privkey; and pubkey's OCTET STRING tag (offset 22) turned into a UTF8String.
    let truncated = &der[..der.len() - 10];
    write(&keys.join("truncated.tpm"), truncated);
    let mut corrupt = der.clone();
    assert_eq!(corrupt[22], 0x04, "pubkey's tag");
    corrupt[22] = 0x0C;
    write(&keys.join("corrupt.tpm"), &corrupt);

    let agent = Agent::serve(&tpm, &keys, &[]);
    let log = agent.stderr_once_it_contains("corrupt.tpm");
    let truncated_reason = "key file is truncated: field `privkey` at byte 112 needs 131 bytes, \
                            121 remain";
    let corrupt_reason = "field `pubkey` at byte 22 should be an OCTET STRING but is a UTF8String";
    for (file, reason) in [
        ("truncated.tpm", truncated_reason),
        ("corrupt.tpm", corrupt_reason),
    ] {
        assert!(
            log.lines().any(|l| l.contains(file) && l.contains(reason)),
            "no line with {file:?} and {reason:?} in the agent log:\n{log}"
        );
    }
    let listed = ssh_add(agent.socket(), &["-L"]);
    assert_eq!(listed_keys(&listed).len(), 1, "{}", describe(&listed));

    // ssh-tpm-add says the same on the terminal, and adds nothing.
    for (file, reason) in [
        ("truncated.tpm", truncated_reason),
        ("corrupt.tpm", corrupt_reason),
    ] {
        let out = run(product("ssh-tpm-add")
            .env("SSH_TPM_AUTH_SOCK", agent.socket())
            .arg(keys.join(file)));
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(stderr(&out).contains(reason), "{}", describe(&out));
    }
}

/// Key files written by another TPM tool (Debian's tpm2-openssl provider) load in our agent
/// and sign for `ssh-keygen -Y verify`, on the same swtpm, made at test time.
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

/// Out: tpm2-openssl signs a digest with keys our keygen made, with and without a PIN, and
/// `openssl pkeyutl -verify` accepts the signature under the public key tpm2-openssl
/// exports, which is the key in our .pub. Our files carry no description or rsaParent, and
/// always an explicit emptyAuth.
#[test]
fn tpm2_openssl_signs_with_keys_from_our_keygen() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let message = dir.path().join("message");
    write(&message, "signed by tpm2-openssl with an ssh-tpm key\n");
    let digest = dir.path().join("message.sha256");
    let hashed = run(tool("openssl")
        .args(["dgst", "-sha256", "-binary", "-out"])
        .arg(&digest)
        .arg(&message));
    assert_ok(&hashed, "openssl dgst");

    let cases: [(&str, &[&str], &str); 3] = [
        ("p256", &["-t", "ecdsa", "-N", ""], ""),
        ("p256-pin", &["-t", "ecdsa", "-N", "1234"], "1234"),
        ("rsa-pin", &["-t", "rsa", "-N", "1234"], "1234"),
    ];
    for (name, args, pin) in cases {
        let (files, _) = keygen(&tpm, dir.path(), name, args);
        let key = TpmKey::from_bytes(&std::fs::read(&files.tpm).expect("read key"))
            .expect("our key parses");
        assert_eq!(key.description, None, "{name}");
        assert!(!key.rsa_parent, "{name}");
        assert_eq!(key.empty_auth, pin.is_empty(), "{name}");
        // emptyAuth [0] right after the type OID, also when FALSE.
        let der = key.to_der();
        let oid = [0x06, 0x06, 0x67, 0x81, 0x05, 0x0A, 0x01, 0x03];
        let at = der.windows(8).position(|w| w == oid).expect("type OID") + 8;
        let flag = if pin.is_empty() { 0xFF } else { 0x00 };
        assert_eq!(der[at..at + 5], [0xA0, 0x03, 0x01, 0x01, flag], "{name}");

        let key_path = files.tpm.to_str().expect("UTF-8 path");
        let pass = format!("pass:{pin}");
        let exported = dir.path().join(format!("{name}.spki"));
        let out = openssl(
            &tpm,
            &[
                "pkey",
                "-provider",
                "tpm2",
                "-provider",
                "default",
                "-in",
                key_path,
                "-passin",
                &pass,
                "-pubout",
                "-out",
                exported.to_str().expect("UTF-8"),
            ],
        );
        assert_ok(&out, &format!("{name}: openssl pkey -pubout"));
        let converted = run(tool("ssh-keygen")
            .args(["-i", "-m", "PKCS8", "-f"])
            .arg(&exported));
        assert_ok(&converted, "ssh-keygen -i");
        assert_eq!(key_blob(stdout(&converted).trim()), files.blob(), "{name}");

        let signature = dir.path().join(format!("{name}.sig"));
        let mut sign = vec![
            "pkeyutl",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-sign",
            "-inkey",
            key_path,
            "-passin",
            &pass,
        ];
        let mut verify = vec!["pkeyutl", "-verify", "-pubin", "-inkey"];
        let exported_text = exported.to_str().expect("UTF-8");
        verify.push(exported_text);
        if name.starts_with("rsa") {
            sign.extend_from_slice(&["-pkeyopt", "digest:sha256"]);
            verify.extend_from_slice(&["-pkeyopt", "digest:sha256"]);
        }
        let digest_text = digest.to_str().expect("UTF-8");
        let signature_text = signature.to_str().expect("UTF-8");
        sign.extend_from_slice(&["-in", digest_text, "-out", signature_text]);
        verify.extend_from_slice(&["-in", digest_text, "-sigfile", signature_text]);
        assert_ok(
            &openssl(&tpm, &sign),
            &format!("{name}: openssl pkeyutl -sign"),
        );
        let verified = openssl(&tpm, &verify);
        assert_ok(&verified, &format!("{name}: openssl pkeyutl -verify"));
        assert!(
            stdout(&verified).contains("Signature Verified Successfully"),
            "{}",
            describe(&verified)
        );
    }
}
