//! Signs in a loop with a PIN-protected P-256 key through a salted HMAC session with
//! parameter encryption, and nothing else: a target for profilers, to see where the
//! session's client-side time goes (BENCHMARKS.md, "Where the PIN time goes").
//!
//! `cargo run --release -p ssh-tpm-bench --example pin_session -- [SIGNATURES] [--no-pin]
//! [--layer]`; `--layer` signs through our TPM layer (`ssh_tpm_tpm::Tpm::sign`) instead of
//! tss-esapi alone.

use std::time::Instant;

use ssh_tpm_bench::floor::RawTpm;
use ssh_tpm_bench::swtpm::Swtpm;
use ssh_tpm_tpm::{KeySpec, Pin, SignHash, Tpm, TpmTarget};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("TSS2_LOG", "all+NONE");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1000);
    let pin = if args.iter().any(|a| a == "--no-pin") {
        ""
    } else {
        "1234"
    };

    let dir = std::env::temp_dir().join(format!("pin-session.{}", std::process::id()));
    let swtpm = Swtpm::start(&dir)?;
    let key = {
        let mut tpm = Tpm::open(&TpmTarget::Tcti(swtpm.tcti()))?;
        tpm.create_key(KeySpec::EcdsaP256, &Pin::from(pin.to_string()))?
    };
    if args.iter().any(|a| a == "--layer") {
        let pin = Pin::from(pin.to_string());
        let mut tpm = Tpm::open(&TpmTarget::Tcti(swtpm.tcti()))?;
        tpm.sign(&key, &pin, SignHash::Sha256, b"warm-up")?;
        let started = Instant::now();
        for i in 0..count {
            tpm.sign(&key, &pin, SignHash::Sha256, &i.to_be_bytes())?;
        }
        let each = started.elapsed() / count as u32;
        println!(
            "{count} signatures through Tpm::sign, {each:?} each (PIN: {})",
            !pin.is_empty()
        );
        drop(tpm);
        drop(swtpm);
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let mut tpm = RawTpm::open(&swtpm.tcti())?;
    let loaded = tpm.load(&key)?;
    tpm.sign(&loaded, pin.as_bytes(), b"warm-up")?;

    let started = Instant::now();
    for i in 0..count {
        tpm.sign(&loaded, pin.as_bytes(), &i.to_be_bytes())?;
    }
    let each = started.elapsed() / count as u32;
    println!(
        "{count} signatures, {each:?} each (PIN: {})",
        !pin.is_empty()
    );
    tpm.unload(loaded);
    drop(tpm);
    drop(swtpm);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
