//! OpenSSH key revocation lists (OpenSSH PROTOCOL.krl): one `KRL_SECTION_CERTIFICATES` for
//! the CA key, revoking certificates by serial. Unsigned: sshd reads it from a local file
//! (`RevokedKeys`), and `ssh-keygen -Q` checks certificates against it.
//!
//! OpenSSH refuses a whole KRL that lists serial 0 (krl.c revokes serial ranges from 1 up), and
//! an sshd that cannot read its `RevokedKeys` refuses every certificate login, so the encoder
//! refuses serial 0 rather than write such a list.

use ssh_encoding::{Encode as _, Writer as _};
use ssh_key::PublicKey;

/// `KRL_MAGIC`: "SSHKRL\n\0".
const KRL_MAGIC: u64 = 0x5353_484b_524c_0a00;
/// `KRL_FORMAT_VERSION`.
const KRL_FORMAT_VERSION: u32 = 1;
/// `KRL_SECTION_CERTIFICATES`.
const SECTION_CERTIFICATES: u8 = 1;
/// `KRL_SECTION_CERT_SERIAL_LIST`.
const CERT_SERIAL_LIST: u8 = 0x20;

/// Why a KRL was not encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KrlError {
    /// Serial 0 was asked for.
    #[error(
        "serial 0 cannot be revoked: the CA never issues it, and OpenSSH rejects a KRL that \
         lists it; take the serial from `ssh-tpm-ca audit`"
    )]
    ZeroSerial,
    /// The CA key could not be encoded.
    #[error("cannot encode the KRL: {0}")]
    Encoding(#[from] ssh_encoding::Error),
}

/// Encodes a KRL revoking `serials` of certificates signed by `ca`.
///
/// `version` is the KRL version number (callers use the generation time, so that a newer list
/// has a larger number); `generated` is Unix seconds.
///
/// # Errors
///
/// [`KrlError::ZeroSerial`] when `serials` holds 0; [`KrlError::Encoding`] when the CA key
/// cannot be encoded.
pub fn encode(
    ca: &PublicKey,
    serials: &[u64],
    version: u64,
    generated: u64,
    comment: &str,
) -> Result<Vec<u8>, KrlError> {
    if serials.contains(&0) {
        return Err(KrlError::ZeroSerial);
    }
    let mut serials = serials.to_vec();
    serials.sort_unstable();
    serials.dedup();

    let mut list = Vec::with_capacity(serials.len() * 8);
    for s in &serials {
        s.encode(&mut list)?;
    }
    let mut section = Vec::new();
    ca.key_data().encode_prefixed(&mut section)?;
    "".encode(&mut section)?; // reserved
    if !list.is_empty() {
        section.write(&[CERT_SERIAL_LIST])?;
        list.as_slice().encode(&mut section)?;
    }

    let mut out = Vec::new();
    KRL_MAGIC.encode(&mut out)?;
    KRL_FORMAT_VERSION.encode(&mut out)?;
    version.encode(&mut out)?;
    generated.encode(&mut out)?;
    0u64.encode(&mut out)?; // flags
    "".encode(&mut out)?; // reserved
    comment.encode(&mut out)?;
    out.write(&[SECTION_CERTIFICATES])?;
    section.as_slice().encode(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use rand_core::OsRng;
    use ssh_key::{Algorithm, PrivateKey};

    use super::*;
    use crate::certificate::{sign, CertificateSpec};

    fn write_cert(
        dir: &std::path::Path,
        name: &str,
        ca: &PrivateKey,
        serial: u64,
    ) -> std::path::PathBuf {
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let principals = vec!["alice".to_owned()];
        let spec = CertificateSpec {
            key: key.public_key(),
            user: "alice",
            device_id: "d1",
            principals: &principals,
            serial,
            now: crate::now(),
            validity: Duration::from_secs(3600),
        };
        let path = dir.join(format!("{name}-cert.pub"));
        let cert = sign(ca, &spec).unwrap();
        std::fs::write(&path, cert.to_openssh().unwrap()).unwrap();
        path
    }

    /// `ssh-keygen -Q -f KRL FILE`: exit 0 when not revoked, 1 when revoked.
    fn revoked(krl: &std::path::Path, cert: &std::path::Path) -> bool {
        let out = Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(krl)
            .arg(cert)
            .output()
            .expect("ssh-keygen is needed for this test (Debian: openssh-client)");
        let text = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => {
                assert!(text.contains(": ok"), "{text}");
                false
            }
            Some(1) => {
                assert!(text.contains("REVOKED"), "{text}");
                true
            }
            _ => panic!(
                "ssh-keygen -Q failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    #[test]
    fn ssh_keygen_finds_revoked_serials_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let other_ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let big = write_cert(dir.path(), "big", &ca, u64::MAX - 1);
        let small = write_cert(dir.path(), "small", &ca, 5);
        let kept = write_cert(dir.path(), "kept", &ca, 6);
        let foreign = write_cert(dir.path(), "foreign", &other_ca, 5);

        let krl = encode(ca.public_key(), &[u64::MAX - 1, 5, 5], 1, 1, "test").unwrap();
        let path = dir.path().join("revoked.krl");
        std::fs::write(&path, krl).unwrap();
        assert!(revoked(&path, &big));
        assert!(revoked(&path, &small));
        assert!(!revoked(&path, &kept));
        assert!(!revoked(&path, &foreign));

        let empty = encode(ca.public_key(), &[], 2, 2, "").unwrap();
        std::fs::write(&path, empty).unwrap();
        assert!(!revoked(&path, &small));
    }

    #[test]
    fn serial_zero_is_refused_rather_than_written() {
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let e = encode(ca.public_key(), &[7, 0], 1, 1, "").unwrap_err();
        assert!(matches!(e, KrlError::ZeroSerial), "{e}");
        assert!(e.to_string().contains("serial 0"), "{e}");
    }

    #[test]
    fn ssh_keygen_reads_edge_serials_and_long_lists() {
        let dir = tempfile::tempdir().unwrap();
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let max = write_cert(dir.path(), "max", &ca, u64::MAX);
        let one = write_cert(dir.path(), "one", &ca, 1);
        let gap = write_cert(dir.path(), "gap", &ca, 20_001);

        // Runs of consecutive serials, both ends of the range, repeats, unsorted.
        let mut serials: Vec<u64> = (2..=20_000).rev().collect();
        serials.extend((0..5_000).map(|i| u64::MAX - i));
        serials.extend([1, 1, u64::MAX, 1 << 63, 20_002]);
        let krl = encode(ca.public_key(), &serials, u64::MAX, u64::MAX, "many").unwrap();
        let path = dir.path().join("many.krl");
        std::fs::write(&path, krl).unwrap();
        assert!(revoked(&path, &max));
        assert!(revoked(&path, &one));
        assert!(!revoked(&path, &gap));

        let only_max = encode(ca.public_key(), &[u64::MAX], 0, 0, "").unwrap();
        std::fs::write(&path, only_max).unwrap();
        assert!(revoked(&path, &max));
        assert!(!revoked(&path, &one));
    }
}
