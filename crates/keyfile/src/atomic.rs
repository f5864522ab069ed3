//! Writing files whole or not at all: a temporary file beside the target, synced, then
//! renamed over it, then the directory synced. A crash, a full disk or a read-only directory
//! at any step leaves the old file as it was, and no temporary file behind.
//!
//! Key files, `.pub` files, certificates, systemd units and KRLs are all written this way.
//! A key pair (`NAME.tpm` and `NAME.pub`) is written with [`write_pair_atomic`], so that
//! either both old or both new files remain.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// One file to write: where, what, and its permission bits.
#[derive(Clone, Copy, Debug)]
pub struct NewFile<'a> {
    pub path: &'a Path,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// Why a pair could not be written: the file the failed step was for, and the I/O error.
#[derive(Debug)]
pub struct PairError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Replaces `path` with `contents`, with permission bits `mode`, atomically.
///
/// # Errors
///
/// The first I/O error of any step; `path` is then untouched.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let file = NewFile {
        path,
        contents,
        mode,
    };
    let temp = write_temporary(&file)?;
    temp.persist(path).map_err(|e| plain(e.error))?;

    // Make the rename itself durable.
    sync_dir(path)
}

/// Replaces `first` and `second` so that either both old or both new files remain.
///
/// Both temporary files are written and synced before either is renamed into place; the
/// old `first` is kept under a temporary name until `second` is in place too, and is put
/// back if renaming `second` fails.
///
/// # Errors
///
/// The first I/O error, with the file it was for; both files are then as they were.
pub fn write_pair_atomic(first: &NewFile, second: &NewFile) -> Result<(), PairError> {
    let failed = |file: &NewFile| {
        let path = file.path.to_path_buf();
        move |source| PairError { path, source }
    };
    let first_temp = write_temporary(first).map_err(failed(first))?;
    let second_temp = write_temporary(second).map_err(failed(second))?;
    let backup = backup_of(first.path).map_err(failed(first))?;

    first_temp
        .persist(first.path)
        .map_err(|e| failed(first)(plain(e.error)))?;
    if let Err(e) = second_temp.persist(second.path) {
        // Put the old first file back, or take the new one away if there was none.
        let _ = match backup {
            Some(old) => old.persist(first.path).map(drop).map_err(|e| e.error),
            None => std::fs::remove_file(first.path),
        };
        return Err(failed(second)(plain(e.error)));
    }
    drop(backup);

    sync_dir(first.path).map_err(failed(first))?;
    sync_dir(second.path).map_err(failed(second))
}

/// A complete, synced temporary copy of `file` beside its target; removed if dropped.
fn write_temporary(file: &NewFile) -> std::io::Result<NamedTempFile> {
    let name = file.path.file_name().unwrap_or_default().to_string_lossy();

    // The temporary file is created 0600 and removed if it drops before `persist`.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir_of(file.path))
        .map_err(plain)?;
    // Through the `File`: `NamedTempFile`'s own `Write` adds the temporary path to errors.
    temp.as_file_mut().write_all(file.contents)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(file.mode))?;
    temp.as_file().sync_all()?;
    Ok(temp)
}

/// A second name for the file at `path` (a hard link, else a copy), removed when dropped;
/// `None` if there is no such file.
fn backup_of(path: &Path) -> std::io::Result<Option<NamedTempFile<()>>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".old");
    let dir = dir_of(path);
    let backup = builder
        .make_in(dir, |backup| std::fs::hard_link(path, backup))
        .or_else(|_| {
            builder.make_in(dir, |backup| {
                std::fs::copy(path, backup)?;
                std::fs::File::open(backup)?.sync_all()
            })
        })
        .map_err(plain)?;
    Ok(Some(backup))
}

/// The directory `path` is in.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir_of(path))?.sync_all()
}

/// The OS error alone, without the temporary file's path that `tempfile` adds: the caller
/// names the file the user asked for.
fn plain(e: std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => e,
    }
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

    fn pair<'a>(key: &'a Path, public: &'a Path, tag: &'a str) -> [NewFile<'a>; 2] {
        let file = |path, contents: &'a str, mode| NewFile {
            path,
            contents: contents.as_bytes(),
            mode,
        };
        [file(key, tag, 0o600), file(public, tag, 0o644)]
    }

    #[test]
    fn a_pair_replaces_both_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (key, public) = (dir.path().join("id.tpm"), dir.path().join("id.pub"));
        let [a, b] = pair(&key, &public, "old");
        write_pair_atomic(&a, &b).expect("first");
        let [a, b] = pair(&key, &public, "new");
        write_pair_atomic(&a, &b).expect("second");
        assert_eq!(std::fs::read(&key).expect("key"), b"new");
        assert_eq!(std::fs::read(&public).expect("pub"), b"new");
        assert_eq!(names(dir.path()), ["id.pub", "id.tpm"]);
    }

    #[test]
    fn a_failed_second_rename_puts_the_old_first_file_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("id.tpm");
        std::fs::write(&key, b"old").expect("old key");
        // The second target is a non-empty directory: its rename must fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("dir");
        std::fs::write(blocked.join("x"), b"x").expect("file in dir");
        let [a, b] = pair(&key, &blocked, "new");
        let err = write_pair_atomic(&a, &b).expect_err("blocked");
        assert_eq!(err.path, blocked);
        assert!(!err.source.to_string().contains(".tmp"), "{}", err.source);
        assert_eq!(std::fs::read(&key).expect("key"), b"old");
        assert_eq!(names(dir.path()), ["blocked", "id.tpm"]);
    }

    #[test]
    fn a_failed_second_rename_takes_a_new_first_file_away() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("id.tpm");
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("dir");
        std::fs::write(blocked.join("x"), b"x").expect("file in dir");
        let [a, b] = pair(&key, &blocked, "new");
        assert!(write_pair_atomic(&a, &b).is_err());
        assert_eq!(names(dir.path()), ["blocked"]);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let path = Path::new("/nonexistent-dir-for-ssh-tpm/key.tpm");
        assert!(write_atomic(path, b"x", 0o600).is_err());
    }
}
