//! Crash tests of the CA (issue 7): `ssh-tpm-ca serve` is killed with SIGKILL at a point where
//! a request has spent a one-use secret (a session, an enrolment challenge) or is about to, and
//! has not yet recorded what it did; then it is started again on the same database and
//! configuration. Nothing half-done may survive the crash: a spent session stays spent, no
//! certificate is in the audit log or came back, an unanswered challenge is still answerable
//! once, and the next request is served as usual.
//!
//! The CA is held at those points by real stalls, not by hooks in the product: a compliance
//! service that does not answer yet, and another SQLite writer holding the database's lock.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ssh_key::{Certificate, PublicKey};
use ssh_tpm_attest::protocol::{
    ActivateRequest, CertificateRequest, CertificateResponse, EnrollChallenge,
};
use ssh_tpm_cert::enroll::{self, EkFamily};
use ssh_tpm_cert::Error;
use ssh_tpm_tpm::AkTemplate;
use support::ca::ComplianceAnswer;
use support::ca_world::{assert_refusal, CaServer, CaSettings, World};
use support::{current_user, poll_until, tool};

/// What `--debug` makes the SQLite store log when another writer holds the database.
const BUSY_LINE: &str = "database busy; retrying";
/// How long a test waits for the CA to reach the point where it is held.
const HOLD_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Issuance

/// The CA is killed while it waits for the compliance answer: the session is used, the token
/// and the inventory checked, nothing signed or recorded.
#[test]
fn issuance_killed_while_compliance_hangs() {
    let mut world = World::enrolled(patient_compliance(), "alice");
    let devices = world.ca.run_ok(&["device", "list"]);
    world
        .compliance
        .set(&world.device_id, ComplianceAnswer::Hang);
    let request = world.good_request("alice");

    let pending = submit_in_background(&world.ca, &request);
    let held = poll_until(HOLD_TIMEOUT, || {
        let asked = world.compliance.requests();
        asked
            .iter()
            .any(|r| r.device_id.as_deref() == Some(&world.device_id))
    });
    assert!(
        held,
        "the CA never asked about compliance:\n{}",
        world.ca.log()
    );
    world.ca.kill();
    assert_no_answer(pending, &world.ca);

    world
        .compliance
        .set(&world.device_id, ComplianceAnswer::Compliant);
    world.ca.restart(&[]);
    assert_recovered(&world, &request, &devices);
}

/// The compliance answer comes, the evidence is checked and the certificate signed, and the
/// CA is killed while recording it waits for the database (another writer holds its lock).
#[test]
fn issuance_killed_while_recording_waits_for_the_database() {
    let mut world = World::enrolled(patient_compliance(), "alice");
    let devices = world.ca.run_ok(&["device", "list"]);
    let gate = Gate::start();
    world.ca.set_config("url", &format!("\"{}\"", gate.url()));
    world.ca.restart(&["--debug"]);
    let request = world.good_request("alice");

    let pending = submit_in_background(&world.ca, &request);
    assert!(
        gate.wait_for_requests(1, HOLD_TIMEOUT),
        "the CA never asked about compliance:\n{}",
        world.ca.log()
    );
    let lock = DbLock::take(&database(&world.ca));
    gate.open();
    wait_until_busy(&world.ca, "INSERT INTO issuances");
    assert!(
        !pending.is_finished(),
        "the CA answered while the database was locked"
    );
    world.ca.kill();
    drop(lock);
    assert_no_answer(pending, &world.ca);

    world.ca.restart(&[]);
    assert_recovered(&world, &request, &devices);
}

/// The compliance service holds its answer long enough for the tests to kill the CA meanwhile.
fn patient_compliance() -> CaSettings {
    CaSettings {
        compliance_timeout_secs: Some(60),
        ..CaSettings::default()
    }
}

/// After a crash during `request`: its session is spent (replay refused and logged), the
/// audit log holds no issuance, the inventory is as `devices` was before, and a new session
/// gets a certificate for the world's key that is then the one issuance in the log.
#[track_caller]
fn assert_recovered(world: &World, request: &CertificateRequest, devices: &str) {
    world.assert_refused(request, "session_replayed", &["already used"]);
    assert_eq!(issuances(&world.ca).len(), 0, "{}", world.ca.audit());
    assert_eq!(world.ca.run_ok(&["device", "list"]), devices);

    let issued = world.submit(&world.good_request("alice"));
    let issued = issued.unwrap_or_else(|e| panic!("after the restart: {e}\n{}", world.ca.log()));
    let cert = Certificate::from_openssh(&issued.certificate).expect("an OpenSSH certificate");
    let key = PublicKey::from_openssh(&world.key.public_line()).expect("the key's public line");
    assert_eq!(cert.public_key(), key.key_data(), "certified another key");
    assert!(cert.valid_principals().contains(&current_user()));
    let logged = issuances(&world.ca);
    assert_eq!(logged.len(), 1, "{}", world.ca.audit());
    assert_eq!(logged[0]["serial"], issued.serial);
}

// ---------------------------------------------------------------------------------------------
// Enrolment

/// The CA is killed after it sent its challenge and before the TPM's answer arrives. The
/// challenge lives in the database: the answer pins the AK after the restart, and the same
/// answer again is refused without pinning anything.
#[test]
fn enrolment_killed_between_challenge_and_answer() {
    let mut world = World::start();
    world.ca.add_device(&world.ek_cert, "alice");
    let challenge = enrolment_challenge(&world);
    world.ca.kill();
    let answer = answer_challenge(&world, &challenge);

    world.ca.restart(&[]);
    assert_enrolled_once(&world, &answer);
}

/// The CA is killed inside the activation, while its transaction waits for the database
/// (another writer holds the lock): neither the challenge is spent nor the AK pinned, so the
/// same answer still works once after the restart.
#[test]
fn enrolment_killed_while_activation_waits_for_the_database() {
    let mut world = World::start();
    world.ca.add_device(&world.ek_cert, "alice");
    world.ca.restart(&["--debug"]);
    let challenge = enrolment_challenge(&world);
    let answer = answer_challenge(&world, &challenge);

    let lock = DbLock::take(&database(&world.ca));
    let pending = {
        let client = world.ca.client();
        let answer = answer.clone();
        thread::spawn(move || client.activate(&answer))
    };
    wait_until_busy(&world.ca, "UPDATE challenges SET used");
    assert!(
        !pending.is_finished(),
        "the CA answered while the database was locked"
    );
    world.ca.kill();
    drop(lock);
    assert_no_answer(pending, &world.ca);

    world.ca.restart(&[]);
    let devices = world.ca.run_ok(&["device", "list"]);
    assert!(devices.contains(" not-enrolled "), "{devices}");
    assert_enrolled_once(&world, &answer);
}

/// Session, login and `POST /v1/enroll` with the world's RSA EK and standard AK.
fn enrolment_challenge(world: &World) -> EnrollChallenge {
    let client = world.ca.client();
    let session = client.session().expect("POST /v1/sessions");
    let token = world.token("alice", &session.oidc_nonce);
    let mut tpm = world.open_tpm();
    let ek = enroll::choose_ek(&mut tpm, Some(EkFamily::Rsa)).expect("the RSA EK");
    let request = enroll::request(&mut tpm, &ek, AkTemplate::Standard, &session, &token)
        .expect("the enrolment request");
    client
        .enroll(&request)
        .unwrap_or_else(|e| panic!("POST /v1/enroll: {e}\n{}", world.ca.log()))
}

/// TPM2_ActivateCredential on `challenge`: the body of `POST /v1/enroll/activate`.
fn answer_challenge(world: &World, challenge: &EnrollChallenge) -> ActivateRequest {
    let mut tpm = world.open_tpm();
    let ek = enroll::choose_ek(&mut tpm, Some(EkFamily::Rsa)).expect("the RSA EK");
    enroll::activate(&mut tpm, &ek, AkTemplate::Standard, challenge).expect("ActivateCredential")
}

/// `answer` pins the AK; the same answer again is refused and logged, and the device stays
/// enrolled with that AK: a certificate is issued with it as the pinned AK in its evidence.
#[track_caller]
fn assert_enrolled_once(world: &World, answer: &ActivateRequest) {
    let client = world.ca.client();
    let pinned = client
        .activate(answer)
        .unwrap_or_else(|e| panic!("the answer after the restart: {e}\n{}", world.ca.log()));
    assert_eq!(pinned.device_id, world.device_id);

    assert_refusal(&client.activate(answer), "challenge_failed", &world.ca);
    world
        .ca
        .assert_refusal_logged("challenge_failed", &["already answered"]);
    let devices = world.ca.run_ok(&["device", "list"]);
    assert_eq!(devices.lines().count(), 1, "{devices}");
    assert!(devices.contains(" enrolled "), "{devices}");

    let issued = world.submit(&world.good_request("alice"));
    issued.unwrap_or_else(|e| panic!("a certificate after enrolment: {e}\n{}", world.ca.log()));
    let logged = issuances(&world.ca);
    assert_eq!(logged.len(), 1, "{}", world.ca.audit());
    assert_eq!(logged[0]["evidence"]["ak_name"], pinned.ak_name);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Submits `request` to `ca` on another thread.
fn submit_in_background(
    ca: &CaServer,
    request: &CertificateRequest,
) -> JoinHandle<ssh_tpm_cert::Result<CertificateResponse>> {
    let client = ca.client();
    let request = request.clone();
    thread::spawn(move || client.certificate(&request))
}

/// Panics unless the request on `pending` ended without any answer from the CA.
#[track_caller]
fn assert_no_answer<T: std::fmt::Debug>(
    pending: JoinHandle<ssh_tpm_cert::Result<T>>,
    ca: &CaServer,
) {
    match pending.join().expect("the request thread") {
        Err(Error::Unreachable { .. }) => {}
        other => panic!("the killed CA answered: {other:?}\nCA log:\n{}", ca.log()),
    }
}

/// The issuances of `ssh-tpm-ca audit --json`.
fn issuances(ca: &CaServer) -> Vec<serde_json::Value> {
    let audit: serde_json::Value =
        serde_json::from_str(&ca.run_ok(&["audit", "--json"])).expect("audit --json");
    audit["issuances"].as_array().expect("issuances").clone()
}

/// The CA's SQLite file (`database = "sqlite://ca.db"`, as `init` writes it).
fn database(ca: &CaServer) -> std::path::PathBuf {
    ca.dir().join("ca.db")
}

/// Waits until the CA (running with `--debug`) found the database busy, and checks that the
/// statement it was running is `statement`: sqlx reports statements that took over a second,
/// and the store logs each retry.
#[track_caller]
fn wait_until_busy(ca: &CaServer, statement: &str) {
    let logged = poll_until(HOLD_TIMEOUT, || ca.log().contains(BUSY_LINE));
    let log = ca.log();
    assert!(logged, "the CA never logged {BUSY_LINE:?}:\n{log}");
    let slow = log
        .lines()
        .filter(|line| line.contains("slow statement"))
        .collect::<Vec<_>>();
    assert!(
        slow.iter().all(|line| line.contains(statement)),
        "the CA waited on another statement than {statement:?}:\n{log}"
    );
    assert!(!slow.is_empty(), "no slow statement is logged:\n{log}");
}

/// Another writer holding the write lock of a SQLite database (`sqlite3`, `BEGIN IMMEDIATE`)
/// until dropped, when it rolls back.
struct DbLock {
    child: Child,
    stdin: ChildStdin,
}

impl DbLock {
    /// Takes the lock, waiting up to 5 s for a writer that holds it now.
    fn take(db: &Path) -> DbLock {
        let mut child = tool("sqlite3")
            .arg("-bail")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sqlite3 ({e}): install Debian's sqlite3"));
        let mut stdin = child.stdin.take().expect("sqlite3's stdin");
        stdin
            .write_all(b".timeout 5000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n")
            .expect("write to sqlite3");
        stdin.flush().expect("write to sqlite3");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("sqlite3's stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read sqlite3's answer");
        if line.trim() != "locked" {
            let mut why = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut why);
            }
            panic!("sqlite3 could not lock {}: {why}", db.display());
        }
        DbLock { child, stdin }
    }
}

impl Drop for DbLock {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"ROLLBACK;\n.quit\n");
        let _ = self.stdin.flush();
        let done = poll_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A device-management system that calls every device compliant, but only once `open` is
/// called: until then each request waits, and so does the CA that sent it.
struct Gate {
    port: u16,
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    requests: usize,
    open: bool,
    stopped: bool,
}

impl Gate {
    fn start() -> Gate {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new((Mutex::new(GateState::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.0.lock().expect("gate state").stopped {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    // A CA killed mid-request is what these tests do to it.
                    let _ = answer_when_open(stream, &shared);
                });
            }
        });
        Gate { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `n` requests arrived.
    fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let (lock, changed) = &*self.state;
        let state = lock.lock().expect("gate state");
        let (state, _) = changed
            .wait_timeout_while(state, timeout, |s| s.requests < n)
            .expect("gate state");
        state.requests >= n
    }

    /// Lets every waiting and later request have its answer.
    fn open(&self) {
        self.state.0.lock().expect("gate state").open = true;
        self.state.1.notify_all();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.state.0.lock().expect("gate state").stopped = true;
        self.state.1.notify_all();
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn answer_when_open(stream: TcpStream, state: &(Mutex<GateState>, Condvar)) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let (lock, changed) = state;
    let mut shared = lock.lock().expect("gate state");
    shared.requests += 1;
    changed.notify_all();
    while !shared.open && !shared.stopped {
        shared = changed.wait(shared).expect("gate state");
    }
    if shared.stopped {
        return Ok(());
    }
    drop(shared);
    let body = r#"{"compliant":true}"#;
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
