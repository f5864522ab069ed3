//! Command line of `ssh-tpm-keygen`, shaped like `ssh-keygen` where it can be.

use std::path::PathBuf;

use clap::Parser;
use ssh_tpm::tpm_args::TpmArgs;

/// Create SSH keys inside the TPM. The private key never leaves it; NAME.tpm holds the
/// TPM-encrypted blob (mode 0600) and NAME.pub the public key.
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-keygen", version)]
pub struct Args {
    #[command(flatten)]
    pub tpm: TpmArgs,

    /// Key type: ecdsa or rsa
    #[arg(short = 't', value_name = "TYPE", default_value = "ecdsa")]
    pub key_type: String,

    /// Key size: 256, 384 or 521 for ecdsa; 2048 or 3072 for rsa
    #[arg(short = 'b', value_name = "BITS")]
    pub bits: Option<u32>,

    /// Comment stored in the .pub file [default: user@host]
    #[arg(short = 'C', value_name = "COMMENT")]
    pub comment: Option<String>,

    /// Output name: writes NAME.tpm and NAME.pub [default: ~/.ssh/id_ecdsa or id_rsa]
    #[arg(short = 'f', value_name = "NAME")]
    pub file: Option<PathBuf>,

    /// PIN for the new key; empty means no PIN. Asked on the terminal when not given
    #[arg(short = 'N', value_name = "PIN")]
    pub pin: Option<String>,

    /// List the key types and sizes this TPM can create, then exit
    #[arg(long)]
    pub supported: bool,
}
