//! `ssh-tpm-soak`: clients signing through one ssh-tpm-agent for a while (scripts/soak.sh).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ssh_tpm_bench::soak::{soak, SoakConfig};

/// Signs through ssh-tpm-agent from many clients at once on a private swtpm, verifying
/// every signature and sampling the agent's memory; prints a Markdown table.
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-soak", version)]
struct Args {
    /// How long to sign, in seconds
    #[arg(long, default_value_t = 600)]
    seconds: u64,

    /// Clients signing at once, each on its own connection
    #[arg(long, default_value_t = 32)]
    clients: usize,

    /// Where ssh-tpm-agent and ssh-tpm-keygen are [default: beside this program]
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,

    /// Working directory [default: a new one in /tmp, removed afterwards]
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
}

fn main() -> ExitCode {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    let args = Args::parse();
    let bin_dir = match args.bin_dir.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
    }) {
        Some(dir) => dir,
        None => {
            eprintln!("ssh-tpm-soak: cannot tell where this program is; pass --bin-dir");
            return ExitCode::FAILURE;
        }
    };
    let temporary = args.work.is_none();
    let work = args.work.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ssh-tpm-soak.{}", std::process::id()))
    });
    let config = SoakConfig {
        bin_dir,
        work: work.clone(),
        clients: args.clients,
        duration: Duration::from_secs(args.seconds),
    };
    let result = soak(&config);
    if temporary {
        let _ = std::fs::remove_dir_all(&work);
    }
    match result {
        Ok(report) => {
            print!("{}", report.markdown());
            for error in &report.first_errors {
                eprintln!("ssh-tpm-soak: {error}");
            }
            if report.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ssh-tpm-soak: {e}");
            ExitCode::FAILURE
        }
    }
}
