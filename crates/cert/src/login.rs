//! The OpenID Connect login (docs/protocol.md, "Sessions"): the authorization code flow
//! with PKCE S256 and a loopback redirect (RFC 8252), the CA session's `oidc_nonce` as the
//! nonce. The result is the raw ID token for the next request; the CA verifies it, and this
//! side checks it too (signature, issuer, audience, expiry, nonce) only to fail early with a
//! clear message.

mod callback;

use std::ffi::OsString;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse as _,
};
use ssh_tpm_attest::protocol::InfoResponse;
use zeroize::Zeroizing;

use crate::client::{is_loopback, HttpOptions};
use crate::error::{chain, Error, Result};

pub use callback::{Callback, CallbackServer, CALLBACK_PATH};

/// How to show the login page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Browser {
    /// `$BROWSER URL` when `BROWSER` is set, else `xdg-open URL` when a display exists, else
    /// only print the URL.
    Auto,
    /// Run this program with the URL as its one argument.
    Command(OsString),
    /// Only print the URL.
    None,
}

/// How the login goes.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// How long to wait for the browser to come back.
    pub timeout: Duration,
    /// How to open the login page.
    pub browser: Browser,
    /// HTTP to the identity provider.
    pub http: HttpOptions,
}

impl Default for LoginOptions {
    fn default() -> Self {
        LoginOptions {
            timeout: Duration::from_secs(300),
            browser: Browser::Auto,
            http: HttpOptions::default(),
        }
    }
}

/// A raw ID token (a JWT), with the subject and e-mail it names. `Debug` hides the token.
#[derive(Clone)]
pub struct IdToken {
    raw: Zeroizing<String>,
    subject: String,
    email: Option<String>,
}

impl IdToken {
    /// A token as given, for callers that get one elsewhere (tests that tamper with it).
    pub fn from_raw(raw: impl Into<String>) -> Self {
        IdToken {
            raw: Zeroizing::new(raw.into()),
            subject: String::new(),
            email: None,
        }
    }

    /// The JWT, for the request body.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The `sub` claim (empty for [`IdToken::from_raw`]).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The `email` claim, when there is one.
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    /// Who logged in, in words: the e-mail, else the subject.
    pub fn who(&self) -> &str {
        self.email().unwrap_or(self.subject())
    }
}

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdToken")
            .field("subject", &self.subject)
            .field("email", &self.email)
            .field("raw", &"<redacted>")
            .finish()
    }
}

/// Logs in at the CA's identity provider (`info.issuer`, `info.client_id`, `info.scopes`)
/// with `oidc_nonce` (from [`crate::client::CaClient::session`]) as the nonce, and returns
/// the ID token. Prints the URL to open on stderr, and opens it as `options.browser` says.
pub fn authorize(info: &InfoResponse, oidc_nonce: &str, options: &LoginOptions) -> Result<IdToken> {
    let http = options.http.client()?;
    let client = provider(info, &http)?;

    // Listen first: the redirect URI names the port.
    let server = CallbackServer::bind()?;
    let redirect = RedirectUrl::new(server.redirect_uri())
        .map_err(|e| Error::Login(format!("bad redirect URI: {e}")))?;
    let client = client.set_redirect_uri(redirect);

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = Nonce::new(oidc_nonce.to_string());
    let request_nonce = nonce.clone();
    let mut request = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        move || request_nonce,
    );
    for scope in info.scopes.iter().filter(|s| s.as_str() != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, _) = request.set_pkce_challenge(challenge).url();

    eprintln!("Open this URL to log in: {url}");
    let mut browser = open_browser(&options.browser, url.as_str());
    let waited = server.wait(state.secret(), options.timeout, || {
        browser.as_mut().and_then(Launched::failed)
    });
    if let Some(browser) = browser {
        browser.reap();
    }
    let callback = waited?;

    // Exchange the code (with the PKCE verifier) for the tokens.
    let code = AuthorizationCode::new(callback.code.to_string());
    let response = client
        .exchange_code(code)
        .map_err(|e| Error::Login(format!("the identity provider has no token endpoint: {e}")))?
        .set_pkce_verifier(verifier)
        .request(&http)
        .map_err(|e| Error::Login(token_error(&e)))?;
    let id_token = response.id_token().ok_or_else(|| {
        Error::Login("the identity provider sent no ID token; is `openid` among the scopes?".into())
    })?;

    let verifier = client.id_token_verifier().allow_any_alg();
    let claims = id_token
        .claims(&verifier, &nonce)
        .map_err(|e| Error::Login(claims_error(&e)))?;
    Ok(IdToken {
        raw: Zeroizing::new(id_token.to_string()),
        subject: claims.subject().as_str().to_string(),
        email: claims.email().map(|e| e.as_str().to_string()),
    })
}

/// The provider's configuration, from `ISSUER/.well-known/openid-configuration`.
fn provider(
    info: &InfoResponse,
    http: &reqwest::blocking::Client,
) -> Result<
    openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
> {
    let issuer_url = url::Url::parse(&info.issuer).map_err(|e| {
        Error::Login(format!(
            "the CA names an unusable issuer {:?}: {e}",
            info.issuer
        ))
    })?;
    if issuer_url.scheme() != "https"
        && !(issuer_url.scheme() == "http" && is_loopback(&issuer_url))
    {
        return Err(Error::Login(format!(
            "the CA names the issuer {}, which is not https://; tell your administrator",
            info.issuer
        )));
    }
    let issuer = IssuerUrl::new(info.issuer.clone())
        .map_err(|e| Error::Login(format!("the CA names an unusable issuer: {e}")))?;
    let metadata = CoreProviderMetadata::discover(&issuer, http).map_err(|e| {
        let reason = chain(&e);
        let hint = crate::client::tls_hint(&reason)
            .map(|hint| format!("{hint}; "))
            .unwrap_or_default();
        Error::Login(format!(
            "cannot read the identity provider's configuration at {}: {hint}{reason}",
            info.issuer,
        ))
    })?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(info.client_id.clone()),
        None,
    ))
}

/// A browser started for the login.
struct Launched {
    child: Child,
    /// Whether its failure should end the wait (an explicit `$BROWSER`, not `xdg-open`).
    fatal: bool,
    name: String,
}

impl Launched {
    /// An error once the browser command exited unsuccessfully, when that is fatal.
    fn failed(&mut self) -> Option<Error> {
        let status = self.child.try_wait().ok().flatten()?;
        (self.fatal && !status.success()).then(|| {
            Error::Login(format!(
                "the browser command {} failed ({status}); fix BROWSER, or run again with \
                 --no-browser and open the URL it prints by hand",
                self.name
            ))
        })
    }

    /// Waits for the browser command in the background, so it leaves no zombie.
    fn reap(mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            std::thread::spawn(move || {
                let _ = self.child.wait();
            });
        }
    }
}

/// Starts the browser `choice` names on `url`; `None` when there is none to start.
fn open_browser(choice: &Browser, url: &str) -> Option<Launched> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let (program, fatal) = match choice {
        Browser::None => return None,
        Browser::Command(program) => (program.clone(), true),
        Browser::Auto => match env("BROWSER") {
            Some(program) => (program, true),
            None if env("DISPLAY").is_some() || env("WAYLAND_DISPLAY").is_some() => {
                (OsString::from("xdg-open"), false)
            }
            None => return None,
        },
    };
    let name = program.to_string_lossy().into_owned();
    // The browser's output goes to stderr, keeping stdout for the command's own.
    let spawned = Command::new(&program)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .spawn();
    match spawned {
        Ok(child) => Some(Launched { child, fatal, name }),
        Err(e) => {
            eprintln!("(could not start {name}: {e}; open the URL by hand)");
            None
        }
    }
}

/// A failed code exchange in words, with the provider's own error code when it gave one.
fn token_error<RE, T>(error: &openidconnect::RequestTokenError<RE, T>) -> String
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match error {
        openidconnect::RequestTokenError::ServerResponse(response) => format!(
            "the identity provider refused the login code: {response}; run the command again"
        ),
        other => format!(
            "cannot exchange the login code for a token: {}",
            chain(other)
        ),
    }
}

/// A token check that failed, in words.
fn claims_error(error: &ClaimsVerificationError) -> String {
    match error {
        ClaimsVerificationError::InvalidNonce(_) => {
            "the ID token does not carry this session's nonce (a stale or replayed login); run \
             the command again"
                .into()
        }
        ClaimsVerificationError::Expired(_) => {
            "the ID token has already expired; check this machine's clock".into()
        }
        ClaimsVerificationError::InvalidAudience(_) => {
            format!("the ID token is for another client; tell your administrator ({error})")
        }
        ClaimsVerificationError::InvalidIssuer(_) => {
            format!("the ID token comes from another issuer; tell your administrator ({error})")
        }
        other => format!("the ID token does not check out: {}", chain(other)),
    }
}
