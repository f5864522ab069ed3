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
