//! The loopback redirect of the login (RFC 8252, 7.3): a one-shot HTTP listener on
//! `127.0.0.1:PORT` that waits for the identity provider to send the browser back to
//! `/callback?code=…&state=…`, answers with a page the user can close, and hands the code on.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use url::Url;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The redirect path.
pub const CALLBACK_PATH: &str = "/callback";

/// Largest request head read from the browser.
const MAX_REQUEST: usize = 16 * 1024;

/// How long one browser connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the listener looks for a connection (and for the browser command's end).
const POLL: Duration = Duration::from_millis(50);

/// A listener on a random loopback port.
#[derive(Debug)]
pub struct CallbackServer {
    listener: TcpListener,
    port: u16,
}

/// What the identity provider sent back: the authorization code (secret).
pub struct Callback {
    /// The authorization code.
    pub code: Zeroizing<String>,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback { code: <redacted> }")
    }
}

impl CallbackServer {
    /// Binds `127.0.0.1:0`.
    pub fn bind() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("cannot listen on 127.0.0.1 for the login's redirect", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("cannot tell the redirect listener's port", e))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot set up the redirect listener", e))?;
        Ok(CallbackServer { listener, port })
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}", self.port)
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits up to `timeout` for the redirect carrying `state`. Requests for other paths
    /// (a browser's `/favicon.ico`) get a 404, callbacks without `state` a 400, and the wait
    /// goes on. `give_up` is asked at
    /// each poll and ends the wait early with its error (the browser command failed).
    pub fn wait(
        &self,
        state: &str,
        timeout: Duration,
        mut give_up: impl FnMut() -> Option<Error>,
    ) -> Result<Callback> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(outcome) = serve(stream, state) {
                        return outcome;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(error) = give_up() {
                        return Err(error);
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Login(format!(
                            "no answer from the browser within {} s; run the command again \
                             and finish the login in time",
                            timeout.as_secs()
                        )));
                    }
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(Error::io("cannot accept the login's redirect", e)),
            }
        }
    }
}

/// Answers one connection; `None` when it was not the callback (keep waiting).
fn serve(mut stream: TcpStream, state: &str) -> Option<Result<Callback>> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let Some(target) = read_target(&mut stream) else {
        respond(
            &mut stream,
            400,
            "Bad request",
            "This is not a request this page understands.",
        );
        return None;
    };
    let Ok(url) = Url::parse("http://127.0.0.1").and_then(|base| base.join(&target)) else {
        respond(
            &mut stream,
            400,
            "Bad request",
            "This is not a request this page understands.",
        );
        return None;
    };
    if url.path() != CALLBACK_PATH {
        respond(&mut stream, 404, "Not found", "Nothing here.");
        return None;
    }
    // Without this login's state it is not the provider's redirect (a stale tab, another
    // program, a forged request): it must not end the login.
    if !has_state(&url, state) {
        tracing::debug!("a callback without this login's state was ignored");
        respond(
            &mut stream,
            400,
            "Not this login",
            "This page does not belong to the login under way; it was ignored.",
        );
        return None;
    }
    let outcome = check(&url, state);
    match &outcome {
        Ok(_) => respond(
            &mut stream,
            200,
            "Logged in",
            "You are logged in. You can close this tab and go back to the terminal.",
        ),
        Err(_) => respond(
            &mut stream,
            400,
            "Login failed",
            "The login did not succeed. The terminal says why; you can close this tab.",
        ),
    }
    Some(outcome)
}

/// Whether the callback's query carries `state`.
fn has_state(url: &Url, state: &str) -> bool {
    url.query_pairs()
        .any(|(name, value)| name == "state" && value == state)
}

/// The callback's query: the code (`state` checked again), else why not.
pub(crate) fn check(url: &Url, state: &str) -> Result<Callback> {
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut description = None;
    for (name, value) in url.query_pairs() {
        match name.as_ref() {
            "code" => code = Some(Zeroizing::new(value.into_owned())),
            "state" => got_state = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            "error_description" => description = Some(value.into_owned()),
            _ => {}
        }
    }
    if got_state.as_deref() != Some(state) {
        return Err(Error::Login(
            "the browser came back without this login's state (another login, or a forged \
             request); run the command again"
                .into(),
        ));
    }
    if let Some(error) = error {
        let description = description.map(|d| format!(": {}", printable(&d)));
        return Err(Error::Login(format!(
            "the identity provider said {}{}",
            printable(&error),
            description.unwrap_or_default()
        )));
    }
    match code {
        Some(code) if !code.is_empty() => Ok(Callback { code }),
        _ => Err(Error::Login(
            "the identity provider sent the browser back without a code; run the command again"
                .into(),
        )),
    }
}

/// Text from the network, cut short and without control characters, fit for a terminal.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The request target of a `GET` request, once the whole head has arrived.
fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return None;
        }
    }
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (method == "GET" && target.starts_with('/') && version.starts_with("HTTP/1."))
        .then(|| target.to_string())
}

fn respond(stream: &mut TcpStream, status: u16, title: &str, text: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ssh-tpm: {title}</title>\
         </head><body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A browser stand-in: sends `GET target` and returns the status line and body.
    fn browse(port: u16, target: &str) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read answer");
        answer
    }

    #[test]
    fn the_callback_hands_over_the_code_after_other_requests() {
        let server = CallbackServer::bind().expect("bind");
        assert!(server.redirect_uri().starts_with("http://127.0.0.1:"));
        assert!(server.redirect_uri().ends_with("/callback"));
        let port = server.port();
        let browser = std::thread::spawn(move || {
            let favicon = browse(port, "/favicon.ico");
            let callback = browse(port, "/callback?code=c%2Fde&state=st8");
            (favicon, callback)
        });
        let callback = server
            .wait("st8", Duration::from_secs(10), || None)
            .expect("callback");
        assert_eq!(callback.code.as_str(), "c/de");
        assert!(!format!("{callback:?}").contains("c/de"));
        let (favicon, page) = browser.join().expect("browser thread");
        assert!(favicon.starts_with("HTTP/1.1 404"), "{favicon}");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("You can close this tab"), "{page}");
    }

    #[test]
    fn callbacks_without_this_state_are_answered_and_ignored() {
        let server = CallbackServer::bind().expect("bind");
        let port = server.port();
        let browser = std::thread::spawn(move || {
            let wrong = browse(port, "/callback?code=c&state=other");
            let missing = browse(port, "/callback?error=access_denied");
            let right = browse(port, "/callback?code=mine-code&state=mine");
            (wrong, missing, right)
        });
        let callback = server
            .wait("mine", Duration::from_secs(10), || None)
            .expect("the right callback");
        assert_eq!(callback.code.as_str(), "mine-code");
        let (wrong, missing, right) = browser.join().expect("browser");
        assert!(wrong.starts_with("HTTP/1.1 400"), "{wrong}");
        assert!(wrong.contains("was ignored"), "{wrong}");
        assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
        assert!(right.starts_with("HTTP/1.1 200"), "{right}");
    }

    #[test]
    fn provider_errors_and_missing_codes() {
        let base = Url::parse("http://127.0.0.1/").expect("url");
        let denied = base
            .join("/callback?error=access_denied&error_description=user%20disabled&state=s")
            .expect("url");
        let error = check(&denied, "s").expect_err("denied").to_string();
        assert!(error.contains("access_denied: user disabled"), "{error}");

        let no_code = base.join("/callback?state=s").expect("url");
        assert!(check(&no_code, "s").is_err());
        let no_state = base.join("/callback?code=c").expect("url");
        assert!(check(&no_state, "s").is_err());
    }

    #[test]
    fn the_wait_ends_at_the_timeout_or_when_told() {
        let server = CallbackServer::bind().expect("bind");
        let started = Instant::now();
        let error = server
            .wait("s", Duration::from_millis(200), || None)
            .expect_err("timeout");
        assert!(
            error.to_string().contains("no answer from the browser"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        let error = server
            .wait("s", Duration::from_secs(60), || {
                Some(Error::Login("browser failed".into()))
            })
            .expect_err("given up");
        assert!(error.to_string().contains("browser failed"));
    }
}
