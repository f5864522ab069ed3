//! Asking the user for a PIN, or to allow a use of a key, through `SSH_ASKPASS`, by OpenSSH's
//! rules (ssh(1), ENVIRONMENT): `SSH_ASKPASS_REQUIRE=never` forbids it, `force` uses it
//! unconditionally, and otherwise a display (`DISPLAY` or `WAYLAND_DISPLAY`) must be set.
//! When askpass cannot be used and the agent runs in the foreground of a terminal, a PIN is
//! asked on that terminal instead, one prompt at a time.

use std::path::PathBuf;
use std::process::Stdio;

use ssh_tpm_tpm::Pin;
use tokio::io::AsyncReadExt;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// The askpass program OpenSSH on Debian falls back to.
const DEFAULT_ASKPASS: &str = "/usr/bin/ssh-askpass";

/// The program to run, or why there is none.
pub fn program() -> Result<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let require = env("SSH_ASKPASS_REQUIRE").map(|v| v.to_string_lossy().into_owned());
    let has_display = env("DISPLAY").is_some() || env("WAYLAND_DISPLAY").is_some();
    prompt_allowed(require.as_deref(), has_display)?;
    let program = env("SSH_ASKPASS").map_or_else(|| PathBuf::from(DEFAULT_ASKPASS), PathBuf::from);
    if program.is_absolute() && !program.exists() {
        return Err(Error::NoPrompt(format!(
            "the askpass program {} does not exist; set SSH_ASKPASS to one that does",
            program.display()
        )));
    }
    Ok(program)
}

/// Whether a prompt may be shown, given `SSH_ASKPASS_REQUIRE` and whether a display is set.
/// The values are compared case-insensitively, as OpenSSH's `read_passphrase` does; `prefer`
/// and unknown values mean the default, which needs a display.
fn prompt_allowed(require: Option<&str>, has_display: bool) -> Result<()> {
    let is = |value: &str| require.is_some_and(|r| r.eq_ignore_ascii_case(value));
    if is("never") {
        return Err(Error::NoPrompt(
            "SSH_ASKPASS_REQUIRE=never forbids prompts; unset it or set it to force".into(),
        ));
    }
    if is("force") || has_display {
        return Ok(());
    }
    Err(Error::NoPrompt(
        "no DISPLAY or WAYLAND_DISPLAY to show a prompt on; set SSH_ASKPASS to a prompt \
         program and SSH_ASKPASS_REQUIRE=force"
            .into(),
    ))
}

/// Shows `prompt` and returns what the user typed. An empty answer or a cancelled prompt
/// is an error: an empty PIN is never sent on the user's behalf.
pub async fn ask_pin(prompt: &str) -> Result<Pin> {
    if let Err(no_askpass) = program() {
        return match foreground_terminal() {
            true => ask_on_terminal(prompt).await,
            false => Err(no_askpass),
        };
    }
    let (success, mut answer) = run(prompt, false).await?;
    let pin = Pin::new(first_line(&answer).to_vec());
    answer.zeroize();
    if !success || pin.is_empty() {
        return Err(Error::PromptCancelled);
    }
    Ok(pin)
}

/// Whether stdin is a terminal and this process is in its foreground process group (an
/// agent started as `ssh-tpm-agent` in a shell, not with `&` or by systemd).
fn foreground_terminal() -> bool {
    let stdin = std::io::stdin();
    if !rustix::termios::isatty(&stdin) {
        return false;
    }
    rustix::termios::tcgetpgrp(&stdin).is_ok_and(|group| group == rustix::process::getpgrp())
}

/// Asks on the controlling terminal, without echo; prompts from concurrent requests take
/// turns.
async fn ask_on_terminal(prompt: &str) -> Result<Pin> {
    static TERMINAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = TERMINAL.lock().await;
    let prompt = prompt.to_string();
    let answer = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(|e| Error::NoPrompt(format!("the terminal prompt failed: {e}")))?
        .map_err(|e| Error::NoPrompt(format!("cannot read the PIN from the terminal: {e}")))?;
    let pin = Pin::from(answer);
    if pin.is_empty() {
        return Err(Error::PromptCancelled);
    }
    Ok(pin)
}

/// Asks the user to allow one use of a key, as OpenSSH's ssh-agent does for keys added with
/// `ssh-add -c`: the program runs with `SSH_ASKPASS_PROMPT=confirm`, and the use is allowed
/// when it exits 0 having printed nothing or `yes` (readpass.c, `ask_permission`).
pub async fn confirm(prompt: &str) -> Result<bool> {
    let (success, answer) = run(prompt, true).await?;
    Ok(allows(success, &answer))
}

/// Whether a confirmation prompt that exited with `success` and printed `answer` allows.
fn allows(success: bool, answer: &[u8]) -> bool {
    let answer = first_line(answer);
    success && (answer.is_empty() || answer.eq_ignore_ascii_case(b"yes"))
}

/// Runs the askpass program with `prompt`; whether it exited 0, and what it printed.
async fn run(prompt: &str, confirm: bool) -> Result<(bool, Vec<u8>)> {
    let program = program()?;
    let mut command = tokio::process::Command::new(&program);
    command
        .arg(prompt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if confirm {
        command.env("SSH_ASKPASS_PROMPT", "confirm");
    } else {
        command.env_remove("SSH_ASKPASS_PROMPT");
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::NoPrompt(format!("cannot run {}: {e}", program.display())))?;

    let mut answer = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        if let Err(e) = stdout.read_to_end(&mut answer).await {
            answer.zeroize();
            return Err(Error::NoPrompt(format!(
                "cannot read the prompt's answer: {e}"
            )));
        }
    }
    match child.wait().await {
        Ok(status) => Ok((status.success(), answer)),
        Err(e) => {
            answer.zeroize();
            Err(Error::NoPrompt(format!("the prompt program failed: {e}")))
        }
    }
}

/// The answer up to its first line break.
fn first_line(answer: &[u8]) -> &[u8] {
    let end = answer
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(answer.len());
    &answer[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn askpass_require_is_case_insensitive_like_openssh() {
        for force in ["force", "FORCE", "Force"] {
            assert!(prompt_allowed(Some(force), false).is_ok(), "{force}");
        }
        for never in ["never", "NEVER", "Never"] {
            let refused = prompt_allowed(Some(never), true);
            assert!(matches!(refused, Err(Error::NoPrompt(_))), "{never}");
        }
    }

    /// OpenSSH's ask_permission: exit 0 with nothing or "yes" allows; anything else refuses.
    #[test]
    fn confirmation_needs_success_and_an_empty_or_yes_answer() {
        assert!(allows(true, b""));
        assert!(allows(true, b"\n"));
        assert!(allows(true, b"YES\n"));
        assert!(!allows(true, b"no\n"));
        assert!(!allows(true, b"yes please"));
        assert!(!allows(false, b""));
        assert!(!allows(false, b"yes\n"));
    }

    #[test]
    fn without_force_a_display_is_needed() {
        for require in [None, Some("prefer"), Some("PREFER"), Some("something")] {
            assert!(prompt_allowed(require, true).is_ok(), "{require:?}");
            let refused = prompt_allowed(require, false);
            assert!(
                matches!(&refused, Err(Error::NoPrompt(m)) if m.contains("DISPLAY")),
                "{require:?}: {refused:?}"
            );
        }
    }
}
