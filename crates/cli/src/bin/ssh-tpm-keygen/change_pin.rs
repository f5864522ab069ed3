//! `-p`: gives a key a new PIN (TPM2_ObjectChangeAuth) and rewrites its NAME.tpm in place;
//! NAME.pub and everything else in the key file stay as they were.

use std::path::PathBuf;

use ssh_tpm::{files, CliError};
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::Pin;

use crate::cli::Args;
use crate::{new_pin, open_tpm, strip_tpm_suffix, with_suffix, MAX_PIN_BYTES};

/// `-p -f NAME [-P OLD] [-N NEW]`.
pub fn change_pin(args: Args) -> Result<(), CliError> {
    let stem = args
        .file
        .clone()
        .map(strip_tpm_suffix)
        .ok_or_else(|| CliError::Usage("name the key with -f NAME".into()))?;
    let path = with_suffix(&stem, ".tpm");
    let key = read_key(&path)?;
    // A missing TPM is reported before the user is asked anything.
    let mut tpm = open_tpm(&args)?;

    let old = match args.passphrase {
        Some(pin) => Pin::from(pin),
        None => ask_old_pin()?,
    };
    if old.expose().len() > MAX_PIN_BYTES {
        return Err(CliError::Usage(
            "the old PIN is longer than any TPM PIN; the key file is unchanged".into(),
        ));
    }
    let new = new_pin(args.pin)?;

    let changed = tpm
        .change_auth(&key, &old, &new)
        .map_err(|e| CliError::Usage(format!("{e}; {} is unchanged", path.display())))?;
    drop(tpm);
    files::write_atomic(&path, changed.to_pem().as_bytes(), 0o600)?;
    println!(
        "Your PIN has been changed; {} holds the key",
        path.display()
    );
    if !new.is_empty() && !dictionary_attack_protected(&changed) {
        eprintln!(
            "warning: this key was created without a PIN, so it stays exempt from the TPM's \
             dictionary-attack protection (noDA); create a new key for a guarded PIN"
        );
    }
    Ok(())
}

fn read_key(path: &PathBuf) -> Result<TpmKey, CliError> {
    let data = std::fs::read(path).map_err(|e| CliError::read_key_file(path, e))?;
    TpmKey::from_bytes(&data).map_err(|source| CliError::KeyFile {
        path: path.display().to_string(),
        source,
    })
}

/// Whether failed PINs for `key` count against the TPM's dictionary-attack limit.
fn dictionary_attack_protected(key: &TpmKey) -> bool {
    ssh_tpm_tpm::decode_public(&key.pubkey).is_ok_and(|p| !p.object_attributes().no_da())
}

/// Asks once for the key's current PIN; empty means the key has none.
fn ask_old_pin() -> Result<Pin, CliError> {
    rpassword::prompt_password("Enter old PIN (empty if the key has none): ")
        .map(Pin::from)
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot ask for the old PIN ({e}); give it with -P PIN, or -P \"\" if the \
                 key has none"
            ))
        })
}
