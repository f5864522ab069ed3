//! Writing key files and the other files the binaries make, atomically
//! ([`ssh_tpm_keyfile::atomic`]), so a crash or a full disk never leaves a half-written or
//! missing key.

use std::path::Path;

use crate::error::CliError;

/// Writes `contents` to `path` with `mode`, replacing it only once the new file is
/// complete on disk; the error names the file.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    ssh_tpm_keyfile::atomic::write_atomic(path, contents, mode)
        .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e))
}
