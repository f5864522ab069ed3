//! Writing systemd units: `ssh-tpm-agent --install-user-units` and
//! `ssh-tpm-hostkeys --install-system-units` share the checks and the writing.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::{files, CliError};

/// The path of the `ssh-tpm-agent` binary installed beside the running one, as a unit's
/// `ExecStart=` can hold it: UTF-8, without whitespace, `%` escaped as `%%`.
pub fn agent_exec() -> Result<String, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::io("cannot tell where ssh-tpm is installed", e))?;
    let agent = exe.with_file_name("ssh-tpm-agent");
    unit_path(&agent, "ssh-tpm-agent")
}

/// `path` as a unit file can hold it: UTF-8, without whitespace, `%` escaped as `%%`.
pub fn unit_path(path: &Path, what: &str) -> Result<String, CliError> {
    let text = path.to_str().filter(|p| !p.contains(char::is_whitespace));
    let text = text.ok_or_else(|| {
        CliError::Usage(format!(
            "the path of {what} ({}) is not UTF-8 or holds spaces; use another",
            path.display()
        ))
    })?;
    Ok(text.replace('%', "%%"))
}

/// Writes each `(file name, text)` into `dir` (created if missing), refusing to replace an
/// existing unit unless `force`; nothing is written when one is refused. Prints each path.
pub fn write_units(dir: &Path, units: &[(&str, String)], force: bool) -> Result<(), CliError> {
    let units: Vec<(PathBuf, &String)> = units
        .iter()
        .map(|(name, text)| (dir.join(name), text))
        .collect();
    if !force {
        if let Some((existing, _)) = units.iter().find(|(path, _)| path.exists()) {
            return Err(CliError::Usage(format!(
                "{} already exists; add --force to replace it",
                existing.display()
            )));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| CliError::io(format!("cannot create {}", dir.display()), e))?;
    for (path, text) in &units {
        files::write_atomic(path, text.as_bytes(), 0o644)?;
        println!("Wrote {}", path.display());
    }
    Ok(())
}
