//! `-h` destinations, written as ssh-add takes them (`host`, `user@host`, `from>[user@]to`),
//! made into destination constraints with the hosts' keys from known_hosts.

use std::path::PathBuf;

use ssh_tpm::CliError;
use ssh_tpm_agent_core::constraint::{Destination, Hop};
use ssh_tpm_agent_core::known_hosts;

/// The destination `spec` names, its hosts' keys looked up in `files`.
pub fn parse(spec: &str, files: &[PathBuf]) -> Result<Destination, CliError> {
    let (from, to) = match spec.split_once('>') {
        None => (None, spec),
        Some((from, to)) => (Some(from), to),
    };
    if to.contains('>') {
        return Err(usage(
            spec,
            "has more than one '>'; give each hop as its own -h",
        ));
    }
    let from = match from {
        None => Hop::default(),
        Some(from) => {
            let hop = hop(spec, from, files)?;
            if hop.user.is_some() {
                return Err(usage(spec, "names a user on the host it comes from"));
            }
            hop
        }
    };
    let to = hop(spec, to, files)?;
    Ok(Destination { from, to })
}

/// `[user@]host`, with the host's keys.
fn hop(spec: &str, text: &str, files: &[PathBuf]) -> Result<Hop, CliError> {
    let (user, host) = match text.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), host),
        None => (None, text),
    };
    if host.is_empty() {
        return Err(usage(spec, "names no host"));
    }
    let found = known_hosts::lookup(host, files).map_err(CliError::Usage)?;
    if found.keys.is_empty() {
        let authorities = if found.authorities > 0 {
            " (only @cert-authority lines match it, and host CAs cannot be destinations)"
        } else {
            ""
        };
        let searched: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(CliError::Usage(format!(
            "no host key for {host} in {}{authorities}; log in to it once with ssh, or name \
             its known_hosts file with -H",
            searched.join(", ")
        )));
    }
    Ok(Hop {
        user: user.filter(|u| !u.is_empty()),
        hostname: Some(host.to_string()),
        keys: found.keys,
    })
}

fn usage(spec: &str, problem: &str) -> CliError {
    CliError::Usage(format!(
        "-h {spec:?} {problem}; write HOST, USER@HOST or FROM>[USER@]TO"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBsBo8Y3lpbqNcXkCwydu3EFD+GuWZ60O/4cVq9rS4Mw";

    fn known_hosts() -> (PathBuf, Vec<PathBuf>) {
        let dir = std::env::temp_dir().join(format!("ssh-tpm-add-dest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("known_hosts");
        std::fs::write(&file, format!("a ssh-ed25519 {A}\nb ssh-ed25519 {B}\n")).expect("write");
        (dir, vec![file])
    }

    #[test]
    fn hops_are_read_like_ssh_add() {
        let (dir, files) = known_hosts();
        let direct = parse("deploy@a", &files).expect("parses");
        assert_eq!(direct.from, Hop::default());
        assert_eq!(direct.to.user.as_deref(), Some("deploy"));
        assert_eq!(direct.to.hostname.as_deref(), Some("a"));
        assert_eq!(direct.to.keys.len(), 1);

        let hop = parse("a>b", &files).expect("parses");
        assert_eq!(hop.from.hostname.as_deref(), Some("a"));
        assert_eq!(hop.to.hostname.as_deref(), Some("b"));
        assert_ne!(hop.from.keys, hop.to.keys);

        for (bad, says) in [
            ("a>b>a", "more than one"),
            ("u@a>b", "user on the host it comes from"),
            ("u@", "names no host"),
            ("c", "no host key for c"),
        ] {
            let error = parse(bad, &files).expect_err(bad).to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
