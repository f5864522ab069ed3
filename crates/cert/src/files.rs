//! Writing files whole or not at all: a temporary file beside the target, synced, then
//! renamed over it. A failure at any step leaves the old file as it was.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::error::{Error, Result};

/// Replaces `path` with `contents` (mode `mode`), atomically.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let fail = |e: std::io::Error| Error::io(format!("cannot write {}", path.display()), e);

    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    temp.write_all(contents).map_err(fail)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    temp.as_file().sync_all().map_err(fail)?;
    // On failure the temporary file is removed when `temp` drops.
    temp.persist(path).map_err(|e| fail(e.error))?;
    // Make the rename itself durable.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("id-cert.pub");
        write_atomic(&path, b"one\n", 0o644).expect("first");
        write_atomic(&path, b"two\n", 0o644).expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two\n");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("id-cert.pub");
        std::fs::write(&path, b"old\n").expect("old file");
        // The target is now a non-empty directory: the rename must fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("dir");
        std::fs::write(blocked.join("x"), b"x").expect("file in dir");
        assert!(write_atomic(&blocked, b"new\n", 0o644).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file may remain: {names:?}");
    }
}
