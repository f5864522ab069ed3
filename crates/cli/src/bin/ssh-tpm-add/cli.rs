//! Command line of `ssh-tpm-add`, with ssh-add's `-c`, `-t`, `-h` and `-H`.

use std::path::PathBuf;

use clap::Parser;

/// Add TPM key files to the agent at $SSH_TPM_AUTH_SOCK (or $SSH_AUTH_SOCK).
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-add", version, disable_help_flag = true)]
pub struct Args {
    /// Print help (-h restricts destinations, as in ssh-add)
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,

    /// Ask for confirmation (through SSH_ASKPASS) before each use of the keys
    #[arg(short = 'c')]
    pub confirm: bool,

    /// Remove the keys from the agent after LIFE: seconds, or a time such as 90s, 10m, 1h30m
    /// (sshd_config(5) TIME FORMATS)
    #[arg(short = 't', value_name = "LIFE", value_parser = parse_lifetime)]
    pub lifetime: Option<u32>,

    /// Use the keys only to log in to DEST, as ssh-add -h (repeatable): HOST, USER@HOST, or
    /// FROM>[USER@]TO for logins from host FROM through a forwarded agent. Host keys are
    /// looked up in known_hosts
    #[arg(short = 'h', value_name = "DEST")]
    pub destinations: Vec<String>,

    /// known_hosts file for the hosts of -h (repeatable) [default: ~/.ssh/known_hosts,
    /// ~/.ssh/known_hosts2, /etc/ssh/ssh_known_hosts, /etc/ssh/ssh_known_hosts2]
    #[arg(short = 'H', value_name = "FILE")]
    pub known_hosts: Vec<PathBuf>,

    /// Key files (NAME.tpm); NAME-cert.pub is added with each when present
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Seconds in a lifetime such as `90`, `90s`, `10m` or `1h30m`, as ssh-add reads `-t`
/// (s, m, h, d, w; either case; no unit means seconds).
fn parse_lifetime(text: &str) -> Result<u32, String> {
    let invalid =
        || format!("{text:?} is not a lifetime; give seconds, or a time such as 90s, 10m or 1h30m");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit = match rest.chars().next() {
            None => 1,
            Some(c) => {
                rest = &rest[c.len_utf8()..];
                match c.to_ascii_lowercase() {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    'w' => 604_800,
                    _ => return Err(invalid()),
                }
            }
        };
        total = value
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(invalid)?;
    }
    if total == 0 {
        return Err(
            "a lifetime of 0 seconds would remove the key at once; leave out -t to \
                    keep it"
                .into(),
        );
    }
    u32::try_from(total).map_err(|_| format!("{text:?} is too long; at most {} s", u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_like_ssh_add() {
        assert_eq!(parse_lifetime("2"), Ok(2));
        assert_eq!(parse_lifetime("90s"), Ok(90));
        assert_eq!(parse_lifetime("10m"), Ok(600));
        assert_eq!(parse_lifetime("1h30m"), Ok(5400));
        assert_eq!(parse_lifetime("1W2D"), Ok(604_800 + 2 * 86_400));
    }

    #[test]
    fn bad_lifetimes_say_what_to_give() {
        for bad in ["", "m", "10x", "-5", "1h 30m", "9999999999999999999999"] {
            let error = parse_lifetime(bad).expect_err(bad);
            assert!(error.contains("not a lifetime"), "{bad:?}: {error}");
        }
        assert!(parse_lifetime("0")
            .expect_err("zero")
            .contains("leave out -t"));
        assert!(parse_lifetime("8000w")
            .expect_err("too long")
            .contains("too long"));
    }
}
