//! The CA's configuration file (`ca.toml`): where it listens, where its key and database live,
//! whom it trusts (EK roots, the OpenID provider, the compliance service) and its limits.
//!
//! Relative paths in the file are taken relative to the file's own directory. Everything is
//! checked when the file is loaded, so that `serve` refuses to start rather than misbehave.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default session lifetime: five minutes.
pub const DEFAULT_SESSION_LIFETIME_SECS: u64 = 300;
/// The default certificate lifetime: 16 hours.
pub const DEFAULT_VALIDITY_SECS: u64 = 16 * 3600;
/// No certificate lives longer than this: 24 hours.
pub const MAX_VALIDITY_SECS: u64 = 24 * 3600;
/// Request bodies above this size are refused with 413 (docs/protocol.md, "Conventions").
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A configuration that could not be read or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}; create one with `ssh-tpm-ca init`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped settings.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line.
        message: String,
    },
    /// A setting has a value the CA refuses.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to set instead.
        message: String,
    },
}

/// A string that must not reach logs (a bearer token): `Debug` shows only that it is set.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// `ca.toml`, as written in the file (paths not yet resolved).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    database: Option<String>,
    ca_key: PathBuf,
    #[serde(default)]
    ek_roots: Vec<PathBuf>,
    #[serde(default = "default_session_lifetime")]
    session_lifetime_secs: u64,
    #[serde(default = "default_validity")]
    certificate_validity_secs: u64,
    oidc: OidcConfig,
    compliance: RawCompliance,
    #[serde(default)]
    rate_limit: RateLimitConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompliance {
    url: String,
    bearer_token: Option<SecretString>,
    bearer_token_file: Option<PathBuf>,
    #[serde(default = "default_compliance_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    tls_roots: Vec<PathBuf>,
}

fn default_session_lifetime() -> u64 {
    DEFAULT_SESSION_LIFETIME_SECS
}
fn default_validity() -> u64 {
    DEFAULT_VALIDITY_SECS
}
fn default_compliance_timeout() -> u64 {
    5
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_user_claim() -> String {
    "email".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_leeway() -> u64 {
    60
}
fn default_rate() -> u32 {
    30
}
fn default_address_rate() -> u32 {
    120
}

/// The OpenID provider whose ID tokens name the users.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; discovery is at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// Our client id at the provider: ID tokens must name it as their audience.
    pub client_id: String,
    /// The scopes clients request.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim that names the user: the inventory's `--user` and the first principal.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim that lists the user's groups (an array of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group name → extra principals for members of that group.
    #[serde(default)]
    pub group_principals: BTreeMap<String, Vec<String>>,
    /// Tolerated clock difference with the provider, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// PEM files of extra CA certificates to trust for the provider's TLS, besides the web PKI
    /// roots (resolved; each checked to hold a certificate).
    #[serde(default)]
    pub tls_roots: Vec<PathBuf>,
}

/// The device-management system asked before every certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceConfig {
    /// Base URL; the CA asks `GET {url}/devices/{device_id}`.
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer_token: Option<SecretString>,
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// PEM files of extra CA certificates to trust for its TLS, besides the web PKI roots.
    pub tls_roots: Vec<PathBuf>,
}

/// Requests per minute allowed per user and per device.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per minute for one user (enrolment and certificates together).
    #[serde(default = "default_rate")]
    pub per_user_per_minute: u32,
    /// Requests per minute for one device.
    #[serde(default = "default_rate")]
    pub per_device_per_minute: u32,
    /// Requests per minute from one client address (an IPv6 /64), of any kind; 0 turns the
    /// limit off (a CA behind a reverse proxy elsewhere sees only the proxy's address).
    /// Loopback clients are never limited.
    #[serde(default = "default_address_rate")]
    pub per_address_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_user_per_minute: default_rate(),
            per_device_per_minute: default_rate(),
            per_address_per_minute: default_address_rate(),
        }
    }
}

/// TLS certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A checked configuration with every path resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// TLS, required unless `listen` is a loopback address.
    pub tls: Option<TlsConfig>,
    /// `sqlite://PATH` (PATH resolved).
    pub database_url: String,
    /// The CA's OpenSSH private key.
    pub ca_key: PathBuf,
    /// PEM files with the EK manufacturers' root (and intermediate) certificates.
    pub ek_roots: Vec<PathBuf>,
    /// How long a session may be used.
    pub session_lifetime: Duration,
    /// How long a certificate is valid from the moment it is issued.
    pub certificate_validity: Duration,
    /// The OpenID provider.
    pub oidc: OidcConfig,
    /// The compliance service.
    pub compliance: ComplianceConfig,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
}

impl Config {
    /// Reads and checks `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and the setting to fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks `text` as if read from `path` (relative paths resolve beside it).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_message(text, &e),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(format!(
                "listen = {:?} is not an address and port such as \"127.0.0.1:8443\"",
                raw.listen
            ))
        })?;
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: resolve(cert),
                key: resolve(key),
            }),
            (None, None) => None,
            _ => return Err(invalid("set both tls_cert and tls_key, or neither".into())),
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(invalid(format!(
                "TLS is required to listen on {listen}: set tls_cert and tls_key, \
                 or listen on a loopback address"
            )));
        }

        let database_url = match &raw.database {
            None => format!("sqlite://{}", resolve(Path::new("ca.db")).display()),
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(p) if !p.is_empty() => format!("sqlite://{}", resolve(Path::new(p)).display()),
                _ => {
                    return Err(invalid(format!(
                        "database = {url:?}: only \"sqlite://PATH\" is supported"
                    )))
                }
            },
        };

        if raw.session_lifetime_secs == 0 || raw.session_lifetime_secs > 3600 {
            return Err(invalid(format!(
                "session_lifetime_secs = {}: must be between 1 and 3600",
                raw.session_lifetime_secs
            )));
        }
        if raw.certificate_validity_secs == 0 || raw.certificate_validity_secs > MAX_VALIDITY_SECS {
            return Err(invalid(format!(
                "certificate_validity_secs = {}: must be between 1 and {MAX_VALIDITY_SECS} \
                 (24 hours)",
                raw.certificate_validity_secs
            )));
        }

        check_https("oidc.issuer", &raw.oidc.issuer).map_err(invalid)?;
        if raw.oidc.client_id.is_empty() {
            return Err(invalid("oidc.client_id is empty".into()));
        }
        if raw.oidc.user_claim.is_empty() {
            return Err(invalid("oidc.user_claim is empty".into()));
        }

        let mut oidc = raw.oidc;
        oidc.tls_roots = resolve_roots("oidc", &oidc.tls_roots, &resolve).map_err(invalid)?;
        let compliance = resolve_compliance(raw.compliance, &resolve).map_err(invalid)?;
        let rl = raw.rate_limit;
        if rl.per_user_per_minute == 0 || rl.per_device_per_minute == 0 {
            return Err(invalid(
                "rate_limit.per_user_per_minute and per_device_per_minute must be at least 1 \
                 (per_address_per_minute may be 0, which turns it off)"
                    .into(),
            ));
        }

        Ok(Self {
            path: path.to_owned(),
            listen,
            tls,
            database_url,
            ca_key: resolve(&raw.ca_key),
            ek_roots: raw.ek_roots.iter().map(|p| resolve(p)).collect(),
            session_lifetime: Duration::from_secs(raw.session_lifetime_secs),
            certificate_validity: Duration::from_secs(raw.certificate_validity_secs),
            oidc,
            compliance,
            rate_limit: rl,
        })
    }
}

impl Config {
    /// Settings that are accepted but probably not what the operator meant, each with the fix;
    /// `serve` logs them as warnings at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let oidc = &self.oidc;
        // Providers that put groups into ID tokens on request (Dex, Okta, Authelia, Kanidm …)
        // want a scope named `groups`; some name it after the claim.
        let groups_scope = |s: &String| s == "groups" || *s == oidc.groups_claim;
        if !oidc.group_principals.is_empty() && !oidc.scopes.iter().any(groups_scope) {
            out.push(format!(
                "{}: [oidc.group_principals] maps groups, but [oidc] scopes {:?} does not ask for \
                 them, so most providers leave the {:?} claim out of ID tokens and no group \
                 principal is ever added; add \"groups\" (or your provider's scope for it) to \
                 scopes",
                self.path.display(),
                oidc.scopes,
                oidc.groups_claim
            ));
        }
        out
    }
}

fn resolve_compliance(
    raw: RawCompliance,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<ComplianceConfig, String> {
    // The bearer token goes with every request: never in clear off this host.
    check_https("compliance.url", &raw.url)?;
    let url = raw.url.trim_end_matches('/').to_owned();
    if raw.timeout_secs == 0 || raw.timeout_secs > 60 {
        return Err("compliance.timeout_secs must be between 1 and 60".into());
    }
    let bearer_token = match (raw.bearer_token, raw.bearer_token_file) {
        (Some(_), Some(_)) => {
            return Err("set compliance.bearer_token or bearer_token_file, not both".into())
        }
        (Some(t), None) => Some(t),
        (None, Some(file)) => {
            let file = resolve(&file);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            Some(SecretString(text.trim().to_owned()))
        }
        (None, None) => None,
    };
    Ok(ComplianceConfig {
        url,
        bearer_token,
        timeout: Duration::from_secs(raw.timeout_secs),
        tls_roots: resolve_roots("compliance", &raw.tls_roots, resolve)?,
    })
}

/// `[section] tls_roots`, resolved, each file checked to hold a PEM certificate.
fn resolve_roots(
    section: &str,
    roots: &[PathBuf],
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Vec<PathBuf>, String> {
    roots
        .iter()
        .map(|p| {
            let path = resolve(p);
            crate::http::read_roots(&path).map_err(|e| format!("{section}.tls_roots: {e}"))?;
            Ok(path)
        })
        .collect()
}

/// The URL of a service the CA calls (the OpenID provider, the compliance service) must be
/// `https://`, or `http://` on a loopback address (for tests and services on the same host).
fn check_https(setting: &str, url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if is_loopback_authority(authority) {
            return Ok(());
        }
    }
    Err(format!(
        "{setting} = {url:?}: must be an https:// URL (http:// only on 127.0.0.1 or [::1])"
    ))
}

fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// The parser's complaint about `text` with its line and column, on one line:
/// "line 3, column 1: unknown field `prot`, expected one of …".
fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().replace('\n', " ");
    let Some(start) = error.span().map(|span| span.start.min(text.len())) else {
        return message;
    };
    let before = text.get(..start).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    format!("line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_line_and_column_on_one_line() {
        let path = Path::new("/etc/ssh-tpm-ca/ca.toml");
        let e = Config::from_toml("# CA\nlisten: 1\n", path).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/ssh-tpm-ca/ca.toml: line 2, column 7: expected `.`, `=`"
        );
    }

    const MINIMAL: &str = r#"
listen = "127.0.0.1:8443"
ca_key = "ca_key"
[oidc]
issuer = "http://127.0.0.1:3000"
client_id = "ssh-tpm"
[compliance]
url = "http://127.0.0.1:9000/"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/ssh-tpm-ca/ca.toml"))
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_resolved_paths() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.database_url, "sqlite:///etc/ssh-tpm-ca/ca.db");
        assert_eq!(c.ca_key, Path::new("/etc/ssh-tpm-ca/ca_key"));
        assert_eq!(c.session_lifetime, Duration::from_secs(300));
        assert_eq!(c.certificate_validity, Duration::from_secs(16 * 3600));
        assert_eq!(c.compliance.url, "http://127.0.0.1:9000");
        assert_eq!(c.compliance.timeout, Duration::from_secs(5));
        assert_eq!(c.oidc.user_claim, "email");
        assert_eq!(c.rate_limit.per_address_per_minute, 120);
        assert_eq!(c.oidc.scopes, ["openid", "email", "profile"]);
        assert!(c.tls.is_none());
    }

    #[test]
    fn unknown_settings_are_refused() {
        let text = MINIMAL.replace("ca_key = \"ca_key\"", "ca_key = \"k\"\nlisten_port = 1");
        assert!(err(&text).contains("listen_port"), "{}", err(&text));
    }

    #[test]
    fn tls_is_required_off_loopback() {
        let text = MINIMAL.replace("127.0.0.1:8443", "0.0.0.0:8443");
        assert!(err(&text).contains("TLS is required"), "{}", err(&text));
        let with_tls = text.replace(
            "ca_key = \"ca_key\"",
            "ca_key = \"ca_key\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
        );
        let c = load(&with_tls).unwrap();
        assert_eq!(c.tls.unwrap().key, Path::new("/etc/ssh-tpm-ca/k.pem"));
        let v6 = MINIMAL.replace("127.0.0.1:8443", "[::1]:8443");
        assert!(load(&v6).is_ok());
        let half = MINIMAL.replace("ca_key = \"ca_key\"", "ca_key = \"k\"\ntls_cert = \"c\"");
        assert!(err(&half).contains("both"));
    }

    #[test]
    fn validity_above_a_day_is_refused() {
        let text = format!("certificate_validity_secs = 86401\n{MINIMAL}");
        assert!(err(&text).contains("24 hours"), "{}", err(&text));
        let day = format!("certificate_validity_secs = 86400\n{MINIMAL}");
        assert_eq!(load(&day).unwrap().certificate_validity.as_secs(), 86400);
        let zero = format!("certificate_validity_secs = 0\n{MINIMAL}");
        assert!(load(&zero).is_err());
    }

    #[test]
    fn plain_http_issuer_only_on_loopback() {
        let remote = MINIMAL.replace("http://127.0.0.1:3000", "http://idp.example");
        assert!(err(&remote).contains("https://"), "{}", err(&remote));
        let tricky = MINIMAL.replace("http://127.0.0.1:3000", "http://127.0.0.1.evil.example/");
        assert!(load(&tricky).is_err());
        let https = MINIMAL.replace("http://127.0.0.1:3000", "https://idp.example");
        assert!(load(&https).is_ok());
    }

    #[test]
    fn plain_http_compliance_only_on_loopback() {
        let url = "url = \"http://127.0.0.1:9000/\"";
        for remote in [
            "http://mdm.example.com",
            "http://127.0.0.1.evil.example/api",
            "http://10.0.0.1:9000",
            "ftp://127.0.0.1/",
        ] {
            let text = MINIMAL.replace(url, &format!("url = {remote:?}"));
            assert_eq!(
                err(&text),
                format!(
                    "/etc/ssh-tpm-ca/ca.toml: compliance.url = {remote:?}: must be an https:// \
                     URL (http:// only on 127.0.0.1 or [::1])"
                )
            );
        }
        for ok in [
            "https://mdm.example.com/api",
            "http://[::1]:9000",
            "http://127.0.0.2",
        ] {
            let text = MINIMAL.replace(url, &format!("url = {ok:?}"));
            assert!(load(&text).is_ok(), "{ok}");
        }
    }

    #[test]
    fn group_principals_without_the_groups_scope_warn() {
        assert!(load(MINIMAL).unwrap().warnings().is_empty());
        let mapped = format!("{MINIMAL}[oidc.group_principals]\nadmins = [\"root\"]\n");
        let warnings = load(&mapped).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "/etc/ssh-tpm-ca/ca.toml: [oidc.group_principals] maps groups, but [oidc] scopes \
                 [\"openid\", \"email\", \"profile\"] does not ask for them"
            ),
            "{warnings:?}"
        );
        let fix = "add \"groups\" (or your provider's scope for it) to scopes";
        assert!(warnings[0].ends_with(fix), "{warnings:?}");

        let asked = mapped.replace(
            "client_id = \"ssh-tpm\"",
            "client_id = \"ssh-tpm\"\nscopes = [\"openid\", \"groups\"]",
        );
        assert!(load(&asked).unwrap().warnings().is_empty());
    }

    #[test]
    fn only_sqlite_databases() {
        let pg = format!("database = \"postgres://db/ca\"\n{MINIMAL}");
        assert!(err(&pg).contains("sqlite://"));
        let rel = format!("database = \"sqlite://data/ca.db\"\n{MINIMAL}");
        assert_eq!(
            load(&rel).unwrap().database_url,
            "sqlite:///etc/ssh-tpm-ca/data/ca.db"
        );
    }

    #[test]
    fn bearer_token_is_redacted() {
        let text = MINIMAL.replace(
            "url = \"http://127.0.0.1:9000/\"",
            "url = \"http://127.0.0.1:9000/\"\nbearer_token = \"hunter2\"",
        );
        let c = load(&text).unwrap();
        assert_eq!(
            c.compliance.bearer_token.as_ref().unwrap().expose(),
            "hunter2"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
