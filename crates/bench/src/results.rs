//! What one run measured, in the shape the report reads.

use std::path::PathBuf;
use std::time::Duration;

use ssh_tpm_tpm::SignHash;

use crate::latency::Summary;
use crate::proxy::Counts;
use crate::scenario::{Concurrent, Serial};

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Config {
    pub bin_dir: PathBuf,
    pub work: PathBuf,
    /// Signatures per latency row, taken in blocks of [`Config::block`].
    pub serial: usize,
    /// Rows of one algorithm take turns every `block` signatures, so that a burst of load
    /// on this shared machine hits all of them alike.
    pub block: usize,
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

    pub fn short(self) -> &'static str {
        match self {
            Alg::P256 => "P-256",
            Alg::P384 => "P-384",
            Alg::Rsa2048 => "RSA-2048",
        }
    }

    /// File stem, and the suffix of the software key's name.
    pub fn stem(self) -> &'static str {
        match self {
            Alg::P256 => "p256",
            Alg::P384 => "p384",
            Alg::Rsa2048 => "rsa2048",
        }
    }

    /// `ssh-tpm-keygen -t` and `-b`.
    pub fn keygen(self) -> (&'static str, u32) {
        match self {
            Alg::P256 => ("ecdsa", 256),
            Alg::P384 => ("ecdsa", 384),
            Alg::Rsa2048 => ("rsa", 2048),
        }
    }

    /// `tpm2_ptool addkey --algorithm`, also the pkcs11 key's label.
    pub fn ptool(self) -> &'static str {
        match self {
            Alg::P256 => "ecc256",
            Alg::P384 => "ecc384",
            Alg::Rsa2048 => "rsa2048",
        }
    }

    pub fn sign_hash(self) -> SignHash {
        match self {
            Alg::P256 => SignHash::Sha256,
            Alg::P384 => SignHash::Sha384,
            Alg::Rsa2048 => SignHash::Sha512,
        }
    }

    /// Our key's name (and comment) for this algorithm.
    pub fn key_name(self, pin: bool) -> String {
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
    /// Load average (1 min) before and after the run: other work on the machine.
    pub load: (f64, f64),
    pub latency: Vec<LatencyRow>,
    /// Cold signatures: (what, with a PIN, measurement).
    pub cold: Vec<(String, bool, Serial)>,
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

impl Results {
    /// An empty record for `config`, filled in phase by phase.
    pub fn new(config: &Config, machine: Vec<(String, String)>) -> Self {
        let not_run = || Err("not run".to_string());
        Results {
            machine,
            config: config.clone(),
            load: (0.0, 0.0),
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
        }
    }

    pub fn row(&self, alg: Alg, who: Who, pin: bool) -> Option<&LatencyRow> {
        self.latency
            .iter()
            .find(|r| r.alg == alg && r.who == who && r.pin == pin)
    }

    pub fn hw_row(&self, who: Who, pin: bool) -> Option<&LatencyRow> {
        self.hardware.iter().find(|r| r.who == who && r.pin == pin)
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
