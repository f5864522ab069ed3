//! A TLS certificate for tests: self-signed for 127.0.0.1 (so it is its own root), made by the
//! openssl command. Included by the test files that serve or reach TLS.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `tls.crt` and `tls.key` (P-256, one day, CA:FALSE) into `dir`.
pub fn tls_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256"])
        .args(["-nodes", "-days", "1", "-subj", "/CN=ssh-tpm-ca test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed for this test (Debian: openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
