//! The CA itself, apart from HTTP: what it holds (key, store, trust anchors, the provider and
//! compliance clients, rate limits), sessions, and how a refused request is recorded.
//! Enrolment is in [`crate::enroll`] and issuance in [`crate::issue`].

use std::sync::Arc;
use std::time::Instant;

use rand_core::{OsRng, RngCore as _};
use ssh_key::PrivateKey;
use ssh_tpm_attest::ekcert::TrustAnchors;
use ssh_tpm_attest::protocol::{InfoResponse, SessionResponse};
use ssh_tpm_attest::{b64, derive, Refusal, Rejection};

use crate::compliance::ComplianceClient;
use crate::config::Config;
use crate::error::CaError;
use crate::oidc::{Identity, TokenError, TokenVerifier};
use crate::ratelimit::{AddressLimiter, RateLimiter, Verdict};
use crate::store::{RefusalRecord, Session, SessionUse, Store, StoreError};

/// Why a request failed: refused (4xx, a protocol code) or the CA could not serve it (5xx).
#[derive(Debug)]
pub enum Failure {
    /// A refusal with its code.
    Refused(Rejection),
    /// The CA or something it depends on is unavailable right now (503).
    Unavailable(String),
    /// A fault in the CA (500).
    Internal(String),
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        Self::Refused(r)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Rejected(r) => Self::Refused(r),
            TokenError::Unavailable(d) => Self::Unavailable(d),
        }
    }
}

impl Failure {
    /// The code recorded in the audit log and sent as `error`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(r) => r.refusal.code(),
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Refused(r) => r.refusal.status(),
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// What went wrong.
    pub fn detail(&self) -> &str {
        match self {
            Self::Refused(r) => &r.detail,
            Self::Unavailable(d) | Self::Internal(d) => d,
        }
    }
}

/// Shorthand for a refusal.
pub(crate) fn refuse(refusal: Refusal, detail: impl Into<String>) -> Failure {
    Failure::Refused(Rejection::new(refusal, detail))
}

/// Who a request concerns, as far as known when it failed (for the audit log).
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// The user, once the token is verified.
    pub user: Option<String>,
    /// The device, once named.
    pub device_id: Option<String>,
}

/// The running CA.
pub struct Authority {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ca_key: PrivateKey,
    pub(crate) anchors: TrustAnchors,
    pub(crate) tokens: TokenVerifier,
    pub(crate) compliance: ComplianceClient,
    user_limit: RateLimiter,
    device_limit: RateLimiter,
    address_limit: Option<AddressLimiter>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("listen", &self.config.listen)
            .field(
                "ca_key",
                &self.ca_key.public_key().fingerprint(Default::default()),
            )
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Builds the CA from its parts. [`crate::serve::open`] does this from a [`Config`].
    ///
    /// # Errors
    ///
    /// [`CaError::Setup`] when a `tls_roots` file is unusable or an HTTP client cannot be
    /// built.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        ca_key: PrivateKey,
        anchors: TrustAnchors,
    ) -> Result<Self, CaError> {
        let setup = |what: &str, e: String| CaError::Setup(format!("{what}: {e}"));
        Ok(Self {
            tokens: TokenVerifier::new(config.oidc.clone()).map_err(|e| setup("[oidc]", e))?,
            compliance: ComplianceClient::new(config.compliance.clone())
                .map_err(|e| setup("[compliance]", e))?,
            user_limit: RateLimiter::new(config.rate_limit.per_user_per_minute),
            device_limit: RateLimiter::new(config.rate_limit.per_device_per_minute),
            address_limit: match config.rate_limit.per_address_per_minute {
                0 => None,
                n => Some(AddressLimiter::new(n)),
            },
            config,
            store,
            ca_key,
            anchors,
        })
    }

    /// The store, for the audit and for tests.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The CA's public key.
    pub fn public_key(&self) -> &ssh_key::PublicKey {
        self.ca_key.public_key()
    }

    /// `GET /v1/info`.
    ///
    /// # Errors
    ///
    /// [`Failure::Internal`] when the CA key cannot be encoded.
    pub fn info(&self) -> Result<InfoResponse, Failure> {
        Ok(InfoResponse {
            issuer: self.config.oidc.issuer.clone(),
            client_id: self.config.oidc.client_id.clone(),
            scopes: self.config.oidc.scopes.clone(),
            ca_public_key: self
                .ca_key
                .public_key()
                .to_openssh()
                .map_err(|e| Failure::Internal(format!("CA public key: {e}")))?,
            default_validity_secs: self.config.certificate_validity.as_secs(),
        })
    }

    /// `POST /v1/sessions`: a fresh session.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn create_session(&self) -> Result<SessionResponse, Failure> {
        let mut id = [0u8; 18];
        OsRng.fill_bytes(&mut id);
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let now = crate::now();
        let session = Session {
            id: b64::encode(&id),
            nonce: nonce.to_vec(),
            created_at: now,
            expires_at: now + self.config.session_lifetime.as_secs(),
        };
        self.store.create_session(&session).await?;
        Ok(SessionResponse {
            oidc_nonce: derive::oidc_nonce(&session.id, &session.nonce),
            nonce: b64::encode(&session.nonce),
            expires_at: session.expires_at,
            session_id: session.id,
        })
    }

    /// Uses the session named by a request: it is spent whatever happens next.
    pub(crate) async fn use_session(&self, id: &str) -> Result<Session, Failure> {
        match self.store.use_session(id, crate::now()).await? {
            SessionUse::Fresh(s) => Ok(s),
            SessionUse::Expired => Err(refuse(
                Refusal::SessionExpired,
                "the session's lifetime is over; start a new one",
            )),
            SessionUse::Replayed => Err(refuse(
                Refusal::SessionReplayed,
                "the session was already used; start a new one",
            )),
            SessionUse::Unknown => Err(refuse(
                Refusal::SessionUnknown,
                "no such session; it may have expired or the CA restarted: start a new one",
            )),
        }
    }

    /// Verifies the ID token for `session` and counts the request against the user's limit.
    pub(crate) async fn identify(
        &self,
        token: &str,
        session: &Session,
        ctx: &mut Context,
    ) -> Result<Identity, Failure> {
        let nonce = derive::oidc_nonce(&session.id, &session.nonce);
        let identity = self.tokens.verify(token, &nonce).await?;
        ctx.user = Some(identity.user.clone());
        if !self.user_limit.allow(&identity.user, Instant::now()) {
            return Err(refuse(
                Refusal::RateLimited,
                "too many requests for this user; wait a minute",
            ));
        }
        Ok(identity)
    }

    /// Counts a request against the device's limit.
    pub(crate) fn limit_device(&self, device_id: &str) -> Result<(), Failure> {
        if self.device_limit.allow(device_id, Instant::now()) {
            Ok(())
        } else {
            Err(refuse(
                Refusal::RateLimited,
                "too many requests for this device; wait a minute",
            ))
        }
    }

    /// Counts a request from `ip` against `[rate_limit] per_address_per_minute`; a refusal
    /// comes with the address key, for the message.
    pub(crate) fn check_address(&self, ip: std::net::IpAddr) -> Result<(), (Verdict, String)> {
        let Some(limiter) = &self.address_limit else {
            return Ok(());
        };
        let Some(key) = crate::ratelimit::address_key(ip) else {
            return Ok(());
        };
        match limiter.check(&key, Instant::now()) {
            Verdict::Allowed => Ok(()),
            refused => Err((refused, key)),
        }
    }

    /// Records a failed request in the audit log and the service log.
    pub async fn record_failure(&self, endpoint: &str, failure: &Failure, ctx: &Context) {
        let record = RefusalRecord {
            at: crate::now(),
            endpoint: endpoint.to_owned(),
            code: failure.code().to_owned(),
            detail: failure.detail().to_owned(),
            user: ctx.user.clone(),
            device_id: ctx.device_id.clone(),
        };
        match failure {
            Failure::Refused(_) => tracing::info!(
                endpoint,
                code = record.code,
                user = record.user.as_deref().unwrap_or("-"),
                device = record.device_id.as_deref().unwrap_or("-"),
                "refused: {}",
                record.detail
            ),
            _ => tracing::warn!(endpoint, code = record.code, "failed: {}", record.detail),
        }
        if let Err(e) = self.store.record_refusal(&record).await {
            tracing::error!(endpoint, "cannot record the refusal in the audit log: {e}");
        }
    }
}
