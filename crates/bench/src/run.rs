//! One benchmark run, phase by phase: our keys and agent on one swtpm, then ssh-agent with
//! tpm2-pkcs11 on another, each behind its own counting proxy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ssh_key::public::KeyData;
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::{Pin, SignHash, Tpm, TpmTarget};

use crate::agent_client::{auth_data, AgentClient};
use crate::error::{Error, Result};
use crate::floor::RawTpm;
use crate::latency::Summary;
use crate::ours::{self, KeyRequest, Ours, RunningAgent};
use crate::peer::{self, Pkcs11Agent};
use crate::proxy::{Counts, TpmProxy};
use crate::scenario::{self, Concurrent, Serial};
use crate::swtpm::Swtpm;

/// The PIN of every PIN-protected key (ours and the pkcs11 token's user PIN).
const PIN: &str = "24680";
/// Keys signed in turn, more than swtpm's 3 object slots.
const ROUND_ROBIN_KEYS: usize = 10;
/// Keys in the agent's directory for the start-up and memory figures.
const KEY_FILES: usize = 100;
/// Signatures before the "after" memory figure.
const AGED_SIGNATURES: u64 = 10_000;
/// Concurrent client counts.
pub const CLIENTS: [usize; 3] = [1, 8, 32];

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Config {
    pub bin_dir: PathBuf,
    pub work: PathBuf,
    /// Signatures per latency row.
    pub serial: usize,
    /// Rounds over the ten keys.
    pub rounds: usize,
    /// Signatures per client in the concurrency runs (the single client does 3x).
    pub per_client: usize,
    /// Delay per TPM command in hardware mode, and signatures per row there.
    pub hw_delay: Duration,
    pub hw_serial: usize,
}

/// Key algorithms measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    P256,
    P384,
    Rsa2048,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::P256, Alg::P384, Alg::Rsa2048];

    pub fn label(self) -> &'static str {
        match self {
            Alg::P256 => "ECDSA P-256",
            Alg::P384 => "ECDSA P-384",
            Alg::Rsa2048 => "RSA-2048 (rsa-sha2-512)",
        }
    }

    fn stem(self) -> &'static str {
        match self {
            Alg::P256 => "p256",
            Alg::P384 => "p384",
            Alg::Rsa2048 => "rsa2048",
        }
    }

    fn keygen(self) -> (&'static str, u32) {
        match self {
            Alg::P256 => ("ecdsa", 256),
            Alg::P384 => ("ecdsa", 384),
            Alg::Rsa2048 => ("rsa", 2048),
        }
    }

    fn sign_hash(self) -> SignHash {
        match self {
            Alg::P256 => SignHash::Sha256,
            Alg::P384 => SignHash::Sha384,
            Alg::Rsa2048 => SignHash::Sha512,
        }
    }

    /// Our key's name (and comment) for this algorithm.
    fn key_name(self, pin: bool) -> String {
        if pin {
            format!("{}-pin", self.stem())
        } else {
            self.stem().to_string()
        }
    }
}

/// Who answered the signatures of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// TPM2_Sign on a loaded key from tss-esapi, straight to swtpm: what the proxy costs.
    FloorDirect,
    /// TPM2_Sign on a loaded key from tss-esapi, no agent.
    Floor,
    /// Our TPM layer (`ssh_tpm_tpm::Tpm::sign`) in-process, no agent.
    TpmLayer,
    /// `ssh-tpm-agent` through its socket.
    Ours,
    /// `ssh-agent` + tpm2-pkcs11 through its socket.
    Pkcs11,
    /// `ssh-agent` with a plain software key.
    Software,
}

/// One latency row.
#[derive(Debug, Clone)]
pub struct LatencyRow {
    pub alg: Alg,
    pub who: Who,
    pub pin: bool,
    pub serial: Serial,
    /// Askpass runs per measured signature (our agent with a PIN key).
    pub askpass: Option<f64>,
}

/// How an agent started.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    pub keys: usize,
    pub time: Duration,
    pub counts: Counts,
    /// TPM commands for one more key list after start.
    pub list_counts: Counts,
}

/// Resident memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub idle_kib: u64,
    pub after_kib: u64,
    pub signatures: u64,
    /// ssh-pkcs11-helper, for the peer.
    pub helper_idle_kib: u64,
    pub helper_after_kib: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub machine: Vec<(String, String)>,
    pub config: Config,
    pub latency: Vec<LatencyRow>,
    /// Cold signatures: (what, measurement).
    pub cold: Vec<(String, Serial)>,
    /// The ten keys in turn; an error ends this figure, not the run.
    pub round_robin: std::result::Result<Serial, String>,
    pub concurrency: Vec<(Who, Concurrent)>,
    pub ours_startup: Startup,
    pub ours_memory: Memory,
    pub peer_startup: Startup,
    pub peer_memory: Memory,
    pub hardware: Vec<LatencyRow>,
    pub hw_round_robin: std::result::Result<Serial, String>,
    pub hw_cold: Serial,
    pub hw_startup: Startup,
    pub askpass_cost: Summary,
    pub elapsed: Duration,
}

/// Runs every phase; `progress` hears what is being measured.
pub fn run(config: &Config, progress: &mut dyn FnMut(&str)) -> Result<Results> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.work)
        .map_err(|e| Error::io(format!("creating {}", config.work.display()), e))?;
    let not_run = || Err("not run".to_string());
    let mut results = Results {
        machine: crate::machine::describe(),
        config: config.clone(),
        latency: Vec::new(),
        cold: Vec::new(),
        round_robin: not_run(),
        concurrency: Vec::new(),
        ours_startup: Startup::default(),
        ours_memory: Memory::default(),
        peer_startup: Startup::default(),
        peer_memory: Memory::default(),
        hardware: Vec::new(),
        hw_round_robin: not_run(),
        hw_cold: Serial::default(),
        hw_startup: Startup::default(),
        askpass_cost: Summary::default(),
        elapsed: Duration::ZERO,
    };
    let counter = config.work.join("askpass.count");
    let askpass = config.work.join("askpass.sh");
    ours::write_askpass(&askpass, &counter, PIN)?;
    results.askpass_cost = askpass_cost(&askpass, config.serial.min(100))?;

    ours_phase(config, &askpass, &counter, &mut results, progress)?;
    peer_phase(config, &askpass, &mut results, progress)?;
    results.elapsed = started.elapsed();
    Ok(results)
}

/// A swtpm of our own with a fresh state, and the proxy in front of it.
fn swtpm_with_proxy(dir: &Path) -> Result<(Swtpm, TpmProxy)> {
    let swtpm = Swtpm::start(dir)?;
    let proxy =
        TpmProxy::start(swtpm.port()).map_err(|e| Error::io("starting the TPM proxy", e))?;
    Ok((swtpm, proxy))
}

fn ours_phase(
    config: &Config,
    askpass: &Path,
    counter: &Path,
    results: &mut Results,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let (swtpm, proxy) = swtpm_with_proxy(&config.work.join("swtpm-ours"))?;
    let ours = Ours {
        bin_dir: config.bin_dir.clone(),
        askpass: askpass.to_path_buf(),
    };
    let keys = config.work.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| Error::io("creating the key directory", e))?;
    progress(&format!("creating {KEY_FILES} keys with ssh-tpm-keygen"));
    for request in key_requests() {
        ours.keygen(&proxy.tcti(), &keys, &request)?;
    }

    progress("floor: TPM2_Sign from tss-esapi on loaded keys");
    proxy.disconnect();
    results
        .latency
        .extend(direct_floor_rows(&swtpm.tcti(), &keys, config.serial)?);
    results
        .latency
        .extend(floor_rows(&proxy, &keys, config.serial)?);
    progress("our TPM layer in-process (Tpm::sign)");
    results
        .latency
        .extend(tpm_layer_rows(&proxy, &keys, config.serial)?);

    progress("ssh-tpm-agent");
    agent_rows(config, &ours, &proxy, &keys, counter, results, progress)?;

    progress(&format!(
        "ssh-tpm-agent, hardware mode ({} ms per TPM command)",
        config.hw_delay.as_millis()
    ));
    proxy.set_delay(config.hw_delay);
    let hardware = hardware_rows(config, &ours, &proxy, &keys, counter, results);
    proxy.set_delay(Duration::ZERO);
    hardware
}

/// The keys our side needs: one per algorithm with and without a PIN, ten for the
/// round robin, and fillers up to [`KEY_FILES`].
fn key_requests() -> Vec<KeyRequest> {
    let mut requests = Vec::new();
    for alg in Alg::ALL {
        for pin in [false, true] {
            let (key_type, bits) = alg.keygen();
            requests.push(KeyRequest {
                name: alg.key_name(pin),
                key_type,
                bits,
                pin: if pin { PIN.into() } else { String::new() },
            });
        }
    }
    for i in 0..KEY_FILES - requests.len() {
        let name = if i < ROUND_ROBIN_KEYS {
            format!("rr-{i}")
        } else {
            format!("filler-{i:02}")
        };
        requests.push(KeyRequest {
            name,
            key_type: "ecdsa",
            bits: 256,
            pin: String::new(),
        });
    }
    requests
}

fn read_key(keys: &Path, name: &str) -> Result<TpmKey> {
    let path = keys.join(format!("{name}.tpm"));
    let bytes =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    TpmKey::from_bytes(&bytes).map_err(|e| Error::Setup(format!("{}: {e}", path.display())))
}

/// Times `n` calls of `sign` while the proxy counts.
fn timed(
    n: usize,
    proxy: &TpmProxy,
    mut sign: impl FnMut(u64) -> Result<Duration>,
) -> Result<Serial> {
    let (samples, counts) = scenario::counted(Some(proxy), || {
        (0..n as u64).map(&mut sign).collect::<Result<Vec<_>>>()
    })?;
    Ok(Serial {
        summary: Summary::of(&samples),
        counts,
    })
}

fn floor_rows(proxy: &TpmProxy, keys: &Path, n: usize) -> Result<Vec<LatencyRow>> {
    let mut tpm = RawTpm::open(&proxy.tcti())?;
    let mut rows = Vec::new();
    for alg in Alg::ALL {
        for pin in [false, true] {
            let key = tpm.load(&read_key(keys, &alg.key_name(pin))?)?;
            let pin_bytes = if pin { PIN.as_bytes() } else { b"" };
            tpm.sign(&key, pin_bytes, &auth_data(0))?;
            let serial = timed(n, proxy, |i| tpm.sign(&key, pin_bytes, &auth_data(i)));
            tpm.unload(key);
            rows.push(LatencyRow {
                alg,
                who: Who::Floor,
                pin,
                serial: serial?,
                askpass: None,
            });
        }
    }
    Ok(rows)
}

/// The floor without the proxy in between (nothing counted), keys without a PIN.
fn direct_floor_rows(tcti: &str, keys: &Path, n: usize) -> Result<Vec<LatencyRow>> {
    let mut tpm = RawTpm::open(tcti)?;
    let mut rows = Vec::new();
    for alg in Alg::ALL {
        let key = tpm.load(&read_key(keys, &alg.key_name(false))?)?;
        tpm.sign(&key, b"", &auth_data(0))?;
        let samples: Result<Vec<Duration>> = (0..n as u64)
            .map(|i| tpm.sign(&key, b"", &auth_data(i)))
            .collect();
        tpm.unload(key);
        rows.push(LatencyRow {
            alg,
            who: Who::FloorDirect,
            pin: false,
            serial: Serial {
                summary: Summary::of(&samples?),
                counts: Counts::default(),
            },
            askpass: None,
        });
    }
    Ok(rows)
}

fn tpm_layer_rows(proxy: &TpmProxy, keys: &Path, n: usize) -> Result<Vec<LatencyRow>> {
    let mut tpm = Tpm::open(&TpmTarget::Tcti(proxy.tcti())).map_err(|e| Error::tpm("open", e))?;
    let mut rows = Vec::new();
    for alg in Alg::ALL {
        for pin in [false, true] {
            let key = read_key(keys, &alg.key_name(pin))?;
            let pin = if pin {
                Pin::from(PIN.to_string())
            } else {
                Pin::empty()
            };
            let mut sign = |i: u64| {
                let started = Instant::now();
                tpm.sign(&key, &pin, alg.sign_hash(), &auth_data(i))
                    .map_err(|e| Error::tpm("Tpm::sign", e))?;
                Ok(started.elapsed())
            };
            sign(u64::MAX)?;
            let serial = timed(n, proxy, sign)?;
            rows.push(LatencyRow {
                alg,
                who: Who::TpmLayer,
                pin: !pin.is_empty(),
                serial,
                askpass: None,
            });
        }
    }
    Ok(rows)
}

/// Everything measured on one run of our agent with the hundred key files.
fn agent_rows(
    config: &Config,
    ours: &Ours,
    proxy: &TpmProxy,
    keys: &Path,
    counter: &Path,
    results: &mut Results,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let socket = config.work.join("ours.sock");
    let log = config.work.join("ssh-tpm-agent.log");
    let signs_before = proxy.counts().signs();
    let agent = ours.start_agent(proxy, keys, &socket, KEY_FILES, &log)?;
    let startup = startup_of(&agent, proxy)?;
    results.ours_memory.idle_kib = agent.rss_kib();
    results.ours_startup = startup;
    let identities = AgentClient::connect(&socket)?.list()?;
    let key = |name: &str| scenario::find_key(&identities, name);

    progress("  cold signatures");
    let first = scenario::first_sign(&socket, &key("p256")?, Some(proxy))?;
    results.cold.push((
        "first signature after the agent started (P-256)".into(),
        first,
    ));
    let other = scenario::first_sign(&socket, &key("p384")?, Some(proxy))?;
    results
        .cold
        .push(("first signature with a second key (P-384)".into(), other));
    let pin = scenario::first_sign(&socket, &key("p256-pin")?, Some(proxy))?;
    results.cold.push((
        "first signature with a PIN key (P-256; one askpass run)".into(),
        pin,
    ));

    progress("  latency per key");
    for alg in Alg::ALL {
        for pin in [false, true] {
            let runs_before = ours::askpass_runs(counter);
            let serial = scenario::signs_in_turn(
                &socket,
                &[key(&alg.key_name(pin))?],
                config.serial,
                Some(proxy),
            )?;
            let runs = ours::askpass_runs(counter) - runs_before;
            results.latency.push(LatencyRow {
                alg,
                who: Who::Ours,
                pin,
                askpass: pin.then(|| runs.saturating_sub(1) as f64 / config.serial as f64),
                serial,
            });
        }
    }

    progress(&format!("  {ROUND_ROBIN_KEYS} keys in turn"));
    let ring: Vec<KeyData> = (0..ROUND_ROBIN_KEYS)
        .map(|i| key(&format!("rr-{i}")))
        .collect::<Result<_>>()?;
    results.round_robin = scenario::signs_in_turn(&socket, &ring, config.rounds, Some(proxy))
        .map_err(|e| e.to_string());

    progress("  concurrent clients");
    let p256 = key("p256")?;
    for clients in CLIENTS {
        let per_client = if clients == 1 {
            3 * config.per_client
        } else {
            config.per_client
        };
        let run = scenario::concurrent(&socket, &p256, clients, per_client, Some(proxy))?;
        results.concurrency.push((Who::Ours, run));
    }

    let done = proxy.counts().signs() - signs_before;
    progress(&format!(
        "  memory after {AGED_SIGNATURES} signatures ({done} so far)"
    ));
    scenario::sign_many(
        &socket,
        &p256,
        AGED_SIGNATURES.saturating_sub(done) as usize,
    )?;
    results.ours_memory.signatures = proxy.counts().signs() - signs_before;
    results.ours_memory.after_kib = agent.rss_kib();
    agent.stop()
}

/// Start-up figures, plus what one more key list costs the TPM.
fn startup_of(agent: &RunningAgent, proxy: &TpmProxy) -> Result<Startup> {
    let (listed, list_counts) = scenario::counted(Some(proxy), || {
        Ok(AgentClient::connect(&agent.socket)?.list()?.len())
    })?;
    Ok(Startup {
        keys: listed,
        time: agent.startup,
        counts: agent.startup_counts.clone(),
        list_counts,
    })
}

fn hardware_rows(
    config: &Config,
    ours: &Ours,
    proxy: &TpmProxy,
    keys: &Path,
    counter: &Path,
    results: &mut Results,
) -> Result<()> {
    let socket = config.work.join("ours-hw.sock");
    let log = config.work.join("ssh-tpm-agent-hw.log");
    let agent = ours.start_agent(proxy, keys, &socket, KEY_FILES, &log)?;
    results.hw_startup = startup_of(&agent, proxy)?;
    let identities = AgentClient::connect(&socket)?.list()?;
    let key = |name: &str| scenario::find_key(&identities, name);

    results.hw_cold = scenario::first_sign(&socket, &key("p256")?, Some(proxy))?;
    for pin in [false, true] {
        let runs_before = ours::askpass_runs(counter);
        let serial = scenario::signs_in_turn(
            &socket,
            &[key(&Alg::P256.key_name(pin))?],
            config.hw_serial,
            Some(proxy),
        )?;
        let runs = ours::askpass_runs(counter) - runs_before;
        results.hardware.push(LatencyRow {
            alg: Alg::P256,
            who: Who::Ours,
            pin,
            askpass: pin.then(|| runs.saturating_sub(1) as f64 / config.hw_serial as f64),
            serial,
        });
    }
    let ring: Vec<KeyData> = (0..ROUND_ROBIN_KEYS)
        .map(|i| key(&format!("rr-{i}")))
        .collect::<Result<_>>()?;
    results.hw_round_robin =
        scenario::signs_in_turn(&socket, &ring, 1, Some(proxy)).map_err(|e| e.to_string());
    agent.stop()
}

fn peer_phase(
    config: &Config,
    askpass: &Path,
    results: &mut Results,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    for alg in Alg::ALL {
        progress(&format!("ssh-agent + tpm2-pkcs11, {}", alg.label()));
        peer_alg(config, askpass, alg, results, progress)?;
    }
    Ok(())
}

/// `tpm2_ptool`'s name for an algorithm.
fn ptool_algorithm(alg: Alg) -> &'static str {
    match alg {
        Alg::P256 => "ecc256",
        Alg::P384 => "ecc384",
        Alg::Rsa2048 => "rsa2048",
    }
}

/// One token with one key on a swtpm of its own (see [`peer::make_token`]). The P-256 run
/// also gives the start-up, memory, concurrency and hardware-mode figures, and the rows
/// of ssh-agent with software keys.
fn peer_alg(
    config: &Config,
    askpass: &Path,
    alg: Alg,
    results: &mut Results,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let dir = config.work.join(format!("pkcs11-{}", alg.stem()));
    let (swtpm, proxy) = swtpm_with_proxy(&dir.join("swtpm"))?;
    let store = dir.join("store");
    let label = ptool_algorithm(alg);
    peer::make_token(&swtpm.tcti(), &store, PIN, label, &dir)?;

    let socket = dir.join("agent.sock");
    let before = proxy.counts();
    let agent = Pkcs11Agent::start(
        &proxy.tcti(),
        &store,
        &socket,
        askpass,
        &dir.join("ssh-agent.log"),
    )?;
    let startup_counts = proxy.counts().since(&before);
    let (listed, list_counts) = scenario::counted(Some(&proxy), || {
        Ok(AgentClient::connect(&socket)?.list()?.len())
    })?;
    let (idle, helper_idle) = agent.rss_kib();
    let signs_before = proxy.counts().signs();
    let token_key = scenario::find_key(&AgentClient::connect(&socket)?.list()?, label)?;

    let serial = scenario::signs_in_turn(
        &socket,
        std::slice::from_ref(&token_key),
        config.serial,
        Some(&proxy),
    )?;
    results.latency.push(LatencyRow {
        alg,
        who: Who::Pkcs11,
        pin: true,
        serial,
        askpass: None,
    });
    agent.add_software_key(&dir, alg.stem())?;
    let software = scenario::find_key(
        &AgentClient::connect(&socket)?.list()?,
        &format!("sw-{}", alg.stem()),
    )?;
    let serial = scenario::signs_in_turn(&socket, &[software], config.serial, None)?;
    results.latency.push(LatencyRow {
        alg,
        who: Who::Software,
        pin: false,
        serial,
        askpass: None,
    });
    if alg != Alg::P256 {
        agent.stop();
        return Ok(());
    }

    results.peer_startup = Startup {
        keys: listed,
        time: agent.startup,
        counts: startup_counts,
        list_counts,
    };
    progress("  concurrent clients");
    for clients in CLIENTS {
        let per_client = if clients == 1 {
            3 * config.per_client
        } else {
            config.per_client
        };
        let run = scenario::concurrent(&socket, &token_key, clients, per_client, Some(&proxy))?;
        results.concurrency.push((Who::Pkcs11, run));
    }

    progress("  hardware mode");
    proxy.set_delay(config.hw_delay);
    let hardware = scenario::signs_in_turn(&socket, &[token_key], config.hw_serial, Some(&proxy));
    proxy.set_delay(Duration::ZERO);
    results.hardware.push(LatencyRow {
        alg,
        who: Who::Pkcs11,
        pin: true,
        serial: hardware?,
        askpass: None,
    });

    let (after, helper_after) = agent.rss_kib();
    results.peer_memory = Memory {
        idle_kib: idle,
        after_kib: after,
        signatures: proxy.counts().signs() - signs_before,
        helper_idle_kib: helper_idle,
        helper_after_kib: helper_after,
    };
    agent.stop();
    Ok(())
}

/// What running the askpass program costs, spawned as the agent spawns it.
fn askpass_cost(askpass: &Path, n: usize) -> Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let output = Command::new(askpass)
            .arg("Enter PIN: ")
            .output()
            .map_err(|e| Error::io("running the askpass program", e))?;
        samples.push(started.elapsed());
        if !output.status.success() {
            return Err(Error::Setup("the askpass program failed".into()));
        }
    }
    Ok(Summary::of(&samples))
}
