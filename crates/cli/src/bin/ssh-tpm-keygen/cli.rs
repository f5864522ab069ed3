//! Command line of `ssh-tpm-keygen`, shaped like `ssh-keygen` where it can be.

use std::path::PathBuf;

use clap::Parser;
use ssh_tpm::owner::OwnerArgs;
use ssh_tpm::tpm_args::TpmArgs;
use ssh_tpm_keyfile::handle;

/// Create SSH keys inside the TPM. The private key never leaves it; NAME.tpm holds the
/// TPM-encrypted blob (mode 0600) and NAME.pub the public key.
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-keygen", version)]
pub struct Args {
    #[command(flatten)]
    pub tpm: TpmArgs,

    #[command(flatten)]
    pub owner: OwnerArgs,

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

    /// Create the TPM host keys that do not exist yet, without PIN, as ssh-keygen -A:
    /// ssh_tpm_host_ecdsa_key and ssh_tpm_host_rsa_key (.tpm and .pub) in --host-key-dir
    #[arg(
        short = 'A',
        conflicts_with_all = ["import", "wrap", "supported", "file", "key_type", "bits", "pin"]
    )]
    pub host_keys: bool,

    /// Directory of the host keys made by -A
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/ssh",
        requires = "host_keys"
    )]
    pub host_key_dir: PathBuf,

    /// Import FILE into the TPM: an OpenSSH, PKCS#8, SEC1 or PKCS#1 private key (ECDSA or
    /// RSA), or an importable key file made by --wrap. Writes NAME.tpm and NAME.pub, where
    /// NAME is -f or FILE (without .pem or .key)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key_type", "bits", "supported"])]
    pub import: Option<PathBuf>,

    /// Passphrase of the encrypted private key to import or wrap, as ssh-keygen's -P;
    /// asked on the terminal when the key is encrypted and this is not given. With -p, the
    /// key's old PIN
    #[arg(short = 'P', value_name = "PASSPHRASE")]
    pub passphrase: Option<String>,

    /// Change the PIN of the key in -f NAME.tpm, as ssh-keygen -p: the old PIN is -P, the
    /// new one -N (empty means no PIN); asked on the terminal when not given
    #[arg(
        short = 'p',
        requires = "file",
        conflicts_with_all = ["import", "wrap", "supported", "key_type", "bits", "comment"]
    )]
    pub change_pin: bool,

    /// Wrap the private key KEY for another machine's TPM, without using a TPM here: writes
    /// an importable key file (NAME.tpm) that only that TPM can import. Needs --wrap-with
    #[arg(
        long,
        value_name = "KEY",
        requires = "wrap_with",
        conflicts_with_all = ["import", "key_type", "bits", "supported"]
    )]
    pub wrap: Option<PathBuf>,

    /// The public key (PEM) of the other TPM's parent: its H-2 storage key (parent owner),
    /// or with --parent-handle a persistent storage key; from `tpm2_readpublic -f pem`
    #[arg(long, value_name = "PARENT.pem", requires = "wrap")]
    pub wrap_with: Option<PathBuf>,

    /// Parent of the key: owner (o), endorsement (e), null (n) for that hierarchy's H-2
    /// storage key, or a persistent storage key 0x81XXXXXX [default: owner]
    #[arg(long, value_name = "HANDLE", value_parser = parse_parent_handle)]
    pub parent_handle: Option<u32>,
}

/// Reads `--parent-handle`: a hierarchy by name or letter, or a persistent handle in hex.
/// Anything else is refused, never taken as the owner hierarchy.
pub fn parse_parent_handle(text: &str) -> Result<u32, String> {
    let refused = || {
        format!(
            "`{text}` is not a parent; use owner (o), endorsement (e), null (n) or a \
             persistent handle 0x81000000 to 0x81FFFFFF"
        )
    };
    match text {
        "owner" | "o" => Ok(handle::OWNER),
        "endorsement" | "e" => Ok(handle::ENDORSEMENT),
        "null" | "n" => Ok(handle::NULL),
        _ => {
            let hex = text
                .strip_prefix("0x")
                .or_else(|| text.strip_prefix("0X"))
                .ok_or_else(refused)?;
            let value = u32::from_str_radix(hex, 16).map_err(|_| refused())?;
            if hex.len() == 8 && handle::is_persistent(value) {
                Ok(value)
            } else {
                Err(refused())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_handles() {
        assert_eq!(parse_parent_handle("owner"), Ok(handle::OWNER));
        assert_eq!(parse_parent_handle("o"), Ok(handle::OWNER));
        assert_eq!(parse_parent_handle("e"), Ok(handle::ENDORSEMENT));
        assert_eq!(parse_parent_handle("null"), Ok(handle::NULL));
        assert_eq!(parse_parent_handle("0x81000001"), Ok(0x8100_0001));
        for bad in [
            "bogus",
            "",
            "0x40000001",
            "0x8100001",
            "81000001",
            "Owner",
            "p",
        ] {
            assert!(parse_parent_handle(bad).is_err(), "{bad}");
        }
    }
}
