//! An in-process world for API tests: the CA on a loopback port, a small OpenID provider
//! (discovery and JWKS over HTTP, ES256 tokens), a compliance service, and the attestation
//! fixtures that `crates/attest/tests/fixtures/make-fixtures.sh` made with swtpm for session
//! "fixture-session" and nonce 00..1f.
//!
//! The provider here is a test double for the CA's own checks (signature, issuer, expiry,
//! audience, nonce); the end-to-end tests use a real one.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use ssh_tpm_attest::b64;
use ssh_tpm_attest::ekcert::TrustAnchors;
use ssh_tpm_attest::protocol::{CertificateRequest, Evidence, QuoteEvidence};
use ssh_tpm_attest::tpm::Public;
use ssh_tpm_ca::store::{Device, DeviceStatus, PinnedAk, Session};
use ssh_tpm_ca::{Authority, Config, SqliteStore, Store};

pub const CLIENT_ID: &str = "ssh-tpm";
pub const FIXTURE_SESSION: &str = "fixture-session";
pub const COMPLIANCE_TOKEN: &str = "s3cret-bearer";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../attest/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn fixture_nonce() -> Vec<u8> {
    (0u8..32).collect()
}

async fn spawn(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A signing key of the provider.
pub struct IdpKey {
    pub kid: String,
    key: SigningKey,
}

impl IdpKey {
    pub fn new(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    fn jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64::encode(point.x().unwrap()), "y": b64::encode(point.y().unwrap()),
        })
    }

    /// An ES256 JWT with these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string().as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(&sig.to_bytes()))
    }
}

/// The OpenID provider double.
pub struct Idp {
    pub issuer: String,
    pub key: IdpKey,
    published: Arc<Mutex<Vec<Value>>>,
}

impl Idp {
    pub async fn start() -> Self {
        let published = Arc::new(Mutex::new(Vec::new()));
        let issuer_cell = Arc::new(tokio::sync::OnceCell::new());
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State((issuer, _)): State<IdpState>| async move {
                    let issuer: &String = issuer.get().unwrap();
                    Json(json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/auth"),
                        "token_endpoint": format!("{issuer}/token"),
                        "jwks_uri": format!("{issuer}/jwks"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"],
                    }))
                }),
            )
            .route(
                "/jwks",
                get(|State((_, keys)): State<IdpState>| async move {
                    let keys = keys.lock().unwrap().clone();
                    Json(json!({ "keys": keys }))
                }),
            )
            .with_state((issuer_cell.clone(), published.clone()));
        let addr = spawn(app).await;
        let issuer = format!("http://{addr}");
        issuer_cell.set(issuer.clone()).unwrap();
        let key = IdpKey::new("k1");
        published.lock().unwrap().push(key.jwk());
        Self {
            issuer,
            key,
            published,
        }
    }

    /// Publishes another key (a rotation).
    pub fn publish(&self, key: &IdpKey) {
        self.published.lock().unwrap().push(key.jwk());
    }

    /// Claims of a good token for `user` and `nonce`.
    pub fn claims(&self, user: &str, nonce: &str) -> Value {
        let now = ssh_tpm_ca::now();
        json!({
            "iss": self.issuer, "sub": format!("sub-{user}"), "aud": CLIENT_ID,
            "iat": now, "exp": now + 600, "nonce": nonce,
            "email": user, "email_verified": true, "groups": ["admins", "staff"],
        })
    }

    pub fn token(&self, user: &str, nonce: &str) -> String {
        self.key.sign(&self.claims(user, nonce))
    }
}

type IdpState = (Arc<tokio::sync::OnceCell<String>>, Arc<Mutex<Vec<Value>>>);

/// The compliance double: device ids starting with `denied` are not compliant, `broken`
/// answers 500, `slow` answers after 3 s, `garbled` answers with junk; others are compliant.
/// Requests without the bearer token get 401.
pub async fn start_compliance() -> String {
    async fn device(Path(id): Path<String>, headers: HeaderMap) -> (StatusCode, String) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {COMPLIANCE_TOKEN}") {
            return (StatusCode::UNAUTHORIZED, String::new());
        }
        if id.starts_with("denied") {
            (StatusCode::OK, r#"{"compliant": false}"#.into())
        } else if id.starts_with("broken") {
            (StatusCode::INTERNAL_SERVER_ERROR, String::new())
        } else if id.starts_with("garbled") {
            (StatusCode::OK, "yes".into())
        } else if id.starts_with("slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, r#"{"compliant": true}"#.into())
        } else {
            (StatusCode::OK, r#"{"compliant": true}"#.into())
        }
    }
    let app = Router::new().route("/devices/{id}", get(device));
    format!("http://{}", spawn(app).await)
}

/// Settings a test may change.
pub struct Options {
    pub validity_secs: u64,
    pub session_lifetime_secs: u64,
    pub per_user: u32,
    pub per_device: u32,
    pub anchors: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            validity_secs: 3600,
            session_lifetime_secs: 300,
            per_user: 100,
            per_device: 100,
            anchors: vec!["ca-root.pem", "ca-intermediate.pem"],
        }
    }
}

/// A CA, its provider and compliance service, serving on loopback.
pub struct World {
    pub base: String,
    pub idp: Idp,
    pub ca: Arc<Authority>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl World {
    pub async fn start(o: Options) -> Self {
        let idp = Idp::start().await;
        let compliance = start_compliance().await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
listen = "127.0.0.1:0"
ca_key = "ca_key"
session_lifetime_secs = {session}
certificate_validity_secs = {validity}
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
[oidc.group_principals]
admins = ["root", "alice@example.com"]
[compliance]
url = "{compliance}"
bearer_token = "{COMPLIANCE_TOKEN}"
timeout_secs = 1
[rate_limit]
per_user_per_minute = {per_user}
per_device_per_minute = {per_device}
"#,
            session = o.session_lifetime_secs,
            validity = o.validity_secs,
            issuer = idp.issuer,
            per_user = o.per_user,
            per_device = o.per_device,
        );
        let config = Config::from_toml(&text, &dir.path().join("ca.toml")).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&config.database_url).await.unwrap());
        let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
        let pem: Vec<u8> = o.anchors.iter().flat_map(|n| fixture(n)).collect();
        let anchors = TrustAnchors::from_pem(&pem).unwrap();
        let ca = Arc::new(Authority::new(config, store, key, anchors).unwrap());

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = ca.clone();
        tokio::spawn(async move {
            ssh_tpm_ca::serve(served, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            base,
            idp,
            ca,
            http: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.ca.store().as_ref()
    }

    /// POSTs JSON; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, value)
    }

    /// A new session through the API: (id, oidc_nonce).
    pub async fn session(&self) -> (String, String) {
        let (status, s) = self.post("/v1/sessions", &json!({})).await;
        assert_eq!(status, 200, "{s}");
        (
            s["session_id"].as_str().unwrap().to_owned(),
            s["oidc_nonce"].as_str().unwrap().to_owned(),
        )
    }

    /// The session the attestation fixtures were made for, stored directly.
    pub async fn fixture_session(&self) -> String {
        let now = ssh_tpm_ca::now();
        self.store()
            .create_session(&Session {
                id: FIXTURE_SESSION.into(),
                nonce: fixture_nonce(),
                created_at: now,
                expires_at: now + 300,
            })
            .await
            .unwrap();
        ssh_tpm_attest::derive::oidc_nonce(FIXTURE_SESSION, &fixture_nonce())
    }

    /// Adds a device; `enrolled` pins the fixtures' ECC AK.
    pub async fn add_device(&self, id: &str, user: &str, enrolled: bool, status: DeviceStatus) {
        let ak = enrolled.then(|| {
            let public = fixture("ak-ecc.pub");
            PinnedAk {
                name: Public::decode(&public).unwrap().name(),
                public,
            }
        });
        self.store()
            .add_device(&Device {
                id: id.into(),
                ek_cert: fixture("ek-rsa.der"),
                user: user.into(),
                name: None,
                status,
                ak,
                pcr_policy: None,
                created_at: ssh_tpm_ca::now(),
                enrolled_at: None,
                retired_at: None,
            })
            .await
            .unwrap();
    }

    /// Codes of the recorded refusals, oldest first.
    pub async fn refusal_codes(&self) -> Vec<String> {
        self.store()
            .refusals()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.code)
            .collect()
    }
}

fn evidence(prefix: &str) -> Evidence {
    Evidence {
        attest: b64::encode(&fixture(&format!("{prefix}.attest"))),
        signature: b64::encode(&fixture(&format!("{prefix}.sig"))),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate request carrying the swtpm fixtures' evidence.
pub fn fixture_request(session_id: &str, token: &str, device_id: &str) -> CertificateRequest {
    let ev = evidence("quote");
    let bank = fixture("quote.pcrs")
        .chunks(32)
        .enumerate()
        .map(|(i, v)| (i.to_string(), hex(v)))
        .collect();
    CertificateRequest {
        session_id: session_id.into(),
        id_token: token.into(),
        device_id: device_id.into(),
        ssh_public_key: String::from_utf8(fixture("key.ssh"))
            .unwrap()
            .trim()
            .to_owned(),
        key_public: b64::encode(&fixture("key.pub")),
        certify: evidence("certify"),
        quote: QuoteEvidence {
            attest: ev.attest,
            signature: ev.signature,
            pcrs: BTreeMap::from([("sha256".to_owned(), bank)]),
        },
    }
}
