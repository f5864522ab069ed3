//! The JSON bodies of the CA protocol v1 (docs/protocol.md), and its refusal codes.
//!
//! Binary fields stay base64url strings here, exactly as on the wire; the checks decode them.
//! [`Refusal`] is the table of stable error codes and their HTTP statuses; [`Rejection`] pairs
//! one with a detail for the audit log and is the error of every check in [`crate::checks`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `POST /v1/sessions` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResponse {
    /// Opaque session id.
    pub session_id: String,
    /// b64 of the session nonce.
    pub nonce: String,
    /// Unix seconds after which the session is refused.
    pub expires_at: u64,
    /// The `nonce` parameter for the OIDC login ([`crate::derive::oidc_nonce`]).
    pub oidc_nonce: String,
}

/// `GET /v1/info` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// The OpenID provider's issuer URL.
    pub issuer: String,
    /// The client id registered for ssh-tpm at the provider.
    pub client_id: String,
    /// The scopes to request.
    pub scopes: Vec<String>,
    /// The CA's SSH public key in OpenSSH format.
    pub ca_public_key: String,
    /// The lifetime of a certificate, in seconds.
    pub default_validity_secs: u64,
}

/// `POST /v1/enroll` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an object with session_id, id_token, ek_cert and ak_public")]
pub struct EnrollRequest {
    /// Session id from `POST /v1/sessions`.
    pub session_id: String,
    /// The OIDC ID token (secret: not shown by `Debug`).
    pub id_token: String,
    /// b64 of the EK certificate, DER.
    pub ek_cert: String,
    /// b64 of the AK's `TPMT_PUBLIC`.
    pub ak_public: String,
}

/// `POST /v1/enroll` answer: the MakeCredential challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollChallenge {
    /// Id to quote in `POST /v1/enroll/activate`.
    pub challenge_id: String,
    /// b64 of the contents of a `TPM2B_ID_OBJECT`.
    pub credential_blob: String,
    /// b64 of the contents of a `TPM2B_ENCRYPTED_SECRET`.
    pub encrypted_secret: String,
}

/// `POST /v1/enroll/activate` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an object with challenge_id and secret")]
pub struct ActivateRequest {
    /// From [`EnrollChallenge::challenge_id`].
    pub challenge_id: String,
    /// b64 of the secret TPM2_ActivateCredential returned (secret: not shown by `Debug`).
    pub secret: String,
}

/// `POST /v1/enroll/activate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    /// Lowercase hex device id.
    pub device_id: String,
    /// b64 of the AK name now pinned to the device.
    pub ak_name: String,
}

/// `POST /v1/certificates` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    expecting = "an object with session_id, id_token, device_id, ssh_public_key, \
                     key_public, certify and quote"
)]
pub struct CertificateRequest {
    /// Session id from `POST /v1/sessions`.
    pub session_id: String,
    /// The OIDC ID token (secret: not shown by `Debug`).
    pub id_token: String,
    /// Lowercase hex device id.
    pub device_id: String,
    /// The SSH public key in OpenSSH format (`ecdsa-sha2-nistp256 AAAA… comment`).
    pub ssh_public_key: String,
    /// b64 of the SSH key's `TPMT_PUBLIC`.
    pub key_public: String,
    /// TPM2_Certify of the SSH key by the AK.
    pub certify: Evidence,
    /// TPM2_Quote of SHA-256 PCRs 0–7 by the AK.
    pub quote: QuoteEvidence,
}

/// A signed attestation: b64 of a `TPMS_ATTEST` and of its `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an object with attest and signature")]
pub struct Evidence {
    /// b64 of the `TPMS_ATTEST`.
    pub attest: String,
    /// b64 of the `TPMT_SIGNATURE`.
    pub signature: String,
}

/// A quote with the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an object with attest, signature and pcrs")]
pub struct QuoteEvidence {
    /// b64 of the `TPMS_ATTEST`.
    pub attest: String,
    /// b64 of the `TPMT_SIGNATURE`.
    pub signature: String,
    /// Bank name (`"sha256"`) → decimal PCR index → hex value.
    pub pcrs: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /v1/certificates` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The OpenSSH certificate, one line.
    pub certificate: String,
    /// Its serial.
    pub serial: u64,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds.
    pub valid_before: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A [`Refusal`] code.
    pub error: String,
    /// For people.
    pub message: String,
}

macro_rules! redacted_debug {
    ($ty:ident { $($shown:ident),* } hides $($hidden:ident),*) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($shown), &self.$shown))*
                    $(.field(stringify!($hidden), &"<redacted>"))*
                    .finish()
            }
        }
    };
}

redacted_debug!(EnrollRequest { session_id, ek_cert, ak_public } hides id_token);
redacted_debug!(ActivateRequest { challenge_id } hides secret);
redacted_debug!(CertificateRequest {
    session_id, device_id, ssh_public_key, key_public, certify, quote
} hides id_token);

/// Why the CA refuses a request: the stable codes of docs/protocol.md, "Refusals".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Refusal {
    SessionUnknown,
    SessionReplayed,
    SessionExpired,
    TokenInvalid,
    TokenExpired,
    TokenAudience,
    TokenNonce,
    EkUntrusted,
    DeviceUnknown,
    DeviceWrongUser,
    DeviceRetired,
    DeviceNotEnrolled,
    AkInvalid,
    ChallengeFailed,
    ComplianceDenied,
    ComplianceUnavailable,
    QuoteInvalid,
    PcrPolicy,
    CertifyInvalid,
    KeyNotTpmGenerated,
    KeyMismatch,
    BadRequest,
    RateLimited,
}

impl Refusal {
    /// Every refusal, in the order of the protocol's table.
    pub const ALL: [Refusal; 23] = [
        Self::SessionUnknown,
        Self::SessionReplayed,
        Self::SessionExpired,
        Self::TokenInvalid,
        Self::TokenExpired,
        Self::TokenAudience,
        Self::TokenNonce,
        Self::EkUntrusted,
        Self::DeviceUnknown,
        Self::DeviceWrongUser,
        Self::DeviceRetired,
        Self::DeviceNotEnrolled,
        Self::AkInvalid,
        Self::ChallengeFailed,
        Self::ComplianceDenied,
        Self::ComplianceUnavailable,
        Self::QuoteInvalid,
        Self::PcrPolicy,
        Self::CertifyInvalid,
        Self::KeyNotTpmGenerated,
        Self::KeyMismatch,
        Self::BadRequest,
        Self::RateLimited,
    ];

    /// The stable code that goes into [`ErrorBody::error`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::SessionUnknown => "session_unknown",
            Self::SessionReplayed => "session_replayed",
            Self::SessionExpired => "session_expired",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenAudience => "token_audience",
            Self::TokenNonce => "token_nonce",
            Self::EkUntrusted => "ek_untrusted",
            Self::DeviceUnknown => "device_unknown",
            Self::DeviceWrongUser => "device_wrong_user",
            Self::DeviceRetired => "device_retired",
            Self::DeviceNotEnrolled => "device_not_enrolled",
            Self::AkInvalid => "ak_invalid",
            Self::ChallengeFailed => "challenge_failed",
            Self::ComplianceDenied => "compliance_denied",
            Self::ComplianceUnavailable => "compliance_unavailable",
            Self::QuoteInvalid => "quote_invalid",
            Self::PcrPolicy => "pcr_policy",
            Self::CertifyInvalid => "certify_invalid",
            Self::KeyNotTpmGenerated => "key_not_tpm_generated",
            Self::KeyMismatch => "key_mismatch",
            Self::BadRequest => "bad_request",
            Self::RateLimited => "rate_limited",
        }
    }

    /// The HTTP status: 404, 400 and 429 where the table says so, 403 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::SessionUnknown => 404,
            Self::BadRequest => 400,
            Self::RateLimited => 429,
            _ => 403,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A code that is not in the protocol's table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown refusal code {0:?}")]
pub struct UnknownRefusal(pub String);

impl FromStr for Refusal {
    type Err = UnknownRefusal;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.code() == code)
            .ok_or_else(|| UnknownRefusal(code.to_owned()))
    }
}

/// A refusal with the precise reason, for the audit log and the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The protocol code.
    pub refusal: Refusal,
    /// What exactly was wrong (never contains secrets).
    pub detail: String,
}

impl Rejection {
    /// A rejection with this code and detail.
    pub fn new(refusal: Refusal, detail: impl Into<String>) -> Self {
        Self {
            refusal,
            detail: detail.into(),
        }
    }

    /// The error body to send: the code and `detail` as the message.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: self.refusal.code().to_owned(),
            message: self.detail.clone(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.refusal.code(), self.detail)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_str_and_serde() {
        for r in Refusal::ALL {
            assert_eq!(r.code().parse::<Refusal>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.code())
            );
            assert_eq!(r.to_string(), r.code());
        }
        assert!("nope".parse::<Refusal>().is_err());
        assert_eq!(Refusal::SessionUnknown.status(), 404);
        assert_eq!(Refusal::BadRequest.status(), 400);
        assert_eq!(Refusal::RateLimited.status(), 429);
        assert_eq!(Refusal::PcrPolicy.status(), 403);
    }

    #[test]
    fn rejection_display_and_body() {
        let r = Rejection::new(Refusal::KeyMismatch, "the certified key differs");
        assert_eq!(r.to_string(), "key_mismatch: the certified key differs");
        assert_eq!(r.to_body().error, "key_mismatch");
    }

    #[test]
    fn certificate_request_parses_the_documented_shape() {
        let json = r#"{"session_id":"s","id_token":"secret-token","device_id":"ab",
            "ssh_public_key":"ecdsa-sha2-nistp256 AAAA c","key_public":"AA",
            "certify":{"attest":"AA","signature":"AA"},
            "quote":{"attest":"AA","signature":"AA","pcrs":{"sha256":{"0":"00"}}}}"#;
        let req: CertificateRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.quote.pcrs["sha256"]["0"], "00");
        assert!(!format!("{req:?}").contains("secret-token"));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let a = ActivateRequest {
            challenge_id: "c".into(),
            secret: "s3cr3t".into(),
        };
        assert!(!format!("{a:?}").contains("s3cr3t"));
    }
}
