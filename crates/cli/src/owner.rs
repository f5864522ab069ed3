//! The owner hierarchy's password, for TPMs whose owner set one (`tpm2_changeauth -c owner`):
//! `-o/--owner-password` asks for it, else `SSH_TPM_AGENT_OWNER_PASSWORD` holds it. The TPM
//! needs it to create the storage key that every key file's owner parent stands for.

use ssh_tpm_tpm::Pin;

use crate::error::CliError;

/// The environment variable that may hold the owner password.
pub const OWNER_PASSWORD_ENV: &str = "SSH_TPM_AGENT_OWNER_PASSWORD";

/// `-o/--owner-password`.
#[derive(Debug, Clone, clap::Args)]
pub struct OwnerArgs {
    /// Ask for the TPM's owner hierarchy password, for TPMs whose owner set one; also
    /// $SSH_TPM_AGENT_OWNER_PASSWORD
    #[arg(short = 'o', long)]
    pub owner_password: bool,
}

/// Takes the owner password from the environment, removing it there so that the programs
/// we start (askpass, swtpm) do not inherit it. Call before any thread starts.
pub fn password_from_env() -> Option<Pin> {
    let value = std::env::var_os(OWNER_PASSWORD_ENV)?;
    std::env::remove_var(OWNER_PASSWORD_ENV);
    Some(Pin::new(value.into_encoded_bytes()))
}

/// Asks for the owner password once on the terminal.
pub fn ask_on_terminal() -> Result<Pin, CliError> {
    rpassword::prompt_password("Enter the TPM owner password: ")
        .map(Pin::from)
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot ask for the owner password ({e}); set {OWNER_PASSWORD_ENV} instead"
            ))
        })
}
