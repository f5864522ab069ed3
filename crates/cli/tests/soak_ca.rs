//! The CA half of the soak (issue 7, "Load"): several devices, each its own swtpm manufactured
//! with EK certificates and enrolled, renew certificates against one `ssh-tpm-ca serve` in a
//! loop, in parallel, logging in at node's oidc-provider through the scripted browser for every
//! renewal. Every certificate is checked (CA signature, key, principals, key id, device
//! extension, serial unique, in the audit log), no renewal may fail, and the CA's VmRSS is
//! sampled each second and must stay flat once warm.
//!
//! `SSH_TPM_SOAK_SECS` (default 15) and `SSH_TPM_SOAK_DEVICES` (default 3) size the run;
//! `SSH_TPM_SOAK_REPORT` names a file for the Markdown table, which is also printed.
//! scripts/soak.sh runs the long one.

mod support;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ssh_key::{Certificate, HashAlg, PublicKey};
use ssh_tpm_attest::ekcert::EkCertificate;
use ssh_tpm_cert::enroll::{self, EkFamily};
use ssh_tpm_cert::IdToken;
use ssh_tpm_tpm::{AkTemplate, Pin, Tpm, TpmTarget};
use support::ca::{ComplianceFake, Idp, IdpAccount, ManufacturedTpm};
use support::ca_world::{read_tpm_key, CaServer, CaSettings, ADMINS, CLIENT_ID};
use support::{assert_ok, current_user, keygen, tempdir, KeyFiles, Swtpm};

/// Seconds of warm-up (first logins, the provider's keys fetched, SQLite's caches filled)
/// before the VmRSS sample that the end of the run is compared with.
const WARM_AFTER_SECS: f64 = 5.0;
/// How far the CA's VmRSS may rise after warm-up. SQLite may still grow its page cache
/// (2 MiB for each of the pool's 4 connections) as the audit log grows; a leak of a few KiB
/// per renewal would pass this in a short run but not in the 10-minute one.
const MAX_GROWTH_KIB: u64 = 12 * 1024;
/// Errors quoted in the report.
const QUOTED_ERRORS: usize = 5;

#[test]
fn devices_renew_in_parallel_without_error_in_flat_memory() {
    let seconds = env_number("SSH_TPM_SOAK_SECS", 15);
    let devices = env_number("SSH_TPM_SOAK_DEVICES", 3) as usize;
    assert!(devices >= 1, "SSH_TPM_SOAK_DEVICES must be at least 1");
    let report = soak(Duration::from_secs(seconds), devices);
    let table = report.markdown();
    eprintln!("{table}");
    if let Some(path) = std::env::var_os("SSH_TPM_SOAK_REPORT") {
        fs::write(&path, &table).expect("write SSH_TPM_SOAK_REPORT");
    }

    assert_eq!(report.errors, 0, "first errors: {:#?}", report.first_errors);
    assert!(
        report.renewals.len() >= 2 * devices,
        "only {} renewals",
        report.renewals.len()
    );
    let warm = report
        .rss
        .iter()
        .find(|(at, _)| *at >= WARM_AFTER_SECS)
        .map(|s| s.1)
        .expect("a VmRSS sample after warm-up");
    let end = report.rss.last().map(|s| s.1).unwrap_or_default();
    assert!(
        end <= warm + MAX_GROWTH_KIB,
        "the CA's VmRSS grew from {warm} KiB to {end} KiB: {:?}",
        report.rss
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// What the run measured.
struct Report {
    seconds: f64,
    devices: usize,
    /// Each successful renewal's times.
    renewals: Vec<Timing>,
    errors: usize,
    first_errors: Vec<String>,
    /// (seconds since the start, VmRSS in KiB) of the CA.
    rss: Vec<(f64, u64)>,
}

/// One enrolled device and its user.
struct Device {
    user: String,
    password: String,
    tpm: Swtpm,
    device_id: String,
    key: KeyFiles,
    /// Keeps the EK manufacturer's roots, which the CA reads at start, on disk.
    _manufactured: Option<ManufacturedTpm>,
}

fn soak(duration: Duration, count: usize) -> Report {
    let dir = tempdir();
    let accounts: Vec<IdpAccount> = (0..count)
        .map(|i| IdpAccount::new(&user(i), &password(i)).groups(&[ADMINS]))
        .collect();
    let idp = Idp::start(&[CLIENT_ID], &accounts);
    let compliance = ComplianceFake::start();
    let ca_dir = dir.path().join("ca");
    let mut ca = CaServer::start(&ca_dir, &idp, &compliance.url(), &CaSettings::default());

    // Device 0 uses the suite's cached state; the others are manufactured now, each with an
    // EK manufacturer of its own, which the CA then trusts too.
    let made: Vec<ManufacturedTpm> = thread::scope(|s| {
        let jobs: Vec<_> = (1..count)
            .map(|_| s.spawn(ManufacturedTpm::fresh))
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("manufacturing"))
            .collect()
    });
    let mut roots = ManufacturedTpm::shared().trust_roots();
    roots.extend(made.iter().flat_map(ManufacturedTpm::trust_roots));
    let roots: Vec<String> = roots
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    ca.set_config("ek_roots", &format!("[{}]", roots.join(", ")));
    ca.restart(&[]);

    let mut manufactured: Vec<Option<ManufacturedTpm>> = vec![None];
    manufactured.extend(made.into_iter().map(Some));
    let devices: Vec<Device> = manufactured
        .into_iter()
        .enumerate()
        .map(|(i, m)| enrolled_device(i, m, &ca, &idp, &dir.path().join(format!("dev{i}"))))
        .collect();
    let ca_key = PublicKey::from_openssh(&ca.public_key()).expect("the CA's public key");

    let started = Instant::now();
    let deadline = started + duration;
    let outcome = Mutex::new(Outcome::default());
    let stop = AtomicBool::new(false);
    let ca_pid = ca.pid();
    let rss = thread::scope(|s| {
        let sampler = s.spawn(|| sample_rss(ca_pid, started, &stop));
        let workers: Vec<_> = devices
            .iter()
            .map(|device| {
                let (ca, idp, ca_key, outcome) = (&ca, &idp, &ca_key, &outcome);
                s.spawn(move || {
                    while Instant::now() < deadline {
                        let result = renew(device, ca, idp, ca_key);
                        outcome.lock().expect("outcome").add(device, result);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a renewal thread");
        }
        stop.store(true, Ordering::SeqCst);
        sampler.join().expect("the VmRSS sampler")
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut outcome = outcome.into_inner().expect("outcome");
    outcome.check_audit(&ca);

    Report {
        seconds,
        devices: count,
        renewals: outcome.renewals,
        errors: outcome.errors,
        first_errors: outcome.first_errors,
        rss,
    }
}

fn user(i: usize) -> String {
    format!("soak{i}")
}

fn password(i: usize) -> String {
    format!("soak {i} password")
}

/// Starts device `i` (from `manufactured`, or the shared state), adds it to the inventory
/// for its user, makes its SSH key and enrols it.
fn enrolled_device(
    i: usize,
    manufactured: Option<ManufacturedTpm>,
    ca: &CaServer,
    idp: &Idp,
    dir: &std::path::Path,
) -> Device {
    fs::create_dir(dir).expect("create the device directory");
    let tpm = match &manufactured {
        Some(m) => m.start(),
        None => ManufacturedTpm::shared().start(),
    };
    let ek_cert = dir.join("ek-rsa.der");
    let ek_arg = ek_cert.to_str().expect("UTF-8 path");
    assert_ok(
        &tpm.tpm2("tpm2_nvread", &["0x01c00002", "-o", ek_arg]),
        "tpm2_nvread of the RSA EK certificate",
    );
    let der = fs::read(&ek_cert).expect("read the EK certificate");
    let device_id = EkCertificate::from_der(&der)
        .expect("the EK certificate parses")
        .device_id();
    ca.add_device(&ek_cert, &user(i));
    let (key, _) = keygen(&tpm, dir, "id_ecdsa", &["-N", "", "-C", &user(i)]);
    let device = Device {
        user: user(i),
        password: password(i),
        tpm,
        device_id,
        key,
        _manufactured: manufactured,
    };
    enroll_device(&device, ca, idp);
    device
}

/// Enrols `device` as its user with the client library, as `ssh-tpm-cert enroll` does.
fn enroll_device(device: &Device, ca: &CaServer, idp: &Idp) {
    let client = ca.client();
    let session = client.session().expect("POST /v1/sessions");
    let token = login(device, idp, &session.oidc_nonce).expect("login for the enrolment");
    let mut tpm = open(device);
    let ek = enroll::choose_ek(&mut tpm, Some(EkFamily::Rsa)).expect("the RSA EK");
    let request = enroll::request(&mut tpm, &ek, AkTemplate::Standard, &session, &token)
        .expect("the enrolment request");
    let challenge = client
        .enroll(&request)
        .unwrap_or_else(|e| panic!("POST /v1/enroll: {e}\n{}", ca.log()));
    let answer = enroll::activate(&mut tpm, &ek, AkTemplate::Standard, &challenge)
        .expect("ActivateCredential");
    let pinned = client
        .activate(&answer)
        .unwrap_or_else(|e| panic!("POST /v1/enroll/activate: {e}\n{}", ca.log()));
    assert_eq!(pinned.device_id, device.device_id);
}

fn open(device: &Device) -> Tpm {
    Tpm::open(&TpmTarget::Tcti(device.tpm.tcti())).expect("open the swtpm")
}

fn login(device: &Device, idp: &Idp, nonce: &str) -> Result<IdToken, String> {
    let token = idp.id_token(CLIENT_ID, &device.user, &device.password, nonce)?;
    Ok(IdToken::from_raw(token))
}

/// How long one renewal took.
#[derive(Clone, Copy)]
struct Timing {
    /// End to end: session, login, TPM, request.
    total: Duration,
    /// The login at the provider through the scripted browser, and the code's exchange.
    login: Duration,
    /// `POST /v1/certificates` alone.
    post: Duration,
}

/// One renewal as `ssh-tpm-cert renew` makes it; the certificate that came back and the
/// times.
fn renew(
    device: &Device,
    ca: &CaServer,
    idp: &Idp,
    ca_key: &PublicKey,
) -> Result<(Certificate, Timing), String> {
    let started = Instant::now();
    let client = ca.client();
    let session = client.session().map_err(|e| format!("session: {e}"))?;
    let logging_in = Instant::now();
    let token = login(device, idp, &session.oidc_nonce).map_err(|e| format!("login: {e}"))?;
    let login_time = logging_in.elapsed();
    let request = {
        let mut tpm = open(device);
        let key = read_tpm_key(&device.key.tpm);
        ssh_tpm_cert::renew::request(
            &mut tpm,
            &key,
            &Pin::empty(),
            &session,
            &token,
            &device.device_id,
        )
        .map_err(|e| format!("request: {e}"))?
    };
    let posted = Instant::now();
    let issued = client
        .certificate(&request)
        .map_err(|e| format!("certificate: {e}"))?;
    let post_time = posted.elapsed();
    let cert = check_certificate(device, &issued.certificate, ca_key)?;
    if cert.serial() != issued.serial {
        return Err(format!(
            "serial {} in the answer, {} in the certificate",
            issued.serial,
            cert.serial()
        ));
    }
    let timing = Timing {
        total: started.elapsed(),
        login: login_time,
        post: post_time,
    };
    Ok((cert, timing))
}

/// Checks a certificate against what the CA must have put in it for `device`.
fn check_certificate(
    device: &Device,
    text: &str,
    ca_key: &PublicKey,
) -> Result<Certificate, String> {
    let cert = Certificate::from_openssh(text).map_err(|e| format!("unparsable: {e}"))?;
    let ca_fingerprint = ca_key.fingerprint(HashAlg::Sha256);
    cert.validate([&ca_fingerprint])
        .map_err(|e| format!("not valid now under the CA's key: {e}"))?;
    let key = PublicKey::from_openssh(&device.key.public_line()).expect("the key's public line");
    if cert.public_key() != key.key_data() {
        return Err(format!("certifies another key than {}'s", device.user));
    }
    let principals = [device.user.clone(), current_user()];
    if cert.valid_principals() != principals {
        return Err(format!("principals {:?}", cert.valid_principals()));
    }
    let key_id = format!("user={} device={}", device.user, device.device_id);
    if cert.key_id() != key_id {
        return Err(format!("key id {:?}", cert.key_id()));
    }
    let extension = cert.extensions().get("device@ssh-tpm");
    if extension != Some(&device.device_id) {
        return Err(format!("device extension {extension:?}"));
    }
    Ok(cert)
}

/// The renewals and errors of all devices so far.
#[derive(Default)]
struct Outcome {
    renewals: Vec<Timing>,
    serials: HashSet<u64>,
    errors: usize,
    first_errors: Vec<String>,
}

impl Outcome {
    fn add(&mut self, device: &Device, result: Result<(Certificate, Timing), String>) {
        match result {
            Ok((cert, timing)) if self.serials.insert(cert.serial()) => {
                self.renewals.push(timing);
            }
            Ok((cert, _)) => self.error(format!("serial {} issued twice", cert.serial())),
            Err(e) => self.error(format!("{}: {e}", device.user)),
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_errors.len() < QUOTED_ERRORS {
            self.first_errors.push(message);
        }
    }

    /// Every certificate handed out is in the audit log, and nothing else is: no refusal,
    /// no issuance that did not come back.
    fn check_audit(&mut self, ca: &CaServer) {
        let audit: serde_json::Value =
            serde_json::from_str(&ca.run_ok(&["audit", "--json"])).expect("audit --json");
        let logged: HashSet<u64> = audit["issuances"]
            .as_array()
            .expect("issuances")
            .iter()
            .filter_map(|i| i["serial"].as_u64())
            .collect();
        if logged != self.serials {
            let missing = self.serials.difference(&logged).count();
            let extra = logged.difference(&self.serials).count();
            self.error(format!(
                "audit log: {missing} certificates missing, {extra} not handed out"
            ));
        }
        let refusals = audit["refusals"].as_array().map_or(0, Vec::len);
        if refusals > 0 {
            self.error(format!(
                "{refusals} refusals in the audit log: {}",
                audit["refusals"]
            ));
        }
    }
}

/// Samples the VmRSS of process `pid` each second until `stop`.
fn sample_rss(pid: u32, started: Instant, stop: &AtomicBool) -> Vec<(f64, u64)> {
    let status = PathBuf::from(format!("/proc/{pid}/status"));
    let mut samples = Vec::new();
    let mut next = started;
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            let text = fs::read_to_string(&status).unwrap_or_default();
            let kib = text
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            if let Some(kib) = kib {
                samples.push((started.elapsed().as_secs_f64(), kib));
            }
            next += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(50));
    }
    samples
}

// ---------------------------------------------------------------------------------------------
// The table

impl Report {
    fn markdown(&self) -> String {
        let total: Vec<Duration> = self.renewals.iter().map(|r| r.total).collect();
        let login: Vec<Duration> = self.renewals.iter().map(|r| r.login).collect();
        let post: Vec<Duration> = self.renewals.iter().map(|r| r.post).collect();
        let rss: Vec<u64> = self.rss.iter().map(|s| s.1).collect();
        let at = |fraction: f64| {
            let i = ((rss.len().saturating_sub(1)) as f64 * fraction).round() as usize;
            rss.get(i).copied().unwrap_or_default()
        };
        let mut out = String::new();
        let _ = writeln!(out, "| CA renewal soak | value |");
        let _ = writeln!(out, "|---|---|");
        let rows = [
            ("duration", format!("{:.0} s", self.seconds)),
            ("devices renewing in parallel", self.devices.to_string()),
            (
                "renewals (certificates issued and checked)",
                self.renewals.len().to_string(),
            ),
            (
                "renewals per second",
                format!("{:.2}", self.renewals.len() as f64 / self.seconds),
            ),
            (
                "renewal p50 / p95 / max (session, login, TPM, request)",
                triple(&total),
            ),
            (
                "of which login at the provider p50 / p95 / max",
                triple(&login),
            ),
            (
                "of which POST /v1/certificates p50 / p95 / max",
                triple(&post),
            ),
            ("errors", self.errors.to_string()),
            (
                "CA VmRSS start / middle / end / max",
                format!(
                    "{} / {} / {} / {} KiB",
                    at(0.0),
                    at(0.5),
                    at(1.0),
                    rss.iter().max().copied().unwrap_or_default()
                ),
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        out
    }
}

/// `p50 / p95 / max` in milliseconds.
fn triple(times: &[Duration]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort();
    let pick = |q: f64| {
        let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
        sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    format!("{:.0} / {:.0} / {:.0} ms", pick(0.5), pick(0.95), pick(1.0))
}
