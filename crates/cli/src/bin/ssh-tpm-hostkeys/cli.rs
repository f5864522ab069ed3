//! Command line of `ssh-tpm-hostkeys`.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

/// List the TPM host keys made by `ssh-tpm-keygen -A`, or point sshd at them: sshd signs with
/// them through the ssh-tpm-agent that serves them (HostKeyAgent).
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-hostkeys", version)]
#[command(group(
    ArgGroup::new("install")
        .args(["install_sshd_config", "install_system_units"])
        .multiple(true)
))]
pub struct Args {
    /// Directory of the host keys
    #[arg(long, value_name = "DIR", default_value = "/etc/ssh")]
    pub host_key_dir: PathBuf,

    /// Write an sshd_config.d snippet that makes sshd use these host keys through the agent
    /// at -l, then say how to reload sshd
    #[arg(long)]
    pub install_sshd_config: bool,

    /// Socket of the ssh-tpm-agent that serves the host keys
    #[arg(
        short = 'l',
        value_name = "SOCKET",
        default_value = "/var/tmp/ssh-tpm-agent.sock"
    )]
    pub socket: PathBuf,

    /// Where the snippet goes
    #[arg(long, value_name = "DIR", default_value = "/etc/ssh/sshd_config.d")]
    pub sshd_config_dir: PathBuf,

    /// Write ssh-tpm-agent-hostkeys.socket and .service: a sandboxed system agent that serves
    /// the host keys on the socket at -l, then say what to run next
    #[arg(long)]
    pub install_system_units: bool,

    /// Where the system units go
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/systemd/system",
        requires = "install_system_units"
    )]
    pub unit_dir: PathBuf,

    /// With --install-sshd-config or --install-system-units: replace files that exist
    #[arg(long, requires = "install")]
    pub force: bool,
}
