//! `ssh-tpm-hostkeys`: lists the TPM host keys that `ssh-tpm-keygen -A` made, and writes the
//! sshd configuration that serves them through `ssh-tpm-agent` (sshd_config(5) `HostKeyAgent`),
//! and the system units that run that agent.

mod cli;
mod units;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ssh_key::{HashAlg, PublicKey};
use ssh_tpm::{files, CliError};

use cli::Args;

/// The snippet's file name: read early, so that our `HostKey` lines come before others.
const SNIPPET: &str = "10-ssh-tpm-hostkeys.conf";

fn main() -> ExitCode {
    ssh_tpm::init_logging(tracing::Level::WARN);
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ssh_tpm::report("ssh-tpm-hostkeys", &e),
    }
}

fn run(args: Args) -> Result<(), CliError> {
    if args.install_system_units {
        units::install(&args)?;
        if !args.install_sshd_config {
            return Ok(());
        }
    }
    let keys = host_keys(&args.host_key_dir)?;
    if keys.is_empty() {
        return Err(CliError::Usage(format!(
            "no TPM host keys in {}; create them with ssh-tpm-keygen -A",
            args.host_key_dir.display()
        )));
    }
    if args.install_sshd_config {
        return install_sshd_config(&args, &keys);
    }
    for (path, public) in &keys {
        println!(
            "{} {} {}",
            public.algorithm(),
            public.fingerprint(HashAlg::Sha256),
            path.display()
        );
    }
    Ok(())
}

/// The public halves of the host keys in `dir` (`ssh_tpm_host_*_key.pub` beside a `.tpm`),
/// in name order.
fn host_keys(dir: &Path) -> Result<Vec<(PathBuf, PublicKey)>, CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::io(format!("cannot read {}", dir.display()), e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| is_host_key_pub(path) && path.with_extension("tpm").is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::io(format!("cannot read {}", path.display()), e))?;
            let public = PublicKey::from_openssh(text.trim()).map_err(|e| {
                CliError::Usage(format!(
                    "{}: not an OpenSSH public key: {e}",
                    path.display()
                ))
            })?;
            Ok((path, public))
        })
        .collect()
}

/// `ssh_tpm_host_NAME_key.pub`.
fn is_host_key_pub(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("ssh_tpm_host_") && name.ends_with("_key.pub"))
}

/// Writes `HostKeyAgent SOCKET` and one `HostKey PUB` per key into the sshd_config.d snippet.
fn install_sshd_config(args: &Args, keys: &[(PathBuf, PublicKey)]) -> Result<(), CliError> {
    let snippet = args.sshd_config_dir.join(SNIPPET);
    if snippet.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{} already exists; add --force to replace it",
            snippet.display()
        )));
    }
    let mut text = format!(
        "# Written by ssh-tpm-hostkeys: host keys in the TPM, served by ssh-tpm-agent.\n\
         HostKeyAgent {}\n",
        args.socket.display()
    );
    for (path, _) in keys {
        text.push_str(&format!("HostKey {}\n", path.display()));
    }
    files::write_atomic(&snippet, text.as_bytes(), 0o644)?;
    println!("Wrote {}", snippet.display());
    println!(
        "Start ssh-tpm-agent -l {} --key-dir {} as root, then reload sshd.",
        args.socket.display(),
        args.host_key_dir.display()
    );
    Ok(())
}
