//! The enrolment record: which CA this device enrolled with, its device id, and which EK
//! certificate was used. One small TOML file, by default `$XDG_CONFIG_HOME/ssh-tpm/ca.toml`
//! (else `~/.config/ssh-tpm/ca.toml`), written by `ssh-tpm-cert enroll` and read by renewals.
//! Nothing in it is secret: the CA trusts the TPM's evidence, not this file.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ssh_tpm_tpm::EkKind;

use crate::error::{Error, Result};
use crate::files;

/// Largest state file read.
const MAX_STATE_FILE: u64 = 64 * 1024;

/// What `ssh-tpm-cert enroll` remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// The CA's URL.
    pub ca_url: String,
    /// The device id the CA confirmed (lowercase hex).
    pub device_id: String,
    /// The EK certificate used: `rsa2048`, `ecc-p256` or `ecc-p384`.
    pub ek: String,
    /// When the enrolment succeeded, Unix seconds.
    pub enrolled_at: u64,
}

impl Enrolment {
    /// The EK kind named by [`Enrolment::ek`].
    pub fn ek_kind(&self) -> Result<EkKind> {
        parse_ek(&self.ek).ok_or_else(|| {
            Error::Usage(format!(
                "the enrolment record names an unknown EK kind {:?}; run `ssh-tpm-cert enroll` \
                 again",
                self.ek
            ))
        })
    }
}

/// The name of an EK kind in the record.
pub fn ek_name(kind: EkKind) -> &'static str {
    match kind {
        EkKind::Rsa2048 => "rsa2048",
        EkKind::EccP256 => "ecc-p256",
        EkKind::EccP384 => "ecc-p384",
    }
}

/// The EK kind of a name in the record.
pub fn parse_ek(name: &str) -> Option<EkKind> {
    EkKind::ALL.into_iter().find(|k| ek_name(*k) == name)
}

/// `$XDG_CONFIG_HOME/ssh-tpm/ca.toml`, else `~/.config/ssh-tpm/ca.toml`.
pub fn default_path() -> Result<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let config = match (env("XDG_CONFIG_HOME"), env("HOME")) {
        (Some(config), _) => PathBuf::from(config),
        (None, Some(home)) => Path::new(&home).join(".config"),
        (None, None) => {
            return Err(Error::Usage(
                "neither XDG_CONFIG_HOME nor HOME is set; set one, or name the enrolment \
                 record with --state"
                    .into(),
            ))
        }
    };
    Ok(config.join("ssh-tpm").join("ca.toml"))
}

/// The record at `path`; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<Enrolment>> {
    use std::io::Read as _;
    let cannot = |e| Error::io(format!("cannot read {}", path.display()), e);
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(e)),
    };
    let mut text = String::new();
    file.take(MAX_STATE_FILE)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    toml::from_str(&text).map(Some).map_err(|e| {
        Error::Usage(format!(
            "{} is not an enrolment record ({}); run `ssh-tpm-cert enroll` again",
            path.display(),
            e.message()
        ))
    })
}

/// The record at `path`, or [`Error::NotEnrolled`].
pub fn require(path: &Path) -> Result<Enrolment> {
    load(path)?.ok_or_else(|| Error::NotEnrolled {
        path: path.display().to_string(),
    })
}

/// Checks that a record can be written at `path` (a file, in a directory that exists or can
/// be made, and may be written to), before an enrolment asks the CA anything: the CA pins
/// the attestation key at once, and a record that then cannot be saved is a wasted login.
/// Creates the directory (0700) if needed.
pub fn check_writable(path: &Path) -> Result<()> {
    let cannot = |why: String| {
        Error::Usage(format!(
            "cannot save the enrolment record at {}: {why}; name a file with --state",
            path.display()
        ))
    };
    if path.is_dir() {
        return Err(cannot("it is a directory".into()));
    }
    if path.file_name().is_none() {
        return Err(cannot("it does not name a file".into()));
    }
    let dir = create_dir(path)?;
    // The record is written beside its place and renamed over it: try a file there.
    let probe = dir.join(format!(".ca.toml.probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(cannot(format!(
            "{} cannot be written to ({e})",
            dir.display()
        ))),
    }
}

/// Creates the directory of `path` (0700) if needed; returns it.
fn create_dir(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    Ok(dir)
}

/// Writes the record, creating its directory (0700) if needed.
pub fn save(path: &Path, enrolment: &Enrolment) -> Result<()> {
    create_dir(path)?;
    let text = toml::to_string(enrolment)
        .map_err(|e| Error::Usage(format!("cannot write the enrolment record: {e}")))?;
    let text = format!("# Written by ssh-tpm-cert enroll.\n{text}");
    files::write_atomic(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/ca.toml");
        assert_eq!(load(&path).expect("absent"), None);
        assert!(matches!(require(&path), Err(Error::NotEnrolled { .. })));
        let record = Enrolment {
            ca_url: "https://ca.example/".into(),
            device_id: "ab".repeat(32),
            ek: ek_name(EkKind::EccP384).into(),
            enrolled_at: 1_764_800_000,
        };
        save(&path, &record).expect("save");
        assert_eq!(load(&path).expect("load"), Some(record.clone()));
        assert_eq!(record.ek_kind().expect("kind"), EkKind::EccP384);
        for kind in EkKind::ALL {
            assert_eq!(parse_ek(ek_name(kind)), Some(kind));
        }

        check_writable(&path).expect("a file in a directory");
        check_writable(&dir.path().join("new/dir/ca.toml")).expect("a directory to make");
        assert!(dir.path().join("new/dir").is_dir());
        let error = check_writable(dir.path())
            .expect_err("a directory")
            .to_string();
        assert!(
            error.contains("it is a directory; name a file with --state"),
            "{error}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["ca.toml"], "the probe stays behind");

        std::fs::write(&path, "ca_url = 3\n").expect("overwrite");
        let error = load(&path).expect_err("bad record").to_string();
        assert!(error.contains("enroll` again"), "{error}");
    }
}
