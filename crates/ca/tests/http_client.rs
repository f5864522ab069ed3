//! The CA as an HTTP client on a private PKI: `tls_roots` in `[compliance]` and `[oidc]` make a
//! service whose TLS certificate the web PKI does not know reachable, and without them the
//! refusal says why (the TLS cause, a refused connection), not only "error sending request".

#![allow(clippy::unwrap_used)]

use std::path::Path;

use axum::routing::get;
use axum::{Json, Router};
use ssh_tpm_attest::Refusal;
use ssh_tpm_ca::compliance::ComplianceClient;
use ssh_tpm_ca::oidc::{TokenError, TokenVerifier};
use ssh_tpm_ca::Config;

#[path = "support/tls.rs"]
mod tls;
use tls::tls_files;

/// A compliance service over TLS with the private certificate; returns its base URL.
async fn private_service(cert: &Path, key: &Path) -> String {
    let app = Router::new().route(
        "/devices/{id}",
        get(|| async { Json(serde_json::json!({"compliant": true})) }),
    );
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = config.await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, config)
            .serve(app.into_make_service())
            .await
            .unwrap()
    });
    format!("https://{addr}")
}

fn config(dir: &Path, compliance: &str, issuer: &str, roots: Option<&Path>) -> Config {
    let roots = roots.map_or(String::new(), |r| {
        format!("tls_roots = [{:?}]", r.display())
    });
    let text = format!(
        r#"
listen = "127.0.0.1:8443"
ca_key = "ca_key"
[oidc]
issuer = "{issuer}"
client_id = "ssh-tpm"
{roots}
[compliance]
url = "{compliance}"
timeout_secs = 5
{roots}
"#
    );
    Config::from_toml(&text, &dir.join("ca.toml")).unwrap()
}

#[tokio::test]
async fn compliance_on_a_private_pki() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_files(dir.path());
    let url = private_service(&cert, &key).await;

    let without = config(dir.path(), &url, "https://idp.example", None);
    let client = ComplianceClient::new(without.compliance).unwrap();
    let e = client.check("d1").await.unwrap_err();
    assert_eq!(e.refusal, Refusal::ComplianceUnavailable);
    assert!(
        e.detail
            .starts_with("the compliance service cannot be reached"),
        "{}",
        e.detail
    );
    assert!(
        e.detail.contains("invalid peer certificate"),
        "{}",
        e.detail
    );

    let with = config(dir.path(), &url, "https://idp.example", Some(&cert));
    let client = ComplianceClient::new(with.compliance).unwrap();
    client.check("d1").await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let client = ComplianceClient::new(config(dir.path(), &url, &url, None).compliance).unwrap();
    let e = client.check("d1").await.unwrap_err();
    assert!(e.detail.contains("Connection refused"), "{}", e.detail);
}

#[tokio::test]
async fn the_provider_on_a_private_pki() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_files(dir.path());
    // Not a provider: discovery fails, but for a reason past TLS once the root is trusted.
    let url = private_service(&cert, &key).await;
    let claims = format!(r#"{{"iss":"{url}","aud":"ssh-tpm","exp":1,"iat":1,"sub":"s"}}"#);
    let token = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        ssh_tpm_attest::b64::encode(claims.as_bytes())
    );
    let token = token.as_str();
    let unavailable = |r: Result<_, TokenError>| match r {
        Err(TokenError::Unavailable(why)) => why,
        other => panic!("{other:?}"),
    };

    let without = config(dir.path(), "https://mdm.example", &url, None);
    let why = unavailable(
        TokenVerifier::new(without.oidc)
            .unwrap()
            .verify(token, "n")
            .await,
    );
    assert!(why.contains("invalid peer certificate"), "{why}");

    let with = config(dir.path(), "https://mdm.example", &url, Some(&cert));
    let why = unavailable(
        TokenVerifier::new(with.oidc)
            .unwrap()
            .verify(token, "n")
            .await,
    );
    assert!(!why.contains("invalid peer certificate"), "{why}");
    assert!(why.contains("404"), "{why}");
}

#[test]
fn tls_roots_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("roots.pem");
    std::fs::write(&empty, "").unwrap();
    for section in ["oidc", "compliance"] {
        let text = "listen = \"127.0.0.1:1\"\nca_key = \"k\"\n[oidc]\nissuer = \"https://i\"\n\
                    client_id = \"c\"\n[compliance]\nurl = \"https://m\"\n"
            .replace(
                &format!("[{section}]\n"),
                &format!("[{section}]\ntls_roots = [\"roots.pem\"]\n"),
            );
        let e = Config::from_toml(&text, &dir.path().join("ca.toml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: {section}.tls_roots: {} holds no PEM certificate \
                 (-----BEGIN CERTIFICATE-----)",
                dir.path().join("ca.toml").display(),
                empty.display()
            )
        );
    }
}
