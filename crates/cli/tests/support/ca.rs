//! Harness for the CA's end-to-end tests: a real OpenID provider (node's `oidc-provider`, see
//! `tests/idp/README.md`) and its scripted browser, a fake device-management system answering
//! the compliance contract of docs/protocol.md, TPMs manufactured with EK certificates by
//! `swtpm_setup`, and an sshd that trusts a user CA and nothing else.
//!
//! Every server lives in a guard that stops it on drop, like the rest of the harness.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::{
    assert_ok, describe, poll_until, run, run_within, tempdir, tool, write, Daemon, Sshd, Swtpm,
    START_TIMEOUT,
};

/// How long one hand-made HTTP exchange of the harness may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The OpenID provider

/// One user of the test OpenID provider, as written to its accounts file.
#[derive(Clone, Debug)]
pub struct IdpAccount {
    /// User name typed on the login page; also the `sub` claim.
    pub name: String,
    /// Password the login page checks.
    pub password: String,
    /// The `email` claim.
    pub email: String,
    /// The `groups` claim (scope `groups`).
    pub groups: Vec<String>,
    /// A disabled user cannot log in, and the provider no longer finds an earlier login's account.
    pub disabled: bool,
    /// Lifetime of this user's ID tokens in seconds; the provider's default is 600.
    pub id_token_ttl: Option<u64>,
}

impl IdpAccount {
    /// An enabled user `name` with `password`, email `name@example.com` and no groups.
    pub fn new(name: &str, password: &str) -> IdpAccount {
        IdpAccount {
            name: name.to_owned(),
            password: password.to_owned(),
            email: format!("{name}@example.com"),
            groups: Vec::new(),
            disabled: false,
            id_token_ttl: None,
        }
    }

    /// The same user in `groups`.
    pub fn groups(mut self, groups: &[&str]) -> IdpAccount {
        self.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }

    /// The same user, disabled.
    pub fn disabled(mut self) -> IdpAccount {
        self.disabled = true;
        self
    }

    /// The same user, whose ID tokens live `seconds`.
    pub fn id_token_ttl(mut self, seconds: u64) -> IdpAccount {
        self.id_token_ttl = Some(seconds);
        self
    }
}

/// The accounts file's JSON: an object keyed by user name.
fn accounts_json(accounts: &[IdpAccount]) -> String {
    let mut map = serde_json::Map::new();
    for account in accounts {
        let mut entry = serde_json::json!({
            "password": account.password,
            "email": account.email,
            "groups": account.groups,
            "disabled": account.disabled,
        });
        if let Some(ttl) = account.id_token_ttl {
            entry["id_token_ttl"] = ttl.into();
        }
        map.insert(account.name.clone(), entry);
    }
    serde_json::Value::Object(map).to_string()
}

/// Folder of the provider, the browser and their npm packages.
pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// The scripted browser: an executable to put in `BROWSER`; it logs in as `LOGIN_USER` with
/// `LOGIN_PASSWORD` and delivers the code to the loopback redirect.
pub fn browser_path() -> PathBuf {
    idp_dir().join("login.mjs")
}

/// The variables that make a client open the scripted browser, logged in as `user`.
pub fn browser_env(user: &str, password: &str) -> Vec<(String, String)> {
    vec![
        ("BROWSER".to_owned(), browser_path().display().to_string()),
        ("LOGIN_USER".to_owned(), user.to_owned()),
        ("LOGIN_PASSWORD".to_owned(), password.to_owned()),
    ]
}

/// Runs the scripted browser on `url` as `user`, directly as a client runs `$BROWSER URL`;
/// exit 0 once the client's callback has the code.
pub fn run_browser(url: &str, user: &str, password: &str) -> Output {
    let mut cmd = tool(browser_path());
    cmd.arg(url).envs(browser_env(user, password));
    run(&mut cmd)
}

/// Panics with what to run when the provider's npm packages are missing.
fn assert_idp_installed() {
    let modules = idp_dir().join("node_modules/oidc-provider");
    assert!(
        modules.is_dir(),
        "{} is missing: run scripts/setup.sh (npm ci in {})",
        modules.display(),
        idp_dir().display()
    );
}

/// A running test OpenID provider on 127.0.0.1; stopped on drop.
pub struct Idp {
    daemon: Daemon,
    issuer: String,
    accounts: PathBuf,
    _dir: TempDir,
}

impl Idp {
    /// Starts the provider with native clients `client_ids` (no secret, PKCE, loopback redirect
    /// `http://127.0.0.1/callback` on any port) and the users `accounts`.
    pub fn start(client_ids: &[&str], accounts: &[IdpAccount]) -> Idp {
        assert_idp_installed();
        let dir = tempdir();
        let accounts_file = dir.path().join("accounts.json");
        let clients_file = dir.path().join("clients.json");
        write(&accounts_file, accounts_json(accounts));
        write(&clients_file, serde_json::json!(client_ids).to_string());

        // Port 0: the provider binds first and names its port in the issuer it prints.
        let mut cmd = tool("node");
        cmd.arg(idp_dir().join("provider.mjs"))
            .args(["--port", "0", "--accounts"])
            .arg(&accounts_file)
            .arg("--clients")
            .arg(&clients_file);
        let mut daemon = Daemon::spawn("idp", &mut cmd, dir.path());
        let listening = |daemon: &Daemon| {
            let out = daemon.stdout();
            let line = out.lines().find_map(|l| l.strip_prefix("listening on "));
            line.map(|issuer| issuer.trim().to_owned())
        };
        poll_until(START_TIMEOUT, || {
            !daemon.is_running() || listening(&daemon).is_some()
        });
        let issuer = listening(&daemon).unwrap_or_else(|| {
            panic!(
                "the OpenID provider did not start within {START_TIMEOUT:?}:\n{}",
                daemon.stderr()
            )
        });
        Idp {
            daemon,
            issuer,
            accounts: accounts_file,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, exactly as the provider puts it in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Port the provider listens on.
    pub fn port(&self) -> u16 {
        let port = self.issuer.rsplit(':').next().unwrap_or_default();
        port.parse().expect("issuer ends with a port")
    }

    /// Replaces the users (disable one, change groups); the provider reads them on every
    /// request, so this takes effect at once. The file is replaced atomically.
    pub fn set_accounts(&self, accounts: &[IdpAccount]) {
        let next = self.accounts.with_extension("json.next");
        write(&next, accounts_json(accounts));
        fs::rename(&next, &self.accounts).expect("replace the accounts file");
    }

    /// What the provider logged so far.
    pub fn log(&self) -> String {
        self.daemon.stderr()
    }

    /// The provider's discovery document.
    pub fn discovery(&self) -> serde_json::Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let response = http_get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status, 200, "GET {url}: {}", response.text());
        response.json()
    }
}

// ---------------------------------------------------------------------------------------------
// Logging in: authorization code + PKCE with a loopback redirect, as a native client does

/// What a completed login delivered to the loopback redirect.
#[derive(Debug)]
pub struct Login {
    /// The authorization code.
    pub code: String,
    /// The PKCE verifier that goes with the code.
    pub verifier: String,
    /// The redirect URI the code was issued for.
    pub redirect_uri: String,
}

/// The parameters of an authorization request.
#[derive(Clone, Debug)]
pub struct AuthRequest {
    pub client_id: String,
    pub scope: String,
    pub nonce: String,
    /// Sends an S256 `code_challenge` when true: a provider must refuse a request
    /// without PKCE from a client without a secret.
    pub pkce: bool,
    /// Path of the loopback redirect (`/callback` is the registered one).
    pub callback_path: String,
}

impl AuthRequest {
    /// Client `client_id`, scopes `openid email groups`, nonce `nonce`, PKCE, `/callback`.
    pub fn new(client_id: &str, nonce: &str) -> AuthRequest {
        AuthRequest {
            client_id: client_id.to_owned(),
            scope: "openid email groups".to_owned(),
            nonce: nonce.to_owned(),
            pkce: true,
            callback_path: "/callback".to_owned(),
        }
    }
}

impl Idp {
    /// The authorization URL for `request` with redirect `redirect_uri`, `state` and the
    /// S256 challenge of `verifier`.
    pub fn authorization_url(
        &self,
        request: &AuthRequest,
        redirect_uri: &str,
        state: &str,
        verifier: &str,
    ) -> String {
        let mut params = vec![
            ("response_type", "code".to_owned()),
            ("client_id", request.client_id.clone()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("scope", request.scope.clone()),
            ("state", state.to_owned()),
            ("nonce", request.nonce.clone()),
        ];
        if request.pkce {
            params.push(("code_challenge", pkce_challenge(verifier)));
            params.push(("code_challenge_method", "S256".to_owned()));
        }
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        format!("{}/auth?{}", self.issuer, query.join("&"))
    }

    /// Logs `user` in through the scripted browser and returns the code that reached the
    /// loopback redirect, or the browser's one-line reason for failing.
    pub fn login(
        &self,
        request: &AuthRequest,
        user: &str,
        password: &str,
    ) -> Result<Login, String> {
        let callback = Callback::start(&request.callback_path);
        let verifier = b64url(&random_bytes(32));
        let state = b64url(&random_bytes(16));
        let url = self.authorization_url(request, &callback.redirect_uri(), &state, &verifier);

        let out = run_browser(&url, user, password);
        if !out.status.success() {
            return Err(super::stderr(&out).trim().to_owned());
        }
        let target = callback
            .wait(Duration::from_secs(5))
            .ok_or("the browser succeeded but the loopback redirect saw no request")?;
        if query_param(&target, "state").as_deref() != Some(state.as_str()) {
            return Err(format!("the redirect carries the wrong state: {target}"));
        }
        let code = query_param(&target, "code").ok_or(format!("no code in {target}"))?;
        Ok(Login {
            code,
            verifier,
            redirect_uri: callback.redirect_uri(),
        })
    }

    /// Redeems `login`'s code at the token endpoint as the public client `client_id`.
    pub fn exchange(&self, client_id: &str, login: &Login) -> HttpResponse {
        let url = format!("{}/token", self.issuer);
        let form = [
            ("grant_type", "authorization_code"),
            ("code", login.code.as_str()),
            ("redirect_uri", login.redirect_uri.as_str()),
            ("client_id", client_id),
            ("code_verifier", login.verifier.as_str()),
        ];
        http_post_form(&url, &form).unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }

    /// A fresh ID token for `user` (client `client_id`, nonce `nonce`), or why there is none.
    pub fn id_token(
        &self,
        client_id: &str,
        user: &str,
        password: &str,
        nonce: &str,
    ) -> Result<String, String> {
        let login = self.login(&AuthRequest::new(client_id, nonce), user, password)?;
        let response = self.exchange(client_id, &login);
        if response.status != 200 {
            return Err(format!(
                "token endpoint: {} {}",
                response.status,
                response.text()
            ));
        }
        let token = response.json()["id_token"].as_str().map(str::to_owned);
        token.ok_or_else(|| format!("no id_token in {}", response.text()))
    }
}

/// The claims (middle part) of a JWT, unverified.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a JWT: {token:?}"));
    use base64ct::Encoding;
    let bytes = base64ct::Base64UrlUnpadded::decode_vec(payload).expect("base64url JWT payload");
    serde_json::from_slice(&bytes).expect("JSON JWT payload")
}

/// Base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    use base64ct::Encoding;
    base64ct::Base64UrlUnpadded::encode_string(bytes)
}

/// The S256 code challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    b64url(&sha2::Sha256::digest(verifier.as_bytes()))
}

/// A native client's loopback redirect listener on 127.0.0.1: records the request target of
/// the first request to its path and answers 200.
pub struct Callback {
    port: u16,
    path: String,
    received: mpsc::Receiver<String>,
    stopped: Arc<AtomicBool>,
}

impl Callback {
    /// Listens on a free port for `path` (e.g. `/callback`).
    pub fn start(path: &str) -> Callback {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let (send, received) = mpsc::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let wanted = path.to_owned();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(HTTP_TIMEOUT));
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let target = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let hit = target.split('?').next() == Some(wanted.as_str());
                let status = if hit { "200 OK" } else { "404 Not Found" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if hit {
                    let _ = send.send(target);
                    break;
                }
            }
        });
        Callback {
            port,
            path: path.to_owned(),
            received,
            stopped,
        }
    }

    /// `http://127.0.0.1:PORT/PATH`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.path)
    }

    /// The request target (path and query) of the redirect, once it came.
    pub fn wait(&self, timeout: Duration) -> Option<String> {
        self.received.recv_timeout(timeout).ok()
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop if it still waits; it then sees the flag and ends.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 client for the harness (loopback only, one request per connection)

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Splits `http://127.0.0.1:PORT/path?query` into address and path with query.
fn split_url(url: &str) -> io::Result<(String, String)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("not http: {url}"));
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    Ok((authority.to_owned(), path.to_owned()))
}

/// Sends one request with `Connection: close` and reads the whole answer within `timeout`.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let (authority, path) = split_url(url)?;
    let address = authority
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not IP:PORT"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// `GET url` with the harness's timeout.
pub fn http_get(url: &str) -> io::Result<HttpResponse> {
    http_request("GET", url, &[], b"", HTTP_TIMEOUT)
}

/// `POST url` of an `application/x-www-form-urlencoded` form.
pub fn http_post_form(url: &str, form: &[(&str, &str)]) -> io::Result<HttpResponse> {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    http_request("POST", url, &headers, body.as_bytes(), HTTP_TIMEOUT)
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no HTTP status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if response.header("transfer-encoding") == Some("chunked") {
        response.body = dechunk(&response.body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(response)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Percent-encoding of a form or query value (RFC 3986 unreserved characters kept).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Decoded value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The device-management system (docs/protocol.md, "Device compliance")

/// What the fake answers for a device.
#[derive(Clone, Debug)]
pub enum ComplianceAnswer {
    /// `200 {"compliant": true}`
    Compliant,
    /// `200 {"compliant": false}`
    NotCompliant,
    /// Any status and body, for answers outside the contract.
    Raw(u16, String),
    /// Reads the request and never answers (until the fake stops).
    Hang,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct ComplianceRequest {
    pub method: String,
    /// Path with query, e.g. `/devices/abcd`.
    pub path: String,
    /// The device id when the path is `/devices/{id}`.
    pub device_id: Option<String>,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
}

impl ComplianceRequest {
    /// First value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct ComplianceState {
    answers: HashMap<String, ComplianceAnswer>,
    default: Option<ComplianceAnswer>,
    requests: Vec<ComplianceRequest>,
}

/// A fake device-management system on 127.0.0.1: `GET /devices/{id}` answers what the test
/// set for that device (by default compliant). Stops, and then refuses connections, on
/// `stop` or drop.
pub struct ComplianceFake {
    port: u16,
    state: Arc<Mutex<ComplianceState>>,
    stopped: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl ComplianceFake {
    /// Starts the fake on a free port; every device is compliant until told otherwise.
    pub fn start() -> ComplianceFake {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(Mutex::new(ComplianceState::default()));
        let stopped = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let state = Arc::clone(&state);
            let stopped = Arc::clone(&stopped);
            thread::spawn(move || accept_compliance(listener, state, stopped))
        };
        ComplianceFake {
            port,
            state,
            stopped,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, the CA's compliance URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Port the fake listens on (or listened on, once stopped).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sets the answer for `device_id`.
    pub fn set(&self, device_id: &str, answer: ComplianceAnswer) {
        let mut state = self.state.lock().expect("compliance state");
        state.answers.insert(device_id.to_owned(), answer);
    }

    /// Sets the answer for devices without an answer of their own.
    pub fn set_default(&self, answer: ComplianceAnswer) {
        self.state.lock().expect("compliance state").default = Some(answer);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ComplianceRequest> {
        self.state
            .lock()
            .expect("compliance state")
            .requests
            .clone()
    }

    /// Closes the port (later connections are refused) and ends hanging answers.
    pub fn stop(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            self.stopped.store(true, Ordering::SeqCst);
            // Wake the accept loop so that it sees the flag and drops the listener.
            let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
            let _ = acceptor.join();
        }
    }
}

impl Drop for ComplianceFake {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_compliance(
    listener: TcpListener,
    state: Arc<Mutex<ComplianceState>>,
    stopped: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(&state);
        let stopped = Arc::clone(&stopped);
        thread::spawn(move || {
            // A client that goes away mid-request is its own problem.
            let _ = serve_compliance(stream, &state, &stopped);
        });
    }
}

fn serve_compliance(
    stream: TcpStream,
    state: &Mutex<ComplianceState>,
    stopped: &AtomicBool,
) -> io::Result<()> {
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let device_id = path
        .split('?')
        .next()
        .and_then(|p| p.strip_prefix("/devices/"))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .map(str::to_owned);

    let answer = {
        let mut state = state.lock().expect("compliance state");
        state.requests.push(ComplianceRequest {
            method: method.clone(),
            path,
            device_id: device_id.clone(),
            headers,
        });
        match &device_id {
            Some(id) if method == "GET" => state
                .answers
                .get(id)
                .or(state.default.as_ref())
                .cloned()
                .unwrap_or(ComplianceAnswer::Compliant),
            _ => ComplianceAnswer::Raw(404, r#"{"error":"not_found"}"#.to_owned()),
        }
    };

    let (status, body) = match answer {
        ComplianceAnswer::Compliant => (200, r#"{"compliant":true}"#.to_owned()),
        ComplianceAnswer::NotCompliant => (200, r#"{"compliant":false}"#.to_owned()),
        ComplianceAnswer::Raw(status, body) => (status, body),
        ComplianceAnswer::Hang => {
            while !stopped.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            return stream.shutdown(Shutdown::Both);
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} Answer\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

// ---------------------------------------------------------------------------------------------
// TPMs manufactured with EK certificates

/// Bumped when the layout or the `swtpm_setup` flags change, so old cached states are unused.
const MANUFACTURE_VERSION: &str = "v1";

/// A swtpm state made by `swtpm_setup --create-ek-cert --create-platform-cert`: an RSA-2048 EK
/// certificate at NV 0x01c00002, an ECC P-384 one at 0x01c00016 and a platform certificate at
/// 0x01c08000, all issued by a local CA (the tests' EK manufacturer) whose certificates are the
/// trust roots. Never started itself: `start` runs a TPM on a copy.
pub struct ManufacturedTpm {
    dir: PathBuf,
    _owned: Option<TempDir>,
}

impl ManufacturedTpm {
    /// The state shared by every test: made once and kept under the target directory, so that
    /// each test process (nextest runs one per test) pays for `swtpm_setup` only the first time.
    /// Every TPM started from it has the same EK, hence the same device id.
    pub fn shared() -> &'static ManufacturedTpm {
        static SHARED: OnceLock<ManufacturedTpm> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("manufactured-swtpm-{MANUFACTURE_VERSION}"));
            if !cache.join("state").is_dir() {
                let building = tempfile::Builder::new()
                    .prefix(".manufacturing.")
                    .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                    .expect("create a temporary directory under the target dir");
                manufacture(building.path());
                // Another test process may have won the race; then its state is as good.
                let built = building.keep();
                if fs::rename(&built, &cache).is_err() {
                    let _ = fs::remove_dir_all(&built);
                }
            }
            assert!(
                cache.join("state").is_dir(),
                "no manufactured state at {}",
                cache.display()
            );
            ManufacturedTpm {
                dir: cache,
                _owned: None,
            }
        })
    }

    /// A state with an EK and a local CA of its own (a second device, or an EK whose
    /// manufacturer the CA does not trust). Takes a few seconds.
    pub fn fresh() -> ManufacturedTpm {
        let dir = tempdir();
        manufacture(dir.path());
        ManufacturedTpm {
            dir: dir.path().to_owned(),
            _owned: Some(dir),
        }
    }

    /// The swtpm state directory (do not start a TPM on it; `start` copies it).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The local CA's root certificate (PEM, self-signed): the EK manufacturer's root.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("localca/swtpm-localca-rootca-cert.pem")
    }

    /// The local CA's issuing certificate (PEM, signed by the root), which signed the EK and
    /// platform certificates.
    pub fn issuer_cert(&self) -> PathBuf {
        self.dir.join("localca/issuercert.pem")
    }

    /// Root and issuer certificate, in that order: what a CA configures as EK trust roots.
    pub fn trust_roots(&self) -> Vec<PathBuf> {
        vec![self.root_cert(), self.issuer_cert()]
    }

    /// Starts a swtpm on a copy of the state, with the harness's relaxed lockout settings.
    pub fn start(&self) -> Swtpm {
        Swtpm::start_with_state(&self.state())
    }
}

/// Runs `swtpm_setup` into `dir`/state with a local CA in `dir`/localca.
fn manufacture(dir: &Path) {
    let state = dir.join("state");
    let local_ca = dir.join("localca");
    fs::create_dir_all(&state).expect("create the swtpm state dir");
    fs::create_dir_all(&local_ca).expect("create the local CA dir");

    // The configuration only matters while swtpm_setup runs: keep it out of `dir`, whose
    // path changes when the shared state is moved into place.
    let config_dir = tempdir();
    let localca_conf = config_dir.path().join("swtpm-localca.conf");
    let ca = local_ca.display();
    write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\n\
             issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n"
        ),
    );
    let options = config_dir.path().join("swtpm-localca.options");
    write(
        &options,
        "--platform-manufacturer ssh-tpm-tests\n--platform-version 2.1\n\
         --platform-model swtpm\n",
    );
    let setup_conf = config_dir.path().join("swtpm_setup.conf");
    write(
        &setup_conf,
        format!(
            "create_certs_tool = {}\ncreate_certs_tool_config = {}\n\
             create_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            super::which("swtpm_localca", "/usr/bin/swtpm_localca").display(),
            localca_conf.display(),
            options.display()
        ),
    );

    let mut cmd = tool("swtpm_setup");
    cmd.args(["--tpm2", "--tpmstate"])
        .arg(&state)
        .args(["--create-ek-cert", "--create-platform-cert", "--config"])
        .arg(&setup_conf);
    let timeout = Duration::from_secs(120);
    let out = run_within(&mut cmd, b"", timeout)
        .unwrap_or_else(|| panic!("swtpm_setup did not finish within {timeout:?}"));
    assert_ok(&out, "swtpm_setup --create-ek-cert");
    for cert in ["swtpm-localca-rootca-cert.pem", "issuercert.pem"] {
        assert!(
            local_ca.join(cert).is_file(),
            "swtpm_setup wrote no {cert}: {}",
            describe(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// sshd trusting a user CA

/// An sshd that accepts certificates signed by one user CA and no plain keys
/// (`TrustedUserCAKeys` with `AuthorizedKeysFile none`). Derefs to the harness's `Sshd`, so
/// `login` works as usual.
pub struct CaSshd {
    sshd: Sshd,
    _dir: TempDir,
}

impl CaSshd {
    /// Starts sshd trusting the CA whose public key line is `ca_public_line`.
    pub fn start(ca_public_line: &str) -> CaSshd {
        CaSshd::start_with_decoy(ca_public_line, "")
    }

    /// Like `start`, but with `authorized_keys` written to the harness's authorized_keys file,
    /// which this sshd must ignore: lets a test prove that `AuthorizedKeysFile none` holds.
    pub fn start_with_decoy(ca_public_line: &str, authorized_keys: &str) -> CaSshd {
        let dir = tempdir();
        let ca_file = dir.path().join("trusted_user_ca.pub");
        write(&ca_file, format!("{}\n", ca_public_line.trim()));
        let host_key = dir.path().join("host_ed25519");
        let out = run(tool("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key));
        assert_ok(&out, "ssh-keygen for the sshd host key");

        // These lines come before the harness's own AuthorizedKeysFile line, and sshd keeps
        // the first value it reads for a keyword.
        let host_config = format!(
            "HostKey {}\nAuthorizedKeysFile none\nTrustedUserCAKeys {}\n",
            host_key.display(),
            ca_file.display()
        );
        let sshd = Sshd::start_with_host_config(authorized_keys, &host_config);
        CaSshd { sshd, _dir: dir }
    }
}

impl Deref for CaSshd {
    type Target = Sshd;

    fn deref(&self) -> &Sshd {
        &self.sshd
    }
}

/// A plain OpenSSH key pair made by `ssh-keygen`: `dir`/`name` and `dir`/`name`.pub.
pub fn plain_key(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let key = dir.join(name);
    let out = run(tool("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&key));
    assert_ok(&out, &format!("ssh-keygen -t {kind}"));
    key
}

/// Signs the public key file `public` with the CA private key `ca_key` (`ssh-keygen -s`) as a
/// user certificate for `principals`, valid for `validity` (ssh-keygen's `-V` syntax, such as
/// `-5m:+1h`); returns the certificate's path (`…-cert.pub` beside `public`).
pub fn sign_user_cert(
    ca_key: &Path,
    public: &Path,
    principals: &[&str],
    validity: &str,
) -> PathBuf {
    let mut cmd = tool("ssh-keygen");
    cmd.arg("-s")
        .arg(ca_key)
        .args([
            "-I",
            "harness-test",
            "-n",
            &principals.join(","),
            "-V",
            validity,
        ])
        .arg(public);
    assert_ok(&run(&mut cmd), "ssh-keygen -s");
    let name = public.to_string_lossy();
    let stem = name.strip_suffix(".pub").unwrap_or(&name);
    PathBuf::from(format!("{stem}-cert.pub"))
}

/// OpenSSH's own `ssh-agent` on a private socket; SIGTERM on drop.
pub struct SshAgent {
    _daemon: Daemon,
    socket: PathBuf,
    _dir: TempDir,
}

impl SshAgent {
    /// Starts `ssh-agent -D` and waits until its socket accepts.
    pub fn start() -> SshAgent {
        let dir = tempdir();
        let socket = dir.path().join("agent.sock");
        let mut cmd = tool("ssh-agent");
        cmd.arg("-D").arg("-a").arg(&socket);
        let daemon = Daemon::spawn("ssh-agent", &mut cmd, dir.path());
        let up = poll_until(START_TIMEOUT, || super::accepts_unix(&socket));
        assert!(up, "ssh-agent did not start: {}", daemon.stderr());
        SshAgent {
            _daemon: daemon,
            socket,
            _dir: dir,
        }
    }

    /// Path of the agent's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ssh-add KEY`, which also loads `KEY-cert.pub` when it exists.
    pub fn add(&self, key: &Path) {
        let out = super::ssh_add(&self.socket, &[key.to_str().expect("UTF-8 key path")]);
        assert_ok(&out, "ssh-add");
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}
