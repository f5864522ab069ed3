//! `ssh-tpm-ca`: the certificate authority (docs/ca.md). Everything lives in the
//! `ssh-tpm-ca` library; this parses arguments, sets up logging and reports errors.

use std::process::ExitCode;

use clap::Parser as _;
use ssh_tpm_ca::cli::{run, Args};

fn main() -> ExitCode {
    let args = Args::parse();
    ssh_tpm::init_logging(args.log_level());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssh-tpm-ca: {e}");
            ExitCode::FAILURE
        }
    }
}
