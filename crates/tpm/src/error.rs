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
         the one in the key file; the key cannot be used here. A cleared TPM (tpm2_clear, a \
         firmware reset) has new seeds, so every key made before is gone for good: make new \
         keys with ssh-tpm-keygen"
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

/// How often, and how patiently, a command is sent again when the TPM answers with a
/// warning that asks for that: TPM_RC_RETRY, TPM_RC_YIELDED or TPM_RC_TESTING (TPM 2.0
/// Part 2, 6.6.3). tss2-esys already resubmits a few times without pausing; this adds
/// pauses, so that a TPM busy with self-tests or another locality gets time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The pause after the first busy answer; each next one doubles, up to `max_delay`.
    pub first_delay: std::time::Duration,
    pub max_delay: std::time::Duration,
}

/// 6 tries over at most 10 + 20 + 40 + 80 + 160 ms: long enough for swtpm's and most
/// chips' self-tests, short enough that a stuck TPM is reported within a second.
pub(crate) const BUSY_RETRY: RetryPolicy = RetryPolicy {
    attempts: 6,
    first_delay: std::time::Duration::from_millis(10),
    max_delay: std::time::Duration::from_millis(500),
};

/// Runs `op` until it returns anything but a busy warning (see [`RetryPolicy`]), at most
/// `policy.attempts` times, calling `sleep` between tries.
pub(crate) fn retry_busy<T>(
    policy: RetryPolicy,
    mut op: impl FnMut() -> Result<T>,
    mut sleep: impl FnMut(std::time::Duration),
) -> Result<T> {
    let mut delay = policy.first_delay;
    let mut attempt = 1;
    loop {
        match op() {
            Err(e) if attempt < policy.attempts && is_busy(&e) => {
                tracing::debug!("TPM busy ({e}); trying again in {} ms", delay.as_millis());
                sleep(delay);
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether the TPM asked for the command to be sent again.
fn is_busy(error: &Error) -> bool {
    let Error::Tss { source, .. } = error else {
        return false;
    };
    matches!(
        response_kind(*source),
        Some(
            Tss2ResponseCodeKind::Retry
                | Tss2ResponseCodeKind::Yielded
                | Tss2ResponseCodeKind::Testing
        )
    )
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

    /// TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING as a TPM sends them.
    const RETRY: u32 = 0x922;
    const YIELDED: u32 = 0x908;
    const TESTING: u32 = 0x90A;
    const AUTH_FAIL: u32 = 0x98E;

    /// Runs [`retry_busy`] against a TPM that answers `codes` in turn (0: success); returns
    /// the result, how many commands were sent and the pauses taken.
    fn against(codes: &[u32]) -> (Result<u32>, usize, Vec<u128>) {
        let mut sent = 0;
        let mut pauses = Vec::new();
        let result = retry_busy(
            BUSY_RETRY,
            || {
                let code = codes[sent];
                sent += 1;
                match code {
                    0 => Ok(7),
                    rc => Err(Error::tss(
                        "signing",
                        tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc)),
                    )),
                }
            },
            |pause| pauses.push(pause.as_millis()),
        );
        (result, sent, pauses)
    }

    #[test]
    fn busy_answers_are_retried_with_growing_pauses() {
        let (result, sent, pauses) = against(&[RETRY, YIELDED, TESTING, 0]);
        assert_eq!(result.ok(), Some(7));
        assert_eq!(sent, 4);
        assert_eq!(pauses, [10, 20, 40]);
    }

    #[test]
    fn a_tpm_that_stays_busy_is_reported_after_the_last_try() {
        let (result, sent, pauses) = against(&[RETRY; 10]);
        assert_eq!(sent, 6, "tries in all");
        assert_eq!(pauses, [10, 20, 40, 80, 160]);
        let error = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("TPM error during signing: "), "{error}");
    }

    #[test]
    fn other_failures_are_not_retried() {
        let (result, sent, pauses) = against(&[AUTH_FAIL, 0]);
        assert!(matches!(result, Err(Error::WrongPin { .. })), "{result:?}");
        assert_eq!((sent, pauses.len()), (1, 0));
        let (result, sent, _) = against(&[0x000A_000A, 0]);
        assert!(
            matches!(result, Err(Error::ConnectionLost { .. })),
            "{result:?}"
        );
        assert_eq!(sent, 1, "a lost connection is the service's to handle");
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
