//! Verifying the OpenID Connect ID token that comes with each request: the provider's
//! discovery document and keys (cached; fetched again when a token names an unknown key), the
//! signature and issuer (by `openidconnect`), then, in this order, expiry, audience and the
//! nonce bound to the CA session, each with its own refusal code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{ClaimsVerificationError, ClientId, IssuerUrl, SignatureVerificationError};
use serde_json::{Map, Value};
use ssh_tpm_attest::{Refusal, Rejection};
use tokio::sync::Mutex;

use crate::config::OidcConfig;
use crate::http::error_chain;

/// Keys are fetched again on an unknown `kid` at most this often.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// The discovery document is fetched again after this long.
const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(3600);
/// How long to wait for the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token was not accepted.
#[derive(Debug)]
pub enum TokenError {
    /// The token is refused (`token_*`).
    Rejected(Rejection),
    /// The provider could not be asked (discovery or keys unavailable): not the client's fault.
    Unavailable(String),
}

impl From<Rejection> for TokenError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

/// The user a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The value of the configured user claim.
    pub user: String,
    /// The values of the configured groups claim.
    pub groups: Vec<String>,
    /// The claims kept as evidence: iss, sub, aud, iat, exp, the user and groups claims.
    pub evidence: Value,
}

struct Provider {
    metadata: CoreProviderMetadata,
    jwks: CoreJsonWebKeySet,
    discovered: Instant,
    keys_fetched: Instant,
}

/// Verifies ID tokens for one provider and client id.
pub struct TokenVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    provider: Mutex<Option<Provider>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn rejected(refusal: Refusal, detail: impl Into<String>) -> TokenError {
    TokenError::Rejected(Rejection::new(refusal, detail))
}

impl TokenVerifier {
    /// A verifier; the provider is first asked on the first token.
    ///
    /// # Errors
    ///
    /// When a `tls_roots` file is unusable or the HTTP client cannot be built.
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        let http = crate::http::client(&config.tls_roots, HTTP_TIMEOUT)?;
        Ok(Self {
            config,
            http,
            provider: Mutex::new(None),
        })
    }

    /// Verifies `token` for the session whose OIDC nonce is `expected_nonce`.
    ///
    /// # Errors
    ///
    /// [`TokenError::Rejected`] with `token_invalid` (signature, format, issuer, missing user
    /// claim), `token_expired`, `token_audience` or `token_nonce`;
    /// [`TokenError::Unavailable`] when the provider's keys cannot be fetched.
    pub async fn verify(&self, token: &str, expected_nonce: &str) -> Result<Identity, TokenError> {
        let id_token: CoreIdToken = token
            .parse()
            .map_err(|e| rejected(Refusal::TokenInvalid, format!("not a JWT ID token: {e}")))?;

        let mut refreshed = false;
        loop {
            let verifier = self.verifier().await?;
            match id_token.claims(&verifier, |_: Option<&openidconnect::Nonce>| Ok(())) {
                Ok(_) => break,
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refreshed => {
                    refreshed = true;
                    if !self.refresh_keys().await? {
                        return Err(rejected(
                            Refusal::TokenInvalid,
                            "the token is signed with a key the provider does not publish",
                        ));
                    }
                }
                Err(e) => return Err(map_error(e)),
            }
        }

        // The signature holds: read the payload as plain JSON for the remaining checks.
        let claims = payload(token)?;
        self.check_audience(&claims)?;
        check_nonce(&claims, expected_nonce)?;
        self.identity(&claims)
    }

    /// A verifier over the cached keys, discovering the provider first if needed.
    async fn verifier(&self) -> Result<CoreIdTokenVerifier<'static>, TokenError> {
        let mut guard = self.provider.lock().await;
        let stale = guard
            .as_ref()
            .is_none_or(|p| p.discovered.elapsed() > DISCOVERY_MAX_AGE);
        if stale {
            *guard = Some(self.discover().await?);
        }
        let Some(provider) = guard.as_ref() else {
            return Err(TokenError::Unavailable("no provider metadata".into()));
        };
        let leeway = chrono::Duration::seconds(
            i64::try_from(self.config.leeway_secs).unwrap_or(i64::MAX / 1000),
        );
        Ok(CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            provider.metadata.issuer().clone(),
            provider.jwks.clone(),
        )
        .require_audience_match(false)
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha384,
            CoreJwsSigningAlgorithm::RsaSsaPssSha512,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
        .set_time_fn(move || chrono::Utc::now() - leeway))
    }

    async fn discover(&self) -> Result<Provider, TokenError> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| TokenError::Unavailable(format!("bad issuer URL: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                TokenError::Unavailable(format!(
                    "OpenID provider discovery at {} failed: {}",
                    self.config.issuer,
                    error_chain(&e)
                ))
            })?;
        let jwks = metadata.jwks().clone();
        tracing::info!(
            issuer = %self.config.issuer,
            keys = jwks.keys().len(),
            "OpenID provider discovered"
        );
        Ok(Provider {
            metadata,
            jwks,
            discovered: Instant::now(),
            keys_fetched: Instant::now(),
        })
    }

    /// Fetches the provider's keys again unless that was done very recently; true when done.
    async fn refresh_keys(&self) -> Result<bool, TokenError> {
        let mut guard = self.provider.lock().await;
        let Some(provider) = guard.as_mut() else {
            return Ok(false);
        };
        if provider.keys_fetched.elapsed() < JWKS_REFRESH_INTERVAL {
            return Ok(false);
        }
        let jwks = CoreJsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| {
                TokenError::Unavailable(format!(
                    "fetching the provider's keys failed: {}",
                    error_chain(&e)
                ))
            })?;
        tracing::info!(
            keys = jwks.keys().len(),
            "OpenID provider keys fetched again"
        );
        provider.jwks = jwks;
        provider.keys_fetched = Instant::now();
        Ok(true)
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), TokenError> {
        let ours = self.config.client_id.as_str();
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Err(rejected(Refusal::TokenInvalid, "the token has no audience")),
        };
        if !audiences.contains(&ours) {
            return Err(rejected(
                Refusal::TokenAudience,
                format!("the token is for {audiences:?}, not for client {ours:?}"),
            ));
        }
        // OpenID Connect Core 3.1.3.7: with several audiences, or an azp, azp must be us.
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != ours => Err(rejected(
                Refusal::TokenAudience,
                format!("the token was requested by {azp:?}, not by client {ours:?}"),
            )),
            None if audiences.len() > 1 => Err(rejected(
                Refusal::TokenAudience,
                "the token has several audiences and no authorized party",
            )),
            _ => Ok(()),
        }
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, TokenError> {
        let name = &self.config.user_claim;
        let user = claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                rejected(
                    Refusal::TokenInvalid,
                    format!("the token has no {name:?} claim (ask for its scope)"),
                )
            })?;
        if name == "email" && claims.get("email_verified") == Some(&Value::Bool(false)) {
            return Err(rejected(
                Refusal::TokenInvalid,
                "the token's email is not verified",
            ));
        }
        let groups: Vec<String> = match claims.get(&self.config.groups_claim) {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let mut kept = BTreeMap::new();
        for key in ["iss", "sub", "aud", "azp", "iat", "exp", "auth_time"] {
            if let Some(v) = claims.get(key) {
                kept.insert(key.to_owned(), v.clone());
            }
        }
        kept.insert(name.clone(), Value::String(user.to_owned()));
        if !groups.is_empty() {
            kept.insert(self.config.groups_claim.clone(), groups.clone().into());
        }
        Ok(Identity {
            user: user.to_owned(),
            groups,
            evidence: Value::Object(kept.into_iter().collect()),
        })
    }
}

fn check_nonce(claims: &Map<String, Value>, expected: &str) -> Result<(), TokenError> {
    use subtle::ConstantTimeEq as _;
    match claims.get("nonce").and_then(Value::as_str) {
        Some(n) if bool::from(n.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(rejected(
            Refusal::TokenNonce,
            "the token's nonce is not this session's: it was issued for another login",
        )),
        None => Err(rejected(Refusal::TokenNonce, "the token has no nonce")),
    }
}

/// The JWT's payload as JSON (only after its signature was verified).
fn payload(token: &str) -> Result<Map<String, Value>, TokenError> {
    let bad = || rejected(Refusal::TokenInvalid, "the token's payload cannot be read");
    let part = token.split('.').nth(1).ok_or_else(bad)?;
    let bytes = ssh_tpm_attest::b64::decode(part).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

fn map_error(e: ClaimsVerificationError) -> TokenError {
    match e {
        ClaimsVerificationError::Expired(d) => rejected(Refusal::TokenExpired, d),
        ClaimsVerificationError::InvalidAudience(d) => rejected(Refusal::TokenAudience, d),
        ClaimsVerificationError::InvalidNonce(d) => rejected(Refusal::TokenNonce, d),
        ClaimsVerificationError::InvalidIssuer(d) => {
            rejected(Refusal::TokenInvalid, format!("wrong issuer: {d}"))
        }
        ClaimsVerificationError::SignatureVerification(s) => rejected(
            Refusal::TokenInvalid,
            format!("the signature does not verify: {s}"),
        ),
        other => rejected(Refusal::TokenInvalid, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(OidcConfig {
            issuer: "http://127.0.0.1:1".into(),
            client_id: "ssh-tpm".into(),
            scopes: vec!["openid".into()],
            user_claim: "email".into(),
            groups_claim: "groups".into(),
            group_principals: BTreeMap::new(),
            leeway_secs: 60,
            tls_roots: Vec::new(),
        })
        .unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn code(r: Result<impl std::fmt::Debug, TokenError>) -> Refusal {
        match r {
            Err(TokenError::Rejected(r)) => r.refusal,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn audience_must_name_us() {
        let v = verifier();
        assert!(v
            .check_audience(&claims(serde_json::json!({"aud": "ssh-tpm"})))
            .is_ok());
        let ok = claims(serde_json::json!({"aud": ["x", "ssh-tpm"], "azp": "ssh-tpm"}));
        assert!(v.check_audience(&ok).is_ok());
        let other = claims(serde_json::json!({"aud": "other"}));
        assert_eq!(code(v.check_audience(&other)), Refusal::TokenAudience);
        let no_azp = claims(serde_json::json!({"aud": ["x", "ssh-tpm"]}));
        assert_eq!(code(v.check_audience(&no_azp)), Refusal::TokenAudience);
        let wrong_azp = claims(serde_json::json!({"aud": "ssh-tpm", "azp": "x"}));
        assert_eq!(code(v.check_audience(&wrong_azp)), Refusal::TokenAudience);
    }

    #[test]
    fn nonce_must_be_the_sessions() {
        let c = claims(serde_json::json!({"nonce": "abc"}));
        assert!(check_nonce(&c, "abc").is_ok());
        assert_eq!(code(check_nonce(&c, "abd")), Refusal::TokenNonce);
        assert_eq!(code(check_nonce(&Map::new(), "abc")), Refusal::TokenNonce);
    }

    #[test]
    fn identity_from_the_configured_claims() {
        let v = verifier();
        let c = claims(serde_json::json!({
            "iss": "i", "sub": "s1", "email": "alice@example.com", "email_verified": true,
            "groups": ["admins", 3], "nonce": "n", "name": "Alice"
        }));
        let id = v.identity(&c).unwrap();
        assert_eq!(id.user, "alice@example.com");
        assert_eq!(id.groups, ["admins"]);
        assert_eq!(id.evidence["sub"], "s1");
        assert!(id.evidence.get("nonce").is_none() && id.evidence.get("name").is_none());

        let unverified = claims(serde_json::json!({"email": "a@b", "email_verified": false}));
        assert_eq!(code(v.identity(&unverified)), Refusal::TokenInvalid);
        assert_eq!(
            code(v.identity(&claims(serde_json::json!({"sub": "s"})))),
            Refusal::TokenInvalid
        );
    }

    #[tokio::test]
    async fn garbage_is_invalid_and_an_absent_provider_is_unavailable() {
        let v = verifier();
        assert_eq!(
            code(v.verify("not-a-jwt", "n").await),
            Refusal::TokenInvalid
        );
        // A well-formed but unsigned-looking JWT needs the provider, which is not there.
        let body = r#"{"iss":"http://127.0.0.1:1","aud":"a","exp":1,"iat":1,"sub":"s"}"#;
        let jwt = format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            ssh_tpm_attest::b64::encode(body.as_bytes())
        );
        let r = v.verify(&jwt, "n").await;
        assert!(matches!(r, Err(TokenError::Unavailable(_))), "{r:?}");
    }
}
