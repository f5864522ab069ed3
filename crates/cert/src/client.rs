//! `CaClient`: one call per endpoint of the CA protocol (docs/protocol.md), over HTTPS with
//! rustls, or plain HTTP to a CA on a loopback address. A refusal comes back as
//! [`Error::Refused`] with its code.

use std::io::Read as _;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use ssh_tpm_attest::protocol::{
    ActivateRequest, ActivateResponse, CertificateRequest, CertificateResponse, EnrollChallenge,
    EnrollRequest, ErrorBody, InfoResponse, SessionResponse,
};
use ssh_tpm_attest::Refusal;
use url::Url;

use crate::error::{Error, Result};

/// Largest answer read from the CA or the identity provider; theirs are a few KiB.
const MAX_ANSWER: u64 = 1024 * 1024;

/// How the client talks HTTP.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Limit on each request, connection to last byte.
    pub timeout: Duration,
    /// Roots trusted beside the built-in web PKI roots (an organisation's own CA).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            extra_roots: Vec::new(),
        }
    }
}

impl HttpOptions {
    /// A blocking client that follows no redirects (a redirect could send a token elsewhere).
    pub fn client(&self) -> Result<Client> {
        let mut builder = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("ssh-tpm-cert/", env!("CARGO_PKG_VERSION")));
        for root in &self.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
            .build()
            .map_err(|e| Error::Usage(format!("cannot set up HTTPS: {e}")))
    }

    /// Reads a PEM file of root certificates for [`HttpOptions::extra_roots`].
    pub fn add_roots_from_pem(&mut self, pem: &[u8]) -> Result<()> {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Usage(format!("cannot read the root certificates: {e}")))?;
        if roots.is_empty() {
            return Err(Error::Usage(
                "the root certificate file holds no certificate".into(),
            ));
        }
        self.extra_roots.extend(roots);
        Ok(())
    }
}

/// A connection to one CA.
#[derive(Debug, Clone)]
pub struct CaClient {
    base: Url,
    http: Client,
}

impl CaClient {
    /// A client for the CA at `url` (`https://ca.example`, or `http://127.0.0.1:PORT` for a
    /// CA on this machine). Plain HTTP to another host is refused: the requests carry ID
    /// tokens.
    pub fn new(url: &str, options: &HttpOptions) -> Result<Self> {
        let base = ca_url(url)?;
        Ok(CaClient {
            base,
            http: options.client()?,
        })
    }

    /// The CA's URL, as given (with a trailing slash).
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// `GET /v1/info`: the identity provider and the CA's key.
    pub fn info(&self) -> Result<InfoResponse> {
        self.call(Method::GET, "v1/info", None::<&()>)
    }

    /// `POST /v1/sessions`: a fresh session, usable once.
    pub fn session(&self) -> Result<SessionResponse> {
        self.call(Method::POST, "v1/sessions", Some(&serde_json_empty()))
    }

    /// `POST /v1/enroll`: the MakeCredential challenge for this EK and AK.
    pub fn enroll(&self, request: &EnrollRequest) -> Result<EnrollChallenge> {
        self.call(Method::POST, "v1/enroll", Some(request))
    }

    /// `POST /v1/enroll/activate`: the secret back; the CA pins the AK.
    pub fn activate(&self, request: &ActivateRequest) -> Result<ActivateResponse> {
        self.call(Method::POST, "v1/enroll/activate", Some(request))
    }

    /// `POST /v1/certificates`: a certificate for the attested key.
    pub fn certificate(&self, request: &CertificateRequest) -> Result<CertificateResponse> {
        self.call(Method::POST, "v1/certificates", Some(request))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::Usage(format!("bad CA URL {}: {e}", self.base)))?;
        let what = format!("the CA at {}", self.base);
        tracing::debug!(%method, %url, "CA request");
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().map_err(|e| unreachable(&what, &e))?;
        read_answer(&what, response)
    }
}

/// `{}`, the body of `POST /v1/sessions`.
fn serde_json_empty() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::new()
}

/// Checks and normalises the CA's URL.
fn ca_url(text: &str) -> Result<Url> {
    let bad = |why: &str| Error::Usage(format!("{text:?} is not a CA URL: {why}"));
    let mut url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(bad(
                "plain HTTP is only allowed to a CA on this machine; use https://",
            ))
        }
        _ => return Err(bad("use https://HOST")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("leave out the query and fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Whether `url` names this machine by address (`127.0.0.0/8`, `[::1]`) or as `localhost`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A transport failure in words: timeouts and refused connections named as such.
pub(crate) fn unreachable(what: &str, error: &reqwest::Error) -> Error {
    let reason = if error.is_timeout() {
        "no answer in time; check the network, or try again later".to_string()
    } else {
        let reason = crate::error::chain(error);
        match tls_hint(&reason) {
            Some(hint) => format!("{hint} ({reason})"),
            None => reason,
        }
    };
    Error::Unreachable {
        what: what.to_string(),
        reason,
    }
}

/// What a TLS failure in `reason` (rustls's words) means for the user, when it is one of
/// the common ones: a plain-HTTP server behind an `https://` URL, or a certificate from a
/// root this machine does not know.
pub(crate) fn tls_hint(reason: &str) -> Option<&'static str> {
    if reason.contains("InvalidContentType") {
        Some(
            "it does not speak TLS there (a plain-HTTP server?); an http:// URL is accepted \
             only for one listening on loopback",
        )
    } else if reason.contains("UnknownIssuer") {
        Some(
            "its TLS certificate is not from a root this machine trusts; if your organisation \
             runs its own PKI, add its root certificate with --tls-roots FILE",
        )
    } else {
        None
    }
}

/// The body of a success as `T`; an error body as [`Error::Refused`].
fn read_answer<T: DeserializeOwned>(what: &str, response: Response) -> Result<T> {
    let status = response.status();
    let mut body = Vec::new();
    response
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Unreachable {
            what: what.to_string(),
            reason: format!("the answer broke off: {e}"),
        })?;
    if body.len() as u64 > MAX_ANSWER {
        return Err(bad_answer(what, "the answer is too large"));
    }
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| bad_answer(what, &e.to_string()));
    }
    Err(error_answer(what, status, &body))
}

fn error_answer(what: &str, status: StatusCode, body: &[u8]) -> Error {
    let Ok(error) = serde_json::from_slice::<ErrorBody>(body) else {
        return bad_answer(
            what,
            &format!("HTTP {status} without the protocol's error body; is the URL the CA's?"),
        );
    };
    match error.error.parse::<Refusal>() {
        Ok(refusal) => Error::Refused {
            refusal,
            message: error.message,
        },
        Err(_) => Error::CaError {
            status: status.as_u16(),
            code: error.error,
            message: error.message,
        },
    }
}

fn bad_answer(what: &str, reason: &str) -> Error {
    Error::BadAnswer {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_urls() {
        assert_eq!(
            ca_url("https://ca.example").expect("https").as_str(),
            "https://ca.example/"
        );
        assert_eq!(
            ca_url("https://ca.example/org")
                .expect("https")
                .join("v1/info")
                .expect("join")
                .as_str(),
            "https://ca.example/org/v1/info"
        );
        assert!(ca_url("http://127.0.0.1:8080").is_ok());
        assert!(ca_url("http://[::1]:8080").is_ok());
        let plain = ca_url("http://ca.example")
            .expect_err("plain http")
            .to_string();
        assert!(plain.contains("use https://"), "{plain}");
        assert!(ca_url("ftp://ca.example").is_err());
        assert!(ca_url("ca.example").is_err());
    }

    #[test]
    fn error_bodies_become_refusals() {
        let body = br#"{"error":"device_retired","message":"retired on 2026-01-01"}"#;
        let error = error_answer("the CA", StatusCode::FORBIDDEN, body);
        assert_eq!(error.refusal(), Some(Refusal::DeviceRetired));
        assert!(error.to_string().contains("retired on 2026-01-01"));

        let unknown = br#"{"error":"new_code","message":"m"}"#;
        let error = error_answer("the CA", StatusCode::FORBIDDEN, unknown);
        assert!(
            matches!(error, Error::CaError { status: 403, .. }),
            "{error}"
        );

        let html = b"<html>bad gateway</html>";
        let error = error_answer("the CA", StatusCode::BAD_GATEWAY, html);
        assert!(error.to_string().contains("HTTP 502"), "{error}");
    }

    /// A one-connection-at-a-time HTTP server answering each request with the next of
    /// `answers` (status, body); `None` hangs without answering.
    fn fake_ca(
        answers: Vec<Option<(u16, &'static str)>>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead as _, BufReader, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                reader.read_line(&mut line).expect("request line");
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).expect("header");
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; length];
                std::io::Read::read_exact(&mut reader, &mut body).expect("body");
                seen.push(format!("{}{}", line.trim(), String::from_utf8_lossy(&body)));
                let Some((status, body)) = answer else {
                    std::thread::sleep(Duration::from_millis(1500));
                    continue;
                };
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .expect("answer");
            }
            seen
        });
        (url, server)
    }

    #[test]
    fn calls_reach_their_endpoints_and_refusals_keep_their_code() {
        let info = r#"{"issuer":"http://127.0.0.1:1","client_id":"ssh-tpm","scopes":["openid"],
            "ca_public_key":"ssh-ed25519 AAAA ca","default_validity_secs":57600}"#;
        let session = r#"{"session_id":"s","nonce":"AAAA","expires_at":5,"oidc_nonce":"n"}"#;
        let refused = r#"{"error":"device_retired","message":"gone"}"#;
        let (url, server) = fake_ca(vec![
            Some((200, info)),
            Some((200, session)),
            Some((403, refused)),
            None,
        ]);
        let options = HttpOptions {
            timeout: Duration::from_millis(700),
            ..HttpOptions::default()
        };
        let ca = CaClient::new(&url, &options).expect("client");
        assert_eq!(ca.info().expect("info").client_id, "ssh-tpm");
        assert_eq!(ca.session().expect("session").session_id, "s");
        let request = ActivateRequest {
            challenge_id: "c".into(),
            secret: "s3cret".into(),
        };
        let error = ca.activate(&request).expect_err("refused");
        assert_eq!(error.refusal(), Some(Refusal::DeviceRetired));
        let error = ca.info().expect_err("hangs").to_string();
        assert!(error.contains("no answer in time"), "{error}");

        let seen = server.join().expect("server");
        assert_eq!(seen[0], "GET /v1/info HTTP/1.1");
        assert_eq!(seen[1], "POST /v1/sessions HTTP/1.1{}");
        assert!(
            seen[2].starts_with("POST /v1/enroll/activate HTTP/1.1{"),
            "{}",
            seen[2]
        );
    }

    #[test]
    fn https_to_a_plain_http_server_says_so() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("https://{}/", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        });
        let ca = CaClient::new(&url, &HttpOptions::default()).expect("client");
        let error = ca.info().expect_err("not TLS").to_string();
        assert!(
            error.starts_with(&format!(
                "cannot reach the CA at {url}: it does not speak TLS there (a plain-HTTP \
                 server?); an http:// URL is accepted only for one listening on loopback ("
            )),
            "{error}"
        );
        server.join().expect("server");

        let unknown = "error sending request: invalid peer certificate: UnknownIssuer";
        assert!(tls_hint(unknown)
            .expect("hint")
            .contains("--tls-roots FILE"));
        assert_eq!(tls_hint("connection refused"), None);
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let ca = CaClient::new(&format!("http://127.0.0.1:{port}"), &HttpOptions::default())
            .expect("client");
        let error = ca.session().expect_err("closed");
        assert!(matches!(error, Error::Unreachable { .. }), "{error}");
        assert!(error
            .to_string()
            .starts_with("cannot reach the CA at http://127.0.0.1:"));
    }
}
