//! Command line of `ssh-tpm-agent`.

use std::path::PathBuf;

use clap::Parser;
use ssh_tpm::owner::OwnerArgs;
use ssh_tpm::tpm_args::TpmArgs;
use ssh_tpm_keyfile::handle;

/// An ssh-agent whose keys live in the TPM. Serves every *.tpm key under --key-dir.
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-agent", version)]
pub struct Args {
    #[command(flatten)]
    pub tpm: TpmArgs,

    #[command(flatten)]
    pub owner: OwnerArgs,

    /// Socket to listen on [default: $SSH_TPM_AUTH_SOCK, else
    /// $XDG_RUNTIME_DIR/ssh-tpm-agent.sock]
    #[arg(short = 'l', value_name = "SOCKET")]
    pub socket: Option<PathBuf>,

    /// Directory searched (recursively) for *.tpm keys [default: ~/.ssh]
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,

    /// Stand in front of the agent at SOCKET (repeatable): list its keys with ours, pass it
    /// requests for its keys, and add keys from ssh-add to the first one given
    #[arg(short = 'A', value_name = "SOCKET")]
    pub upstreams: Vec<PathBuf>,

    /// Also serve the hierarchy's own signing keys (owner, endorsement, null or platform):
    /// an ECDSA P-256 and an RSA-2048 key the TPM derives from that hierarchy's seed, the
    /// same at every start (null-hierarchy keys change at every TPM reset)
    #[arg(long, value_name = "HIERARCHY", value_parser = parse_hierarchy)]
    pub hierarchy: Option<u32>,

    /// Load no keys at start; add them later with ssh-tpm-add
    #[arg(long)]
    pub no_load: bool,

    /// Do not keep PINs in memory: ask for the PIN at every signature
    #[arg(long)]
    pub no_cache: bool,

    /// Print the socket path and exit
    #[arg(long)]
    pub print_socket: bool,

    /// Write a hardened systemd user socket and service for the agent into
    /// $XDG_CONFIG_HOME/systemd/user, print what to run next, and exit
    #[arg(long)]
    pub install_user_units: bool,

    /// With --install-user-units: replace units that already exist
    #[arg(long, requires = "install_user_units")]
    pub force: bool,

    /// Log every request (keys are named by fingerprint; PINs never appear)
    #[arg(short = 'd')]
    pub debug: bool,
}

/// Reads `--hierarchy`: a hierarchy by name.
fn parse_hierarchy(text: &str) -> Result<u32, String> {
    match text {
        "owner" => Ok(handle::OWNER),
        "endorsement" => Ok(handle::ENDORSEMENT),
        "null" => Ok(handle::NULL),
        "platform" => Ok(handle::PLATFORM),
        _ => Err(format!(
            "`{text}` is not a hierarchy; use owner, endorsement, null or platform"
        )),
    }
}
