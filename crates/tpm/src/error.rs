//! Errors of the TPM layer, worded for the person at the keyboard.

use std::path::PathBuf;

use tss_esapi::constants::response_code::{Tss2ResponseCode, Tss2ResponseCodeKind};

/// Everything that can go wrong while reaching or using the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No TPM device node, and the user did not ask for the embedded swtpm.
    #[error(
        "no TPM found at {0}; run with --swtpm to use a software TPM kept in your state \
         directory, or name another TPM with --tcti"
    )]
    NoTpm(PathBuf),

    /// The TCTI string could not be parsed or the TPM behind it did not answer.
    #[error("cannot reach the TPM through `{tcti}`: {reason}")]
    Tcti { tcti: String, reason: String },

    /// The embedded software TPM could not be started or used.
    #[error("embedded swtpm: {0}")]
    Swtpm(String),

    /// The TPM rejected the PIN (TPM_RC_AUTH_FAIL / TPM_RC_BAD_AUTH).
    #[error(
        "wrong PIN: the TPM rejected it and counted a failed try{}",
        tries_left_text(*.tries_left)
    )]
    WrongPin { tries_left: Option<u32> },

    /// The key needs a PIN and none was given; the TPM was not asked.
    #[error("this key needs a PIN and none was given; the TPM was not asked")]
    PinRequired,

    /// A hierarchy's password (TPM_RC_BAD_AUTH / TPM_RC_AUTH_FAIL on the hierarchy handle
    /// of TPM2_CreatePrimary) was missing or wrong; no key's PIN was involved.
    #[error("{}", hierarchy_password_text(hierarchy, *.given))]
    HierarchyPassword {
        hierarchy: &'static str,
        given: bool,
    },

    /// The TPM refuses PIN-protected keys until its dictionary-attack lockout ends.
    #[error(
        "the TPM is in dictionary-attack lockout and refuses PINs{}; or reset it with \
         the lockout password (`tpm2_dictionarylockout --clear-lockout`)",
        lockout_end_text(*.retry_in_secs)
    )]
    Lockout { retry_in_secs: Option<u32> },

    /// The key's private part does not fit this TPM (other TPM, cleared TPM, other parent).
    #[error(
        "this key belongs to a different TPM, or the TPM was cleared, or its parent is not \
         the one in the key file; the key cannot be used here"
    )]
    ForeignKey,

    /// A key or algorithm this code (or this TPM) does not handle.
    #[error("{0}")]
    Unsupported(String),

    /// The key's policy uses a command this code does not run (key-file draft, TPMPolicy).
    #[error(
        "the key's policy uses {name} (command code {code:#010x}): {what} is not supported, \
         so the key cannot be used here"
    )]
    UnsupportedPolicy {
        code: u32,
        name: &'static str,
        what: String,
    },

    /// A policy command the key needs failed: the TPM's state does not satisfy it.
    #[error(
        "the key is bound to a TPM state this machine is not in: {command} failed ({reason}); \
         the key can sign again only when the policy passes"
    )]
    PolicyFailed {
        command: &'static str,
        reason: &'static str,
    },

    /// The policy ran, but its digest is not the key's authPolicy.
    #[error(
        "the TPM refused the key's policy (TPM_RC_POLICY_FAIL): the policy in the key file \
         does not lead to the key's authPolicy, or the PCRs changed since the key was bound \
         to them"
    )]
    PolicyMismatch,

    /// The private key to import is encrypted and no passphrase was given.
    #[error("the private key is encrypted; give its passphrase with -P")]
    PassphraseRequired,

    /// The passphrase does not decrypt the private key to import.
    #[error("wrong passphrase: it does not decrypt the private key")]
    WrongPassphrase,

    /// The key file is malformed.
    #[error(transparent)]
    KeyFile(#[from] ssh_tpm_keyfile::Error),

    /// The TPM has no free object slot, and none of ours could be flushed.
    #[error(
        "the TPM has no room for another key (swtpm holds 3); another program keeps objects \
         loaded in it, for example an ssh-tpm-agent using the same TPM: stop it, or use a \
         resource manager (device:/dev/tpmrm0, tabrmd:)"
    )]
    Full,

    /// The TPM stopped answering (swtpm killed, device gone). The next request reconnects.
    #[error(
        "lost the connection to the TPM during {op}; the next request reconnects (if this \
         repeats, check that the TPM or swtpm is running)"
    )]
    ConnectionLost { op: &'static str },

    /// Any other TPM failure, with the operation that was running.
    #[error("TPM error during {op}: {source}")]
    Tss {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },

    /// Local I/O (state directory, lock file, child process).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a TPM error, turning the codes a user can act on into their own variants.
    pub(crate) fn tss(op: &'static str, source: tss_esapi::Error) -> Self {
        match response_kind(source) {
            Some(Tss2ResponseCodeKind::AuthFail) | Some(Tss2ResponseCodeKind::BadAuth) => {
                Error::WrongPin { tries_left: None }
            }
            Some(Tss2ResponseCodeKind::Lockout) => Error::Lockout {
                retry_in_secs: None,
            },
            Some(Tss2ResponseCodeKind::Integrity) => Error::ForeignKey,
            Some(Tss2ResponseCodeKind::ObjectMemory) => Error::Full,
            _ if is_transport_error(source) => Error::ConnectionLost { op },
            _ => Error::Tss { op, source },
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// The raw TSS2_RC of an error. tss-esapi 7 keeps it private but prints it in hex.
fn raw_code(error: tss_esapi::Error) -> Option<u32> {
    let text = match error {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.to_string(),
        _ => return None,
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// Whether the error came from the transport (the TCTI layer, 0x000Axxxx in the TSS 2.0
/// response-code layering) rather than from the TPM: the connection is gone.
pub(crate) fn is_transport_error(error: tss_esapi::Error) -> bool {
    const LAYER_MASK: u32 = 0x00FF_0000;
    const TCTI_LAYER: u32 = 0x000A_0000;
    raw_code(error).is_some_and(|rc| rc & LAYER_MASK == TCTI_LAYER)
}

/// The TPM 2.0 response code kind behind a tss-esapi error, when there is one.
pub(crate) fn response_kind(error: tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match error {
        tss_esapi::Error::Tss2Error(rc @ Tss2ResponseCode::FormatOne(_))
        | tss_esapi::Error::Tss2Error(rc @ Tss2ResponseCode::FormatZero(_)) => rc.kind(),
        _ => None,
    }
}

fn hierarchy_password_text(hierarchy: &str, given: bool) -> String {
    match (hierarchy, given) {
        ("owner", false) => "the TPM's owner hierarchy has a password and none was given; give \
                             it with -o/--owner-password or SSH_TPM_AGENT_OWNER_PASSWORD"
            .into(),
        ("owner", true) => "the TPM rejected the owner hierarchy password; check the one given \
                            with -o/--owner-password or SSH_TPM_AGENT_OWNER_PASSWORD"
            .into(),
        (other, _) => format!(
            "the TPM's {other} hierarchy has a password, which this tool cannot give; use \
             the owner hierarchy"
        ),
    }
}

fn tries_left_text(tries_left: Option<u32>) -> String {
    match tries_left {
        Some(1) => "; 1 try left before the TPM locks PIN keys".into(),
        Some(n) => format!("; {n} tries left before the TPM locks PIN keys"),
        None => String::new(),
    }
}

fn lockout_end_text(retry_in_secs: Option<u32>) -> String {
    match retry_in_secs {
        Some(0) | None => " until the lockout ends".into(),
        Some(secs) => format!(" for at most {} more; try again then", duration_text(secs)),
    }
}

fn duration_text(secs: u32) -> String {
    match secs {
        s if s < 120 => format!("{s} seconds"),
        s if s < 7200 => format!("{} minutes", s.div_ceil(60)),
        s => format!("{} hours", s.div_ceil(3600)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_are_told_apart_from_tpm_errors() {
        let io_error = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x000A_000A));
        assert!(is_transport_error(io_error));
        assert!(matches!(
            Error::tss("signing", io_error),
            Error::ConnectionLost { .. }
        ));
        let auth_fail = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x0000_098E));
        assert!(!is_transport_error(auth_fail));
        assert!(matches!(
            Error::tss("signing", auth_fail),
            Error::WrongPin { .. }
        ));
    }

    #[test]
    fn pin_errors_say_what_is_left() {
        let wrong = Error::WrongPin {
            tries_left: Some(2),
        };
        assert_eq!(
            wrong.to_string(),
            "wrong PIN: the TPM rejected it and counted a failed try; 2 tries left before the \
             TPM locks PIN keys"
        );
        let locked = Error::Lockout {
            retry_in_secs: Some(1000),
        };
        assert!(
            locked.to_string().contains("for at most 17 minutes more"),
            "{locked}"
        );
        let unknown = Error::Lockout {
            retry_in_secs: None,
        };
        assert!(
            unknown.to_string().contains("until the lockout ends"),
            "{unknown}"
        );
    }
}
