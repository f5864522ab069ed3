//! The run's figures as Markdown tables, and issue 5's targets checked against them.

use std::fmt::Write as _;
use std::time::Duration;

use crate::latency::ms;
use crate::run::{Alg, LatencyRow, Results, Who, CLIENTS};
use crate::scenario::Serial;

/// RSS ceilings of the targets, KiB.
const RSS_IDLE_KIB: u64 = 12 * 1024;
const RSS_AGED_KIB: u64 = 16 * 1024;
const LIST_WITHIN: Duration = Duration::from_millis(100);

/// One target, its measured value and whether it is met.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub measured: String,
    pub met: bool,
}

fn who_label(who: Who, pin: bool) -> &'static str {
    match (who, pin) {
        (Who::FloorDirect, _) => "floor without the proxy (straight to swtpm)",
        (Who::Floor, false) => "floor: TPM2_Sign, loaded key, password session",
        (Who::Floor, true) => "floor: TPM2_Sign, loaded key, salted HMAC session",
        (Who::TpmLayer, false) => "our TPM layer in-process, no PIN",
        (Who::TpmLayer, true) => "our TPM layer in-process, PIN",
        (Who::Ours, false) => "**ssh-tpm-agent, no PIN**",
        (Who::Ours, true) => "**ssh-tpm-agent, PIN**",
        (Who::Pkcs11, _) => "**ssh-agent + tpm2-pkcs11** (user PIN)",
        (Who::Software, _) => "ssh-agent, software key (no TPM)",
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Checks every target of issue 5.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    warm_path_targets(r, &mut out);
    no_pin_targets(r, &mut out);
    pin_targets(r, &mut out);
    scale_targets(r, &mut out);
    startup_targets(r, &mut out);
    hardware_targets(r, &mut out);
    out
}

fn push(out: &mut Vec<Target>, name: String, measured: String, met: bool) {
    out.push(Target {
        name,
        measured,
        met,
    });
}

/// One TPM command per warm signature, with and without a PIN.
fn warm_path_targets(r: &Results, out: &mut Vec<Target>) {
    for pin in [false, true] {
        let rows: Vec<&LatencyRow> = Alg::ALL
            .iter()
            .filter_map(|alg| r.row(*alg, Who::Ours, pin))
            .collect();
        let measured = rows
            .iter()
            .map(|row| {
                format!(
                    "{}: {}",
                    row.alg.short(),
                    row.serial.counts.breakdown(row.serial.summary.count as u64)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let met = !rows.is_empty()
            && rows.iter().all(|row| {
                let n = row.serial.summary.count as u64;
                row.serial.counts.commands() == n && row.serial.counts.signs() == n
            });
        let kind = if pin { "PIN key" } else { "key without PIN" };
        push(
            out,
            format!("warm path: one TPM command per signature ({kind})"),
            measured,
            met,
        );
    }
}

/// Keys without a PIN against the floor and the peer.
fn no_pin_targets(r: &Results, out: &mut Vec<Target>) {
    for alg in Alg::ALL {
        let (Some(ours), Some(floor), Some(peer)) = (
            r.row(alg, Who::Ours, false),
            r.row(alg, Who::Floor, false),
            r.row(alg, Who::Pkcs11, true),
        ) else {
            continue;
        };
        let p50 = ours.serial.summary.p50;
        let vs_floor = ratio(p50, floor.serial.summary.p50);
        push(
            out,
            format!("{}, no PIN: p50 ≤ 2× floor", alg.short()),
            format!(
                "{} ms vs floor {} ms = {vs_floor:.2}×",
                ms(p50),
                ms(floor.serial.summary.p50)
            ),
            vs_floor <= 2.0,
        );
        let vs_peer = ratio(p50, peer.serial.summary.p50);
        let floor_vs_peer = ratio(floor.serial.summary.p50, peer.serial.summary.p50);
        push(
            out,
            format!(
                "{}, no PIN: p50 ≤ 0.3× ssh-agent + tpm2-pkcs11",
                alg.short()
            ),
            format!(
                "{} ms vs {} ms = {vs_peer:.2}× (the floor alone: {floor_vs_peer:.2}×)",
                ms(p50),
                ms(peer.serial.summary.p50)
            ),
            vs_peer <= 0.3,
        );
    }
}

/// Keys with a PIN against the peer.
fn pin_targets(r: &Results, out: &mut Vec<Target>) {
    for alg in Alg::ALL {
        let (Some(ours), Some(peer)) = (r.row(alg, Who::Ours, true), r.row(alg, Who::Pkcs11, true))
        else {
            continue;
        };
        let vs_peer = ratio(ours.serial.summary.p50, peer.serial.summary.p50);
        let askpass = ours.askpass.map_or(String::new(), |a| {
            format!("; askpass runs per signature: {a:.2}")
        });
        let layer = r.row(alg, Who::TpmLayer, true).map_or(String::new(), |l| {
            format!(
                "; without askpass (TPM layer) {} ms = {:.2}×",
                ms(l.serial.summary.p50),
                ratio(l.serial.summary.p50, peer.serial.summary.p50)
            )
        });
        push(
            out,
            format!("{}, PIN: p50 ≤ ssh-agent + tpm2-pkcs11", alg.short()),
            format!(
                "{} ms vs {} ms = {vs_peer:.2}×{askpass}{layer}",
                ms(ours.serial.summary.p50),
                ms(peer.serial.summary.p50)
            ),
            vs_peer <= 1.0,
        );
    }
}

/// Ten keys in turn and 32 concurrent clients.
fn scale_targets(r: &Results, out: &mut Vec<Target>) {
    match &r.round_robin {
        Ok(serial) => push(
            out,
            "10 keys signed in turn (swtpm holds 3 objects): all work".into(),
            format!(
                "{} signatures, {:.2} TPM commands each ({})",
                serial.summary.count,
                serial.commands_per_sign(),
                serial.counts.breakdown(serial.summary.count as u64)
            ),
            serial.summary.count > 0,
        ),
        Err(e) => push(
            out,
            "10 keys signed in turn: all work".into(),
            format!("failed: {e}"),
            false,
        ),
    }

    let ours_runs: Vec<_> = r
        .concurrency
        .iter()
        .filter(|(w, _)| *w == Who::Ours)
        .map(|(_, c)| c)
        .collect();
    if let (Some(serial), Some(most)) = (
        ours_runs.iter().find(|c| c.clients == 1),
        ours_runs.iter().find(|c| c.clients == 32),
    ) {
        push(
            out,
            format!("32 clients × {}: zero errors", most.per_client),
            format!(
                "{} errors in {} signatures",
                most.errors,
                most.completed + most.errors
            ),
            most.errors == 0,
        );
        let share = most.throughput() / serial.throughput().max(1e-9);
        push(
            out,
            "32 clients: throughput ≥ 90% of serial".into(),
            format!(
                "{:.0}/s vs {:.0}/s serial = {:.0}%",
                most.throughput(),
                serial.throughput(),
                share * 100.0
            ),
            share >= 0.9,
        );
        push(
            out,
            "32 clients: no client starved".into(),
            format!(
                "client mean latency {}–{} ms (all: {} ms), worst {} ms",
                ms(most.fastest_client),
                ms(most.slowest_client),
                ms(most.latency.mean),
                ms(most.latency.max)
            ),
            !most.starved(),
        );
    }
}

/// Start-up, listing and memory.
fn startup_targets(r: &Results, out: &mut Vec<Target>) {
    let s = &r.ours_startup;
    push(
        out,
        format!("{} key files listed within 100 ms of start", s.keys),
        format!(
            "{} ms; TPM commands at start: {}",
            ms(s.time),
            s.counts.breakdown(1)
        ),
        s.keys >= 100 && s.time <= LIST_WITHIN,
    );
    push(
        out,
        "no TPM command needed to list keys".into(),
        format!("{} commands for a list", s.list_counts.commands()),
        s.list_counts.commands() == 0 && s.keys >= 100,
    );
    let m = &r.ours_memory;
    push(
        out,
        "RSS idle ≤ 12 MiB (100 keys)".into(),
        mib(m.idle_kib),
        m.idle_kib > 0 && m.idle_kib <= RSS_IDLE_KIB,
    );
    push(
        out,
        "RSS after 10,000 signatures ≤ 16 MiB".into(),
        format!("{} after {} signatures", mib(m.after_kib), m.signatures),
        m.after_kib > 0 && m.after_kib <= RSS_AGED_KIB && m.signatures >= 10_000,
    );
}

/// Hardware mode.
fn hardware_targets(r: &Results, out: &mut Vec<Target>) {
    let delay = r.config.hw_delay;
    if let Some(hw) = r.hw_row(Who::Ours, false) {
        let vs = ratio(hw.serial.summary.p50, delay);
        push(
            out,
            format!(
                "hardware mode ({} ms/command): p50 ≤ 1.1× one command",
                delay.as_millis()
            ),
            format!("{} ms = {vs:.2}× the delay", ms(hw.serial.summary.p50)),
            vs <= 1.1,
        );
    }
}

fn latency_line(out: &mut String, label: &str, pin: &str, serial: &Serial, askpass: Option<f64>) {
    let n = serial.summary.count as u64;
    let per = if serial.counts.by_code.is_empty() {
        "n/a".to_string()
    } else {
        format!("{:.2}", serial.commands_per_sign())
    };
    let tpm = if serial.counts.by_code.is_empty() {
        "n/a".to_string()
    } else {
        ms(serial.tpm_time_per_sign())
    };
    let askpass = askpass.map_or("".to_string(), |a| format!("{a:.2}"));
    let _ = writeln!(
        out,
        "| {label} | {pin} | {} | {} | {} | {per} | {tpm} | {} | {askpass} |",
        ms(serial.summary.p50),
        ms(serial.summary.p95),
        ms(serial.summary.max),
        if serial.counts.by_code.is_empty() {
            "not counted".into()
        } else {
            serial.counts.breakdown(n)
        },
    );
}

const LATENCY_HEADER: &str = "| signer | PIN | p50 ms | p95 ms | max ms | TPM cmds/sig | \
    swtpm ms/sig | commands per signature | askpass/sig |\n|---|---|--:|--:|--:|--:|--:|---|--:|\n";

/// The whole report.
pub fn markdown(r: &Results, command: &str) -> String {
    let mut out = String::new();
    header(&mut out, r, command);
    targets_table(&mut out, r);
    latency_tables(&mut out, r);
    cold_table(&mut out, r);
    concurrency_table(&mut out, r);
    startup_table(&mut out, r);
    hardware_table(&mut out, r);
    where_pin_time_goes(&mut out, r);
    out
}

/// The machine, the command that reproduces the run, and how much was measured.
fn header(out: &mut String, r: &Results, command: &str) {
    let c = &r.config;
    let _ = writeln!(out, "### Machine\n\n| | |\n|---|---|");
    for (what, value) in &r.machine {
        let _ = writeln!(out, "| {what} | {value} |");
    }
    let _ = writeln!(
        out,
        "\nReproduce with `{command}`. This run took {:.0} s; {} signatures per latency row \
         (the rows of one key type take turns every {}), {} per client with 8 and 32 clients \
         ({} for the single client; for our agent the three client counts take turns three \
         times and the figures add up), {} per row in hardware mode. Load average (1 min) of the \
         machine before and after: {:.2} and {:.2}.\n",
        r.elapsed.as_secs_f64(),
        c.serial,
        c.block,
        c.per_client,
        3 * c.per_client,
        c.hw_serial,
        r.load.0,
        r.load.1
    );
}

/// Issue 5's targets, met or not.
fn targets_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "### Targets (issue 5)\n\n| target | measured | met |\n|---|---|---|"
    );
    for t in targets(r) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            t.name,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
}

/// Per-signature latency, one table per key type.
fn latency_tables(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "\n### Per-signature latency\n\nOne connection, sequential signatures after one \
         warm-up signature per key; no process start-up in the figures. TPM commands and \
         swtpm time are read by the proxy from the TPM wire.\n"
    );
    for alg in Alg::ALL {
        let _ = write!(out, "\n**{}**\n\n{LATENCY_HEADER}", alg.label());
        for (who, pin) in [
            (Who::FloorDirect, false),
            (Who::Floor, false),
            (Who::Floor, true),
            (Who::TpmLayer, false),
            (Who::TpmLayer, true),
            (Who::Ours, false),
            (Who::Ours, true),
            (Who::Pkcs11, true),
            (Who::Software, false),
        ] {
            if let Some(row) = r.row(alg, who, pin) {
                let pin_text = if pin { "yes" } else { "no" };
                latency_line(out, who_label(who, pin), pin_text, &row.serial, row.askpass);
            }
        }
    }
}

/// Our agent's cold signatures and the ten keys in turn.
fn cold_table(out: &mut String, r: &Results) {
    let _ = write!(
        out,
        "\n### Cold signatures (ssh-tpm-agent)\n\n{LATENCY_HEADER}"
    );
    for (what, pin, serial) in &r.cold {
        latency_line(out, what, if *pin { "yes" } else { "no" }, serial, None);
    }
    if let Ok(rr) = &r.round_robin {
        latency_line(
            out,
            "10 keys in turn (swtpm: 3 object slots)",
            "no",
            rr,
            None,
        );
    }
}

/// Throughput and latency with 1, 8 and 32 clients.
fn concurrency_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "\n### Concurrent clients (ECDSA P-256)\n\n| signer | clients | signatures | errors | \
         throughput /s | vs 1 client | p50 ms | p95 ms | worst ms | \
         client mean ms, fastest–slowest | TPM cmds/sig |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|"
    );
    for who in [Who::Ours, Who::Pkcs11] {
        let runs: Vec<_> = r
            .concurrency
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, c)| c)
            .collect();
        let serial = runs
            .iter()
            .find(|c| c.clients == 1)
            .map_or(0.0, |c| c.throughput());
        for clients in CLIENTS {
            let Some(c) = runs.iter().find(|c| c.clients == clients) else {
                continue;
            };
            let label = if who == Who::Ours {
                "ssh-tpm-agent"
            } else {
                "ssh-agent + tpm2-pkcs11"
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {:.0} | {:.0}% | {} | {} | {} | {}–{} | {:.2} |",
                c.clients,
                c.completed,
                c.errors,
                c.throughput(),
                100.0 * c.throughput() / serial.max(1e-9),
                ms(c.latency.p50),
                ms(c.latency.p95),
                ms(c.latency.max),
                ms(c.fastest_client),
                ms(c.slowest_client),
                c.counts.commands() as f64 / c.completed.max(1) as f64,
            );
        }
    }
}

/// Start-up time, TPM commands at start and per list, and memory.
fn startup_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "\n### Start-up and memory\n\n| agent | keys | spawn → keys listed | \
         TPM commands at start | \
         TPM commands per list | RSS idle | RSS after signing |\n|---|--:|--:|---|--:|--:|--:|"
    );
    let s = &r.ours_startup;
    let m = &r.ours_memory;
    let _ = writeln!(
        out,
        "| ssh-tpm-agent | {} | {} ms | {} | {} | {} | {} after {} signatures |",
        s.keys,
        ms(s.time),
        s.counts.breakdown(1),
        s.list_counts.commands(),
        mib(m.idle_kib),
        mib(m.after_kib),
        m.signatures
    );
    let s = &r.peer_startup;
    let m = &r.peer_memory;
    let _ = writeln!(
        out,
        "| ssh-agent + tpm2-pkcs11 (incl. `ssh-add -s`, PIN via askpass) | {} | {} ms | {} | {} | \
         {} + helper {} | {} + helper {} after {} signatures |",
        s.keys,
        ms(s.time),
        s.counts.breakdown(1),
        s.list_counts.commands(),
        mib(m.idle_kib),
        mib(m.helper_idle_kib),
        mib(m.after_kib),
        mib(m.helper_after_kib),
        m.signatures
    );
}

/// Hardware mode: every TPM command held back by the configured delay.
fn hardware_table(out: &mut String, r: &Results) {
    let _ = write!(
        out,
        "\n### Hardware mode: the proxy holds every TPM command for {} ms\n\n{LATENCY_HEADER}",
        r.config.hw_delay.as_millis()
    );
    for row in &r.hardware {
        latency_line(
            out,
            who_label(row.who, row.pin),
            if row.pin { "yes" } else { "no" },
            &row.serial,
            row.askpass,
        );
    }
    latency_line(
        out,
        "ssh-tpm-agent, first signature after start",
        "no",
        &r.hw_cold,
        None,
    );
    if let Ok(rr) = &r.hw_round_robin {
        latency_line(out, "ssh-tpm-agent, 10 keys in turn", "no", rr, None);
    }
    let _ = writeln!(
        out,
        "\nStart-up with {} keys in hardware mode: {} ms to the first full list ({}).",
        r.hw_startup.keys,
        ms(r.hw_startup.time),
        r.hw_startup.counts.breakdown(1)
    );
}

/// The PIN path taken apart: askpass, session crypto in tpm2-tss, and the TPM's share.
fn where_pin_time_goes(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "\n### Where the PIN time goes (ECDSA P-256, p50)\n\n| step | ms |\n|---|--:|"
    );
    let Some(floor) = r.row(Alg::P256, Who::Floor, false) else {
        return;
    };
    let floor_pin = r.row(Alg::P256, Who::Floor, true);
    let layer_pin = r.row(Alg::P256, Who::TpmLayer, true);
    let ours_pin = r.row(Alg::P256, Who::Ours, true);
    let _ = writeln!(
        out,
        "| TPM2_Sign, password session (floor) | {} |",
        ms(floor.serial.summary.p50)
    );
    if let Some(fp) = floor_pin {
        let tpm_extra = fp
            .serial
            .tpm_time_per_sign()
            .saturating_sub(floor.serial.tpm_time_per_sign());
        let total_extra = fp
            .serial
            .summary
            .p50
            .saturating_sub(floor.serial.summary.p50);
        let _ = writeln!(
            out,
            "| + salted HMAC session with parameter encryption | {} |\n\
             | &nbsp;&nbsp; of which inside swtpm (HMAC check, decryption) | {} |\n\
             | &nbsp;&nbsp; of which client side (tpm2-tss session crypto) | {} |",
            ms(total_extra),
            ms(tpm_extra),
            ms(total_extra.saturating_sub(tpm_extra))
        );
    }
    if let Some(lp) = layer_pin {
        let _ = writeln!(
            out,
            "| our TPM layer with a PIN, in-process | {} |",
            ms(lp.serial.summary.p50)
        );
    }
    let _ = writeln!(
        out,
        "| one run of the askpass program (fork + exec of a shell script) | {} |",
        ms(r.askpass_cost.p50)
    );
    if let Some(op) = ours_pin {
        let _ = writeln!(
            out,
            "| ssh-tpm-agent with a PIN, through the socket ({:.2} askpass runs per signature) \
             | {} |",
            op.askpass.unwrap_or(0.0),
            ms(op.serial.summary.p50)
        );
    }
}
