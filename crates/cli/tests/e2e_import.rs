//! End-to-end tests of moving keys into and between TPMs: `ssh-tpm-keygen --import` of
//! OpenSSH, PKCS#8, SEC1 and PKCS#1 keys made by the real `ssh-keygen` and `openssl`;
//! `--wrap` in software for another TPM's parent and the import there; the agent serving an
//! importable key file as it is; and `--parent-handle`. Each test runs its own swtpm.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use ssh_tpm_keyfile::{handle, KeyType, TpmKey};
use support::{
    assert_ok, chmod, describe, key_blob, mode, product, run, run_with_stdin, sign_file, stderr,
    stdout, tempdir, tool, verify_file, write, write_askpass, Agent, KeyFiles, Swtpm,
};

/// A TCTI where nothing listens: a command given it fails if it touches the TPM at all.
const NO_TPM: &str = "swtpm:host=127.0.0.1,port=1";

/// Runs `ssh-tpm-keygen --tcti TPM ARGS...`.
fn keygen(tpm: &Swtpm, args: &[&str]) -> Output {
    keygen_answering(tpm, args, "")
}

/// Runs `ssh-tpm-keygen --tcti TPM ARGS...` with `answers` on stdin.
fn keygen_answering(tpm: &Swtpm, args: &[&str], answers: &str) -> Output {
    let mut cmd = product("ssh-tpm-keygen");
    cmd.arg("--tcti").arg(tpm.tcti()).args(args);
    run_with_stdin(&mut cmd, answers.as_bytes())
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

/// The public key line `ssh-keygen -y` derives from a private key file.
fn openssh_public(private: &Path, passphrase: Option<&str>) -> String {
    let mut cmd = tool("ssh-keygen");
    cmd.arg("-y");
    if let Some(passphrase) = passphrase {
        cmd.args(["-P", passphrase]);
    }
    let out = run(cmd.arg("-f").arg(private));
    assert_ok(&out, "ssh-keygen -y");
    stdout(&out).trim().to_owned()
}

/// Makes a private key with `ssh-keygen -q ARGS -f PATH`.
fn ssh_keygen(path: &Path, args: &[&str]) {
    let out = run(tool("ssh-keygen").arg("-q").args(args).arg("-f").arg(path));
    assert_ok(&out, &format!("ssh-keygen {}", args.join(" ")));
}

/// Runs `openssl ARGS...`, then makes the file it wrote private (ssh-keygen insists).
fn openssl(args: &[&str], wrote: &Path) {
    let out = run(tool("openssl").args(args));
    assert_ok(&out, &format!("openssl {}", args.join(" ")));
    chmod(wrote, 0o600);
}

/// Reads a key file written by ssh-tpm-keygen.
fn key_file(path: &Path) -> TpmKey {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    TpmKey::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Environment that makes the agent ask `askpass` for PINs.
fn askpass_env(askpass: &Path) -> Vec<(&str, &str)> {
    let askpass = askpass.to_str().expect("UTF-8 askpass path");
    vec![("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", "force")]
}

/// An agent on `tpm` serving `dir` signs a file with `key`, twice (the second signature
/// finds the key loaded), and `ssh-keygen -Y verify` accepts both.
#[track_caller]
fn assert_agent_signs(tpm: &Swtpm, dir: &Path, key: &KeyFiles, env: &[(&str, &str)]) {
    let agent = Agent::serve(tpm, dir, env);
    let work = tempdir();
    for round in ["first", "second"] {
        let message = work.path().join(format!("{round}.txt"));
        write(&message, format!("{round} signature by an imported key\n"));
        let signed = sign_file(agent.socket(), &key.public, &message);
        assert!(
            signed.status.success(),
            "{round} ssh-keygen -Y sign: {}\nagent log:\n{}",
            describe(&signed),
            agent.stderr()
        );
        let verified = verify_file(work.path(), &key.public_line(), &message);
        assert_ok(&verified, "ssh-keygen -Y verify");
    }
}

/// Asserts that `imported` is a loadable key under `parent` whose public key is `expected`.
#[track_caller]
fn assert_imported(imported: &KeyFiles, expected: &str, parent: u32) {
    assert_eq!(key_blob(&imported.public_line()), key_blob(expected));
    let key = key_file(&imported.tpm);
    assert_eq!(key.key_type, KeyType::Loadable);
    assert_eq!(key.parent, parent);
    assert!(key.secret.is_none());
    assert_eq!(mode(&imported.tpm), 0o600);
}

// ---------------------------------------------------------------------------------------------
// Private keys into the TPM

/// An OpenSSH ECDSA key: FILE.tpm lands beside it, and the FILE.pub ssh-keygen wrote (the
/// same key) is kept as it is, without a question.
#[test]
fn imports_an_openssh_ecdsa_key() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let original = keys.path().join("id_ecdsa");
    ssh_keygen(&original, &["-t", "ecdsa", "-N", "", "-C", "orig@example"]);
    let pub_before = std::fs::read_to_string(keys.path().join("id_ecdsa.pub")).expect("pub");

    let out = keygen(&tpm, &["--import", path_arg(&original), "-N", ""]);
    assert_ok(&out, "ssh-tpm-keygen --import");
    let imported = KeyFiles::at(keys.path(), "id_ecdsa");
    assert_imported(&imported, &openssh_public(&original, None), handle::OWNER);
    assert_eq!(
        std::fs::read_to_string(&imported.public).expect("pub"),
        pub_before
    );
    assert!(key_file(&imported.tpm).empty_auth);
    assert!(
        stderr(&out).contains("still holds the private key"),
        "{}",
        describe(&out)
    );

    // Again: the existing id_ecdsa.tpm is only replaced after a "y".
    let before = std::fs::read(&imported.tpm).expect("key file");
    let args = ["--import", path_arg(&original), "-N", ""];
    let declined = keygen_answering(&tpm, &args, "n\n");
    assert!(!declined.status.success(), "{}", describe(&declined));
    assert!(
        stderr(&declined).contains("was not overwritten"),
        "{}",
        describe(&declined)
    );
    assert_eq!(std::fs::read(&imported.tpm).expect("key file"), before);

    assert_agent_signs(&tpm, keys.path(), &imported, &[]);
}

/// A passphrase-encrypted OpenSSH key: -P decrypts it, -N gives the TPM key a PIN; a wrong
/// passphrase, or none where none can be asked, writes nothing.
#[test]
fn imports_an_encrypted_openssh_key_with_a_new_pin() {
    let tpm = Swtpm::start();
    let work = tempdir();
    let original = work.path().join("id_ecdsa");
    ssh_keygen(&original, &["-t", "ecdsa", "-N", "pass"]);
    let keys = tempdir();
    let name = keys.path().join("moved");
    let import = |extra: &[&str]| {
        let mut args = vec!["--import", path_arg(&original), "-f", path_arg(&name)];
        args.extend_from_slice(extra);
        keygen(&tpm, &args)
    };

    let wrong = import(&["-P", "wrong", "-N", "1234"]);
    assert!(!wrong.status.success(), "{}", describe(&wrong));
    assert!(
        stderr(&wrong).contains("wrong passphrase"),
        "{}",
        describe(&wrong)
    );
    let unasked = import(&["-N", "1234"]);
    assert!(!unasked.status.success(), "{}", describe(&unasked));
    assert!(stderr(&unasked).contains("-P"), "{}", describe(&unasked));
    let imported = KeyFiles::at(keys.path(), "moved");
    assert!(!imported.tpm.exists() && !imported.public.exists());

    assert_ok(&import(&["-P", "pass", "-N", "1234"]), "import with -P");
    assert_imported(
        &imported,
        &openssh_public(&original, Some("pass")),
        handle::OWNER,
    );
    assert!(!key_file(&imported.tpm).empty_auth, "the key has a PIN");

    let askpass = write_askpass(work.path(), "1234");
    assert_agent_signs(&tpm, keys.path(), &imported, &askpass_env(&askpass));
}

/// A PKCS#8 P-384 key from `openssl genpkey`: NAME.pem gives NAME.tpm and NAME.pub.
#[test]
fn imports_a_pkcs8_p384_key() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let original = keys.path().join("p384.pem");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            path_arg(&original),
        ],
        &original,
    );
    assert!(std::fs::read_to_string(&original)
        .expect("pem")
        .contains("BEGIN PRIVATE KEY"));

    let out = keygen(
        &tpm,
        &[
            "--import",
            path_arg(&original),
            "-N",
            "",
            "-C",
            "p384@example",
        ],
    );
    assert_ok(&out, "ssh-tpm-keygen --import p384.pem");
    let imported = KeyFiles::at(keys.path(), "p384");
    assert_imported(&imported, &openssh_public(&original, None), handle::OWNER);
    assert!(imported.public_line().starts_with("ecdsa-sha2-nistp384 "));
    assert!(imported.public_line().ends_with(" p384@example"));

    assert_agent_signs(&tpm, keys.path(), &imported, &[]);
}

/// A SEC1 P-256 key from `openssl ecparam -genkey`, which writes an `EC PARAMETERS` block
/// before the key.
#[test]
fn imports_a_sec1_key_after_its_parameters_block() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let original = keys.path().join("sec1.key");
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            path_arg(&original),
        ],
        &original,
    );
    let text = std::fs::read_to_string(&original).expect("pem");
    assert!(text.contains("BEGIN EC PARAMETERS") && text.contains("BEGIN EC PRIVATE KEY"));

    let out = keygen(&tpm, &["--import", path_arg(&original), "-N", ""]);
    assert_ok(&out, "ssh-tpm-keygen --import sec1.key");
    let imported = KeyFiles::at(keys.path(), "sec1");
    assert_imported(&imported, &openssh_public(&original, None), handle::OWNER);

    assert_agent_signs(&tpm, keys.path(), &imported, &[]);
}

/// An RSA-2048 PKCS#1 key from `openssl genrsa -traditional`.
#[test]
fn imports_a_pkcs1_rsa_2048_key() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let original = keys.path().join("rsa.pem");
    openssl(
        &[
            "genrsa",
            "-traditional",
            "-out",
            path_arg(&original),
            "2048",
        ],
        &original,
    );
    assert!(std::fs::read_to_string(&original)
        .expect("pem")
        .contains("BEGIN RSA PRIVATE KEY"));

    let out = keygen(&tpm, &["--import", path_arg(&original), "-N", ""]);
    assert_ok(&out, "ssh-tpm-keygen --import rsa.pem");
    let imported = KeyFiles::at(keys.path(), "rsa");
    assert_imported(&imported, &openssh_public(&original, None), handle::OWNER);

    assert_agent_signs(&tpm, keys.path(), &imported, &[]);
}

/// Keys a TPM cannot hold are refused with a reason, and nothing is written.
#[test]
fn refuses_keys_a_tpm_cannot_hold() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let ed25519 = keys.path().join("id_ed25519");
    ssh_keygen(&ed25519, &["-t", "ed25519", "-N", ""]);
    let out = keygen(&tpm, &["--import", path_arg(&ed25519), "-N", ""]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("Ed25519"), "{}", describe(&out));
    assert!(!keys.path().join("id_ed25519.tpm").exists());
}

// ---------------------------------------------------------------------------------------------
// Wrapping for another machine's TPM

/// On `tpm`, the H-2 storage primary our key files mean by parent 0x40000001, made by
/// tpm2-tools from the same template (empty unique); returns its public key as PEM.
fn h2_parent_pem(tpm: &Swtpm, dir: &Path) -> PathBuf {
    let context = dir.join("parent.ctx");
    let pem = dir.join("parent.pem");
    let attributes =
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";
    let made = tpm.tpm2(
        "tpm2_createprimary",
        &[
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            "ecc256:null:aes128cfb",
            "-a",
            attributes,
            "-c",
            path_arg(&context),
        ],
    );
    assert_ok(&made, "tpm2_createprimary (H-2)");
    let read = tpm.tpm2(
        "tpm2_readpublic",
        &["-c", path_arg(&context), "-o", path_arg(&pem), "-f", "pem"],
    );
    assert_ok(&read, "tpm2_readpublic");
    // swtpm has no resource manager: let go of the primary tpm2-tools left loaded.
    assert_ok(&tpm.tpm2("tpm2_flushcontext", &["-t"]), "tpm2_flushcontext");
    pem
}

/// On `tpm`, an RSA-2048 storage key made persistent at 0x81000001; returns its public key.
fn rsa_srk_pem(tpm: &Swtpm, dir: &Path) -> PathBuf {
    let context = dir.join("srk.ctx");
    let pem = dir.join("srk.pem");
    let made = tpm.tpm2(
        "tpm2_createprimary",
        &[
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            "rsa2048",
            "-c",
            path_arg(&context),
        ],
    );
    assert_ok(&made, "tpm2_createprimary (RSA SRK)");
    let evicted = tpm.tpm2(
        "tpm2_evictcontrol",
        &["-C", "o", "-c", path_arg(&context), "0x81000001"],
    );
    assert_ok(&evicted, "tpm2_evictcontrol");
    assert_ok(&tpm.tpm2("tpm2_flushcontext", &["-t"]), "tpm2_flushcontext");
    let read = tpm.tpm2(
        "tpm2_readpublic",
        &["-c", "0x81000001", "-o", path_arg(&pem), "-f", "pem"],
    );
    assert_ok(&read, "tpm2_readpublic");
    pem
}

/// Runs `ssh-tpm-keygen --wrap KEY --wrap-with PARENT ARGS...` with a TCTI where no TPM
/// answers, as on a machine without one.
fn wrap(key: &Path, parent: &Path, args: &[&str]) -> Output {
    run(product("ssh-tpm-keygen")
        .args(["--tcti", NO_TPM, "--wrap", path_arg(key), "--wrap-with"])
        .arg(parent)
        .args(args))
}

/// Wraps a fresh key of `ssh_keygen_args` for the parent in `parent_pem` (named by
/// `parent_args`), imports it on `tpm`, and has the agent sign with the result.
fn wrap_import_sign(tpm: &Swtpm, parent_pem: &Path, key_args: &[&str], parent_args: &[&str]) {
    let laptop = tempdir();
    let original = laptop.path().join("id_work");
    ssh_keygen(&original, key_args);
    let out_name = laptop.path().join("wrapped");
    let mut args = vec!["-f", path_arg(&out_name), "-N", ""];
    args.extend_from_slice(parent_args);
    let wrapped = wrap(&original, parent_pem, &args);
    assert_ok(&wrapped, "ssh-tpm-keygen --wrap");
    let wrapped = KeyFiles::at(laptop.path(), "wrapped");
    let expected = openssh_public(&original, None);
    assert_eq!(key_blob(&wrapped.public_line()), key_blob(&expected));
    let importable = key_file(&wrapped.tpm);
    assert_eq!(importable.key_type, KeyType::Importable);
    assert!(importable.secret.is_some());

    let keys = tempdir();
    let target = keys.path().join("id_work");
    let out = keygen(
        tpm,
        &["--import", path_arg(&wrapped.tpm), "-f", path_arg(&target)],
    );
    assert_ok(&out, "ssh-tpm-keygen --import wrapped.tpm");
    let imported = KeyFiles::at(keys.path(), "id_work");
    assert_imported(&imported, &expected, importable.parent);

    assert_agent_signs(tpm, keys.path(), &imported, &[]);
}

/// ECC: wrapped in software for the target's H-2 key (parent owner, ECDH seed), imported
/// there, and signing.
#[test]
fn wraps_for_an_ecc_parent_then_imports_and_signs() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let parent = h2_parent_pem(&tpm, dir.path());
    wrap_import_sign(&tpm, &parent, &["-t", "ecdsa", "-N", ""], &[]);
}

/// RSA: wrapped for a persistent RSA-2048 SRK (OAEP seed), an RSA key this time.
#[test]
fn wraps_for_an_rsa_parent_then_imports_and_signs() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let parent = rsa_srk_pem(&tpm, dir.path());

    let laptop = tempdir();
    let original = laptop.path().join("id_rsa");
    ssh_keygen(&original, &["-t", "rsa", "-b", "2048", "-N", ""]);
    let unnamed = wrap(&original, &parent, &["-N", ""]);
    assert!(!unnamed.status.success(), "{}", describe(&unnamed));
    assert!(
        stderr(&unnamed).contains("--parent-handle"),
        "{}",
        describe(&unnamed)
    );

    wrap_import_sign(
        &tpm,
        &parent,
        &["-t", "rsa", "-b", "2048", "-N", ""],
        &["--parent-handle", "0x81000001"],
    );
}

/// The agent takes an importable key file as it is: it imports the key on first use and
/// signs with it, PIN included.
#[test]
fn agent_signs_with_an_importable_key_directly() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let parent = h2_parent_pem(&tpm, dir.path());

    let keys = tempdir();
    let original = dir.path().join("id_ecdsa");
    ssh_keygen(&original, &["-t", "ecdsa", "-b", "521", "-N", ""]);
    let name = keys.path().join("wrapped");
    let wrapped = wrap(&original, &parent, &["-f", path_arg(&name), "-N", "4321"]);
    assert_ok(&wrapped, "ssh-tpm-keygen --wrap");
    let key = KeyFiles::at(keys.path(), "wrapped");
    assert_eq!(key_file(&key.tpm).key_type, KeyType::Importable);

    let askpass = write_askpass(dir.path(), "4321");
    assert_agent_signs(&tpm, keys.path(), &key, &askpass_env(&askpass));
}

/// Without -f, importing an importable file asks before replacing it: "n" leaves it, "y"
/// turns it into the loadable key (and keeps the .pub, which holds the same key).
#[test]
fn importing_an_importable_file_in_place_asks_first() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let parent = h2_parent_pem(&tpm, dir.path());
    let keys = tempdir();
    let original = dir.path().join("id_ecdsa");
    ssh_keygen(&original, &["-t", "ecdsa", "-N", ""]);
    let name = keys.path().join("id_ecdsa");
    let wrapped = wrap(&original, &parent, &["-f", path_arg(&name), "-N", ""]);
    assert_ok(&wrapped, "ssh-tpm-keygen --wrap");
    let key = KeyFiles::at(keys.path(), "id_ecdsa");
    let importable = std::fs::read(&key.tpm).expect("importable key");
    let pub_before = key.public_line();

    let args = ["--import", path_arg(&key.tpm)];
    let declined = keygen_answering(&tpm, &args, "n\n");
    assert!(!declined.status.success(), "{}", describe(&declined));
    assert!(
        stderr(&declined).contains("Replace it with the imported key"),
        "{}",
        describe(&declined)
    );
    assert_eq!(std::fs::read(&key.tpm).expect("key"), importable);

    assert_ok(&keygen_answering(&tpm, &args, "y\n"), "import in place");
    assert_eq!(key_file(&key.tpm).key_type, KeyType::Loadable);
    assert_eq!(key.public_line(), pub_before);
    assert_agent_signs(&tpm, keys.path(), &key, &[]);
}

/// A key wrapped for one TPM is refused by another, with a message saying why.
#[test]
fn a_key_wrapped_for_another_tpm_does_not_import() {
    let other = Swtpm::start();
    let dir = tempdir();
    let parent = h2_parent_pem(&other, dir.path());
    drop(other);

    let tpm = Swtpm::start();
    let original = dir.path().join("id_ecdsa");
    ssh_keygen(&original, &["-t", "ecdsa", "-N", ""]);
    let name = dir.path().join("wrapped");
    assert_ok(
        &wrap(&original, &parent, &["-f", path_arg(&name), "-N", ""]),
        "ssh-tpm-keygen --wrap",
    );
    let target = dir.path().join("imported");
    let out = keygen(
        &tpm,
        &[
            "--import",
            path_arg(&dir.path().join("wrapped.tpm")),
            "-f",
            path_arg(&target),
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("another TPM"), "{}", describe(&out));
    assert!(!dir.path().join("imported.tpm").exists());
}

// ---------------------------------------------------------------------------------------------
// --parent-handle

/// Anything but owner/endorsement/null (long or short) or a persistent handle is an error,
/// for create and for import alike; nothing is written.
#[test]
fn bogus_parent_handle_is_an_error() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let name = keys.path().join("id");
    for args in [
        vec!["-f", path_arg(&name), "-N", "", "--parent-handle", "bogus"],
        vec![
            "-f",
            path_arg(&name),
            "-N",
            "",
            "--parent-handle",
            "0x40000001",
        ],
        vec![
            "--import",
            path_arg(&name),
            "-N",
            "",
            "--parent-handle",
            "platform",
        ],
    ] {
        let out = keygen(&tpm, &args);
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("owner (o), endorsement (e), null (n)"),
            "{}",
            describe(&out)
        );
    }
    assert!(!keys.path().join("id.tpm").exists());
}

/// Keys made under the endorsement hierarchy and under a persistent parent name that
/// parent in their files, and the agent signs with both.
#[test]
fn keys_under_endorsement_and_persistent_parents_sign() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    rsa_srk_pem(&tpm, dir.path());
    let keys = tempdir();

    let endorsement = keys.path().join("endorsement");
    let out = keygen(
        &tpm,
        &[
            "-f",
            path_arg(&endorsement),
            "-N",
            "",
            "--parent-handle",
            "e",
        ],
    );
    assert_ok(&out, "ssh-tpm-keygen --parent-handle e");
    let endorsement = KeyFiles::at(keys.path(), "endorsement");
    assert_eq!(key_file(&endorsement.tpm).parent, handle::ENDORSEMENT);

    let original = dir.path().join("id_ecdsa");
    ssh_keygen(&original, &["-t", "ecdsa", "-N", ""]);
    let persistent = keys.path().join("persistent");
    let out = keygen(
        &tpm,
        &[
            "--import",
            path_arg(&original),
            "-f",
            path_arg(&persistent),
            "-N",
            "",
            "--parent-handle",
            "0x81000001",
        ],
    );
    assert_ok(&out, "ssh-tpm-keygen --import --parent-handle 0x81000001");
    let persistent = KeyFiles::at(keys.path(), "persistent");
    assert_imported(&persistent, &openssh_public(&original, None), 0x8100_0001);

    assert_agent_signs(&tpm, keys.path(), &endorsement, &[]);
    assert_agent_signs(&tpm, keys.path(), &persistent, &[]);
}

/// Keys under three hierarchies take three storage keys; on swtpm (three object slots)
/// they still all sign, in any order, and again after switching back.
#[test]
fn keys_under_three_hierarchies_all_sign() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let mut files = Vec::new();
    for parent in ["owner", "endorsement", "null"] {
        let mut cmd = product("ssh-tpm-keygen");
        cmd.arg("--tcti")
            .arg(tpm.tcti())
            .args(["-N", "", "--parent-handle", parent, "-f"]);
        cmd.arg(keys.path().join(parent));
        assert_ok(&run(&mut cmd), &format!("keygen --parent-handle {parent}"));
        files.push(KeyFiles::at(keys.path(), parent));
    }
    let agent = Agent::serve(&tpm, keys.path(), &[]);
    let message = keys.path().join("message");
    write(&message, "one storage key at a time\n");
    for key in files.iter().chain(files.iter()) {
        let _ = std::fs::remove_file(keys.path().join("message.sig"));
        let signed = sign_file(agent.socket(), &key.public, &message);
        assert_ok(
            &signed,
            &format!("sign with {}:\n{}", key.tpm.display(), agent.stderr()),
        );
        assert_ok(
            &verify_file(keys.path(), &key.public_line(), &message),
            "verify",
        );
    }
}
