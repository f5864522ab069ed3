//! `ssh-tpm-cert install-timer`: a systemd user timer that runs `ssh-tpm-cert renew` every
//! hour (catching up after the machine was off), and the one-shot service it starts. `renew`
//! asks nothing while the certificate has more than a third of its life left, so most runs
//! only read a file; checking hourly keeps a 16-hour certificate valid all day.

use std::path::{Path, PathBuf};

use ssh_tpm::tpm_args::TpmArgs;
use ssh_tpm::{units, CliError};

use crate::cli::NetArgs;

pub const SERVICE_UNIT: &str = "ssh-tpm-cert-renew.service";
pub const TIMER_UNIT: &str = "ssh-tpm-cert-renew.timer";

/// The service, with `@EXEC@` for the command line and `@ENV@` for the environment the
/// user gave `install-timer`. It needs the network, the TPM, the key directory (to write
/// NAME-cert.pub), the agent's socket, and a browser for the login (through $BROWSER or
/// xdg-open, from the user manager's environment).
const SERVICE_TEXT: &str = "\
[Unit]
Description=Renew SSH certificates of TPM keys from the organisation's CA

[Service]
Type=oneshot
ExecStart=@EXEC@
Environment=SSH_TPM_AUTH_SOCK=%t/ssh-tpm-agent.sock
@ENV@";

/// The timer: hourly, at a random moment within five minutes (or after boot when the
/// machine was off at the hour).
const TIMER_TEXT: &str = "\
[Unit]
Description=Renew SSH certificates of TPM keys when they are due (checked hourly)

[Timer]
OnCalendar=hourly
Persistent=true
RandomizedDelaySec=5min

[Install]
WantedBy=timers.target
";

/// The environment variables `renew` reads that are no flag's `env`: they go into the
/// service as `Environment=` lines.
const PASSED_ENV: [&str; 2] = ["SSH_TPM_TCTI", "SSH_TPM_AGENT_SWTPM"];

/// What `install-timer` passes on to `renew`.
#[derive(Debug, Default)]
pub struct RenewCommand<'a> {
    /// `--state FILE`, when given (or from `SSH_TPM_CERT_STATE`).
    pub state: Option<&'a Path>,
    /// `--tcti`, `--swtpm`.
    pub tpm: Option<&'a TpmArgs>,
    /// `--tls-roots`, `--login-timeout`, `--no-browser`.
    pub net: Option<&'a NetArgs>,
    /// `--ca URL`.
    pub ca: Option<&'a str>,
    /// `-f KEY`…
    pub keys: &'a [PathBuf],
    /// `NAME=VALUE` for each of [`PASSED_ENV`] set at install time.
    pub env: Vec<(String, String)>,
}

impl RenewCommand<'_> {
    /// [`PASSED_ENV`] as they are set now.
    pub fn env_now() -> Vec<(String, String)> {
        PASSED_ENV
            .iter()
            .filter_map(|name| {
                let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
                Some((name.to_string(), value))
            })
            .collect()
    }
}

/// Writes both units (refusing to replace existing ones unless `force`) and prints what to
/// run next.
pub fn install(renew: &RenewCommand<'_>, force: bool) -> Result<(), CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::io("cannot tell where ssh-tpm-cert is installed", e))?;
    let exe = exe.to_str().ok_or_else(|| {
        CliError::Usage(format!(
            "the path of ssh-tpm-cert ({}) is not UTF-8; install it elsewhere",
            exe.display()
        ))
    })?;
    write(&unit_dir()?, &service_text(exe, renew)?, force)?;
    println!("Now run:");
    println!("  systemctl --user daemon-reload");
    println!("  systemctl --user enable --now {TIMER_UNIT}");
    println!("The login needs a browser: the service uses $BROWSER or xdg-open from the user");
    println!("manager's environment (systemctl --user import-environment DISPLAY BROWSER).");
    Ok(())
}

/// Writes both units into `dir`, the service as `service`.
fn write(dir: &Path, service: &str, force: bool) -> Result<(), CliError> {
    let unit_files = [
        (SERVICE_UNIT, service.to_string()),
        (TIMER_UNIT, TIMER_TEXT.to_string()),
    ];
    units::write_units(dir, &unit_files, force)
}

/// The service unit running `exe renew …` with what `renew` carries.
fn service_text(exe: &str, renew: &RenewCommand<'_>) -> Result<String, CliError> {
    let mut env = String::new();
    for (name, value) in &renew.env {
        env.push_str(&format!("Environment={}\n", env_assignment(name, value)?));
    }
    Ok(SERVICE_TEXT
        .replace("@EXEC@", &exec_line(exe, renew)?)
        .replace("@ENV@", &env))
}

/// `EXE [--state F] renew [--tcti T | --swtpm] [--ca URL] [net flags] [-f KEY]…`, each word
/// quoted for a unit file.
fn exec_line(exe: &str, renew: &RenewCommand<'_>) -> Result<String, CliError> {
    let mut words = vec![exe.to_string()];
    if let Some(state) = renew.state {
        words.push("--state".into());
        words.push(absolute(state, "the enrolment record")?);
    }
    words.push("renew".into());
    if let Some(tpm) = renew.tpm {
        if let Some(tcti) = &tpm.tcti {
            words.extend(["--tcti".into(), tcti.clone()]);
        }
        if tpm.swtpm {
            words.push("--swtpm".into());
        }
    }
    if let Some(ca) = renew.ca {
        words.extend(["--ca".into(), ca.to_string()]);
    }
    if let Some(net) = renew.net {
        if let Some(roots) = &net.tls_roots {
            words.push("--tls-roots".into());
            words.push(absolute(roots, "the root certificates")?);
        }
        if net.login_timeout != crate::cli::DEFAULT_LOGIN_TIMEOUT {
            words.extend(["--login-timeout".into(), net.login_timeout.to_string()]);
        }
        if net.no_browser {
            words.push("--no-browser".into());
        }
    }
    for key in renew.keys {
        words.push("-f".into());
        words.push(absolute(key, "the key")?);
    }
    let quoted: Result<Vec<String>, CliError> = words.iter().map(|w| exec_word(w)).collect();
    Ok(quoted?.join(" "))
}

/// `path` made absolute (the service runs elsewhere), as UTF-8.
fn absolute(path: &Path, what: &str) -> Result<String, CliError> {
    let absolute = std::path::absolute(path)
        .map_err(|e| CliError::io(format!("cannot resolve {}", path.display()), e))?;
    absolute.to_str().map(str::to_string).ok_or_else(|| {
        CliError::Usage(format!(
            "the path of {what} ({}) is not UTF-8; a unit file cannot hold it",
            path.display()
        ))
    })
}

/// Refuses text a unit file line cannot carry (control characters, such as a newline).
fn printable(text: &str) -> Result<(), CliError> {
    match text.contains(char::is_control) {
        true => Err(CliError::Usage(format!(
            "{text:?} holds a control character; a unit file cannot carry it"
        ))),
        false => Ok(()),
    }
}

/// `word` as one word of `ExecStart=` (systemd.service(5), "Command lines"): `%` doubled
/// (specifiers) and `$` doubled (variables), then bare when it holds nothing special, else
/// in double quotes with `\` and `"` escaped. A lone `;` would end the command: `\;`.
fn exec_word(word: &str) -> Result<String, CliError> {
    printable(word)?;
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._,:=@+-%$".contains(c);
    if word == ";" {
        return Ok("\\;".into());
    }
    if !escaped.is_empty() && escaped.chars().all(plain) {
        return Ok(escaped);
    }
    Ok(format!("\"{}\"", c_escape(&escaped)))
}

/// `NAME=VALUE` for `Environment=` (systemd.exec(5)): in double quotes, `\` and `"`
/// escaped, `%` doubled.
fn env_assignment(name: &str, value: &str) -> Result<String, CliError> {
    printable(value)?;
    let assignment = format!("{name}={}", value.replace('%', "%%"));
    Ok(format!("\"{}\"", c_escape(&assignment)))
}

fn c_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
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

    fn tpm(tcti: &str) -> TpmArgs {
        TpmArgs {
            tcti: Some(tcti.into()),
            swtpm: false,
        }
    }

    #[test]
    fn the_exec_line_carries_the_tpm_and_keys() {
        let tpm = tpm("swtpm:host=127.0.0.1,port=2321");
        let keys = [PathBuf::from("/k/id_ecdsa")];
        let renew = RenewCommand {
            tpm: Some(&tpm),
            keys: &keys,
            ..RenewCommand::default()
        };
        let line = exec_line("/usr/bin/ssh-tpm-cert", &renew).expect("exec line");
        assert_eq!(
            line,
            "/usr/bin/ssh-tpm-cert renew --tcti swtpm:host=127.0.0.1,port=2321 -f /k/id_ecdsa"
        );
        assert!(SERVICE_TEXT.contains("Type=oneshot"));
        assert!(TIMER_TEXT.contains("Persistent=true"));
    }

    #[test]
    fn the_exec_line_carries_state_ca_and_login_options() {
        let tpm = tpm("device:/dev/tpm rm0");
        let net = NetArgs {
            tls_roots: Some(PathBuf::from("/etc/org roots.pem")),
            login_timeout: 600,
            no_browser: false,
        };
        let keys = [PathBuf::from("/k/50%.tpm"), PathBuf::from("/k/$HOME\"\\x")];
        let renew = RenewCommand {
            state: Some(Path::new("/s/ca.toml")),
            tpm: Some(&tpm),
            net: Some(&net),
            ca: Some("https://ca.example.org"),
            keys: &keys,
            env: vec![("SSH_TPM_TCTI".into(), "swtpm:port=2%21 \"x\"".into())],
        };
        let service = service_text("/usr/bin/ssh-tpm-cert", &renew).expect("service");
        assert!(
            service.contains(
                "ExecStart=/usr/bin/ssh-tpm-cert --state /s/ca.toml renew \
                 --tcti \"device:/dev/tpm rm0\" --ca https://ca.example.org \
                 --tls-roots \"/etc/org roots.pem\" --login-timeout 600 -f /k/50%%.tpm \
                 -f \"/k/$$HOME\\\"\\\\x\"\n"
            ),
            "{service}"
        );
        assert!(
            service.ends_with("Environment=\"SSH_TPM_TCTI=swtpm:port=2%%21 \\\"x\\\"\"\n"),
            "{service}"
        );

        // A relative path is made absolute; a newline cannot go into a unit.
        let relative = [PathBuf::from("id_ecdsa")];
        let renew = RenewCommand {
            keys: &relative,
            ..RenewCommand::default()
        };
        let line = exec_line("/x", &renew).expect("exec line");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(line, format!("/x renew -f {}/id_ecdsa", cwd.display()));
        let broken = [PathBuf::from("/k/a\nb")];
        let renew = RenewCommand {
            keys: &broken,
            ..RenewCommand::default()
        };
        assert!(exec_line("/x", &renew).is_err());
        assert_eq!(exec_word(";").expect("word"), "\\;");
    }

    /// Seconds of a systemd time span as the timer writes them (`5min`, `1h`).
    fn span(text: &str) -> u64 {
        let digits = text.trim_end_matches(char::is_alphabetic);
        let number: u64 = digits.parse().expect("a number");
        match &text[digits.len()..] {
            "s" | "" => number,
            "min" => number * 60,
            "h" => number * 3600,
            unit => panic!("unit {unit} in {text}"),
        }
    }

    /// A renewal is due in the last third of a certificate's life: the timer must run at
    /// least that often (with its random delay) for the CA's default 16 hours, or the
    /// certificate runs out between two runs.
    #[test]
    fn the_timer_runs_often_enough_for_a_16_hour_certificate() {
        let value = |key: &str| {
            TIMER_TEXT
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in the timer"))
        };
        let period = match value("OnCalendar=") {
            "minutely" => 60,
            "hourly" => 3600,
            "daily" => 86_400,
            other => panic!("OnCalendar={other}"),
        };
        let delay = span(value("RandomizedDelaySec="));
        assert!(
            period + delay < 16 * 3600 / 3,
            "runs {period} s apart, {delay} s late"
        );
        assert_eq!(value("Persistent="), "true");
    }

    #[test]
    fn the_user_guide_shows_the_units_as_written() {
        let guide = include_str!("../../../../../docs/cert.md");
        let service =
            service_text("/usr/bin/ssh-tpm-cert", &RenewCommand::default()).expect("service");
        assert!(
            guide.contains(&service),
            "docs/cert.md must show:\n{service}"
        );
        assert!(
            guide.contains(TIMER_TEXT),
            "docs/cert.md must show:\n{TIMER_TEXT}"
        );
    }

    /// Writes the units for `renew` and has systemd check them, when it is installed.
    fn verify(name: &str, renew: &RenewCommand<'_>) {
        let dir =
            std::env::temp_dir().join(format!("ssh-tpm-cert-units-{name}-{}", std::process::id()));
        let units = dir.join("systemd/user");
        let service = service_text("/bin/true", renew).expect("service");
        write(&units, &service, false).expect("write");
        let again = write(&units, &service, false).expect_err("exists");
        assert!(again.to_string().contains("--force"), "{again}");
        write(&units, &service, true).expect("forced");
        let written = std::fs::read_to_string(units.join(SERVICE_UNIT)).expect("read unit");
        assert_eq!(written, service);

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

    #[test]
    fn the_units_pass_systemd_analyze_verify() {
        verify("plain", &RenewCommand::default());
    }

    #[test]
    fn units_with_quoted_options_pass_systemd_analyze_verify() {
        let tpm = tpm("device:/dev/tpm rm0");
        let net = NetArgs {
            tls_roots: Some(PathBuf::from("/etc/org roots%.pem")),
            login_timeout: 60,
            no_browser: true,
        };
        let keys = [PathBuf::from("/k/a b$c\"d\\e.tpm")];
        let renew = RenewCommand {
            state: Some(Path::new("/s/my state.toml")),
            tpm: Some(&tpm),
            net: Some(&net),
            ca: Some("https://ca.example.org/a b"),
            keys: &keys,
            env: vec![
                ("SSH_TPM_TCTI".into(), "swtpm:port=2321 %h \"q\"".into()),
                ("SSH_TPM_AGENT_SWTPM".into(), "1".into()),
            ],
        };
        verify("quoted", &renew);
    }
}
