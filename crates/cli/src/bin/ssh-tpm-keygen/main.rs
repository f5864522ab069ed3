//! `ssh-tpm-keygen`: creates an SSH key inside the TPM and writes its key files; imports
//! existing keys into the TPM and wraps keys for another machine's TPM (see `import`).

mod change_pin;
mod cli;
mod host_keys;
mod import;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ssh_key::{HashAlg, PublicKey};
use ssh_tpm::files::NewFile;
use ssh_tpm::{files, owner, prompt, CliError};
use ssh_tpm_keyfile::{handle, TpmKey};
use ssh_tpm_tpm::{KeySpec, Pin, Tpm};

use cli::Args;

/// Longest PIN accepted: a TPM2B_AUTH holds at most a SHA-512 digest's worth of bytes.
pub(crate) const MAX_PIN_BYTES: usize = 64;

fn main() -> ExitCode {
    ssh_tpm::quiet_tss();
    ssh_tpm::init_logging(tracing::Level::WARN);
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ssh_tpm::report("ssh-tpm-keygen", &e),
    }
}

fn run(args: Args) -> Result<(), CliError> {
    if let (Some(key), Some(parent)) = (args.wrap.clone(), args.wrap_with.clone()) {
        return import::wrap(args, &key, &parent);
    }
    if let Some(file) = args.import.clone() {
        return import::import(args, &file);
    }
    if args.change_pin {
        return change_pin::change_pin(args);
    }
    if args.host_keys {
        return host_keys::create_missing(args);
    }
    let spec = KeySpec::from_type_and_bits(&args.key_type, args.bits)?;
    // A missing TPM is reported before the user is asked anything.
    let mut tpm = open_tpm(&args)?;
    if args.supported {
        return print_supported(&mut tpm);
    }

    // Everything the user must decide comes before the TPM creates anything.
    let stem = match args.file {
        Some(path) => strip_tpm_suffix(path),
        None => ask_file(spec)?,
    };
    let (key_path, pub_path) = output_paths(&stem)?;
    // One question covers both files, as ssh-keygen asks once for the key pair.
    confirm_overwrite(&[&key_path, &pub_path], "nothing was created")?;
    let pin = new_pin(args.pin)?;
    let comment = args.comment.unwrap_or_else(default_comment);
    let parent = args.parent_handle.unwrap_or(handle::OWNER);

    eprintln!("Generating a {spec} key inside the TPM...");
    let key = tpm.create_key_under(spec, &pin, parent)?;
    drop(tpm);
    let public = public_key(&key, &comment)?;
    write_key_files(&key_path, Some(&pub_path), &key, &public)
}

/// Opens the TPM the flags name, with the owner password of `-o` (asked on the terminal
/// once the TPM is found) or `SSH_TPM_AGENT_OWNER_PASSWORD`.
pub(crate) fn open_tpm(args: &Args) -> Result<Tpm, CliError> {
    let from_env = owner::password_from_env();
    let mut tpm = Tpm::open(&args.tpm.target()?)?;
    let password = match from_env {
        _ if args.owner.owner_password => Some(owner::ask_on_terminal()?),
        from_env => from_env,
    };
    if let Some(password) = password {
        tpm.set_owner_password(password);
    }
    Ok(tpm)
}

/// `NAME.tpm` and `NAME.pub` for the name the user chose; a directory is refused.
fn output_paths(stem: &Path) -> Result<(PathBuf, PathBuf), CliError> {
    if stem.is_dir() || stem.as_os_str().to_string_lossy().ends_with('/') {
        return Err(CliError::Usage(format!(
            "{} is a directory; give a file name, like {}/id_ecdsa",
            stem.display(),
            stem.display().to_string().trim_end_matches('/')
        )));
    }
    Ok((with_suffix(stem, ".tpm"), with_suffix(stem, ".pub")))
}

/// Asks once before overwriting the first of `paths` that exists; a "no" ends the
/// command with `nothing_done` in the message.
fn confirm_overwrite(paths: &[&Path], nothing_done: &str) -> Result<(), CliError> {
    if let Some(existing) = paths.iter().find(|p| entry_exists(p)) {
        let question = format!("{} already exists.\nOverwrite (y/n)? ", existing.display());
        if !prompt::confirm(&question)? {
            return Err(CliError::Usage(format!(
                "{} was not overwritten; {nothing_done}",
                existing.display()
            )));
        }
    }
    Ok(())
}

/// Whether `path` names any directory entry: a dangling symlink or a symlink loop counts,
/// as a rename would replace it.
pub(crate) fn entry_exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The new key's PIN: `-N`, else asked twice on the terminal.
fn new_pin(given: Option<String>) -> Result<Pin, CliError> {
    let pin = match given {
        Some(pin) => Pin::from(pin),
        None => prompt::new_pin()?,
    };
    if pin.expose().len() > MAX_PIN_BYTES {
        return Err(CliError::Usage(format!(
            "the PIN is {} bytes long; a TPM key's PIN can be at most {MAX_PIN_BYTES} bytes",
            pin.expose().len()
        )));
    }
    Ok(pin)
}

/// The SSH public key of a TPM key file, with `comment`.
fn public_key(key: &TpmKey, comment: &str) -> Result<PublicKey, CliError> {
    let public = ssh_tpm_tpm::decode_public(&key.pubkey)?;
    let mut public = PublicKey::from(ssh_tpm_tpm::ssh_public_key(&public)?);
    public.set_comment(comment);
    Ok(public)
}

/// Writes `NAME.tpm` (0600) and, unless `pub_path` is `None`, `NAME.pub` (0644), then says
/// so as ssh-keygen does.
fn write_key_files(
    key_path: &Path,
    pub_path: Option<&Path>,
    key: &TpmKey,
    public: &PublicKey,
) -> Result<(), CliError> {
    let public_line = public
        .to_openssh()
        .map_err(|e| CliError::Usage(format!("cannot encode the public key: {e}")))?
        + "\n";
    let pem = key.to_pem();
    let key_file = NewFile {
        path: key_path,
        contents: pem.as_bytes(),
        mode: 0o600,
    };
    match pub_path {
        // Both or neither: a failed .pub must not cost the old key.
        Some(pub_path) => files::write_pair_atomic(
            &key_file,
            &NewFile {
                path: pub_path,
                contents: public_line.as_bytes(),
                mode: 0o644,
            },
        )?,
        None => files::write_atomic(key_path, key_file.contents, key_file.mode)?,
    }
    println!(
        "Your identification has been saved in {}",
        key_path.display()
    );
    if let Some(pub_path) = pub_path {
        println!("Your public key has been saved in {}", pub_path.display());
    }
    println!("The key fingerprint is:");
    println!(
        "{} {}",
        public.fingerprint(HashAlg::Sha256),
        public.comment()
    );
    Ok(())
}

fn print_supported(tpm: &mut Tpm) -> Result<(), CliError> {
    let supported = tpm.supported()?;
    for (name, specs) in [
        (
            "ecdsa",
            [KeySpec::EcdsaP256, KeySpec::EcdsaP384, KeySpec::EcdsaP521].as_slice(),
        ),
        ("rsa", [KeySpec::Rsa2048, KeySpec::Rsa3072].as_slice()),
    ] {
        let bits: Vec<String> = specs
            .iter()
            .filter(|s| supported.contains(s))
            .map(|s| s.bits().to_string())
            .collect();
        if !bits.is_empty() {
            println!("{name} {}", bits.join(" "));
        }
    }
    Ok(())
}

/// Asks where to save the key, offering ssh-keygen's default.
fn ask_file(spec: KeySpec) -> Result<PathBuf, CliError> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| CliError::Usage("HOME is not set; name the key file with -f".into()))?;
    let default = home.join(".ssh").join(spec.default_file_stem());
    let question = format!(
        "Enter file in which to save the key ({}): ",
        default.display()
    );
    // End of input is not consent to the default, as with ssh-keygen.
    let answer = prompt::line(&question)?.ok_or_else(|| {
        CliError::Usage("no file name given (end of input); nothing was created".into())
    })?;
    if answer.trim().is_empty() {
        let ssh_dir = home.join(".ssh");
        if !ssh_dir.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&ssh_dir)
                .map_err(|e| CliError::io(format!("cannot create {}", ssh_dir.display()), e))?;
        }
        Ok(default)
    } else {
        Ok(strip_tpm_suffix(PathBuf::from(answer.trim())))
    }
}

fn strip_tpm_suffix(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(|p| p.strip_suffix(".tpm")) {
        Some(stem) if !stem.is_empty() => PathBuf::from(stem),
        _ => path,
    }
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `user@host`, as ssh-keygen writes.
fn default_comment() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(user_name_from_passwd);
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    format!("{user}@{host}")
}

/// The current user's name from /etc/passwd, else the numeric uid.
fn user_name_from_passwd() -> String {
    let uid = rustix::process::getuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or(uid)
}
