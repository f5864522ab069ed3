//! Asking the user for a PIN through `SSH_ASKPASS`, by OpenSSH's rules (ssh(1),
//! ENVIRONMENT): `SSH_ASKPASS_REQUIRE=never` forbids it, `force` uses it unconditionally,
//! and otherwise a display (`DISPLAY` or `WAYLAND_DISPLAY`) must be set, since the agent has
//! no terminal.

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
    match require.as_deref() {
        Some("never") => {
            return Err(Error::NoPrompt(
                "SSH_ASKPASS_REQUIRE=never forbids prompts; unset it or set it to force".into(),
            ))
        }
        Some("force") => {}
        _ if env("DISPLAY").is_none() && env("WAYLAND_DISPLAY").is_none() => {
            return Err(Error::NoPrompt(
                "no DISPLAY or WAYLAND_DISPLAY to show a prompt on; set SSH_ASKPASS to a \
                 prompt program and SSH_ASKPASS_REQUIRE=force"
                    .into(),
            ))
        }
        _ => {}
    }
    let program = env("SSH_ASKPASS").map_or_else(|| PathBuf::from(DEFAULT_ASKPASS), PathBuf::from);
    if program.is_absolute() && !program.exists() {
        return Err(Error::NoPrompt(format!(
            "the askpass program {} does not exist; set SSH_ASKPASS to one that does",
            program.display()
        )));
    }
    Ok(program)
}

/// Shows `prompt` and returns what the user typed. An empty answer or a cancelled prompt
/// is an error: an empty PIN is never sent on the user's behalf.
pub async fn ask_pin(prompt: &str) -> Result<Pin> {
    let program = program()?;
    let mut child = tokio::process::Command::new(&program)
        .arg(prompt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::NoPrompt(format!("cannot run {}: {e}", program.display())))?;

    let mut answer = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_end(&mut answer)
            .await
            .map_err(|e| Error::NoPrompt(format!("cannot read the prompt's answer: {e}")))?;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| Error::NoPrompt(format!("the prompt program failed: {e}")))?;
    let end = answer
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(answer.len());
    let pin = Pin::new(answer[..end].to_vec());
    answer.zeroize();
    if !status.success() || pin.is_empty() {
        return Err(Error::PromptCancelled);
    }
    Ok(pin)
}
