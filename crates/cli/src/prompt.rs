//! Questions on the terminal: yes/no, a line of text, and PINs without echo.

use std::io::{BufRead, Write};

use ssh_tpm_tpm::Pin;

use crate::error::CliError;

/// Asks `question` and reads one line from stdin; `None` at end of input.
pub fn line(question: &str) -> Result<Option<String>, CliError> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::io("cannot read the answer", e))?;
    Ok((read > 0).then(|| answer.trim_end_matches(['\r', '\n']).to_string()))
}

/// Asks a yes/no question; only `y` or `yes` means yes.
pub fn confirm(question: &str) -> Result<bool, CliError> {
    let answer = line(question)?.unwrap_or_default();
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Asks for a new PIN twice on the terminal. Empty means no PIN.
pub fn new_pin() -> Result<Pin, CliError> {
    let no_tty = |e: std::io::Error| {
        CliError::Usage(format!(
            "cannot ask for a PIN ({e}); give it with -N PIN, or -N \"\" for a key without one"
        ))
    };
    let first = rpassword::prompt_password("Enter PIN (empty for no PIN): ").map_err(no_tty)?;
    let first = Pin::from(first);
    let second = Pin::from(rpassword::prompt_password("Enter same PIN again: ").map_err(no_tty)?);
    if first.expose() != second.expose() {
        return Err(CliError::Usage(
            "the PINs do not match; nothing was created".into(),
        ));
    }
    Ok(first)
}
