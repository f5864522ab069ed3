//! Writing key files and the other files the binaries make, atomically
//! ([`ssh_tpm_keyfile::atomic`]), so a crash or a full disk never leaves a half-written or
//! missing key.

use std::path::Path;

pub use ssh_tpm_keyfile::atomic::NewFile;

use crate::error::CliError;

/// Writes `contents` to `path` with `mode`, replacing it only once the new file is
/// complete on disk; the error names the file.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    ssh_tpm_keyfile::atomic::write_atomic(path, contents, mode)
        .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e))
}

/// Writes a key pair so that either both old or both new files remain
/// ([`ssh_tpm_keyfile::atomic::write_pair_atomic`]); the error names the file that failed.
pub fn write_pair_atomic(first: &NewFile, second: &NewFile) -> Result<(), CliError> {
    ssh_tpm_keyfile::atomic::write_pair_atomic(first, second)
        .map_err(|e| CliError::io(format!("cannot write {}", e.path.display()), e.source))
}
