//! The API server against misbehaving clients: over raw TCP, a declared body over the limit is
//! refused at once, and clients that never finish their headers or their TLS handshake are
//! disconnected; a flood from one address is refused (429) and recorded once.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::MockConnectInfo;
use ssh_tpm_ca::serve::Timeouts;
use ssh_tpm_ca::{Authority, Config};

#[path = "support/tls.rs"]
mod tls;
use tls::tls_files;

/// Short timeouts, so that the tests do not wait 10 s each.
const TIMEOUTS: Timeouts = Timeouts {
    header_read: Duration::from_millis(700),
    tls_handshake: Duration::from_millis(700),
};

/// A CA (with TLS when `tls`) and `extra` configuration lines.
async fn authority(dir: &Path, tls: bool, extra: &str) -> Arc<Authority> {
    let tls = if tls {
        let (cert, key) = tls_files(dir);
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        format!("tls_cert = {cert:?}\ntls_key = {key:?}\n")
    } else {
        String::new()
    };
    let text = format!(
        "listen = \"127.0.0.1:8443\"\n{tls}ca_key = \"ca_key\"\n[oidc]\n\
         issuer = \"https://idp.example\"\nclient_id = \"ssh-tpm\"\n[compliance]\n\
         url = \"https://mdm.example\"\n{extra}"
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
    Arc::new(authority.unwrap())
}

/// Starts `ssh_tpm_ca::serve` for `authority` on loopback; returns its address.
fn serve(authority: Arc<Authority>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve =
        ssh_tpm_ca::serve::serve_with(authority, listener, std::future::pending(), TIMEOUTS);
    tokio::spawn(async move { serve.await.unwrap() });
    addr
}

/// Starts a CA on loopback (with TLS when `tls`); returns its address.
async fn start(dir: &Path, tls: bool) -> SocketAddr {
    serve(authority(dir, tls, "").await)
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
async fn a_declared_oversize_body_is_refused_without_waiting_for_it() {
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

/// `count` requests for an unknown path; the statuses and the last answer.
async fn unknown_paths(base: &str, count: usize) -> (Vec<u16>, reqwest::Response) {
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..count - 1 {
        let r = client.get(format!("{base}/v1/nope")).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    let last = client.get(format!("{base}/v1/nope")).send().await.unwrap();
    statuses.push(last.status().as_u16());
    (statuses, last)
}

async fn refusal_codes(authority: &Authority) -> Vec<String> {
    let refusals = authority.store().refusals().await.unwrap();
    refusals.into_iter().map(|r| r.code).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_refused_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "[rate_limit]\nper_address_per_minute = 5\n";
    let ca = authority(dir.path(), false, limits).await;
    // The router as `serve` runs it, with the client's address as seen from elsewhere.
    let client: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let app = ssh_tpm_ca::api::router(ca.clone()).layer(MockConnectInfo(client));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (statuses, last) = unknown_paths(&base, 40).await;
    assert_eq!(statuses[..5], [404; 5]);
    assert_eq!(statuses[5..], [429; 35]);
    assert_eq!(last.headers()["retry-after"], "60");
    let body: serde_json::Value = last.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(
        body["message"],
        "too many requests from 203.0.113.7 (more than 5 a minute); wait a minute"
    );

    // Five unknown paths and one rate_limited, not forty rows.
    let mut codes = refusal_codes(&ca).await;
    codes.sort();
    let expected = [
        "bad_request",
        "bad_request",
        "bad_request",
        "bad_request",
        "bad_request",
    ];
    assert_eq!(codes[..5], expected);
    assert_eq!(codes[5..], ["rate_limited"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_clients_and_a_zero_limit_are_not_limited() {
    for limits in ["per_address_per_minute = 1", "per_address_per_minute = 0"] {
        let dir = tempfile::tempdir().unwrap();
        let ca = authority(dir.path(), false, &format!("[rate_limit]\n{limits}\n")).await;
        let base = format!("http://{}", serve(ca.clone()));
        let (statuses, _) = unknown_paths(&base, 10).await;
        assert_eq!(statuses, [404; 10], "{limits}");
        assert!(!refusal_codes(&ca)
            .await
            .contains(&"rate_limited".to_owned()));
    }
}
