//! `login::authorize` against a small stand-in provider on 127.0.0.1: discovery, the
//! authorization request (PKCE S256, state, nonce, scopes, loopback redirect), the browser
//! (a curl script run as `$BROWSER URL`, following the provider's redirect to our
//! callback), the code exchange (the provider checks the PKCE verifier) and the ID token
//! checks. The stand-in signs real RS256 tokens; the CA's verification of them is the e2e
//! tests' business, with a real provider.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    Audience, EmptyAdditionalClaims, EndUserEmail, IssuerUrl, Nonce, PrivateSigningKey as _,
    StandardClaims, SubjectIdentifier,
};
use sha2::Digest as _;
use ssh_tpm_attest::protocol::InfoResponse;
use ssh_tpm_cert::login::{self, Browser, LoginOptions};

/// How the stand-in provider misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Honest,
    WrongNonce,
    Denied,
}

/// What the provider saw in the authorization request.
type Seen = Arc<Mutex<HashMap<String, String>>>;

struct Provider {
    issuer: String,
    seen: Seen,
}

/// An RSA key in PKCS#1 PEM, made by openssl.
fn rsa_key(dir: &Path) -> String {
    let path = dir.join("idp.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path).unwrap()
}

fn start_provider(dir: &Path, mode: Mode) -> Provider {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let key = CoreRsaPrivateSigningKey::from_pem(&rsa_key(dir), None).unwrap();
    let seen: Seen = Arc::default();
    let provider = Provider {
        issuer: issuer.clone(),
        seen: seen.clone(),
    };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (target, body) = read_request(&mut stream);
            let answer = answer(&issuer, &key, mode, &seen, &target, &body);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    provider
}

fn read_request(stream: &mut std::net::TcpStream) -> (String, String) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let target = line.split(' ').nth(1).unwrap_or("/").to_string();
    (target, String::from_utf8(body).unwrap())
}

fn query(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn json(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn answer(
    issuer: &str,
    key: &CoreRsaPrivateSigningKey,
    mode: Mode,
    seen: &Seen,
    target: &str,
    body: &str,
) -> String {
    let (path, params) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/.well-known/openid-configuration" => json(
            200,
            &serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
            .to_string(),
        ),
        "/jwks" => json(
            200,
            &serde_json::to_string(&CoreJsonWebKeySet::new(vec![key.as_verification_key()]))
                .unwrap(),
        ),
        "/auth" => {
            let params = query(params);
            *seen.lock().unwrap() = params.clone();
            let tail = match mode {
                Mode::Denied => "error=access_denied&error_description=account+disabled",
                _ => "code=the-code",
            };
            let location = format!(
                "{}?{tail}&state={}",
                params["redirect_uri"], params["state"]
            );
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
        }
        "/token" => {
            let form = query(body);
            let auth = seen.lock().unwrap().clone();
            let challenge = <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(
                &sha2::Sha256::digest(form["code_verifier"].as_bytes()),
            );
            if form["code"] != "the-code" || challenge != auth["code_challenge"] {
                return json(400, r#"{"error":"invalid_grant"}"#);
            }
            let nonce = match mode {
                Mode::WrongNonce => "another session's nonce".to_string(),
                _ => auth["nonce"].clone(),
            };
            let now = chrono::Utc::now();
            let claims = CoreIdTokenClaims::new(
                IssuerUrl::new(issuer.to_string()).unwrap(),
                vec![Audience::new(auth["client_id"].clone())],
                now + chrono::Duration::minutes(5),
                now,
                StandardClaims::new(SubjectIdentifier::new("alice-sub".into()))
                    .set_email(Some(EndUserEmail::new("alice@example.org".into()))),
                EmptyAdditionalClaims {},
            )
            .set_nonce(Some(Nonce::new(nonce)));
            let token = CoreIdToken::new(
                claims,
                key,
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                None,
                None,
            )
            .unwrap();
            json(
                200,
                &serde_json::json!({
                    "access_token": "at", "token_type": "Bearer", "expires_in": 300,
                    "id_token": token.to_string(),
                })
                .to_string(),
            )
        }
        _ => json(404, "{}"),
    }
}

/// A `$BROWSER` stand-in: follows the login URL and its redirects with curl.
fn browser(dir: &Path, exit: u8) -> PathBuf {
    let path = dir.join(format!("browser-{exit}"));
    let script = if exit == 0 {
        "#!/bin/sh\nexec curl -sS -L -o /dev/null \"$1\"\n".to_string()
    } else {
        format!("#!/bin/sh\nexit {exit}\n")
    };
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn info(provider: &Provider) -> InfoResponse {
    InfoResponse {
        issuer: provider.issuer.clone(),
        client_id: "ssh-tpm".into(),
        scopes: vec!["openid".into(), "email".into()],
        ca_public_key: String::new(),
        default_validity_secs: 57600,
    }
}

fn options(browser: PathBuf) -> LoginOptions {
    LoginOptions {
        timeout: Duration::from_secs(20),
        browser: Browser::Command(browser.into()),
        ..LoginOptions::default()
    }
}

#[test]
fn a_login_returns_the_id_token_for_this_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let provider = start_provider(dir.path(), Mode::Honest);
    let token = login::authorize(
        &info(&provider),
        "nonce-1",
        &options(browser(dir.path(), 0)),
    )
    .unwrap();
    assert_eq!(token.subject(), "alice-sub");
    assert_eq!(token.who(), "alice@example.org");
    assert_eq!(token.as_str().split('.').count(), 3);
    assert!(!format!("{token:?}").contains(token.as_str()));

    let seen = provider.seen.lock().unwrap().clone();
    assert_eq!(seen["client_id"], "ssh-tpm");
    assert_eq!(seen["response_type"], "code");
    assert_eq!(seen["nonce"], "nonce-1");
    assert_eq!(seen["code_challenge_method"], "S256");
    assert_eq!(seen["scope"], "openid email");
    assert!(seen["state"].len() >= 16);
    let redirect = &seen["redirect_uri"];
    assert!(redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"));
}

#[test]
fn a_token_for_another_nonce_is_refused_early() {
    let dir = tempfile::tempdir().unwrap();
    let provider = start_provider(dir.path(), Mode::WrongNonce);
    let error = login::authorize(
        &info(&provider),
        "nonce-1",
        &options(browser(dir.path(), 0)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("does not carry this session's nonce"),
        "{error}"
    );
}

#[test]
fn the_providers_refusal_and_a_failed_browser_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let provider = start_provider(dir.path(), Mode::Denied);
    let error = login::authorize(&info(&provider), "n", &options(browser(dir.path(), 0)))
        .unwrap_err()
        .to_string();
    assert!(error.contains("access_denied: account disabled"), "{error}");

    let started = std::time::Instant::now();
    let error = login::authorize(&info(&provider), "n", &options(browser(dir.path(), 3)))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("the browser command") && error.contains("failed"),
        "{error}"
    );
    assert!(
        error.contains("run again with --no-browser and open the URL it prints by hand"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
