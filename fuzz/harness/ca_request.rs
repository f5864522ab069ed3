//! The property of the `ca_request` fuzz target, shared with its stable replay test
//! (crates/ca/tests/fuzz_corpus.rs), which includes this file with `#[path]`.
//!
//! One input is one HTTP request to the real API (`ssh_tpm_ca::api::router` over an
//! `Authority` with an SQLite store in a temporary directory), sent with
//! `tower::ServiceExt::oneshot`: the first byte chooses the endpoint ([`Endpoint`], low bits)
//! and the method (high bit: GET instead of POST), the rest is the body. Every answer must be
//! a 4xx or 5xx JSON error `{"error", "message"}` whose code is one of the protocol's, with
//! its status; only a POST to `/v1/sessions` may succeed.
//!
//! Before each request the store holds again the fixtures' session (`fixture-session`, fresh),
//! an expired and a used session, and a fresh and an expired enrolment challenge whose
//! secret nobody knows, so that inputs reach the session and challenge checks and the ID
//! token's parsing. No further: the OpenID provider is `https://127.0.0.1:1`, which refuses
//! the connection at once (the provider client's timeout is a fixed 10 s, never reached), so
//! a request with a fresh session and a well-formed JWT ends as 503 `unavailable`; the
//! compliance service (`http://127.0.0.1:1`, 1 s timeout) comes after the token and is never
//! asked.
//!
//! What the CA does with a request's fields after the provider has vouched for the token is
//! therefore run here directly, on the same body ([`past_the_provider`]): for `/v1/enroll`
//! the `ek_cert` (base64url, DER, chain to the fixture manufacturer CA, EK public key) and
//! `ak_public` (`TPMT_PUBLIC`, the AK checks, MakeCredential); for `/v1/certificates` the
//! `ssh_public_key` (OpenSSH text), the quote and the key certification checked against the
//! fixtures' pinned AK and session; for `/v1/enroll/activate` the secret's base64url.
//! (`decode_field`, the CA's base64url helper, is crate-private; this calls the
//! `ssh_tpm_attest::b64::decode` it wraps.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ssh_tpm_attest::checks::{check_ak_public, check_certify, check_quote};
use ssh_tpm_attest::credential::make_credential;
use ssh_tpm_attest::ekcert::{EkCertificate, TrustAnchors};
use ssh_tpm_attest::protocol::{
    ActivateRequest, CertificateRequest, EnrollRequest, ErrorBody, SessionResponse,
};
use ssh_tpm_attest::tpm::Public;
use ssh_tpm_attest::{b64, derive, Refusal};
use ssh_tpm_ca::store::{Challenge, Device, DeviceStatus, PinnedAk, Session};
use ssh_tpm_ca::{Authority, Config, SqliteStore, Store};
use tower::ServiceExt as _;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../crates/attest/tests/fixtures/", $name))
    };
}

/// The session the attestation fixtures were made for (with nonce 00..1f).
pub const SESSION: &str = "fixture-session";
/// A challenge that is fresh before every request; its secret is unknown.
pub const CHALLENGE: &str = "fuzz-challenge";
/// The user the inventory's device is assigned to.
pub const USER: &str = "alice@example.com";

/// The endpoint chosen by the low bits of the first byte (modulo the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/sessions`.
    Sessions = 0,
    /// `/v1/enroll`.
    Enroll = 1,
    /// `/v1/enroll/activate`.
    Activate = 2,
    /// `/v1/certificates`.
    Certificates = 3,
    /// A path the API does not have.
    Unknown = 4,
}

const ENDPOINTS: [Endpoint; 5] = [
    Endpoint::Sessions,
    Endpoint::Enroll,
    Endpoint::Activate,
    Endpoint::Certificates,
    Endpoint::Unknown,
];

/// The high bit of the first byte: GET instead of POST.
pub const GET: u8 = 0x80;

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Self::Sessions => "/v1/sessions",
            Self::Enroll => "/v1/enroll",
            Self::Activate => "/v1/enroll/activate",
            Self::Certificates => "/v1/certificates",
            Self::Unknown => "/v1/unknown",
        }
    }
}

/// An input for a POST of `body` to `endpoint`, for writing seeds.
pub fn input(endpoint: Endpoint, body: &[u8]) -> Vec<u8> {
    [&[endpoint as u8][..], body].concat()
}

fn nonce() -> Vec<u8> {
    (0u8..32).collect()
}

fn fixture_ak() -> Public {
    Public::decode(fixture!("ak-ecc.pub")).expect("the fixture AK decodes")
}

/// The start of the temporary directories' names, followed by the process id.
const DIR_PREFIX: &str = "ssh-tpm-fuzz-ca-";

/// Removes the directories left by fuzzing processes that are gone: libFuzzer ends the
/// process without running destructors, so a fuzz run never removes its own (Linux only;
/// elsewhere nothing is removed).
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let gone = |pid: u32| {
            Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
        };
        if pid.is_some_and(gone) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A CA with its store, and the runtime it runs on.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    authority: Arc<Authority>,
    router: axum::Router,
    anchors: TrustAnchors,
    /// Whether a request since the last reset may have spent a session or a challenge.
    spent: AtomicBool,
    /// The last EK certificate checked, and whether it chains to the fixture CA, and the
    /// last EK certificate and AK name a credential was made for: RSA is slow under the
    /// fuzzer's instrumentation, and most inputs change other fields.
    last_ek: Mutex<Option<(Vec<u8>, bool)>>,
    last_credential: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A CA whose inventory holds the fixture device (EK `ek-rsa.der`, the ECC AK pinned),
    /// assigned to [`USER`].
    ///
    /// # Panics
    ///
    /// When the CA cannot be set up.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // On tmpfs where there is one: every refused request is a synchronous write.
        let parent = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        sweep(&parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&parent)
            .expect("a temporary directory");
        let text = r#"
listen = "127.0.0.1:0"
ca_key = "ca_key"
[oidc]
issuer = "https://127.0.0.1:1"
client_id = "ssh-tpm"
[compliance]
url = "http://127.0.0.1:1"
timeout_secs = 1
"#;
        let config = Config::from_toml(text, &dir.path().join("ca.toml")).expect("the config");
        let pem = [
            &fixture!("ca-root.pem")[..],
            fixture!("ca-intermediate.pem"),
        ]
        .concat();
        let anchors = TrustAnchors::from_pem(&pem).expect("the fixture CA");
        let keypair = ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]);
        let ca_key = ssh_key::PrivateKey::from(keypair);

        let authority = runtime.block_on(async {
            let store = SqliteStore::open(&config.database_url)
                .await
                .expect("the store");
            let ak = fixture!("ak-ecc.pub").to_vec();
            let device = Device {
                id: String::from_utf8_lossy(fixture!("ek-rsa.device-id"))
                    .trim()
                    .to_owned(),
                ek_cert: fixture!("ek-rsa.der").to_vec(),
                user: USER.into(),
                name: None,
                status: DeviceStatus::Active,
                ak: Some(PinnedAk {
                    name: fixture_ak().name(),
                    public: ak,
                }),
                pcr_policy: None,
                created_at: ssh_tpm_ca::now(),
                enrolled_at: None,
                retired_at: None,
            };
            store.add_device(&device).await.expect("the device");
            let store: Arc<dyn Store> = Arc::new(store);
            Arc::new(Authority::new(config, store, ca_key, anchors.clone()).expect("the CA"))
        });
        Self {
            runtime,
            router: ssh_tpm_ca::api::router(authority.clone()),
            authority,
            anchors,
            spent: AtomicBool::new(true),
            last_ek: Mutex::new(None),
            last_credential: Mutex::new(None),
            _dir: dir,
        }
    }

    /// Puts the sessions and challenges back as they were before any request.
    async fn reset(&self) {
        let store = self.authority.store();
        let now = ssh_tpm_ca::now();
        let device_id = String::from_utf8_lossy(fixture!("ek-rsa.device-id"))
            .trim()
            .to_owned();
        store.purge_expired(now + 1_000_000).await.expect("purge");
        let session = |id: &str, expires_at| Session {
            id: id.into(),
            nonce: nonce(),
            created_at: now.saturating_sub(600),
            expires_at,
        };
        for s in [
            session(SESSION, now + 300),
            session("fuzz-expired", now.saturating_sub(300)),
            session("fuzz-used", now + 300),
        ] {
            store.create_session(&s).await.expect("a session");
        }
        store.use_session("fuzz-used", now).await.expect("use");
        let challenge = |id: &str, expires_at| Challenge {
            id: id.into(),
            device_id: device_id.clone(),
            user: USER.into(),
            secret_hash: [0x42; 32],
            ak: PinnedAk {
                public: fixture!("ak-rsa.pub").to_vec(),
                name: Public::decode(fixture!("ak-rsa.pub"))
                    .expect("fixture")
                    .name(),
            },
            created_at: now.saturating_sub(600),
            expires_at,
        };
        for c in [
            challenge(CHALLENGE, now + 300),
            challenge("fuzz-challenge-expired", now.saturating_sub(300)),
        ] {
            store.create_challenge(&c).await.expect("a challenge");
        }
    }

    /// Runs one input; returns the answer's status, `None` for an empty input.
    ///
    /// # Panics
    ///
    /// When the answer breaks the property in the module doc.
    pub fn run(&self, data: &[u8]) -> Option<StatusCode> {
        let (&selector, body) = data.split_first()?;
        let endpoint = ENDPOINTS[usize::from(selector & !GET) % ENDPOINTS.len()];
        let method = if selector & GET != 0 {
            Method::GET
        } else {
            Method::POST
        };
        // Only a request that reads as one of these can reach the store's sessions and
        // challenges; resetting them only then keeps the fuzzer fast.
        let spends = method == Method::POST
            && match endpoint {
                Endpoint::Enroll => serde_json::from_slice::<EnrollRequest>(body).is_ok(),
                Endpoint::Activate => serde_json::from_slice::<ActivateRequest>(body).is_ok(),
                Endpoint::Certificates => {
                    serde_json::from_slice::<CertificateRequest>(body).is_ok()
                }
                Endpoint::Sessions | Endpoint::Unknown => false,
            };
        let (status, answer) = self.runtime.block_on(async {
            if self.spent.swap(spends, Ordering::Relaxed) {
                self.reset().await;
            }
            let request = Request::builder()
                .method(method.clone())
                .uri(endpoint.path())
                .header("content-type", "application/json")
                .body(Body::from(body.to_vec()))
                .expect("a request");
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let answer = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("the answer's body");
            (status, answer)
        });
        check_answer(endpoint, &method, status, &answer);
        self.past_the_provider(endpoint, body);
        Some(status)
    }

    /// What the CA does with a request's fields once the ID token is verified (see the
    /// module doc); nothing may panic, and what the CA accepts must work.
    pub fn past_the_provider(&self, endpoint: Endpoint, body: &[u8]) {
        match endpoint {
            Endpoint::Enroll => {
                if let Ok(request) = serde_json::from_slice::<EnrollRequest>(body) {
                    self.enroll_fields(&request);
                }
            }
            Endpoint::Certificates => {
                if let Ok(request) = serde_json::from_slice::<CertificateRequest>(body) {
                    certificate_fields(&request);
                }
            }
            Endpoint::Activate => {
                if let Ok(request) = serde_json::from_slice::<ActivateRequest>(body) {
                    let _ = b64::decode(&request.secret);
                }
            }
            Endpoint::Sessions | Endpoint::Unknown => {}
        }
    }

    fn enroll_fields(&self, request: &EnrollRequest) {
        let Ok(der) = b64::decode(&request.ek_cert) else {
            return;
        };
        let Ok(ek_cert) = EkCertificate::from_der(&der) else {
            return;
        };
        let _ = ek_cert.device_id();
        let trusted = {
            let mut last = self.last_ek.lock().unwrap_or_else(PoisonError::into_inner);
            match &*last {
                Some((checked, trusted)) if *checked == der => *trusted,
                _ => {
                    let trusted = ek_cert.verify_chain(&self.anchors).is_ok();
                    *last = Some((der.clone(), trusted));
                    trusted
                }
            }
        };
        if !trusted {
            return;
        }
        let Ok(ak_public) = b64::decode(&request.ak_public) else {
            return;
        };
        let Ok(ak) = Public::decode(&ak_public) else {
            return;
        };
        if check_ak_public(&ak).is_err() {
            return;
        }
        let Ok(ek) = ek_cert.public_key() else {
            return;
        };
        let pair = (der, ak.name());
        let mut last = self
            .last_credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_ref() != Some(&pair) {
            let made = make_credential(&ek, &pair.1, &[0x5a; 32], &mut rand_core::OsRng);
            assert!(
                made.is_ok(),
                "MakeCredential for an accepted EK and AK: {made:?}"
            );
            *last = Some(pair);
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

fn check_answer(endpoint: Endpoint, method: &Method, status: StatusCode, answer: &[u8]) {
    let text = String::from_utf8_lossy(answer);
    if endpoint == Endpoint::Sessions && method == Method::POST && status == StatusCode::OK {
        let session: SessionResponse = serde_json::from_slice(answer).expect("a session");
        assert!(!session.session_id.is_empty(), "{text}");
        return;
    }
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{method} {endpoint:?} answered {status}: {text}"
    );
    let error: ErrorBody = serde_json::from_slice(answer)
        .unwrap_or_else(|_| panic!("{method} {endpoint:?}: {status} with {text:?}"));
    assert!(!error.message.is_empty(), "{text}");
    let code = error.error.as_str();
    match code.parse::<Refusal>() {
        // 413 for a body over the cap, 404 and 405 for a path or method the API lacks.
        Ok(Refusal::BadRequest) => assert!(
            [400, 404, 405, 413].contains(&status.as_u16()),
            "{status}: {text}"
        ),
        Ok(refusal) => assert_eq!(status.as_u16(), refusal.status(), "{text}"),
        Err(_) => assert_eq!((code, status.as_u16()), ("unavailable", 503), "{text}"),
    }
}

fn certificate_fields(request: &CertificateRequest) {
    let Ok(ssh_key) = ssh_key::PublicKey::from_openssh(&request.ssh_public_key) else {
        return;
    };
    let blob = ssh_key.to_bytes().expect("a key that was read encodes");
    let qualifying_data = derive::qualifying_data(SESSION, &nonce(), &blob);
    let ak = fixture_ak();
    if check_quote(&ak, &request.quote, &qualifying_data).is_err() {
        return;
    }
    let Ok(key_public) = b64::decode(&request.key_public) else {
        return;
    };
    let _ = check_certify(
        &ak,
        &request.certify,
        &key_public,
        &ssh_key,
        &qualifying_data,
    );
}
