//! Writing certificates and the enrolment record whole or not at all
//! ([`ssh_tpm_keyfile::atomic`]): a failure at any step leaves the old file as it was.

use std::path::Path;

use crate::error::{Error, Result};

/// Replaces `path` with `contents` (mode `mode`), atomically; the error names the file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    ssh_tpm_keyfile::atomic::write_atomic(path, contents, mode)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}
