//! The client's one error type. Each message says what went wrong and what to do next; a
//! refusal by the CA keeps the protocol's code (docs/protocol.md, "Refusals").

use ssh_tpm_attest::Refusal;

/// Everything the CA client can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CA answered with one of the protocol's refusal codes.
    #[error("the CA refused: {refusal} — {}{}", hint(*refusal), said(message))]
    Refused {
        /// The stable code.
        refusal: Refusal,
        /// The CA's own words (never secret).
        message: String,
    },

    /// The CA answered with an error this client does not know.
    #[error("the CA answered HTTP {status} ({code}): {message}")]
    CaError {
        status: u16,
        code: String,
        message: String,
    },

    /// No answer: connection refused, TLS failure, timeout.
    #[error("cannot reach {what}: {reason}")]
    Unreachable { what: String, reason: String },

    /// An answer this client cannot read.
    #[error("{what} gave an answer this client cannot read: {reason}")]
    BadAnswer { what: String, reason: String },

    /// The OpenID Connect login failed; the message says why and what to do.
    #[error("login failed: {0}")]
    Login(String),

    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] ssh_tpm_tpm::Error),

    /// Bytes the TPM produced or the CA sent that do not decode.
    #[error("{0}")]
    Attest(#[from] ssh_tpm_attest::Error),

    /// This device has no enrolment record.
    #[error(
        "this device is not enrolled with a CA ({path} is missing); run `ssh-tpm-cert enroll \
         --ca URL` first"
    )]
    NotEnrolled { path: String },

    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Anything else the user has to fix; the message says what.
    #[error("{0}")]
    Usage(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources on one line (reqwest and openidconnect keep the cause, such as
/// a TLS failure, in `source()`).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The CA's refusal code, when this is a refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

/// The CA's message on a second line, when it says more than the code.
fn said(message: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        String::new()
    } else {
        format!("\n  (the CA said: {message})")
    }
}

/// What a refusal means for the user, and what to do about it.
pub fn hint(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::SessionUnknown => {
            "the CA does not know this session (did it restart?); run the command again"
        }
        Refusal::SessionReplayed => "this session was already used; run the command again",
        Refusal::SessionExpired => {
            "the session ran out before the request arrived; run the command again and log in \
             within a few minutes"
        }
        Refusal::TokenInvalid => {
            "the CA did not accept the login token; check that the CA and this client use the same \
             identity provider"
        }
        Refusal::TokenExpired => {
            "the login expired before the request arrived; run the command again"
        }
        Refusal::TokenAudience => {
            "the login token was issued for another client; tell your administrator (the CA's \
             client_id and the provider disagree)"
        }
        Refusal::TokenNonce => "the login does not belong to this session; run the command again",
        Refusal::EkUntrusted => {
            "this TPM's endorsement certificate is not from a manufacturer the CA trusts; \
             tell your administrator"
        }
        Refusal::DeviceUnknown => {
            "this device is not in the inventory; ask your administrator to add it \
             (`ssh-tpm-cert device-id --ek-cert-out FILE` shows its id and writes the EK \
             certificate they need)"
        }
        Refusal::DeviceWrongUser => {
            "this device is assigned to another user; log in as its owner, or ask your \
             administrator"
        }
        Refusal::DeviceRetired => "this device was retired by your administrator",
        Refusal::DeviceNotEnrolled => {
            "this device is not enrolled with the CA; run `ssh-tpm-cert enroll --ca URL`"
        }
        Refusal::AkInvalid => {
            "the CA did not accept this TPM's attestation key; tell your administrator"
        }
        Refusal::ChallengeFailed => {
            "the TPM's answer to the enrolment challenge was wrong or late; run `ssh-tpm-cert \
             enroll` again"
        }
        Refusal::ComplianceDenied => {
            "your device management reports this device as not compliant; fix what it reports, \
             then try again"
        }
        Refusal::ComplianceUnavailable => {
            "the CA could not ask the device-management system; try again later"
        }
        Refusal::QuoteInvalid => {
            "the CA did not accept the TPM's quote; if the TPM was cleared or replaced, run \
             `ssh-tpm-cert enroll` again"
        }
        Refusal::PcrPolicy => {
            "this device's boot state (firmware, boot loader, Secure Boot) is outside its policy; \
             tell your administrator"
        }
        Refusal::CertifyInvalid => {
            "the CA did not accept the TPM's certification of the key; if the TPM was cleared or \
             replaced, run `ssh-tpm-cert enroll` again"
        }
        Refusal::KeyNotTpmGenerated => {
            "the key was imported or wrapped, not created in the TPM; make a new one with \
             ssh-tpm-keygen"
        }
        Refusal::KeyMismatch => {
            "the TPM certified another key than the one requested; check that NAME.pub belongs to \
             NAME.tpm"
        }
        Refusal::BadRequest => {
            "the CA could not read the request; is this client a version the CA supports?"
        }
        Refusal::RateLimited => "too many requests; wait a few minutes and try again",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_code_and_what_to_do() {
        let error = Error::Refused {
            refusal: Refusal::DeviceRetired,
            message: "device 12ab retired".into(),
        };
        let text = error.to_string();
        assert!(text.starts_with("the CA refused: device_retired — this device was retired"));
        assert!(
            text.ends_with("(the CA said: device 12ab retired)"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2);
        assert_eq!(error.refusal(), Some(Refusal::DeviceRetired));

        let bare = Error::Refused {
            refusal: Refusal::RateLimited,
            message: " ".into(),
        };
        assert_eq!(bare.to_string().lines().count(), 1);
        for refusal in Refusal::ALL {
            assert!(!hint(refusal).is_empty());
        }
    }
}
