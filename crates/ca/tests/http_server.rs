//! The API server against misbehaving clients, over raw TCP: a declared body over the limit is
//! refused at once, and clients that never finish their headers or their TLS handshake are
//! disconnected.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh_tpm_ca::serve::Timeouts;
use ssh_tpm_ca::{Authority, Config};

/// Short timeouts, so that the tests do not wait 10 s each.
const TIMEOUTS: Timeouts = Timeouts {
    header_read: Duration::from_millis(700),
    tls_handshake: Duration::from_millis(700),
};

/// A self-signed certificate for 127.0.0.1, by the openssl command.
fn tls_files(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=ssh-tpm-ca test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
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
    (cert.display().to_string(), key.display().to_string())
}

/// Starts a CA on loopback (with TLS when `tls`); returns its address.
async fn start(dir: &Path, tls: bool) -> SocketAddr {
    let tls = if tls {
        let (cert, key) = tls_files(dir);
        format!("tls_cert = {cert:?}\ntls_key = {key:?}\n")
    } else {
        String::new()
    };
    let text = format!(
        "listen = \"127.0.0.1:8443\"\n{tls}ca_key = \"ca_key\"\n[oidc]\n\
         issuer = \"https://idp.example\"\nclient_id = \"ssh-tpm\"\n[compliance]\n\
         url = \"https://mdm.example\"\n"
    );
    let config = Config::from_toml(&text, &dir.join("ca.toml")).unwrap();
    let store = ssh_tpm_ca::SqliteStore::open(&config.database_url)
        .await
        .unwrap();
    let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519);
    let authority = Authority::new(
        config,
        Arc::new(store),
        key.unwrap(),
        ssh_tpm_attest::ekcert::TrustAnchors::new(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = ssh_tpm_ca::serve::serve_with(
        Arc::new(authority.unwrap()),
        listener,
        std::future::pending(),
        TIMEOUTS,
    );
    tokio::spawn(async move { serve.await.unwrap() });
    addr
}

/// Everything the server sends until it closes the connection (at most `limit` later), and
/// how long that took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no end within {limit:?}: {e}; got {answer:?}"),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversize_body_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), false).await;
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(
                b"POST /v1/sessions HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\n\
                  Content-Length: 99999999999\r\n\r\n{}",
            )
            .unwrap();
        // The answer comes while the client still owes almost all of its body.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("an answer within 5 s");
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains(
                r#"{"error":"bad_request","message":"the request body is larger than 64 KiB"}"#
            ),
            "{answer}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), false).await;
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /v1/info HTTP/1.1\r\nHost: ca\r\n")
            .unwrap();
        let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(!answer.contains("200 OK"), "{answer}");
        assert!(took >= Duration::from_millis(500), "{took:?}");

        // A client that finishes in time is served.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /v1/info HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_clients_are_cut_off() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), true).await;
    tokio::task::spawn_blocking(move || {
        // Never a ClientHello.
        let mut stream = TcpStream::connect(addr).unwrap();
        let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(answer.is_empty(), "{answer}");
        assert!(took >= Duration::from_millis(500), "{took:?}");
    })
    .await
    .unwrap();
}
