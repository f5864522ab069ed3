//! The SSH user certificates the CA signs (OpenSSH PROTOCOL.certkeys): principals, key id,
//! serial, validity window and extensions, as docs/protocol.md ("Certificates") fixes them.

use std::collections::BTreeMap;
use std::time::Duration;

use rand_core::{OsRng, RngCore as _};
use ssh_key::certificate::{Builder, CertType, Certificate};
use ssh_key::{PrivateKey, PublicKey};

/// Certificates are valid from this long before they are issued, for clock differences.
pub const BACKDATE_SECS: u64 = 5 * 60;
/// The extension naming the device a certificate was issued to.
pub const DEVICE_EXTENSION: &str = "device@ssh-tpm";
/// The standard extensions every certificate carries.
pub const PERMIT_EXTENSIONS: [&str; 5] = [
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// What goes into one certificate.
#[derive(Debug, Clone)]
pub struct CertificateSpec<'a> {
    /// The key being certified.
    pub key: &'a PublicKey,
    /// The user (ID-token claim value).
    pub user: &'a str,
    /// The device id.
    pub device_id: &'a str,
    /// The principals, in order.
    pub principals: &'a [String],
    /// A random non-zero serial.
    pub serial: u64,
    /// Unix seconds of issuance.
    pub now: u64,
    /// The configured lifetime.
    pub validity: Duration,
}

/// Signs the certificate described by `spec` with the CA key.
///
/// # Errors
///
/// [`ssh_key::Error`] when a field cannot be encoded or the CA key cannot sign.
pub fn sign(ca: &PrivateKey, spec: &CertificateSpec<'_>) -> Result<Certificate, ssh_key::Error> {
    let valid_after = spec.now.saturating_sub(BACKDATE_SECS);
    let valid_before = spec.now.saturating_add(spec.validity.as_secs());
    let mut builder = Builder::new_with_random_nonce(
        &mut OsRng,
        spec.key.key_data().clone(),
        valid_after,
        valid_before,
    )?;
    builder
        .serial(spec.serial)?
        .key_id(key_id(spec.user, spec.device_id))?
        .cert_type(CertType::User)?;
    for principal in spec.principals {
        builder.valid_principal(principal)?;
    }
    for name in PERMIT_EXTENSIONS {
        builder.extension(name, "")?;
    }
    builder.extension(DEVICE_EXTENSION, spec.device_id)?;
    builder.comment(spec.key.comment())?;
    builder.sign(ca)
}

/// The key id: `user=SUBJECT device=DEVICE_ID`.
pub fn key_id(user: &str, device_id: &str) -> String {
    format!("user={user} device={device_id}")
}

/// A random non-zero serial.
pub fn random_serial() -> u64 {
    loop {
        let serial = OsRng.next_u64();
        if serial != 0 {
            return serial;
        }
    }
}

/// The principals for a user: the user claim's value first, then the principals of every
/// group the user is in (configuration order), without repeats.
pub fn principals(
    user: &str,
    groups: &[String],
    mapping: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut out = vec![user.to_owned()];
    for (group, mapped) in mapping {
        if groups.iter().any(|g| g == group) {
            for p in mapped {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::{Algorithm, HashAlg};

    fn ca_key() -> PrivateKey {
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap()
    }

    fn user_key() -> PublicKey {
        let mut k = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone();
        k.set_comment("alice@laptop");
        k
    }

    #[test]
    fn every_field_is_as_the_protocol_says() {
        let ca = ca_key();
        let key = user_key();
        let principals = vec!["alice".to_owned(), "admin".to_owned()];
        let spec = CertificateSpec {
            key: &key,
            user: "alice",
            device_id: "ab12",
            principals: &principals,
            serial: 0xdead_beef_0000_0001,
            now: 1_800_000_000,
            validity: Duration::from_secs(16 * 3600),
        };
        let cert = sign(&ca, &spec).unwrap();
        let text = cert.to_openssh().unwrap();
        let cert = Certificate::from_openssh(&text).unwrap();

        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.serial(), 0xdead_beef_0000_0001);
        assert_eq!(cert.key_id(), "user=alice device=ab12");
        assert_eq!(cert.valid_principals(), principals.as_slice());
        assert_eq!(cert.valid_after(), 1_800_000_000 - 300);
        assert_eq!(cert.valid_before(), 1_800_000_000 + 57_600);
        assert_eq!(cert.public_key(), key.key_data());
        assert_eq!(cert.signature_key(), ca.public_key().key_data());
        assert!(cert.critical_options().is_empty());
        let ext: Vec<_> = cert.extensions().iter().collect();
        assert_eq!(ext.len(), 6);
        for name in PERMIT_EXTENSIONS {
            assert_eq!(cert.extensions().get(name).map(String::as_str), Some(""));
        }
        assert_eq!(cert.extensions().get(DEVICE_EXTENSION).unwrap(), "ab12");
        assert_eq!(cert.comment(), "alice@laptop");
        let fp = ca.public_key().fingerprint(HashAlg::Sha256);
        cert.validate_at(1_800_000_000, [&fp]).unwrap();
        assert!(cert.validate_at(1_800_000_000 + 57_600, [&fp]).is_err());
    }

    #[test]
    fn ssh_keygen_reads_the_certificate() {
        let Ok(out) = std::process::Command::new("ssh-keygen").arg("-?").output() else {
            panic!("ssh-keygen is needed for this test (Debian: openssh-client)");
        };
        drop(out);
        let ca = ca_key();
        let key = user_key();
        let principals = vec!["alice".to_owned()];
        let now = crate::now();
        let spec = CertificateSpec {
            key: &key,
            user: "alice@example.com",
            device_id: "00ff",
            principals: &principals,
            serial: 77,
            now,
            validity: Duration::from_secs(3600),
        };
        let cert = sign(&ca, &spec).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id-cert.pub");
        std::fs::write(&path, cert.to_openssh().unwrap()).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-L")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("user certificate"), "{text}");
        assert!(
            text.contains("Key ID: \"user=alice@example.com device=00ff\""),
            "{text}"
        );
        assert!(text.contains("Serial: 77"), "{text}");
        assert!(text.contains("permit-user-rc"), "{text}");
        assert!(text.contains("device@ssh-tpm"), "{text}");
        assert!(text.contains("alice"), "{text}");
    }

    #[test]
    fn principals_come_from_the_user_and_mapped_groups() {
        let mapping = BTreeMap::from([
            (
                "admins".to_owned(),
                vec!["root".to_owned(), "alice".to_owned()],
            ),
            ("dev".to_owned(), vec!["deploy".to_owned()]),
            ("ops".to_owned(), vec!["pager".to_owned()]),
        ]);
        let groups = vec!["dev".to_owned(), "admins".to_owned(), "unmapped".to_owned()];
        assert_eq!(
            principals("alice", &groups, &mapping),
            ["alice", "root", "deploy"]
        );
        assert_eq!(principals("bob", &[], &mapping), ["bob"]);
    }

    #[test]
    fn serials_are_non_zero_and_vary() {
        let a = random_serial();
        let b = random_serial();
        assert!(a != 0 && b != 0 && a != b);
    }
}
