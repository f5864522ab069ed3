//! Writing files whole or not at all: a temporary file beside the target, synced, then
//! renamed over it, then the directory synced. A crash, a full disk or a read-only directory
//! at any step leaves the old file as it was, and no temporary file behind.
//!
//! Key files, `.pub` files, certificates, systemd units and KRLs are all written this way.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Replaces `path` with `contents`, with permission bits `mode`, atomically.
///
/// # Errors
///
/// The first I/O error of any step; `path` is then untouched.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();

    // The temporary file is created 0600 and removed if `temp` drops before `persist`.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(contents)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;

    // Make the rename itself durable.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("id.tpm");
        write_atomic(&path, b"one\n", 0o600).expect("first");
        write_atomic(&path, b"two\n", 0o644).expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two\n");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(names(dir.path()), ["id.tpm"]);
    }

    #[test]
    fn a_failed_rename_keeps_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("id-cert.pub");
        std::fs::write(&path, b"old\n").expect("old file");
        // The target is a non-empty directory: the rename must fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("dir");
        std::fs::write(blocked.join("x"), b"x").expect("file in dir");
        assert!(write_atomic(&blocked, b"new\n", 0o644).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old\n");
        assert_eq!(names(dir.path()), ["blocked", "id-cert.pub"]);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let path = Path::new("/nonexistent-dir-for-ssh-tpm/key.tpm");
        assert!(write_atomic(path, b"x", 0o600).is_err());
    }
}
