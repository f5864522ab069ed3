//! The measurements made through an agent socket, the same for every agent: sequential
//! signatures on one connection, keys signed in turn, and many clients at once. TPM
//! commands are counted by the proxy in front of the agent's TPM over exactly the
//! measured signatures.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use ssh_key::public::KeyData;

use crate::agent_client::{auth_data, AgentClient, Identity, RSA_SHA2_512};
use crate::error::{Error, Result};
use crate::latency::Summary;
use crate::proxy::{Counts, TpmProxy};

/// Sequential signatures and what the TPM saw meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Serial {
    pub summary: Summary,
    pub counts: Counts,
}

impl Serial {
    /// TPM commands per signature.
    pub fn commands_per_sign(&self) -> f64 {
        self.counts.commands() as f64 / self.summary.count.max(1) as f64
    }

    /// Time swtpm spent per signature, as the proxy saw it.
    pub fn tpm_time_per_sign(&self) -> Duration {
        self.counts.tpm_time() / self.summary.count.max(1) as u32
    }
}

/// The sign flags SSH uses for a key: rsa-sha2-512 for RSA, none for ECDSA.
pub fn flags_for(key: &KeyData) -> u32 {
    match key {
        KeyData::Rsa(_) => RSA_SHA2_512,
        _ => 0,
    }
}

/// The key an agent lists with this comment.
pub fn find_key(identities: &[Identity], comment: &str) -> Result<KeyData> {
    identities
        .iter()
        .find(|identity| identity.comment == comment)
        .map(|identity| identity.key.clone())
        .ok_or_else(|| Error::Setup(format!("the agent does not list a key named {comment}")))
}

/// Counts what the TPM behind `proxy` does while `work` runs (no proxy: nothing).
pub fn counted<T>(
    proxy: Option<&TpmProxy>,
    work: impl FnOnce() -> Result<T>,
) -> Result<(T, Counts)> {
    let before = proxy.map(TpmProxy::counts).unwrap_or_default();
    let value = work()?;
    let after = proxy.map(TpmProxy::counts).unwrap_or_default();
    Ok((value, after.since(&before)))
}

/// One row of an interleaved measurement: `sign(i)` makes the `i`th signature and returns
/// how long it took; the proxy, if any, counts its TPM commands.
pub struct Row<'a> {
    pub sign: Box<dyn FnMut(u64) -> Result<Duration> + 'a>,
    pub proxy: Option<&'a TpmProxy>,
}

/// A row that signs with `key` through the agent at `socket`, after one verified
/// warm-up signature.
pub fn agent_row<'a>(socket: &Path, key: KeyData, proxy: Option<&'a TpmProxy>) -> Result<Row<'a>> {
    let mut client = AgentClient::connect(socket)?;
    let flags = flags_for(&key);
    client.sign_verified(&key, &auth_data(u64::MAX), flags)?;
    Ok(Row {
        sign: Box::new(move |i| {
            let data = auth_data(i);
            let started = Instant::now();
            client.sign(&key, &data, flags)?;
            Ok(started.elapsed())
        }),
        proxy,
    })
}

/// `n` signatures from each row, the rows taking turns every `block` signatures.
pub fn interleaved(rows: &mut [Row<'_>], n: usize, block: usize) -> Result<Vec<Serial>> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); rows.len()];
    let mut counts = vec![Counts::default(); rows.len()];
    let mut done = 0;
    while done < n {
        let take = block.max(1).min(n - done);
        for (i, row) in rows.iter_mut().enumerate() {
            let proxy = row.proxy;
            let sign = &mut row.sign;
            let (taken, seen) = counted(proxy, || {
                (done..done + take)
                    .map(|k| sign(k as u64))
                    .collect::<Result<Vec<_>>>()
            })?;
            samples[i].extend(taken);
            counts[i].add(&seen);
        }
        done += take;
    }
    Ok(samples
        .iter()
        .zip(counts)
        .map(|(taken, counts)| Serial {
            summary: Summary::of(taken),
            counts,
        })
        .collect())
}

/// One verified warm-up signature per key, then `rounds` rounds over `keys` in turn on one
/// connection. With one key this is the plain per-signature latency.
pub fn signs_in_turn(
    socket: &Path,
    keys: &[KeyData],
    rounds: usize,
    proxy: Option<&TpmProxy>,
) -> Result<Serial> {
    let mut client = AgentClient::connect(socket)?;
    for (i, key) in keys.iter().enumerate() {
        client.sign_verified(key, &auth_data(i as u64), flags_for(key))?;
    }
    let (samples, counts) = counted(proxy, || {
        let mut samples = Vec::with_capacity(rounds * keys.len());
        for round in 0..rounds {
            for (i, key) in keys.iter().enumerate() {
                let data = auth_data((round * keys.len() + i) as u64);
                let started = Instant::now();
                client.sign(key, &data, flags_for(key))?;
                samples.push(started.elapsed());
            }
        }
        Ok(samples)
    })?;
    Ok(Serial {
        summary: Summary::of(&samples),
        counts,
    })
}

/// The first signature with `key` on this connection, verified: cold when the agent has
/// not used the key (or its parent) yet.
pub fn first_sign(socket: &Path, key: &KeyData, proxy: Option<&TpmProxy>) -> Result<Serial> {
    let mut client = AgentClient::connect(socket)?;
    let (elapsed, counts) = counted(proxy, || {
        let started = Instant::now();
        client.sign_verified(key, &auth_data(u64::MAX), flags_for(key))?;
        Ok(started.elapsed())
    })?;
    Ok(Serial {
        summary: Summary::of(&[elapsed]),
        counts,
    })
}

/// Many clients signing at once, each on its own connection.
#[derive(Debug, Clone, Default)]
pub struct Concurrent {
    pub clients: usize,
    pub per_client: usize,
    pub completed: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latency: Summary,
    /// Each client's mean latency, fastest and slowest.
    pub fastest_client: Duration,
    pub slowest_client: Duration,
    pub counts: Counts,
}

impl Concurrent {
    /// Signatures per second over all clients.
    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether some client fell behind: a failed signature, or a client whose mean
    /// latency is over twice the mean of all signatures (its fair share).
    pub fn starved(&self) -> bool {
        let mean = self.latency.mean.as_secs_f64();
        self.errors > 0 || self.slowest_client.as_secs_f64() > 2.0 * mean
    }
}

/// One burst: `clients` connections released together, each signing `per_client` times.
struct Burst {
    /// Per client: its latencies and its failed signatures.
    clients: Vec<(Vec<Duration>, usize)>,
    elapsed: Duration,
    counts: Counts,
}

fn burst(
    socket: &Path,
    key: &KeyData,
    clients: usize,
    per_client: usize,
    proxy: Option<&TpmProxy>,
) -> Result<Burst> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut client = AgentClient::connect(socket)?;
        client.sign_verified(key, &auth_data(0), flags_for(key))?;
        connections.push(client);
    }
    let start = Barrier::new(clients + 1);
    let flags = flags_for(key);
    let ((results, elapsed), counts) = counted(proxy, || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = connections
                .into_iter()
                .enumerate()
                .map(|(c, mut client)| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        let mut samples = Vec::with_capacity(per_client);
                        let mut errors = 0;
                        for i in 0..per_client {
                            let data = auth_data((c * per_client + i) as u64);
                            let started = Instant::now();
                            match client.sign(key, &data, flags) {
                                Ok(_) => samples.push(started.elapsed()),
                                Err(_) => errors += 1,
                            }
                        }
                        (samples, errors)
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            let results: Vec<(Vec<Duration>, usize)> = workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| (Vec::new(), per_client)))
                .collect();
            Ok((results, began.elapsed()))
        })
    })?;
    Ok(Burst {
        clients: results,
        elapsed,
        counts,
    })
}

/// For each `(clients, per_client)` of `plan`, bursts of that many concurrent clients
/// signing with `key`; the whole plan is repeated `rounds` times, so that the client counts
/// take turns and load on the machine hits them alike. Figures add up over the rounds.
pub fn concurrent(
    socket: &Path,
    key: &KeyData,
    plan: &[(usize, usize)],
    rounds: usize,
    proxy: Option<&TpmProxy>,
) -> Result<Vec<Concurrent>> {
    let mut totals: Vec<Burst> = plan
        .iter()
        .map(|&(clients, _)| Burst {
            clients: vec![(Vec::new(), 0); clients],
            elapsed: Duration::ZERO,
            counts: Counts::default(),
        })
        .collect();
    for _ in 0..rounds.max(1) {
        for (total, &(clients, per_client)) in totals.iter_mut().zip(plan) {
            let run = burst(socket, key, clients, per_client, proxy)?;
            for (sum, (samples, errors)) in total.clients.iter_mut().zip(run.clients) {
                sum.0.extend(samples);
                sum.1 += errors;
            }
            total.elapsed += run.elapsed;
            total.counts.add(&run.counts);
        }
    }

    Ok(totals
        .into_iter()
        .zip(plan)
        .map(|(total, &(clients, per_client))| {
            let client_means: Vec<Duration> = total
                .clients
                .iter()
                .map(|(s, _)| Summary::of(s).mean)
                .collect();
            let all: Vec<Duration> = total
                .clients
                .iter()
                .flat_map(|(s, _)| s.iter().copied())
                .collect();
            Concurrent {
                clients,
                per_client,
                completed: all.len(),
                errors: total.clients.iter().map(|(_, e)| e).sum(),
                elapsed: total.elapsed,
                latency: Summary::of(&all),
                fastest_client: client_means.iter().copied().min().unwrap_or_default(),
                slowest_client: client_means.iter().copied().max().unwrap_or_default(),
                counts: total.counts,
            }
        })
        .collect())
}

/// Signs `count` more times with `key` (to age an agent before measuring its memory).
pub fn sign_many(socket: &Path, key: &KeyData, count: usize) -> Result<()> {
    let mut client = AgentClient::connect(socket)?;
    for i in 0..count {
        client.sign(key, &auth_data(i as u64), flags_for(key))?;
    }
    Ok(())
}
