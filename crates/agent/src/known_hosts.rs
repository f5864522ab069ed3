//! Host keys from known_hosts files (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT), looked up as
//! `ssh-add -h` does to build destination constraints: plain and hashed (`|1|salt|hash`)
//! host names, patterns with `*`, `?` and `!`, and `[host]:port` entries.

use std::path::{Path, PathBuf};

use base64ct::Encoding;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::destination::glob;

/// The files `ssh-add -h` reads when no `-H` is given, the user's first.
pub fn default_files(home: Option<&Path>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = home {
        files.push(home.join(".ssh/known_hosts"));
        files.push(home.join(".ssh/known_hosts2"));
    }
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts2"));
    files
}

/// What the files know about one host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostKeys {
    /// Its keys, as wire blobs, in file order.
    pub keys: Vec<Vec<u8>>,
    /// `@cert-authority` lines that match it; the agent does not take CA destinations.
    pub authorities: usize,
}

/// The keys of `host` (a name as given to ssh, or `[name]:port`) in `files`; files that do
/// not exist are skipped, unreadable ones are an error.
pub fn lookup(host: &str, files: &[PathBuf]) -> Result<HostKeys, String> {
    let host = host.to_ascii_lowercase();
    let mut found = HostKeys::default();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        for line in text.lines() {
            match parse_line(line, &host) {
                Some(Entry::Key(blob)) if !found.keys.contains(&blob) => found.keys.push(blob),
                Some(Entry::Authority) => found.authorities += 1,
                _ => {}
            }
        }
    }
    Ok(found)
}

/// A known_hosts line that names the host.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Key(Vec<u8>),
    Authority,
}

/// `[@marker] hostnames keytype base64 [comment]`, when `hostnames` matches `host`.
fn parse_line(line: &str, host: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut names = fields.next()?;
    let marker = names.strip_prefix('@');
    if marker.is_some() {
        names = fields.next()?;
    }
    if !names_match(names, host) {
        return None;
    }
    let _key_type = fields.next()?;
    let blob = base64ct::Base64::decode_vec(fields.next()?).ok()?;
    match marker {
        None => Some(Entry::Key(blob)),
        Some("cert-authority") => Some(Entry::Authority),
        // @revoked and unknown markers never add a key.
        Some(_) => None,
    }
}

/// A hostnames field: one hashed name, or a comma-separated pattern list where a matching
/// `!pattern` excludes the host whatever else matches (OpenSSH's `match_hostname`).
fn names_match(names: &str, host: &str) -> bool {
    if let Some(hashed) = names.strip_prefix("|1|") {
        return hashed_matches(hashed, host);
    }
    let mut positive = false;
    for pattern in names.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('!') {
            Some(negated) if glob(host.as_bytes(), negated.as_bytes()) => return false,
            Some(_) => {}
            None => positive |= glob(host.as_bytes(), pattern.as_bytes()),
        }
    }
    positive
}

/// `salt|hash`, both base64: HMAC-SHA1 of the host name keyed with the salt.
fn hashed_matches(hashed: &str, host: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        base64ct::Base64::decode_vec(salt),
        base64ct::Base64::decode_vec(hash),
    ) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(host.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn blob() -> Vec<u8> {
        base64ct::Base64::decode_vec(KEY).expect("base64")
    }

    #[test]
    fn plain_patterns_and_negation() {
        let line = format!("bastion,*.example.com,!bad.example.com ssh-ed25519 {KEY} c");
        assert_eq!(parse_line(&line, "bastion"), Some(Entry::Key(blob())));
        assert_eq!(
            parse_line(&line, "db.example.com"),
            Some(Entry::Key(blob()))
        );
        assert_eq!(parse_line(&line, "bad.example.com"), None);
        assert_eq!(parse_line(&line, "other"), None);
        let port = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}");
        assert_eq!(
            parse_line(&port, "[127.0.0.1]:2222"),
            Some(Entry::Key(blob()))
        );
        assert_eq!(parse_line(&port, "127.0.0.1"), None);
        assert_eq!(parse_line("# bastion ssh-ed25519 x", "bastion"), None);
    }

    /// A line as ssh writes it with HashKnownHosts yes, for the name `bastion`: the salt is
    /// 20 bytes of 0x01, and the hash is HMAC-SHA1(salt, "bastion").
    #[test]
    fn hashed_names_match_their_host_only() {
        let salt = [1u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).expect("any key length");
        mac.update(b"bastion");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY}",
            base64ct::Base64::encode_string(&salt),
            base64ct::Base64::encode_string(&hash)
        );
        assert_eq!(parse_line(&line, "bastion"), Some(Entry::Key(blob())));
        assert_eq!(parse_line(&line, "bastion2"), None);
    }

    #[test]
    fn markers() {
        let ca = format!("@cert-authority *.example.com ssh-ed25519 {KEY}");
        assert_eq!(parse_line(&ca, "db.example.com"), Some(Entry::Authority));
        let revoked = format!("@revoked db.example.com ssh-ed25519 {KEY}");
        assert_eq!(parse_line(&revoked, "db.example.com"), None);
    }

    #[test]
    fn missing_files_are_skipped_and_names_are_case_insensitive() {
        let dir = std::env::temp_dir().join(format!("ssh-tpm-known-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("known_hosts");
        std::fs::write(
            &file,
            format!("Bastion ssh-ed25519 {KEY}\nbastion ssh-ed25519 {KEY}\n"),
        )
        .expect("write");
        let found = lookup("BASTION", &[dir.join("missing"), file]).expect("lookup");
        assert_eq!(found.keys, vec![blob()], "found once");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
