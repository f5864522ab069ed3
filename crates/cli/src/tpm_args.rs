//! `--tcti` and `--swtpm`, the flags every binary takes to choose its TPM.

use ssh_tpm_tpm::TpmTarget;

/// Which TPM to use.
#[derive(Debug, Clone, clap::Args)]
pub struct TpmArgs {
    /// TPM to use, as a TCTI string like tpm2-tools take
    /// (device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321) [default: device:/dev/tpmrm0]
    #[arg(long, value_name = "TCTI", env = "SSH_TPM_TCTI")]
    pub tcti: Option<String>,

    /// Use a software TPM (swtpm) whose state is kept in $XDG_STATE_HOME/ssh-tpm/swtpm,
    /// for machines without a TPM; keys made with it keep working across runs
    #[arg(long, env = "SSH_TPM_AGENT_SWTPM", conflicts_with = "tcti")]
    pub swtpm: bool,
}

impl TpmArgs {
    /// The TPM these flags name; fails with a hint when there is no TPM at all.
    pub fn target(&self) -> ssh_tpm_tpm::Result<TpmTarget> {
        TpmTarget::resolve(self.tcti.as_deref(), self.swtpm)
    }
}
