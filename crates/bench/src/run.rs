//! One benchmark run. Our keys are made once, on one swtpm; copies of its state give the
//! floor and our TPM layer a swtpm each, and ssh-agent + tpm2-pkcs11 gets one per key
//! algorithm. So every signer is up at once, and the latency rows of one algorithm take
//! turns in small blocks: load from other work on this shared machine hits them alike.

use std::cell::RefCell;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ssh_key::public::KeyData;
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::{Pin, Tpm, TpmTarget};

pub use crate::results::{Alg, Config, LatencyRow, Memory, Results, Startup, Who};

use crate::agent_client::{auth_data, AgentClient};
use crate::error::{Error, Result};
use crate::floor::RawTpm;
use crate::latency::Summary;
use crate::ours::{self, KeyRequest, Ours, RunningAgent};
use crate::peer::{self, Pkcs11Agent};
use crate::proxy::{Counts, TpmProxy};
use crate::results::load_average;
use crate::scenario::{self, Row, Serial};
use crate::swtpm::{self, Swtpm};

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

/// Runs every phase; `progress` hears what is being measured.
pub fn run(config: &Config, progress: &mut dyn FnMut(&str)) -> Result<Results> {
    let started = Instant::now();
    let work = &config.work;
    std::fs::create_dir_all(work)
        .map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
    let mut results = Results::new(config, crate::machine::describe());
    results.load.0 = load_average();
    let counter = work.join("askpass.count");
    let askpass = work.join("askpass.sh");
    ours::write_askpass(&askpass, &counter, PIN)?;
    results.askpass_cost = askpass_cost(&askpass, config.serial.min(100))?;
    let ours = Ours {
        bin_dir: config.bin_dir.clone(),
        askpass: askpass.clone(),
    };

    let keys = work.join("keys");
    progress(&format!("creating {KEY_FILES} keys with ssh-tpm-keygen"));
    make_keys(&ours, &keys, &work.join("swtpm-ours"))?;
    for copy in ["swtpm-floor", "swtpm-layer"] {
        swtpm::copy_state(&work.join("swtpm-ours"), &work.join(copy))?;
    }
    let (_ours_tpm, ours_proxy) = swtpm_with_proxy(&work.join("swtpm-ours"))?;
    let (floor_tpm, floor_proxy) = swtpm_with_proxy(&work.join("swtpm-floor"))?;
    let (_layer_tpm, layer_proxy) = swtpm_with_proxy(&work.join("swtpm-layer"))?;

    progress("floor without the proxy");
    results
        .latency
        .extend(direct_floor_rows(&floor_tpm.tcti(), &keys, config.serial)?);

    progress("starting ssh-tpm-agent");
    let socket = work.join("ours.sock");
    let signs_before = ours_proxy.counts().signs();
    let agent = ours.start_agent(
        &ours_proxy,
        &keys,
        &socket,
        KEY_FILES,
        &work.join("agent.log"),
    )?;
    results.ours_startup = startup_of(&agent, &ours_proxy)?;
    results.ours_memory.idle_kib = agent.rss_kib();
    let identities = AgentClient::connect(&socket)?.list()?;
    let key = |name: &str| scenario::find_key(&identities, name);

    progress("starting ssh-agent + tpm2-pkcs11 (one token and swtpm per key type)");
    let mut peers = Vec::new();
    for alg in Alg::ALL {
        peers.push(Peer::start(config, &askpass, alg)?);
    }
    let p256_peer = &peers[0];
    results.peer_startup = p256_peer.startup.clone();
    let (idle, helper_idle) = p256_peer.agent.rss_kib();
    results.peer_memory.idle_kib = idle;
    results.peer_memory.helper_idle_kib = helper_idle;
    let peer_signs_before = p256_peer.proxy.counts().signs();

    progress("cold signatures");
    for (what, name) in [
        ("first signature after the agent started (P-256)", "p256"),
        ("first signature with a second key (P-384)", "p384"),
        (
            "first signature with a PIN key (P-256; one askpass run)",
            "p256-pin",
        ),
    ] {
        let serial = scenario::first_sign(&socket, &key(name)?, Some(&ours_proxy))?;
        results
            .cold
            .push((what.into(), name.ends_with("-pin"), serial));
    }

    let signers = Signers {
        keys: &keys,
        floor: &floor_proxy,
        layer: &layer_proxy,
        ours: (&socket, &ours_proxy),
        identities: &identities,
        askpass_counter: &counter,
    };
    for peer in &peers {
        progress(&format!("latency, {} (rows take turns)", peer.alg.label()));
        results.latency.extend(signers.latency_group(config, peer)?);
    }

    progress(&format!("ssh-tpm-agent: {ROUND_ROBIN_KEYS} keys in turn"));
    let ring: Vec<KeyData> = (0..ROUND_ROBIN_KEYS)
        .map(|i| key(&format!("rr-{i}")))
        .collect::<Result<_>>()?;
    results.round_robin = scenario::signs_in_turn(&socket, &ring, config.rounds, Some(&ours_proxy))
        .map_err(|e| e.to_string());

    progress("concurrent clients");
    let p256 = key("p256")?;
    let plan: Vec<(usize, usize)> = CLIENTS
        .iter()
        .map(|&clients| (clients, per_client(config, clients)))
        .collect();
    let ours_runs = scenario::concurrent(&socket, &p256, &plan, 3, Some(&ours_proxy))?;
    results
        .concurrency
        .extend(ours_runs.into_iter().map(|run| (Who::Ours, run)));
    let peer = &peers[0];
    let peer_runs =
        scenario::concurrent(&peer.agent.socket, &peer.key, &plan, 1, Some(&peer.proxy))?;
    results
        .concurrency
        .extend(peer_runs.into_iter().map(|run| (Who::Pkcs11, run)));

    let done = ours_proxy.counts().signs() - signs_before;
    progress(&format!(
        "memory after {AGED_SIGNATURES} signatures ({done} so far)"
    ));
    scenario::sign_many(
        &socket,
        &p256,
        AGED_SIGNATURES.saturating_sub(done) as usize,
    )?;
    results.ours_memory.signatures = ours_proxy.counts().signs() - signs_before;
    results.ours_memory.after_kib = agent.rss_kib();
    let (after, helper_after) = peers[0].agent.rss_kib();
    results.peer_memory.after_kib = after;
    results.peer_memory.helper_after_kib = helper_after;
    results.peer_memory.signatures = peers[0].proxy.counts().signs() - peer_signs_before;
    agent.stop()?;

    progress(&format!(
        "hardware mode: {} ms per TPM command",
        config.hw_delay.as_millis()
    ));
    hardware(
        config,
        &ours,
        &ours_proxy,
        &keys,
        &counter,
        &peers[0],
        &mut results,
    )?;
    for peer in peers {
        peer.agent.stop();
    }
    results.load.1 = load_average();
    results.elapsed = started.elapsed();
    Ok(results)
}

fn per_client(config: &Config, clients: usize) -> usize {
    if clients == 1 {
        3 * config.per_client
    } else {
        config.per_client
    }
}

/// A swtpm with its state in `dir`, and the proxy in front of it.
fn swtpm_with_proxy(dir: &Path) -> Result<(Swtpm, TpmProxy)> {
    let swtpm = Swtpm::start(dir)?;
    let proxy =
        TpmProxy::start(swtpm.port()).map_err(|e| Error::io("starting the TPM proxy", e))?;
    Ok((swtpm, proxy))
}

/// Makes our keys on a fresh swtpm in `state`, then stops it in order so that its state
/// can be copied.
fn make_keys(ours: &Ours, keys: &Path, state: &Path) -> Result<()> {
    std::fs::create_dir_all(keys).map_err(|e| Error::io("creating the key directory", e))?;
    let swtpm = Swtpm::start(state)?;
    for request in key_requests() {
        ours.keygen(&swtpm.tcti(), keys, &request)?;
    }
    swtpm.shutdown();
    Ok(())
}

/// One key per algorithm with and without a PIN, ten for the round robin, and fillers up
/// to [`KEY_FILES`].
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

/// The floor without the proxy in between (nothing counted), keys without a PIN. Runs
/// before anything goes through the floor's proxy, which then holds swtpm's connection.
fn direct_floor_rows(tcti: &str, keys: &Path, n: usize) -> Result<Vec<LatencyRow>> {
    let mut tpm = RawTpm::open(tcti)?;
    let mut rows = Vec::new();
    for alg in Alg::ALL {
        let key = tpm.load(&read_key(keys, &alg.key_name(false))?)?;
        tpm.sign(&key, b"", &auth_data(u64::MAX))?;
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

/// Everything the per-algorithm latency rows sign through.
struct Signers<'a> {
    keys: &'a Path,
    floor: &'a TpmProxy,
    layer: &'a TpmProxy,
    ours: (&'a Path, &'a TpmProxy),
    identities: &'a [crate::agent_client::Identity],
    askpass_counter: &'a Path,
}

impl Signers<'_> {
    /// The eight rows of one algorithm, taking turns: the floor and our TPM layer with and
    /// without a PIN, our agent with and without a PIN, the pkcs11 peer, a software key.
    fn latency_group(&self, config: &Config, peer: &Peer) -> Result<Vec<LatencyRow>> {
        let alg = peer.alg;
        let floor = RefCell::new(RawTpm::open(&self.floor.tcti())?);
        let layer = RefCell::new(
            Tpm::open(&TpmTarget::Tcti(self.layer.tcti())).map_err(|e| Error::tpm("open", e))?,
        );
        let mut labels = Vec::new();
        let mut rows: Vec<Row<'_>> = Vec::new();

        for pin in [false, true] {
            let raw = floor
                .borrow_mut()
                .load(&read_key(self.keys, &alg.key_name(pin))?)?;
            let pin_bytes: &[u8] = if pin { PIN.as_bytes() } else { b"" };
            floor
                .borrow_mut()
                .sign(&raw, pin_bytes, &auth_data(u64::MAX))?;
            let floor = &floor;
            rows.push(Row {
                sign: Box::new(move |i| floor.borrow_mut().sign(&raw, pin_bytes, &auth_data(i))),
                proxy: Some(self.floor),
            });
            labels.push((Who::Floor, pin));
        }
        for pin in [false, true] {
            let file = read_key(self.keys, &alg.key_name(pin))?;
            let secret = if pin {
                Pin::from(PIN.to_string())
            } else {
                Pin::empty()
            };
            let layer = &layer;
            let sign = move |i: u64| {
                let started = Instant::now();
                layer
                    .borrow_mut()
                    .sign(&file, &secret, alg.sign_hash(), &auth_data(i))
                    .map_err(|e| Error::tpm("Tpm::sign", e))?;
                Ok(started.elapsed())
            };
            sign(u64::MAX)?;
            rows.push(Row {
                sign: Box::new(sign),
                proxy: Some(self.layer),
            });
            labels.push((Who::TpmLayer, pin));
        }
        let (socket, proxy) = self.ours;
        for pin in [false, true] {
            let key = scenario::find_key(self.identities, &alg.key_name(pin))?;
            rows.push(scenario::agent_row(socket, key, Some(proxy))?);
            labels.push((Who::Ours, pin));
        }
        rows.push(scenario::agent_row(
            &peer.agent.socket,
            peer.key.clone(),
            Some(&peer.proxy),
        )?);
        labels.push((Who::Pkcs11, true));
        rows.push(scenario::agent_row(
            &peer.agent.socket,
            peer.software.clone(),
            None,
        )?);
        labels.push((Who::Software, false));

        // Warm-ups are done; from here only our PIN row may run the askpass program.
        let askpass_before = ours::askpass_runs(self.askpass_counter);
        let serials = scenario::interleaved(&mut rows, config.serial, config.block)?;
        let askpass = (ours::askpass_runs(self.askpass_counter) - askpass_before) as f64
            / config.serial.max(1) as f64;
        drop(rows);

        Ok(labels
            .into_iter()
            .zip(serials)
            .map(|((who, pin), serial)| LatencyRow {
                alg,
                who,
                pin,
                serial,
                askpass: (who == Who::Ours && pin).then_some(askpass),
            })
            .collect())
    }
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

/// ssh-agent + tpm2-pkcs11 with one token holding one key, on a swtpm of its own (see
/// [`peer::make_token`] for why one key), plus a software key of the same type.
struct Peer {
    alg: Alg,
    startup: Startup,
    key: KeyData,
    software: KeyData,
    agent: Pkcs11Agent,
    proxy: TpmProxy,
    _swtpm: Swtpm,
}

impl Peer {
    fn start(config: &Config, askpass: &Path, alg: Alg) -> Result<Self> {
        let dir = config.work.join(format!("pkcs11-{}", alg.stem()));
        let (swtpm, proxy) = swtpm_with_proxy(&dir.join("swtpm"))?;
        let store = dir.join("store");
        peer::make_token(&swtpm.tcti(), &store, PIN, alg.ptool(), &dir)?;

        let socket = dir.join("agent.sock");
        let log = dir.join("ssh-agent.log");
        let (agent, counts) = scenario::counted(Some(&proxy), || {
            Pkcs11Agent::start(&proxy.tcti(), &store, &socket, askpass, &log)
        })?;
        let (listed, list_counts) = scenario::counted(Some(&proxy), || {
            Ok(AgentClient::connect(&socket)?.list()?.len())
        })?;
        let startup = Startup {
            keys: listed,
            time: agent.startup,
            counts,
            list_counts,
        };
        agent.add_software_key(&dir, alg.stem())?;
        let identities = AgentClient::connect(&socket)?.list()?;
        Ok(Peer {
            alg,
            startup,
            key: scenario::find_key(&identities, alg.ptool())?,
            software: scenario::find_key(&identities, &format!("sw-{}", alg.stem()))?,
            agent,
            proxy,
            _swtpm: swtpm,
        })
    }
}

/// Hardware mode: every TPM command held back by `config.hw_delay`. The peer's P-256 key,
/// then a fresh run of our agent (its start-up, first signature, warm signatures and the
/// ten keys in turn).
fn hardware(
    config: &Config,
    ours: &Ours,
    proxy: &TpmProxy,
    keys: &Path,
    counter: &Path,
    peer: &Peer,
    results: &mut Results,
) -> Result<()> {
    peer.proxy.set_delay(config.hw_delay);
    let peer_row = scenario::signs_in_turn(
        &peer.agent.socket,
        std::slice::from_ref(&peer.key),
        config.hw_serial,
        Some(&peer.proxy),
    );
    peer.proxy.set_delay(Duration::ZERO);

    proxy.set_delay(config.hw_delay);
    let ours_rows = hardware_ours(config, ours, proxy, keys, counter, results);
    proxy.set_delay(Duration::ZERO);
    ours_rows?;
    results.hardware.push(LatencyRow {
        alg: Alg::P256,
        who: Who::Pkcs11,
        pin: true,
        serial: peer_row?,
        askpass: None,
    });
    Ok(())
}

fn hardware_ours(
    config: &Config,
    ours: &Ours,
    proxy: &TpmProxy,
    keys: &Path,
    counter: &Path,
    results: &mut Results,
) -> Result<()> {
    let socket = config.work.join("ours-hw.sock");
    let log = config.work.join("agent-hw.log");
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
        // The warm-up signature may ask once; the measured ones should not.
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
