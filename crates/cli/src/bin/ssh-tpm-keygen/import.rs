//! `--import` and `--wrap`: private keys from files into this TPM, importable key files
//! (made for this TPM elsewhere) into loadable ones, and private keys wrapped in software for
//! another machine's TPM.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use ssh_key::PublicKey;
use ssh_tpm::CliError;
use ssh_tpm_keyfile::{handle, KeyType, TpmKey};
use ssh_tpm_tpm::{ExternalKey, SecretBytes, WrapParent};

use crate::cli::Args;
use crate::{
    confirm_overwrite, default_comment, new_pin, open_tpm, output_paths, public_key,
    strip_tpm_suffix, write_key_files,
};

/// Largest file read as a private key, key file or parent public key.
const MAX_INPUT: u64 = 1024 * 1024;

/// `--import FILE`: a private key or an importable key file into this TPM.
pub fn import(args: Args, file: &Path) -> Result<(), CliError> {
    let data = read_input(file)?;
    if let Ok(key) = TpmKey::from_bytes(&data) {
        return import_key_file(args, file, key);
    }
    // A missing TPM is reported before the user is asked anything.
    let mut tpm = open_tpm(&args)?;
    let key = read_private_key(file, &data, args.passphrase)?;

    let Outputs {
        key_path,
        pub_path,
        comment,
        keep_pub,
        ..
    } = outputs(args.file, args.comment, &key, file, "nothing was imported")?;
    let pin = new_pin(args.pin)?;
    let parent = args.parent_handle.unwrap_or(handle::OWNER);

    eprintln!("Importing the {} key into the TPM...", key.spec());
    let imported = tpm.import_key(&key, &pin, parent)?;
    drop(tpm);
    let public = public_key(&imported, &comment)?;
    write_key_files(
        &key_path,
        (!keep_pub).then_some(&pub_path),
        &imported,
        &public,
    )?;
    if keep_pub {
        println!("{} already holds this public key", pub_path.display());
    }
    eprintln!(
        "{} still holds the private key outside the TPM; delete it once you need no copy \
         outside this TPM",
        file.display()
    );
    Ok(())
}

/// Where an imported or wrapped key goes, and what its public key file says.
struct Outputs {
    key_path: PathBuf,
    pub_path: PathBuf,
    comment: String,
    /// The key's public half, with that comment.
    public: PublicKey,
    /// `NAME.pub` already holds this key (ssh-keygen left it beside the private key): it
    /// needs no question and keeps its file.
    keep_pub: bool,
}

/// Decides the output files for `key` read from `source` (`-f`, else beside `source`) and
/// its comment (`-C`, else the key's own, else user@host), and asks before overwriting.
fn outputs(
    file: Option<PathBuf>,
    comment: Option<String>,
    key: &ExternalKey,
    source: &Path,
    declined: &str,
) -> Result<Outputs, CliError> {
    let stem = file
        .map(strip_tpm_suffix)
        .unwrap_or_else(|| default_stem(source));
    let (key_path, pub_path) = output_paths(&stem)?;
    let comment = comment
        .or_else(|| Some(key.comment().to_string()).filter(|c| !c.is_empty()))
        .unwrap_or_else(default_comment);
    let mut public = PublicKey::from(key.ssh_public_key()?);
    public.set_comment(&comment);
    let keep_pub = holds_key(&pub_path, &public);
    let mut overwritten = vec![key_path.as_path()];
    if !keep_pub {
        overwritten.push(&pub_path);
    }
    confirm_overwrite(&overwritten, declined)?;
    Ok(Outputs {
        key_path,
        pub_path,
        comment,
        public,
        keep_pub,
    })
}

/// `--import FILE.tpm` for an importable key file: TPM2_Import with its encrypted seed,
/// writing the loadable key that results.
fn import_key_file(args: Args, file: &Path, key: TpmKey) -> Result<(), CliError> {
    let usage = |message: String| Err(CliError::Usage(message));
    match key.key_type {
        KeyType::Importable => {}
        KeyType::Loadable => {
            return usage(format!(
                "{} is already a loadable TPM key; there is nothing to import \
                 (ssh-tpm-agent uses it as it is)",
                file.display()
            ))
        }
        KeyType::Sealed => {
            return usage(format!(
                "{} holds TPM-sealed data, not a key",
                file.display()
            ))
        }
    }
    if args.pin.is_some() {
        return usage(
            "-N cannot set the PIN of an importable key: its PIN was chosen when it was \
             wrapped"
                .into(),
        );
    }
    if let Some(parent) = args.parent_handle.filter(|p| *p != key.parent) {
        return usage(format!(
            "the key was wrapped for parent {:#010x}, not {parent:#010x}; it can only be \
             imported under that parent",
            key.parent
        ));
    }
    let mut tpm = open_tpm(&args)?;

    let stem = strip_tpm_suffix(args.file.unwrap_or_else(|| file.to_path_buf()));
    let (key_path, pub_path) = output_paths(&stem)?;
    let comment = args
        .comment
        .or_else(|| comment_in(&pub_path))
        .unwrap_or_else(default_comment);
    let public = public_key(&key, &comment)?;
    let keep_pub = holds_key(&pub_path, &public) && comment_in(&pub_path) == Some(comment);
    let pub_out = (!keep_pub).then_some(pub_path.as_path());
    if same_file(&key_path, file) {
        let question = format!(
            "{} is the importable key.\nReplace it with the imported key (y/n)? ",
            key_path.display()
        );
        if !ssh_tpm::prompt::confirm(&question)? {
            return usage(format!(
                "{} was not replaced; nothing was imported (name another file with -f)",
                key_path.display()
            ));
        }
        confirm_overwrite(pub_out.as_slice(), "nothing was imported")?;
    } else {
        let mut overwritten = vec![key_path.as_path()];
        overwritten.extend(pub_out);
        confirm_overwrite(&overwritten, "nothing was imported")?;
    }

    eprintln!("Importing the key into the TPM...");
    let loadable = tpm.import_importable(&key)?;
    drop(tpm);
    write_key_files(&key_path, pub_out, &loadable, &public)
}

/// `--wrap KEY --wrap-with PARENT.pem`: an importable key file for another machine's TPM.
/// No TPM is opened: the machine that wraps may have none.
pub fn wrap(args: Args, key_file: &Path, parent_file: &Path) -> Result<(), CliError> {
    let parent_text = String::from_utf8(read_input(parent_file)?)
        .map_err(|_| CliError::Usage(format!("{}: not a PEM public key", parent_file.display())))?;
    let parent = WrapParent::from_pem(&parent_text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", parent_file.display())))?;
    let parent_handle = match args.parent_handle {
        Some(handle) => handle,
        None if parent.is_rsa() => {
            return Err(CliError::Usage(
                "an RSA parent is a persistent key on the other machine; name its handle \
                 with --parent-handle, e.g. --parent-handle 0x81000001"
                    .into(),
            ))
        }
        None => handle::OWNER,
    };
    let data = read_input(key_file)?;
    if TpmKey::from_bytes(&data).is_ok() {
        return Err(CliError::Usage(format!(
            "{} is a TPM key file; only private keys from outside a TPM can be wrapped",
            key_file.display()
        )));
    }
    let key = read_private_key(key_file, &data, args.passphrase)?;

    let Outputs {
        key_path,
        pub_path,
        public,
        keep_pub,
        ..
    } = outputs(
        args.file,
        args.comment,
        &key,
        key_file,
        "nothing was wrapped",
    )?;
    let pin = new_pin(args.pin)?;

    let wrapped = ssh_tpm_tpm::wrap_key(&key, &pin, &parent, parent_handle)?;
    write_key_files(
        &key_path,
        (!keep_pub).then_some(&pub_path),
        &wrapped,
        &public,
    )?;
    println!(
        "Only the TPM holding the parent in {} can use it: there, import it with \
         `ssh-tpm-keygen --import {}`, or let ssh-tpm-agent use it as it is",
        parent_file.display(),
        key_path.display()
    );
    Ok(())
}

/// Reads a private key, asking for its passphrase on the terminal when it is encrypted
/// and `-P` did not give one.
fn read_private_key(
    file: &Path,
    data: &[u8],
    passphrase: Option<String>,
) -> Result<ExternalKey, CliError> {
    let in_file = |e: ssh_tpm_tpm::Error| CliError::Usage(format!("{}: {e}", file.display()));
    let given = passphrase.map(SecretBytes::from);
    match ExternalKey::from_bytes(data, given.as_ref()) {
        Err(ssh_tpm_tpm::Error::PassphraseRequired) if given.is_none() => {
            let question = format!("Enter passphrase for {}: ", file.display());
            let asked = rpassword::prompt_password(question).map_err(|e| {
                CliError::Usage(format!(
                    "{}: the key is encrypted and its passphrase cannot be asked ({e}); \
                     give it with -P",
                    file.display()
                ))
            })?;
            ExternalKey::from_bytes(data, Some(&SecretBytes::from(asked))).map_err(in_file)
        }
        other => other.map_err(in_file),
    }
}

/// Reads a small input file whole.
fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    let fail = |e| CliError::read_key_file(path, e);
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut data = Vec::new();
    file.take(MAX_INPUT + 1)
        .read_to_end(&mut data)
        .map_err(fail)?;
    if data.len() as u64 > MAX_INPUT {
        return Err(CliError::Usage(format!(
            "{} is larger than any key file; give a private key or TPM key file",
            path.display()
        )));
    }
    Ok(data)
}

/// The output name for a key read from `file`: the file's name without `.pem` or `.key`.
fn default_stem(file: &Path) -> PathBuf {
    let text = file.to_string_lossy();
    [".pem", ".key"]
        .iter()
        .find_map(|ext| text.strip_suffix(ext))
        .filter(|stem| !stem.is_empty() && !stem.ends_with('/'))
        .map_or_else(|| file.to_path_buf(), PathBuf::from)
}

/// Whether the OpenSSH public key file at `path` exists and holds `public`'s key.
fn holds_key(path: &Path, public: &PublicKey) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| PublicKey::from_openssh(text.trim()).ok())
        .is_some_and(|existing| existing.key_data() == public.key_data())
}

/// The comment of the OpenSSH public key file at `path`, when it has one.
fn comment_in(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| PublicKey::from_openssh(text.trim()).ok())
        .map(|public| public.comment().to_string())
        .filter(|comment| !comment.is_empty())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_name_drops_pem_and_key_extensions() {
        assert_eq!(
            default_stem(Path::new("a/id_ecdsa")),
            Path::new("a/id_ecdsa")
        );
        assert_eq!(default_stem(Path::new("a/work.pem")), Path::new("a/work"));
        assert_eq!(default_stem(Path::new("work.key")), Path::new("work"));
        assert_eq!(default_stem(Path::new(".pem")), Path::new(".pem"));
        assert_eq!(default_stem(Path::new("a/.key")), Path::new("a/.key"));
    }
}
