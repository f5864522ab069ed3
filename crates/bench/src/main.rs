//! `ssh-tpm-bench`: runs the whole benchmark and prints the Markdown report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ssh_tpm_bench::run::{self, Config};

/// Measures ssh-tpm-agent against ssh-agent + tpm2-pkcs11 on private swtpm instances.
/// Needs swtpm, tpm2-abrmd, tpm2-pkcs11 and OpenSSH (scripts/bench.sh installs them).
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-bench", version)]
struct Args {
    /// A smoke run: few signatures per figure (the figures are noisy)
    #[arg(long)]
    quick: bool,

    /// Where ssh-tpm-agent and ssh-tpm-keygen are [default: beside this program]
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,

    /// Working directory for swtpm state, keys, sockets and logs [default: a new one in /tmp]
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,

    /// Keep the working directory (logs included) instead of removing it
    #[arg(long)]
    keep: bool,

    /// Delay per TPM command in hardware mode
    #[arg(long, value_name = "MS", default_value_t = 20)]
    hw_delay_ms: u64,

    /// Also write the report to this file
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// The command line to print as the way to reproduce the figures
    #[arg(long, value_name = "TEXT", default_value = "scripts/bench.sh")]
    command: String,
}

fn main() -> ExitCode {
    // tpm2-tss logs every TPM error to stderr; the proxy counts them instead.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    let args = Args::parse();
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssh-tpm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or("cannot tell where this program is; pass --bin-dir")?,
    };
    for binary in ["ssh-tpm-agent", "ssh-tpm-keygen"] {
        if !bin_dir.join(binary).exists() {
            return Err(format!(
                "{binary} is not in {}; build it (cargo build --release -p ssh-tpm) or pass \
                 --bin-dir",
                bin_dir.display()
            )
            .into());
        }
    }
    let work = args.work.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ssh-tpm-bench.{}", std::process::id()))
    });
    let (serial, block, rounds, per_client, hw_serial) = if args.quick {
        (30, 10, 3, 10, 5)
    } else {
        (300, 25, 30, 100, 25)
    };
    let config = Config {
        bin_dir,
        work: work.clone(),
        serial,
        block,
        rounds,
        per_client,
        hw_delay: Duration::from_millis(args.hw_delay_ms),
        hw_serial,
    };

    let results = run::run(&config, &mut |step| eprintln!("==> {step}"));
    if args.keep || results.is_err() {
        eprintln!("==> working directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    let report = ssh_tpm_bench::report::markdown(&results?, &args.command);
    print!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}
