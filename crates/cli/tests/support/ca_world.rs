//! The CA's test world: an OpenID provider with alice and bob, a compliance fake, a running
//! `ssh-tpm-ca serve` configured against both, and a swtpm manufactured with EK certificates
//! holding an SSH key made by `ssh-tpm-keygen`. The refusal tests drive the client library
//! step by step against it; the story tests drive the binaries.
//!
//! One `World` per test: it costs a second or two (the manufactured state is cached, the
//! provider starts in half a second, the CA in less).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rustix::process::Signal;
use ssh_tpm_attest::ekcert::EkCertificate;
use ssh_tpm_attest::protocol::{
    ActivateResponse, CertificateRequest, CertificateResponse, SessionResponse,
};
use ssh_tpm_cert::enroll::{self, EkFamily};
use ssh_tpm_cert::{CaClient, HttpOptions, IdToken};
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::{AkTemplate, Pin, Tpm, TpmTarget};
use tempfile::TempDir;

use super::ca::{http_get, ComplianceFake, Idp, IdpAccount, ManufacturedTpm, HTTP_TIMEOUT};
use super::{
    assert_ok, free_port, keygen, poll_until, run, stdout, tempdir, tool, Daemon, KeyFiles, Swtpm,
    START_TIMEOUT,
};

/// The CA's client id at the provider.
pub const CLIENT_ID: &str = "ssh-tpm";
/// Another application registered at the same provider.
pub const OTHER_CLIENT_ID: &str = "wiki";

/// alice's password at the provider.
pub const ALICE_PASSWORD: &str = "alice correct horse";
/// bob's password at the provider.
pub const BOB_PASSWORD: &str = "bob battery staple";

/// The group whose members get the current user as a principal (sshd logs us in as that).
pub const ADMINS: &str = "admins";

/// alice, an admin.
pub fn alice() -> IdpAccount {
    IdpAccount::new("alice", ALICE_PASSWORD).groups(&[ADMINS])
}

/// bob, also an admin (so that only the inventory tells him from alice).
pub fn bob() -> IdpAccount {
    IdpAccount::new("bob", BOB_PASSWORD).groups(&[ADMINS])
}

/// The password of the world's users.
pub fn password(user: &str) -> &'static str {
    match user {
        "alice" => ALICE_PASSWORD,
        "bob" => BOB_PASSWORD,
        _ => panic!("no user {user} in the CA world"),
    }
}

/// Path of `ssh-tpm-ca`.
pub fn ca_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ssh-tpm-ca")
}

/// Path of `ssh-tpm-cert`.
pub fn cert_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ssh-tpm-cert")
}

// ---------------------------------------------------------------------------------------------
// The CA

/// Which EK manufacturers the CA trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EkRoots {
    /// The local CA that manufactured the shared swtpm state.
    Manufacturer,
    /// A root made for the test with openssl: no EK of ours chains to it.
    Foreign,
}

/// The settings a test changes in the CA's configuration; `None` keeps the CA's default.
#[derive(Clone, Debug)]
pub struct CaSettings {
    pub session_lifetime_secs: Option<u64>,
    pub certificate_validity_secs: Option<u64>,
    pub compliance_timeout_secs: Option<u64>,
    /// Clock leeway for ID tokens (the CA's default is 60 s).
    pub leeway_secs: Option<u64>,
    pub ek_roots: EkRoots,
}

impl Default for CaSettings {
    fn default() -> Self {
        CaSettings {
            session_lifetime_secs: None,
            certificate_validity_secs: None,
            compliance_timeout_secs: None,
            leeway_secs: None,
            ek_roots: EkRoots::Manufacturer,
        }
    }
}

/// A running `ssh-tpm-ca serve` on 127.0.0.1, its configuration and its state directory.
pub struct CaServer {
    daemon: Daemon,
    url: String,
    config: PathBuf,
    dir: PathBuf,
    /// What earlier `serve` processes of this CA logged (before a `kill` or `restart`).
    earlier_log: String,
}

impl CaServer {
    /// Initialises a CA in `dir` (`ssh-tpm-ca init`), configures it against `idp` and the
    /// compliance service at `compliance_url`, and starts `serve`.
    pub fn start(dir: &Path, idp: &Idp, compliance_url: &str, settings: &CaSettings) -> CaServer {
        let config = dir.join("ca.toml");
        let roots = match settings.ek_roots {
            EkRoots::Manufacturer => ManufacturedTpm::shared().trust_roots(),
            EkRoots::Foreign => {
                fs::create_dir_all(dir).expect("create the CA directory");
                vec![foreign_root(dir)]
            }
        };
        let mut init = ca_command(&config);
        init.arg("init")
            .arg("--dir")
            .arg(dir)
            .args(["--issuer", idp.issuer(), "--client-id", CLIENT_ID])
            .args(["--user-claim", "sub", "--compliance-url", compliance_url]);
        for root in &roots {
            init.arg("--ek-root").arg(root);
        }
        if let Some(secs) = settings.certificate_validity_secs {
            init.args(["--validity-secs", &secs.to_string()]);
        }
        assert_ok(&run(&mut init), "ssh-tpm-ca init");

        let mut last_log = String::new();
        for _ in 0..4 {
            let port = free_port();
            configure(&config, port, settings);
            let mut cmd = ca_command(&config);
            cmd.arg("serve").env("RUST_LOG", "info");
            let mut daemon = Daemon::spawn("ssh-tpm-ca", &mut cmd, dir);
            let url = format!("http://127.0.0.1:{port}");
            let info = format!("{url}/v1/info");
            let up = poll_until(START_TIMEOUT, || {
                !daemon.is_running() || http_get(&info).is_ok_and(|r| r.status == 200)
            });
            if daemon.is_running() {
                assert!(
                    up,
                    "ssh-tpm-ca serve does not answer {info}:\n{}",
                    daemon.stderr()
                );
                return CaServer {
                    daemon,
                    url,
                    config,
                    dir: dir.to_owned(),
                    earlier_log: String::new(),
                };
            }
            last_log = daemon.stderr();
            if !last_log.contains("in use") {
                break;
            }
        }
        panic!("ssh-tpm-ca serve did not start:\n{last_log}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The CA's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the server logged so far (every `serve` process since `start`).
    pub fn log(&self) -> String {
        self.earlier_log.clone() + &self.daemon.stderr() + &self.daemon.stdout()
    }

    /// Process id of the running `serve`.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// SIGKILL, as a crash: no shutdown of any kind. Returns once the process is gone.
    pub fn kill(&mut self) {
        self.daemon.signal(Signal::KILL);
        let gone = self.daemon.wait_exit(START_TIMEOUT);
        assert!(gone.is_some(), "ssh-tpm-ca serve outlived SIGKILL");
    }

    /// Starts `serve` again on the same configuration, database and port (stopping it first
    /// if it still runs), with `options` before `serve` (e.g. `--debug`); returns once it
    /// answers.
    pub fn restart(&mut self, options: &[&str]) {
        self.daemon.stop();
        self.earlier_log += &(self.daemon.stderr() + &self.daemon.stdout());
        let mut cmd = ca_command(&self.config);
        cmd.args(options).arg("serve").env("RUST_LOG", "info");
        self.daemon = Daemon::spawn("ssh-tpm-ca", &mut cmd, &self.dir);
        let info = format!("{}/v1/info", self.url);
        let up = poll_until(START_TIMEOUT, || {
            !self.daemon.is_running() || http_get(&info).is_ok_and(|r| r.status == 200)
        });
        assert!(
            up && self.daemon.is_running(),
            "ssh-tpm-ca serve did not come back on {info}:\n{}",
            self.daemon.stderr()
        );
    }

    /// Sets `key = value` in the configuration file (takes effect at the next `restart`).
    pub fn set_config(&self, key: &str, value: &str) {
        let mut text = fs::read_to_string(&self.config).expect("read the CA configuration");
        set(&mut text, key, value);
        super::write(&self.config, text);
    }

    /// Runs `ssh-tpm-ca --config CONFIG ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        run(ca_command(&self.config).args(args))
    }

    /// Runs `ssh-tpm-ca ARGS...` and panics unless it succeeds; returns stdout.
    #[track_caller]
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_ok(&out, &format!("ssh-tpm-ca {}", args.join(" ")));
        stdout(&out)
    }

    /// `device add --ek-cert FILE --user USER`.
    pub fn add_device(&self, ek_cert: &Path, user: &str) {
        let cert = ek_cert.to_str().expect("UTF-8 path");
        self.run_ok(&["device", "add", "--ek-cert", cert, "--user", user]);
    }

    /// `device retire ID`.
    pub fn retire(&self, device_id: &str) {
        self.run_ok(&["device", "retire", device_id]);
    }

    /// `audit`: the issuances and refusals, as the operator reads them.
    pub fn audit(&self) -> String {
        self.run_ok(&["audit"])
    }

    /// The refusal lines of the audit log
    /// (`at=… ENDPOINT code=… user=… device=… detail: …`).
    pub fn refusals(&self) -> Vec<String> {
        let audit = self.audit();
        let section = audit.split("# refusals").nth(1).unwrap_or_default();
        section
            .lines()
            .filter(|line| line.contains(" code="))
            .map(str::to_owned)
            .collect()
    }

    /// Panics unless the audit log holds a refusal `code` whose line also holds every one of
    /// `words` (the logged reason, the user, the device). Returns that line.
    #[track_caller]
    pub fn assert_refusal_logged(&self, code: &str, words: &[&str]) -> String {
        let refusals = self.refusals();
        let wanted = format!(" code={code} ");
        let found = refusals
            .iter()
            .find(|line| line.contains(&wanted) && words.iter().all(|w| line.contains(w)));
        match found {
            Some(line) => line.clone(),
            None => panic!(
                "no refusal {code} with {words:?} in the audit log:\n{}\nCA log:\n{}",
                refusals.join("\n"),
                self.log()
            ),
        }
    }

    /// The CA's SSH public key line, from `/v1/info`.
    pub fn public_key(&self) -> String {
        let info = http_get(&format!("{}/v1/info", self.url)).expect("GET /v1/info");
        assert_eq!(info.status, 200, "{}", info.text());
        let key = info.json()["ca_public_key"].as_str().map(str::to_owned);
        key.expect("ca_public_key in /v1/info")
    }

    /// A client for this CA.
    pub fn client(&self) -> CaClient {
        let options = HttpOptions {
            timeout: HTTP_TIMEOUT,
            ..HttpOptions::default()
        };
        CaClient::new(&self.url, &options).expect("a client for the CA")
    }
}

/// `ssh-tpm-ca --config CONFIG` with a clean environment.
fn ca_command(config: &Path) -> Command {
    let mut cmd = tool(ca_bin());
    cmd.arg("--config").arg(config);
    cmd
}

/// Edits the configuration `init` wrote: the port, the scopes with `groups`, admins mapped to
/// the user sshd logs us in as, limits a test does not hit, and the test's `settings`.
fn configure(config: &Path, port: u16, settings: &CaSettings) {
    let mut text = fs::read_to_string(config).expect("read the CA configuration");
    set(&mut text, "listen", &format!("\"127.0.0.1:{port}\""));
    set(&mut text, "scopes", r#"["openid", "email", "groups"]"#);
    let principals = format!("{ADMINS} = [\"{}\"]", super::current_user());
    set(&mut text, "[oidc.group_principals]", &principals);
    // Tests make more requests a minute than a person would.
    set(&mut text, "per_user_per_minute", "1000");
    set(&mut text, "per_device_per_minute", "1000");
    if let Some(secs) = settings.session_lifetime_secs {
        set(&mut text, "session_lifetime_secs", &secs.to_string());
    }
    if let Some(secs) = settings.leeway_secs {
        set(&mut text, "leeway_secs", &secs.to_string());
    }
    if let Some(secs) = settings.compliance_timeout_secs {
        set(&mut text, "timeout_secs", &secs.to_string());
    }
    super::write(config, text);
}

/// Sets `key = value` on the line that sets `key` in `text`; a `[table]` header as `key` gets
/// the line `value` below it. Panics when `init` wrote no such line: the template changed.
fn set(text: &mut String, key: &str, value: &str) {
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let name = line.split('=').next().unwrap_or_default().trim();
            if found || (name != key && line.trim() != key) {
                line.to_owned()
            } else if key.starts_with('[') {
                found = true;
                format!("{line}\n{value}")
            } else {
                found = true;
                format!("{key} = {value}")
            }
        })
        .collect();
    assert!(found, "ssh-tpm-ca init wrote no {key} line:\n{text}");
    *text = lines.join("\n") + "\n";
}

/// A self-signed root certificate made with openssl in `dir`: a manufacturer nobody's EK
/// chains to.
fn foreign_root(dir: &Path) -> PathBuf {
    let key = dir.join("foreign-root.key");
    let cert = dir.join("foreign-root.pem");
    let out = run(tool("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Another TPM Manufacturer Root",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert_ok(&out, "openssl req -x509 (foreign EK root)");
    cert
}

// ---------------------------------------------------------------------------------------------
// The world

/// Everything a CA test needs, stopped on drop: CA first, then the provider and the fake,
/// the TPM last.
pub struct World {
    pub ca: CaServer,
    pub compliance: ComplianceFake,
    pub idp: Idp,
    /// The device: a swtpm started from the shared manufactured state.
    pub tpm: Swtpm,
    /// Its RSA EK certificate (DER), read from NV 0x01c00002 with tpm2_nvread.
    pub ek_cert: PathBuf,
    /// The device id of that certificate.
    pub device_id: String,
    /// An ECDSA key made in the TPM by ssh-tpm-keygen, without PIN, alone in `dir`/ssh.
    pub key: KeyFiles,
    /// Keys, certificates and the client's state live here.
    pub dir: TempDir,
}

impl World {
    /// The world with the CA's default settings.
    pub fn start() -> World {
        World::with(CaSettings::default())
    }

    /// The world with a CA configured with `settings`. No device is in the inventory yet.
    pub fn with(settings: CaSettings) -> World {
        let dir = tempdir();
        let idp = Idp::start(&[CLIENT_ID, OTHER_CLIENT_ID], &[alice(), bob()]);
        let compliance = ComplianceFake::start();
        let ca = CaServer::start(&dir.path().join("ca"), &idp, &compliance.url(), &settings);

        let tpm = ManufacturedTpm::shared().start();
        let ek_cert = dir.path().join("ek-rsa.der");
        let ek_arg = ek_cert.to_str().expect("UTF-8 path");
        assert_ok(
            &tpm.tpm2("tpm2_nvread", &["0x01c00002", "-o", ek_arg]),
            "tpm2_nvread of the RSA EK certificate",
        );
        let der = fs::read(&ek_cert).expect("read the EK certificate");
        let device_id = EkCertificate::from_der(&der)
            .expect("the EK certificate parses")
            .device_id();
        let key_dir = dir.path().join("ssh");
        fs::create_dir(&key_dir).expect("create the key directory");
        let (key, _) = keygen(
            &tpm,
            &key_dir,
            "id_ecdsa",
            &["-N", "", "-C", "alice-laptop"],
        );

        World {
            ca,
            compliance,
            idp,
            tpm,
            ek_cert,
            device_id,
            key,
            dir,
        }
    }

    /// The world with the device in the inventory for `user` and enrolled by them.
    pub fn enrolled(settings: CaSettings, user: &str) -> World {
        let world = World::with(settings);
        world.ca.add_device(&world.ek_cert, user);
        let answer = world.enroll(user).unwrap_or_else(|e| {
            panic!(
                "enrolment as {user} failed: {e}\nCA log:\n{}",
                world.ca.log()
            )
        });
        assert_eq!(answer.device_id, world.device_id);
        world
    }

    /// A connection to the TPM; drop it before running a binary on the same TPM (swtpm
    /// serves one connection at a time).
    pub fn open_tpm(&self) -> Tpm {
        Tpm::open(&TpmTarget::Tcti(self.tpm.tcti())).expect("open the swtpm")
    }

    /// The world's SSH key file.
    pub fn tpm_key(&self) -> TpmKey {
        read_tpm_key(&self.key.tpm)
    }

    /// A fresh CA session.
    pub fn session(&self) -> SessionResponse {
        self.ca.client().session().expect("POST /v1/sessions")
    }

    /// An ID token for `user` from the provider, for our client and `nonce`, logging in
    /// through the scripted browser.
    pub fn token(&self, user: &str, nonce: &str) -> IdToken {
        self.token_for(CLIENT_ID, user, nonce)
    }

    /// As [`World::token`], for client `client_id`.
    pub fn token_for(&self, client_id: &str, user: &str, nonce: &str) -> IdToken {
        let token = self
            .idp
            .id_token(client_id, user, password(user), nonce)
            .unwrap_or_else(|e| panic!("{user} cannot log in: {e}\n{}", self.idp.log()));
        IdToken::from_raw(token)
    }

    /// Enrols the TPM as `user` with the client library: session, login, EK certificate and
    /// standard AK, MakeCredential challenge, ActivateCredential.
    pub fn enroll(&self, user: &str) -> ssh_tpm_cert::Result<ActivateResponse> {
        let client = self.ca.client();
        let session = client.session()?;
        let token = self.token(user, &session.oidc_nonce);
        let mut tpm = self.open_tpm();
        let ek = enroll::choose_ek(&mut tpm, Some(EkFamily::Rsa))?;
        assert_eq!(
            ek.device_id(),
            self.device_id,
            "the client chose another EK"
        );
        let request = enroll::request(&mut tpm, &ek, AkTemplate::Standard, &session, &token)?;
        let challenge = client.enroll(&request)?;
        let activation = enroll::activate(&mut tpm, &ek, AkTemplate::Standard, &challenge)?;
        client.activate(&activation)
    }

    /// A well-formed certificate request for the world's key: a fresh session, `user`'s
    /// token for it, certification and quote by the standard AK.
    pub fn good_request(&self, user: &str) -> CertificateRequest {
        let session = self.session();
        let token = self.token(user, &session.oidc_nonce);
        self.request(&self.tpm_key(), &session, &token)
    }

    /// The certificate request for `key` in `session` with `token`, as the client builds it.
    pub fn request(
        &self,
        key: &TpmKey,
        session: &SessionResponse,
        token: &IdToken,
    ) -> CertificateRequest {
        let mut tpm = self.open_tpm();
        let pin = Pin::empty();
        ssh_tpm_cert::renew::request(&mut tpm, key, &pin, session, token, &self.device_id)
            .expect("build the certificate request")
    }

    /// `POST /v1/certificates`.
    pub fn submit(
        &self,
        request: &CertificateRequest,
    ) -> ssh_tpm_cert::Result<CertificateResponse> {
        self.ca.client().certificate(request)
    }

    /// Submits `request`, expects the refusal `code`, and checks that the CA logged it with
    /// `words` in its reason; returns the audit line.
    #[track_caller]
    pub fn assert_refused(
        &self,
        request: &CertificateRequest,
        code: &str,
        words: &[&str],
    ) -> String {
        let result = self.submit(request);
        assert_refusal(&result, code, &self.ca);
        self.ca.assert_refusal_logged(code, words)
    }

    /// Runs `ssh-tpm-cert ARGS...` as `user` (the scripted browser logs them in), with
    /// the TPM, the enrolment record and `extra_env`.
    pub fn cert_command(&self, user: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = tool(cert_bin());
        cmd.env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .envs(super::ca::browser_env(user, password(user)))
            .envs(extra_env.iter().copied())
            .env("SSH_TPM_TCTI", self.tpm.tcti())
            .args(args);
        run(&mut cmd)
    }
}

/// Reads a key file written by ssh-tpm-keygen.
pub fn read_tpm_key(path: &Path) -> TpmKey {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    TpmKey::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Panics unless `result` is the CA's refusal `code`.
#[track_caller]
pub fn assert_refusal<T: std::fmt::Debug>(
    result: &ssh_tpm_cert::Result<T>,
    code: &str,
    ca: &CaServer,
) {
    match result {
        Err(error) if error.refusal().map(|r| r.code()) == Some(code) => {}
        other => panic!(
            "expected the CA to refuse with {code}, got {other:?}\nCA log:\n{}",
            ca.log()
        ),
    }
}

/// Waits until the Unix time is past `at` (seconds).
pub fn sleep_until(at: u64) {
    let now = super::ca::unix_now();
    if at >= now {
        std::thread::sleep(Duration::from_secs(at - now + 1));
    }
}
