//! Command line of `ssh-tpm-cert`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use ssh_tpm::owner::OwnerArgs;
use ssh_tpm::tpm_args::TpmArgs;

/// Get short-lived SSH certificates for TPM keys from your organisation's CA: enrol this
/// device once, then renew (by hand or with an hourly systemd timer).
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-cert", version)]
pub struct Args {
    /// The enrolment record [default: $XDG_CONFIG_HOME/ssh-tpm/ca.toml, else
    /// ~/.config/ssh-tpm/ca.toml]
    #[arg(long, value_name = "FILE", global = true, env = "SSH_TPM_CERT_STATE")]
    pub state: Option<PathBuf>,

    /// Log each request to the CA (never tokens or PINs)
    #[arg(short = 'd', global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrol this device's TPM with the CA (once per device): log in, prove the TPM holds
    /// its endorsement key, and remember the CA
    Enroll(EnrollArgs),

    /// Get a new certificate (KEY-cert.pub) when it is missing or has less than a third of
    /// its life left, and hand it to the running ssh-tpm-agent
    Renew(RenewArgs),

    /// Show the enrolment and each key's certificate: principals, key id, validity, serial
    Status(StatusArgs),

    /// Print this TPM's device id, by which the CA's inventory knows it, and write its EK
    /// certificate for the administrator's `ssh-tpm-ca device add`
    DeviceId(DeviceIdArgs),

    /// Write a systemd user timer that runs `ssh-tpm-cert renew` hourly (it renews only
    /// when due), and its service, into $XDG_CONFIG_HOME/systemd/user
    InstallTimer(TimerArgs),
}

/// `--login-timeout` when not given, in seconds.
pub const DEFAULT_LOGIN_TIMEOUT: u64 = 300;

/// Options for talking to the CA and logging in.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// Extra root certificates (PEM) to trust for the CA and the identity provider
    #[arg(long, value_name = "PEM", env = "SSH_TPM_CERT_ROOTS")]
    pub tls_roots: Option<PathBuf>,

    /// Seconds to wait for the browser to finish the login
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_LOGIN_TIMEOUT,
        env = "SSH_TPM_CERT_LOGIN_TIMEOUT"
    )]
    pub login_timeout: u64,

    /// Do not open a browser; only print the login URL
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub tpm: TpmArgs,

    #[command(flatten)]
    pub owner: OwnerArgs,

    #[command(flatten)]
    pub net: NetArgs,

    /// The CA's URL (https://…; http:// only for a CA on this machine)
    #[arg(long, value_name = "URL", env = "SSH_TPM_CA_URL")]
    pub ca: String,

    /// Which endorsement key certificate to enrol with [default: rsa when the TPM has one,
    /// else ecc]
    #[arg(long, value_name = "KIND")]
    pub ek: Option<EkArg>,
}

/// `--ek`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EkArg {
    /// RSA 2048
    Rsa,
    /// NIST P-384, else P-256
    Ecc,
}

#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub tpm: TpmArgs,

    #[command(flatten)]
    pub owner: OwnerArgs,

    #[command(flatten)]
    pub net: NetArgs,

    /// Key file, NAME or NAME.tpm (repeatable) [default: ~/.ssh/id_ecdsa.tpm, else
    /// ~/.ssh/id_rsa.tpm]
    #[arg(short = 'f', value_name = "KEY")]
    pub keys: Vec<PathBuf>,

    /// Ask this CA instead of the one enrolled with
    #[arg(long, value_name = "URL")]
    pub ca: Option<String>,

    /// Renew even when the certificate has time left
    #[arg(long)]
    pub force: bool,

    /// Do not hand the new certificate to the agent at $SSH_TPM_AUTH_SOCK/$SSH_AUTH_SOCK
    #[arg(long)]
    pub no_agent: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Key file, NAME or NAME.tpm (repeatable) [default: every *.tpm in ~/.ssh]
    #[arg(short = 'f', value_name = "KEY")]
    pub keys: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DeviceIdArgs {
    #[command(flatten)]
    pub tpm: TpmArgs,

    #[command(flatten)]
    pub owner: OwnerArgs,

    /// Which endorsement key certificate [default: as `enroll`: rsa when the TPM has one,
    /// else ecc]
    #[arg(long, value_name = "KIND")]
    pub ek: Option<EkArg>,

    /// Write the EK certificate (DER) to FILE, for `ssh-tpm-ca device add --ek-cert FILE`
    #[arg(long, value_name = "FILE")]
    pub ek_cert_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TimerArgs {
    #[command(flatten)]
    pub tpm: TpmArgs,

    #[command(flatten)]
    pub net: NetArgs,

    /// Keys the timer renews (repeatable) [default: as `ssh-tpm-cert renew`]
    #[arg(short = 'f', value_name = "KEY")]
    pub keys: Vec<PathBuf>,

    /// The CA the timer asks instead of the one enrolled with (`renew --ca`)
    #[arg(long, value_name = "URL")]
    pub ca: Option<String>,

    /// Replace units that already exist
    #[arg(long)]
    pub force: bool,
}
