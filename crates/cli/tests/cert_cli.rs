//! `ssh-tpm-cert` command lines that need no CA and no login: what `install-timer` writes,
//! and what `renew` refuses before it would open a browser.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn cert(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssh-tpm-cert"));
    for var in [
        "SSH_TPM_TCTI",
        "SSH_TPM_AGENT_SWTPM",
        "SSH_TPM_CERT_STATE",
        "SSH_TPM_CERT_ROOTS",
        "SSH_TPM_CERT_LOGIN_TIMEOUT",
        "SSH_AUTH_SOCK",
        "SSH_TPM_AUTH_SOCK",
        "BROWSER",
        "DISPLAY",
        "WAYLAND_DISPLAY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"));
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The global `--state`, the TPM, the CA, the login options and the keys given to
/// `install-timer` reach the service's `renew`, and `SSH_TPM_TCTI` its environment.
#[test]
fn install_timer_passes_on_what_it_was_given() {
    let home = tempfile::tempdir().unwrap();
    let out = cert(home.path())
        .current_dir(home.path())
        .env("SSH_TPM_TCTI", "swtpm:host=127.0.0.1,port=2321")
        .args(["--state", "my state.toml", "install-timer", "--ca"])
        .args([
            "https://ca.example.org",
            "--login-timeout",
            "90",
            "-f",
            "keys/id_ecdsa",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let units = home.path().join("config/systemd/user");
    let service = std::fs::read_to_string(units.join("ssh-tpm-cert-renew.service")).unwrap();
    let dir = home.path().display();
    let exec = format!(
        "ExecStart={} --state \"{dir}/my state.toml\" renew --ca https://ca.example.org \
         --login-timeout 90 -f {dir}/keys/id_ecdsa\n",
        env!("CARGO_BIN_EXE_ssh-tpm-cert")
    );
    assert!(service.contains(&exec), "{exec}not in:\n{service}");
    assert!(
        service.contains("Environment=\"SSH_TPM_TCTI=swtpm:host=127.0.0.1,port=2321\"\n"),
        "{service}"
    );
    let timer = std::fs::read_to_string(units.join("ssh-tpm-cert-renew.timer")).unwrap();
    assert!(timer.contains("OnCalendar=hourly\n"), "{timer}");

    let analyze = Path::new("/usr/bin/systemd-analyze");
    if analyze.exists() {
        let runtime = home.path().join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        let out = Command::new(analyze)
            .args(["verify", "--user"])
            .arg(units.join("ssh-tpm-cert-renew.timer"))
            .arg(units.join("ssh-tpm-cert-renew.service"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            text(&out)
        );
    }
}

/// A key file made by openssl's TPM provider (tests of crates/keyfile), born in a TPM.
fn fixture_key() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../keyfile/tests/fixtures/interop/ossl-p256-owner.tpm");
    std::fs::read(path).unwrap()
}

/// Writes `key` as `dir/NAME.tpm` with its `NAME.pub`; returns the `.tpm` path.
fn write_key(dir: &Path, name: &str, key: &ssh_tpm_keyfile::TpmKey) -> std::path::PathBuf {
    let tpm = dir.join(format!("{name}.tpm"));
    std::fs::write(&tpm, key.to_pem()).unwrap();
    let data = ssh_tpm_cert::renew::ssh_key_data(key).unwrap();
    let public = ssh_key::PublicKey::new(data, name);
    std::fs::write(
        dir.join(format!("{name}.pub")),
        public.to_openssh().unwrap(),
    )
    .unwrap();
    tpm
}

/// Signs `dir/NAME.pub` into `dir/NAME-cert.pub` with ssh-keygen, valid for `validity`.
fn sign(dir: &Path, name: &str, validity: &[&str]) {
    let ca = dir.join("ca");
    if !ca.exists() {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&ca)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "id", "-n", "alice"])
        .args(validity)
        .arg(dir.join(format!("{name}.pub")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// The key with sensitiveDataOrigin cleared in its public area, as an imported key has it.
fn imported(key: &ssh_tpm_keyfile::TpmKey) -> ssh_tpm_keyfile::TpmKey {
    let mut key = key.clone();
    // TPM2B_PUBLIC: size (2), type (2), nameAlg (2), objectAttributes (4, big-endian).
    key.pubkey[9] &= !(1 << 5);
    key
}

/// `renew` goes through every key: a corrupt file, a key the CA would refuse and one due
/// on a TPM that cannot be reached each fail, naming the key, while the good ones are still
/// reported; the exit status says that some failed. The refused keys never reach the CA
/// (the enrolment's URL is a closed port) nor the TPM.
#[test]
fn renew_reports_every_key_and_checks_each_before_the_login() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let key = ssh_tpm_keyfile::TpmKey::from_bytes(&fixture_key()).unwrap();
    std::fs::write(
        dir.join("corrupt.tpm"),
        b"-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    let good = write_key(dir, "good", &key);
    sign(dir, "good", &["-V", "-5m:+16h"]);
    let other = write_key(dir, "other", &key);
    sign(dir, "other", &["-V", "-5m:+16h"]);
    let imported = write_key(dir, "imported", &imported(&key));
    let due = write_key(dir, "due", &key);
    let state = dir.join("state.toml");
    std::fs::write(
        &state,
        "ca_url = \"http://127.0.0.1:9/\"\ndevice_id = \"0123abcd\"\nek = \"rsa2048\"\n\
         enrolled_at = 1764800000\n",
    )
    .unwrap();

    let out = cert(dir)
        .env("SSH_TPM_TCTI", "swtpm:host=127.0.0.1,port=9")
        .arg("--state")
        .arg(&state)
        .arg("renew")
        .arg("-f")
        .arg(dir.join("corrupt"))
        .arg("-f")
        .arg(&good)
        .arg("-f")
        .arg(&imported)
        .arg("-f")
        .arg(&due)
        .arg("-f")
        .arg(&other)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let said = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    let d = dir.display();
    for still_good in ["good", "other"] {
        let line = format!("{d}/{still_good}-cert.pub is still good until");
        assert!(said.contains(&line), "{line} missing:\n{all}");
    }
    assert!(
        said.contains(&format!(
            "Renewing {d}/due.tpm because {d}/due-cert.pub does not exist.\n"
        )),
        "{all}"
    );
    assert!(!said.contains(&format!("Renewing {d}/imported")), "{all}");
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 4, "{all}");
    assert!(
        lines[0].starts_with(&format!("ssh-tpm-cert: {d}/corrupt.tpm: ")),
        "{all}"
    );
    assert_eq!(
        lines[1],
        format!(
            "ssh-tpm-cert: {d}/imported.tpm was imported into the TPM, not created in it \
             (sensitiveDataOrigin is clear); the CA certifies only keys born in the TPM: make \
             one with ssh-tpm-keygen"
        ),
        "{all}"
    );
    assert!(
        lines[2].starts_with(&format!("ssh-tpm-cert: {d}/due.tpm: cannot reach the TPM")),
        "{all}"
    );
    assert_eq!(
        lines[3], "ssh-tpm-cert: 3 of 5 keys were not renewed; see above why",
        "{all}"
    );
}

/// `enroll --state DIR` fails on the record's place before the TPM or the CA is asked
/// (neither is reachable here, and neither is named).
#[test]
fn enroll_checks_the_record_can_be_written_first() {
    let home = tempfile::tempdir().unwrap();
    let out = cert(home.path())
        .env("SSH_TPM_TCTI", "swtpm:host=127.0.0.1,port=9")
        .arg("--state")
        .arg(home.path())
        .args(["enroll", "--ca", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "ssh-tpm-cert: cannot save the enrolment record at {}: it is a directory; name a \
             file with --state\n",
            home.path().display()
        )
    );
}

/// Ctrl-C ends the command with status 130 and says so, while it waits (here for a TPM
/// that accepts the connection and never answers).
#[test]
fn an_interrupt_ends_the_wait() {
    let home = tempfile::tempdir().unwrap();
    // The swtpm TCTI connects to PORT and PORT + 1 (its control channel).
    let (command, _control, port) = (0..20)
        .find_map(|_| {
            let command = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let port = command.local_addr().ok()?.port();
            let control = std::net::TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
            Some((command, control, port))
        })
        .expect("two free ports in a row");
    let key = write_key(
        home.path(),
        "id",
        &ssh_tpm_keyfile::TpmKey::from_bytes(&fixture_key()).unwrap(),
    );
    let state = home.path().join("state.toml");
    std::fs::write(
        &state,
        "ca_url = \"http://127.0.0.1:9/\"\ndevice_id = \"0123abcd\"\nek = \"rsa2048\"\n\
         enrolled_at = 1764800000\n",
    )
    .unwrap();
    let mut child = cert(home.path())
        .env("SSH_TPM_TCTI", format!("swtpm:host=127.0.0.1,port={port}"))
        .arg("--state")
        .arg(&state)
        .arg("renew")
        .arg("-f")
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is connected to the stand-in TPM, then interrupt it.
    let (_connection, _) = command.accept().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let waited = std::time::Instant::now();
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if waited.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ssh-tpm-cert: interrupted\n"
    );
}

/// `status` tells a certificate for another key from a valid one, as `renew` does.
#[test]
fn status_names_a_certificate_for_another_key() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let key = ssh_tpm_keyfile::TpmKey::from_bytes(&fixture_key()).unwrap();
    let mine = write_key(dir, "mine", &key);
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../keyfile/tests/fixtures/interop/ossl-p384-owner.tpm");
    let other = ssh_tpm_keyfile::TpmKey::from_bytes(&std::fs::read(other).unwrap()).unwrap();
    write_key(dir, "other", &other);
    sign(dir, "other", &["-V", "-5m:+16h"]);
    std::fs::rename(dir.join("other-cert.pub"), dir.join("mine-cert.pub")).unwrap();

    let out = cert(dir)
        .args(["status", "-f"])
        .arg(&mine)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let d = dir.display();
    assert!(
        said.ends_with(&format!(
            "{d}/mine.tpm:\n  {d}/mine-cert.pub certifies another key, not this one; \
             `ssh-tpm-cert renew` replaces it\n"
        )),
        "{}",
        text(&out)
    );
}

/// A key file that parses but whose public area is damaged is named, with what to do.
#[test]
fn renew_names_a_key_file_with_a_damaged_public_area() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let mut key = ssh_tpm_keyfile::TpmKey::from_bytes(&fixture_key()).unwrap();
    key.pubkey.truncate(20);
    let size = (key.pubkey.len() - 2) as u16;
    key.pubkey[..2].copy_from_slice(&size.to_be_bytes());
    let path = dir.join("damaged.tpm");
    std::fs::write(&path, key.to_pem()).unwrap();
    let state = dir.join("state.toml");
    std::fs::write(
        &state,
        "ca_url = \"http://127.0.0.1:9/\"\ndevice_id = \"0123abcd\"\nek = \"rsa2048\"\n\
         enrolled_at = 1764800000\n",
    )
    .unwrap();
    let out = cert(dir)
        .arg("--state")
        .arg(&state)
        .args(["renew", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    let start = format!(
        "ssh-tpm-cert: {}: the key's public area does not decode (",
        path.display()
    );
    assert!(said.starts_with(&start), "{}", text(&out));
    assert!(
        said.ends_with("); is it a key file made by ssh-tpm-keygen?\n"),
        "{}",
        text(&out)
    );
}
