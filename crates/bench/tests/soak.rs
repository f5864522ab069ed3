//! A short soak in the suite: 32 clients sign through the agent for 15 s (scripts/soak.sh
//! runs the long one); no request may fail, and the agent's memory stays flat once warm.

use std::path::PathBuf;
use std::time::Duration;

use ssh_tpm_bench::soak::{soak, SoakConfig};

/// After the first seconds (connections made, key loaded, allocator pools filled), VmRSS may
/// move by allocator noise only: a leak of even 100 bytes per signature would add several
/// MiB over the thousands of signatures of this run.
const WARM_AFTER_SECS: u64 = 3;
const MAX_GROWTH_KIB: u64 = 4 * 1024;

#[test]
fn thirty_two_clients_for_fifteen_seconds_sign_without_error_in_flat_memory() {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_ssh-tpm-soak"))
        .parent()
        .expect("the target directory")
        .to_path_buf();
    assert!(
        bin_dir.join("ssh-tpm-agent").exists(),
        "ssh-tpm-agent is not built in {}; build the workspace (cargo build -p ssh-tpm) first",
        bin_dir.display()
    );
    let work = tempfile_dir();
    let config = SoakConfig {
        bin_dir,
        work: work.clone(),
        clients: 32,
        duration: Duration::from_secs(15),
    };
    let report = soak(&config);
    let _ = std::fs::remove_dir_all(&work);
    let report = report.expect("the soak runs");
    eprintln!("{}", report.markdown());

    assert_eq!(report.errors, 0, "{:?}", report.first_errors);
    assert!(report.signatures > 100, "{} signatures", report.signatures);
    let warm = report
        .rss
        .iter()
        .find(|(at, _)| *at >= WARM_AFTER_SECS)
        .map(|s| s.1)
        .expect("a sample after warm-up");
    let end = report.rss.last().map(|s| s.1).unwrap_or_default();
    assert!(
        end <= warm + MAX_GROWTH_KIB,
        "VmRSS grew from {warm} KiB to {end} KiB: {:?}",
        report.rss
    );
}

fn tempfile_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ssh-tpm-soak-test.{}", std::process::id()))
}
