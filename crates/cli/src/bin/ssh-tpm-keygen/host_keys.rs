//! `ssh-tpm-keygen -A`: the machine's SSH host keys, made in the TPM, as `ssh-keygen -A` makes
//! its own: each one that is missing is created, and existing ones are left alone. The names
//! are the Go ssh-tpm-keygen's, so that either tool finds the other's keys.

use std::path::Path;

use ssh_tpm::CliError;
use ssh_tpm_keyfile::handle;
use ssh_tpm_tpm::{KeySpec, Pin};

use crate::cli::Args;

/// The host keys: file stem in the host key directory and kind.
pub const HOST_KEYS: [(&str, KeySpec); 2] = [
    ("ssh_tpm_host_ecdsa_key", KeySpec::EcdsaP256),
    ("ssh_tpm_host_rsa_key", KeySpec::Rsa2048),
];

/// Creates the host keys missing from `--host-key-dir`; a key counts as present when either
/// of its two files exists, so that a half-written pair is never replaced unasked. Host keys
/// get no PIN: sshd uses them unattended.
pub fn create_missing(args: Args) -> Result<(), CliError> {
    let dir = args.host_key_dir.as_path();
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a directory; create it or choose another with --host-key-dir",
            dir.display()
        )));
    }
    let missing: Vec<_> = HOST_KEYS
        .iter()
        .filter(|(stem, _)| !exists(dir, stem))
        .collect();
    if missing.is_empty() {
        println!("The TPM host keys in {} exist already.", dir.display());
        return Ok(());
    }

    let mut tpm = super::open_tpm(&args)?;
    let parent = args.parent_handle.unwrap_or(handle::OWNER);
    let comment = args.comment.unwrap_or_else(super::default_comment);
    for (stem, spec) in missing {
        eprintln!("Generating a {spec} host key inside the TPM...");
        let key = tpm.create_key_under(*spec, &Pin::from(String::new()), parent)?;
        let public = super::public_key(&key, &comment)?;
        let base = dir.join(stem);
        let key_path = super::with_suffix(&base, ".tpm");
        let pub_path = super::with_suffix(&base, ".pub");
        super::write_key_files(&key_path, Some(&pub_path), &key, &public)?;
    }
    Ok(())
}

/// Whether `dir/stem.tpm` or `dir/stem.pub` exists, as any directory entry (a dangling
/// symlink too).
fn exists(dir: &Path, stem: &str) -> bool {
    [".tpm", ".pub"]
        .iter()
        .any(|suffix| super::entry_exists(&dir.join(format!("{stem}{suffix}"))))
}
