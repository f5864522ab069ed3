//! What the ssh-tpm binaries share: the TPM-choosing flags, logging, prompts, and writing
//! files without ever leaving a half-written one.

pub mod error;
pub mod files;
pub mod owner;
pub mod prompt;
pub mod tpm_args;
pub mod units;

pub use error::CliError;

/// Silences tpm2-tss's own stderr logging unless the user asked for it with `TSS2_LOG`:
/// our errors already say what failed. Call first thing in `main`, before any thread.
pub fn quiet_tss() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
}

/// Logs to stderr: lifecycle at info, per-request traces with `-d`.
pub fn init_logging(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Prints `error` as `program: message` and returns exit status 1.
pub fn report(program: &str, error: &CliError) -> std::process::ExitCode {
    eprintln!("{program}: {error}");
    std::process::ExitCode::FAILURE
}
