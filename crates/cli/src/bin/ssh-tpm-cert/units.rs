//! `ssh-tpm-cert install-timer`: a systemd user timer that runs `ssh-tpm-cert renew` once a
//! day (catching up after the machine was off), and the one-shot service it starts.

use std::path::{Path, PathBuf};

use ssh_tpm::tpm_args::TpmArgs;
use ssh_tpm::{units, CliError};

pub const SERVICE_UNIT: &str = "ssh-tpm-cert-renew.service";
pub const TIMER_UNIT: &str = "ssh-tpm-cert-renew.timer";

/// The service, with `@EXEC@` for the command line. It needs the network, the TPM, the
/// key directory (to write NAME-cert.pub), the agent's socket, and a browser for the login
/// (through $BROWSER or xdg-open, from the user manager's environment).
const SERVICE_TEXT: &str = "\
[Unit]
Description=Renew SSH certificates of TPM keys from the organisation's CA

[Service]
Type=oneshot
ExecStart=@EXEC@
Environment=SSH_TPM_AUTH_SOCK=%t/ssh-tpm-agent.sock
";

/// The timer: daily, at a random moment within the hour after midnight (or after boot when
/// the machine was off then).
const TIMER_TEXT: &str = "\
[Unit]
Description=Renew SSH certificates of TPM keys daily

[Timer]
OnCalendar=daily
Persistent=true
RandomizedDelaySec=1h

[Install]
WantedBy=timers.target
";

/// Writes both units (refusing to replace existing ones unless `force`) and prints what to
/// run next.
pub fn install(tpm: &TpmArgs, keys: &[PathBuf], force: bool) -> Result<(), CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::io("cannot tell where ssh-tpm-cert is installed", e))?;
    let exec = exec_line(&units::unit_path(&exe, "ssh-tpm-cert")?, tpm, keys)?;
    write(&unit_dir()?, &exec, force)?;
    println!("Now run:");
    println!("  systemctl --user daemon-reload");
    println!("  systemctl --user enable --now {TIMER_UNIT}");
    println!("The login needs a browser: the service uses $BROWSER or xdg-open from the user");
    println!("manager's environment (systemctl --user import-environment DISPLAY BROWSER).");
    Ok(())
}

/// Writes both units into `dir`, the service running `exec`.
fn write(dir: &Path, exec: &str, force: bool) -> Result<(), CliError> {
    let unit_files = [
        (SERVICE_UNIT, SERVICE_TEXT.replace("@EXEC@", exec)),
        (TIMER_UNIT, TIMER_TEXT.to_string()),
    ];
    units::write_units(dir, &unit_files, force)
}

/// `EXEC renew [--tcti T | --swtpm] [-f KEY]…`, each word fit for a unit file.
fn exec_line(exe: &str, tpm: &TpmArgs, keys: &[PathBuf]) -> Result<String, CliError> {
    let mut words = vec![exe.to_string(), "renew".to_string()];
    if let Some(tcti) = &tpm.tcti {
        words.push("--tcti".into());
        words.push(unit_word(tcti, "the TCTI")?);
    }
    if tpm.swtpm {
        words.push("--swtpm".into());
    }
    for key in keys {
        let absolute = std::path::absolute(key)
            .map_err(|e| CliError::io(format!("cannot resolve {}", key.display()), e))?;
        words.push("-f".into());
        words.push(units::unit_path(&absolute, "the key")?);
    }
    Ok(words.join(" "))
}

fn unit_word(text: &str, what: &str) -> Result<String, CliError> {
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains(['"', '\'', '\\']) {
        return Err(CliError::Usage(format!(
            "{what} {text:?} cannot go into a unit file as it is; give one without spaces or \
             quotes"
        )));
    }
    Ok(text.replace('%', "%%"))
}

/// `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
fn unit_dir() -> Result<PathBuf, CliError> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let config = match (env("XDG_CONFIG_HOME"), env("HOME")) {
        (Some(config), _) => PathBuf::from(config),
        (None, Some(home)) => Path::new(&home).join(".config"),
        (None, None) => {
            return Err(CliError::Usage(
                "neither XDG_CONFIG_HOME nor HOME is set; set one to install the timer".into(),
            ))
        }
    };
    Ok(config.join("systemd").join("user"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_line_carries_the_tpm_and_keys() {
        let tpm = TpmArgs {
            tcti: Some("swtpm:host=127.0.0.1,port=2321".into()),
            swtpm: false,
        };
        let line = exec_line(
            "/usr/bin/ssh-tpm-cert",
            &tpm,
            &[PathBuf::from("/k/id_ecdsa")],
        )
        .expect("exec line");
        assert_eq!(
            line,
            "/usr/bin/ssh-tpm-cert renew --tcti swtpm:host=127.0.0.1,port=2321 -f /k/id_ecdsa"
        );
        let spaced = TpmArgs {
            tcti: Some("device:/dev/tpm rm0".into()),
            swtpm: false,
        };
        assert!(exec_line("/x", &spaced, &[]).is_err());
        assert!(SERVICE_TEXT.contains("Type=oneshot"));
        assert!(TIMER_TEXT.contains("Persistent=true"));
        assert!(TIMER_TEXT.contains("RandomizedDelaySec="));
    }

    #[test]
    fn the_user_guide_shows_the_units_as_written() {
        let guide = include_str!("../../../../../docs/cert.md");
        let service = SERVICE_TEXT.replace("@EXEC@", "/usr/bin/ssh-tpm-cert renew");
        assert!(
            guide.contains(&service),
            "docs/cert.md must show:\n{service}"
        );
        assert!(
            guide.contains(TIMER_TEXT),
            "docs/cert.md must show:\n{TIMER_TEXT}"
        );
    }

    #[test]
    fn the_units_pass_systemd_analyze_verify() {
        let dir = std::env::temp_dir().join(format!("ssh-tpm-cert-units-{}", std::process::id()));
        let units = dir.join("systemd/user");
        let no_tpm = TpmArgs {
            tcti: None,
            swtpm: false,
        };
        let exec = exec_line("/bin/true", &no_tpm, &[]).expect("exec line");
        write(&units, &exec, false).expect("write");
        let again = write(&units, &exec, false).expect_err("exists");
        assert!(again.to_string().contains("--force"), "{again}");
        write(&units, &exec, true).expect("forced");

        let analyze = Path::new("/usr/bin/systemd-analyze");
        if analyze.exists() {
            let runtime = dir.join("run");
            std::fs::create_dir_all(&runtime).expect("runtime dir");
            let out = std::process::Command::new(analyze)
                .args(["verify", "--user"])
                .arg(units.join(TIMER_UNIT))
                .arg(units.join(SERVICE_UNIT))
                .env("XDG_RUNTIME_DIR", &runtime)
                .output()
                .expect("run systemd-analyze");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
        } else {
            eprintln!("systemd-analyze is not installed; the units were only written");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
