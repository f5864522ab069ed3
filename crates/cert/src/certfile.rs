//! `NAME-cert.pub`, the certificate beside a key file `NAME.tpm`: reading it, deciding when
//! it is due for renewal, writing a new one in place of the old, and describing it.
//!
//! A certificate is due for renewal when less than a third of its lifetime is left, so a
//! 16-hour certificate is replaced about 5 hours before it ends (the timer checks hourly).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ssh_key::public::KeyData;
use ssh_key::Certificate;

use crate::error::{Error, Result};
use crate::files;

/// Largest certificate file read; OpenSSH certificates are a few KiB.
const MAX_CERT_FILE: u64 = 64 * 1024;

/// `NAME.tpm` for `NAME` or `NAME.tpm`.
pub fn key_path(name: &Path) -> PathBuf {
    if name.extension().is_some_and(|e| e == "tpm") {
        name.to_path_buf()
    } else {
        let mut path = name.as_os_str().to_owned();
        path.push(".tpm");
        PathBuf::from(path)
    }
}

/// `NAME-cert.pub` for the key file `NAME.tpm`.
pub fn cert_path(key: &Path) -> PathBuf {
    ssh_tpm_agent_core::keyring::sibling(&key_path(key), "-cert.pub")
}

/// The time now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a certificate stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Its validity has not started (a clock behind the CA's).
    NotYetValid,
    /// Valid, with more than a third of its lifetime left.
    Good,
    /// Valid, but less than a third of its lifetime is left.
    RenewDue,
    /// Its validity is over.
    Expired,
}

impl Standing {
    /// Where a certificate valid from `valid_after` to `valid_before` stands at `now`.
    pub fn at(valid_after: u64, valid_before: u64, now: u64) -> Self {
        if now >= valid_before {
            Standing::Expired
        } else if now < valid_after {
            Standing::NotYetValid
        } else {
            let life = valid_before - valid_after;
            let left = valid_before - now;
            // left < life / 3, without rounding.
            if left.saturating_mul(3) < life {
                Standing::RenewDue
            } else {
                Standing::Good
            }
        }
    }

    /// Whether a new certificate should be asked for.
    pub fn needs_renewal(self) -> bool {
        matches!(self, Standing::RenewDue | Standing::Expired)
    }
}

/// Reads the certificate at `path`; `None` when there is no file.
pub fn read(path: &Path) -> Result<Option<Certificate>> {
    let text = match read_small(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    parse(&text)
        .map(Some)
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_CERT_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// `valid_before` of a certificate that never expires, as read here: OpenSSH writes
/// `u64::MAX` (`ssh-keygen -s` without `-V`), which the `ssh-key` crate cannot hold, so
/// [`parse`] lowers it to this.
pub const FOREVER: u64 = i64::MAX as u64;

/// Reads one certificate line (`TYPE BASE64 [COMMENT]`). A certificate valid forever
/// (OpenSSH PROTOCOL.certkeys: `valid before` 0xffffffffffffffff) is read with its times
/// capped at [`FOREVER`]; its signature then no longer verifies, which no reader here needs.
pub fn parse(line: &str) -> Result<Certificate, String> {
    let line = line.trim();
    let not_one = |e: ssh_key::Error| format!("not an OpenSSH certificate ({e})");
    match Certificate::from_openssh(line) {
        Err(ssh_key::Error::Time) => {
            let capped = cap_times(line).ok_or_else(|| not_one(ssh_key::Error::Time))?;
            Certificate::from_openssh(&capped).map_err(not_one)
        }
        other => other.map_err(not_one),
    }
}

/// `line` with `valid after` and `valid before` capped at [`FOREVER`]; `None` when the blob
/// is not laid out as PROTOCOL.certkeys says.
fn cap_times(line: &str) -> Option<String> {
    use base64ct::{Base64, Encoding as _};
    let mut words = line.split_whitespace();
    let (kind, blob) = (words.next()?, words.next()?);
    let mut bytes = Base64::decode_vec(blob).ok()?;

    // The key's public fields, each a string or an mpint (both length-prefixed).
    let fields = match kind {
        "ssh-ed25519-cert-v01@openssh.com" => 1,
        "ssh-rsa-cert-v01@openssh.com" | "sk-ssh-ed25519-cert-v01@openssh.com" => 2,
        k if k.starts_with("ecdsa-sha2-") => 2,
        k if k.starts_with("sk-ecdsa-sha2-") => 3,
        "ssh-dss-cert-v01@openssh.com" => 4,
        _ => return None,
    };
    let mut at = 0;
    let skip_string = |at: &mut usize, bytes: &[u8]| -> Option<()> {
        let length = bytes.get(*at..*at + 4)?;
        let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
        *at = at
            .checked_add(4 + length)
            .filter(|end| *end <= bytes.len())?;
        Some(())
    };
    // type, nonce, the key, serial (u64), type (u32), key id, principals.
    for _ in 0..2 + fields {
        skip_string(&mut at, &bytes)?;
    }
    at += 8 + 4;
    skip_string(&mut at, &bytes)?;
    skip_string(&mut at, &bytes)?;
    for _ in 0..2 {
        let time = bytes.get_mut(at..at + 8)?;
        let value = u64::from_be_bytes(time.try_into().ok()?);
        time.copy_from_slice(&value.min(FOREVER).to_be_bytes());
        at += 8;
    }
    let encoded = Base64::encode_string(&bytes);
    Some(
        [kind, &encoded]
            .into_iter()
            .chain(words)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Whether the certificate at `path` should be replaced for `key` at `now`: missing,
/// unreadable, for another key, or due. Returns the reason in words when so.
pub fn renewal_reason(path: &Path, key: &KeyData, now: u64) -> Option<String> {
    let cert = match read(path) {
        Ok(Some(cert)) => cert,
        Ok(None) => return Some(format!("{} does not exist", path.display())),
        Err(e) => return Some(e.to_string()),
    };
    if cert.public_key() != key {
        return Some(format!("{} certifies another key", path.display()));
    }
    match Standing::at(cert.valid_after(), cert.valid_before(), now) {
        Standing::Expired => Some(format!("{} has expired", path.display())),
        Standing::RenewDue => Some(format!(
            "{} has less than a third of its life left",
            path.display()
        )),
        Standing::Good | Standing::NotYetValid => None,
    }
}

/// Writes `line` as the certificate for `key` at `path`, replacing the old one only once
/// the new one is complete on disk. A line that is not a certificate for `key` is refused
/// and the old file kept.
pub fn install(path: &Path, line: &str, key: &KeyData) -> Result<Certificate> {
    let cert = parse(line).map_err(|e| Error::BadAnswer {
        what: "the CA".into(),
        reason: format!("the certificate does not parse: {e}"),
    })?;
    if cert.public_key() != key {
        return Err(Error::BadAnswer {
            what: "the CA".into(),
            reason: "the certificate is for another key; the old one was kept".into(),
        });
    }
    let mut text = line.trim().to_string();
    text.push('\n');
    files::write_atomic(path, text.as_bytes(), 0o644)?;
    Ok(cert)
}

/// A Unix time as local date and time, `2026-12-04 13:37:00 +01:00`.
pub fn format_time(secs: u64) -> String {
    if secs >= i64::MAX as u64 {
        return "forever".into();
    }
    match chrono::DateTime::from_timestamp(secs as i64, 0) {
        Some(time) => time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        None => format!("@{secs}"),
    }
}

/// A duration in hours and minutes, `5h 12m`.
pub fn format_duration(secs: u64) -> String {
    let (hours, minutes) = (secs / 3600, (secs % 3600) / 60);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h {m:02}m"),
    }
}

/// What `ssh-tpm-cert status` prints for one certificate, one fact a line.
pub fn describe(cert: &Certificate, now: u64) -> Vec<String> {
    let standing = Standing::at(cert.valid_after(), cert.valid_before(), now);
    let until = format_time(cert.valid_before());
    let validity = match standing {
        Standing::Good if cert.valid_before() >= FOREVER => "valid forever (no expiry)".into(),
        Standing::Good => format!(
            "valid until {until} ({} left)",
            format_duration(cert.valid_before() - now)
        ),
        Standing::RenewDue => format!(
            "valid until {until} ({} left; renew due)",
            format_duration(cert.valid_before() - now)
        ),
        Standing::Expired => format!("expired at {until}"),
        Standing::NotYetValid => format!(
            "not valid before {} (is this machine's clock right?); valid until {until}",
            format_time(cert.valid_after())
        ),
    };
    let principals = cert.valid_principals();
    let principals = if principals.is_empty() {
        "(none: any user)".to_string()
    } else {
        principals.join(", ")
    };
    vec![
        format!("principals: {principals}"),
        format!("key id: {}", cert.key_id()),
        validity,
        format!("serial: {}", cert.serial()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_beside_the_key() {
        assert_eq!(
            key_path(Path::new("a/id_ecdsa")),
            Path::new("a/id_ecdsa.tpm")
        );
        assert_eq!(
            key_path(Path::new("a/id_ecdsa.tpm")),
            Path::new("a/id_ecdsa.tpm")
        );
        assert_eq!(
            cert_path(Path::new("a/id_ecdsa.tpm")),
            Path::new("a/id_ecdsa-cert.pub")
        );
        assert_eq!(
            cert_path(Path::new("a/id_ecdsa")),
            Path::new("a/id_ecdsa-cert.pub")
        );
    }

    #[test]
    fn renewal_is_due_in_the_last_third() {
        // A 16-hour certificate from t = 1000.
        let (after, before) = (1000, 1000 + 16 * 3600);
        let third = 16 * 3600 / 3;
        assert_eq!(Standing::at(after, before, 999), Standing::NotYetValid);
        assert_eq!(Standing::at(after, before, after), Standing::Good);
        assert_eq!(Standing::at(after, before, before - third), Standing::Good);
        assert_eq!(
            Standing::at(after, before, before - third + 1),
            Standing::RenewDue
        );
        assert_eq!(Standing::at(after, before, before - 1), Standing::RenewDue);
        assert_eq!(Standing::at(after, before, before), Standing::Expired);
        assert!(Standing::Expired.needs_renewal());
        assert!(Standing::RenewDue.needs_renewal());
        assert!(!Standing::Good.needs_renewal());
        assert!(!Standing::NotYetValid.needs_renewal());
        // A lifetime not divisible by 3: 10 s, due when fewer than 3.33 s are left.
        assert_eq!(Standing::at(0, 10, 6), Standing::Good);
        assert_eq!(Standing::at(0, 10, 7), Standing::RenewDue);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(600), "10m");
        assert_eq!(format_duration(5 * 3600 + 7 * 60), "5h 07m");
        assert_eq!(format_time(u64::MAX), "forever");
    }

    /// Signs `public` (a `.pub` file) with a fresh CA key via ssh-keygen, valid for
    /// `validity` (ssh-keygen -V); returns the certificate line.
    fn sign(dir: &Path, public: &Path, validity: &str) -> String {
        let ca = dir.join("ca");
        if !ca.exists() {
            keygen(&["-q", "-t", "ed25519", "-N", "", "-f"], &ca);
        }
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args([
                "-I",
                "user=alice device=ab",
                "-n",
                "alice,admins",
                "-z",
                "42",
            ])
            .args(["-V", validity])
            .arg(public)
            .output()
            .expect("run ssh-keygen -s");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = sibling(public, "-cert.pub");
        let line = std::fs::read_to_string(&cert).expect("read the certificate");
        std::fs::remove_file(cert).expect("remove ssh-keygen's copy");
        line
    }

    fn sibling(public: &Path, suffix: &str) -> PathBuf {
        let stem = public.file_stem().expect("stem").to_string_lossy();
        public.with_file_name(format!("{stem}{suffix}"))
    }

    fn keygen(args: &[&str], path: &Path) {
        let out = std::process::Command::new("ssh-keygen")
            .args(args)
            .arg(path)
            .output()
            .expect("run ssh-keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A user key made by ssh-keygen: its .pub path and key data.
    fn user_key(dir: &Path, name: &str) -> (PathBuf, KeyData) {
        let path = dir.join(name);
        keygen(&["-q", "-t", "ecdsa", "-N", "", "-f"], &path);
        let public = PathBuf::from(format!("{}.pub", path.display()));
        let text = std::fs::read_to_string(&public).expect("read .pub");
        let key = ssh_key::PublicKey::from_openssh(text.trim()).expect("parse .pub");
        (public, key.key_data().clone())
    }

    #[test]
    fn installing_checks_the_certificate_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (alice_pub, alice) = user_key(dir.path(), "alice");
        let (bob_pub, _) = user_key(dir.path(), "bob");
        let path = dir.path().join("alice-cert.pub");
        assert!(renewal_reason(&path, &alice, now())
            .expect("missing")
            .contains("does not exist"));

        let good = sign(dir.path(), &alice_pub, "-5m:+16h");
        let cert = install(&path, &good, &alice).expect("install");
        assert_eq!(cert.serial(), 42);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), good);
        assert_eq!(renewal_reason(&path, &alice, now()), None);
        let lines = describe(&cert, now());
        assert_eq!(lines[0], "principals: alice, admins");
        assert_eq!(lines[1], "key id: user=alice device=ab");
        assert!(lines[2].starts_with("valid until "), "{}", lines[2]);
        assert_eq!(lines[3], "serial: 42");

        // Not a certificate, or one for another key: refused, the old file stays.
        let before = std::fs::read(&path).expect("read");
        assert!(install(&path, "ssh-ed25519 AAAA garbage", &alice).is_err());
        let bobs = sign(dir.path(), &bob_pub, "-5m:+16h");
        let error = install(&path, &bobs, &alice)
            .expect_err("another key")
            .to_string();
        assert!(error.contains("another key"), "{error}");
        assert_eq!(std::fs::read(&path).expect("read"), before);

        // Near its end, expired, and for another key: due.
        let late = sign(dir.path(), &alice_pub, "-15h:+30m");
        install(&path, &late, &alice).expect("install");
        let reason = renewal_reason(&path, &alice, now()).expect("due");
        assert!(reason.contains("third of its life"), "{reason}");
        assert!(describe(&parse(&late).expect("parse"), now())[2].contains("renew due"));
        let expired = sign(dir.path(), &alice_pub, "-2h:-1h");
        install(&path, &expired, &alice).expect("install");
        assert!(renewal_reason(&path, &alice, now())
            .expect("due")
            .contains("expired"));
        std::fs::write(&path, &bobs).expect("write bob's");
        assert!(renewal_reason(&path, &alice, now())
            .expect("due")
            .contains("another key"));
        std::fs::write(&path, "junk\n").expect("write junk");
        let reason = renewal_reason(&path, &alice, now()).expect("due");
        assert!(reason.contains("not an OpenSSH certificate"), "{reason}");
        assert!(
            !reason.contains("--force"),
            "advice while renewing: {reason}"
        );
    }

    /// `ssh-keygen -s` without `-V` writes `valid before` u64::MAX: such a certificate is
    /// read, valid forever, and never due.
    #[test]
    fn a_certificate_valid_forever_is_never_due() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (alice_pub, alice) = user_key(dir.path(), "alice");
        let path = dir.path().join("alice-cert.pub");
        let forever = sign(dir.path(), &alice_pub, "always:forever");
        std::fs::write(&path, &forever).expect("write");
        let cert = read(&path).expect("read").expect("present");
        assert_eq!(cert.valid_before(), FOREVER);
        assert_eq!(cert.valid_after(), 0);
        assert_eq!(cert.serial(), 42);
        assert_eq!(cert.valid_principals(), ["alice", "admins"]);
        assert_eq!(renewal_reason(&path, &alice, now()), None);
        assert_eq!(describe(&cert, now())[2], "valid forever (no expiry)");
        assert!(cap_times("ssh-ed25519-cert-v01@openssh.com AAAA").is_none());
    }
}
