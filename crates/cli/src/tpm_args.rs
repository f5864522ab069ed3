//! `--tcti` and `--swtpm`, the flags every binary takes to choose its TPM, and the
//! environment variables behind them. Flags win over the environment.

use ssh_tpm_tpm::TpmTarget;

/// Which TPM to use.
#[derive(Debug, Clone, clap::Args)]
pub struct TpmArgs {
    /// TPM to use, as a TCTI string like tpm2-tools take
    /// (device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321); also $SSH_TPM_TCTI
    /// [default: device:/dev/tpmrm0]
    #[arg(long, value_name = "TCTI", conflicts_with = "swtpm")]
    pub tcti: Option<String>,

    /// Use a software TPM (swtpm) whose state is kept in $XDG_STATE_HOME/ssh-tpm/swtpm,
    /// for machines without a TPM; keys made with it keep working across runs. Also
    /// SSH_TPM_AGENT_SWTPM=1
    #[arg(long)]
    pub swtpm: bool,
}

impl TpmArgs {
    /// The TPM these flags (then `SSH_TPM_TCTI`, then `SSH_TPM_AGENT_SWTPM`) name; fails
    /// with a hint when there is no TPM at all.
    pub fn target(&self) -> ssh_tpm_tpm::Result<TpmTarget> {
        if self.tcti.is_some() || self.swtpm {
            return TpmTarget::resolve(self.tcti.as_deref(), self.swtpm);
        }
        let env_tcti = std::env::var("SSH_TPM_TCTI").ok().filter(|t| !t.is_empty());
        let env_swtpm = std::env::var("SSH_TPM_AGENT_SWTPM").is_ok_and(|v| truthy(&v));
        TpmTarget::resolve(env_tcti.as_deref(), env_swtpm && env_tcti.is_none())
    }
}

/// How an on/off environment variable is read: empty, `0`, `false`, `no` and `off` are
/// off; anything else is on.
fn truthy(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "no" | "off"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_switches() {
        for on in ["1", "true", "yes", "on", "YES"] {
            assert!(truthy(on), "{on}");
        }
        for off in ["", "0", "false", "no", "off", "Off"] {
            assert!(!truthy(off), "{off}");
        }
    }
}
