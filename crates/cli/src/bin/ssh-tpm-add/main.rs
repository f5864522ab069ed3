//! `ssh-tpm-add`: hands TPM key files (and the certificate beside each) to a running
//! ssh-tpm-agent, optionally with ssh-add's constraints (`-c`, `-t`, `-h`).

mod cli;
mod destination;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ssh_key::PublicKey;
use ssh_tpm::CliError;
use ssh_tpm_agent_core::cert::CertBlob;
use ssh_tpm_agent_core::client;
use ssh_tpm_agent_core::constraint::Constraints;
use ssh_tpm_agent_core::keyring::{read_bounded, sibling};
use ssh_tpm_agent_core::known_hosts;
use ssh_tpm_agent_core::AgentKey;
use ssh_tpm_keyfile::TpmKey;

use cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = match client::socket_from_env() {
        Ok(socket) => socket,
        Err(e) => return ssh_tpm::report("ssh-tpm-add", &e.into()),
    };
    let constraints = match constraints(&args) {
        Ok(constraints) => constraints,
        Err(e) => return ssh_tpm::report("ssh-tpm-add", &e),
    };
    let mut status = ExitCode::SUCCESS;
    for file in &args.files {
        if let Err(e) = add(&socket, file, &constraints) {
            status = ssh_tpm::report("ssh-tpm-add", &e);
        }
    }
    status
}

/// The constraints the options ask for; `-h` hosts are looked up in known_hosts now.
fn constraints(args: &Args) -> Result<Constraints, CliError> {
    let files = if args.known_hosts.is_empty() {
        known_hosts::default_files(std::env::var_os("HOME").map(PathBuf::from).as_deref())
    } else {
        args.known_hosts.clone()
    };
    let destinations = args
        .destinations
        .iter()
        .map(|spec| destination::parse(spec, &files))
        .collect::<Result<_, _>>()?;
    Ok(Constraints {
        lifetime: args.lifetime,
        confirm: args.confirm,
        destinations,
    })
}

fn add(socket: &Path, file: &Path, constraints: &Constraints) -> Result<(), CliError> {
    let bytes = read_key_file(file)?;
    let mut key = TpmKey::from_bytes(&bytes).map_err(|source| CliError::KeyFile {
        path: file.display().to_string(),
        source,
    })?;
    // The Go tool's message has no comment field; the agent shows the key's description,
    // so carry the .pub comment there (in this message only, not in the file).
    let comment = std::fs::read_to_string(sibling(file, ".pub"))
        .ok()
        .and_then(|text| PublicKey::from_openssh(text.trim()).ok())
        .map(|public| public.comment().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| file.display().to_string());
    key.description = Some(comment.clone());

    let cert_path = sibling(file, "-cert.pub");
    let certificate = read_certificate(&cert_path);
    // Check here what the agent would check, so the reason shows on this terminal.
    AgentKey::new(key.clone(), certificate.clone())
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    client::add_key(socket, &key, certificate.as_ref(), constraints).map_err(|e| match e {
        ssh_tpm_agent_core::Error::Protocol(reason) => CliError::Usage(format!(
            "{reason} (agent at {}; OpenSSH's ssh-agent cannot hold TPM keys: point \
             SSH_TPM_AUTH_SOCK at ssh-tpm-agent)",
            socket.display()
        )),
        other => other.into(),
    })?;
    println!("Identity added: {} ({comment})", file.display());
    if certificate.is_some() {
        println!("Certificate added: {}", cert_path.display());
    }
    // The lines ssh-add prints for the same options.
    if let Some(seconds) = constraints.lifetime {
        println!("Lifetime set to {seconds} seconds");
    }
    if constraints.confirm {
        println!("The user must confirm each use of the key");
    }
    for destination in &constraints.destinations {
        println!("Restricted to destination {}", destination.describe());
    }
    Ok(())
}

/// The certificate at `cert_path`: `None` when there is none, and also, with a warning
/// naming it, when it is too large, unreadable or no certificate; the key is added anyway,
/// as the agent serves a key whose certificate it cannot read.
fn read_certificate(cert_path: &Path) -> Option<CertBlob> {
    if std::fs::symlink_metadata(cert_path).is_err() {
        return None;
    }
    let parsed = read_bounded(cert_path, "certificate")
        .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned()))
        .and_then(|text| {
            CertBlob::from_openssh(text.trim()).map_err(|e| format!("unreadable certificate: {e}"))
        });
    parsed
        .map_err(|reason| {
            eprintln!(
                "ssh-tpm-add: warning: {}: {reason}; adding the key without its certificate",
                cert_path.display()
            );
        })
        .ok()
}

/// The key file's bytes, by the agent's own limits.
fn read_key_file(file: &Path) -> Result<Vec<u8>, CliError> {
    read_bounded(file, "key file")
        .map_err(|reason| CliError::Usage(format!("cannot read {}: {reason}", file.display())))
}
