//! Asking the device-management system whether a device is compliant (docs/protocol.md,
//! "Device compliance"). Fail closed: anything but `200 {"compliant": true}` in time is a no.

use reqwest::StatusCode;
use serde::Deserialize;
use ssh_tpm_attest::{Refusal, Rejection};

use crate::config::ComplianceConfig;
use crate::http::error_chain;

/// Answers larger than this are not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
struct Answer {
    compliant: bool,
}

/// The compliance client.
#[derive(Debug, Clone)]
pub struct ComplianceClient {
    config: ComplianceConfig,
    http: reqwest::Client,
}

impl ComplianceClient {
    /// A client for `config`.
    ///
    /// # Errors
    ///
    /// When a `tls_roots` file is unusable or the HTTP client cannot be built.
    pub fn new(config: ComplianceConfig) -> Result<Self, String> {
        let http = crate::http::client(&config.tls_roots, config.timeout)?;
        Ok(Self { config, http })
    }

    /// Asks about `device_id`.
    ///
    /// # Errors
    ///
    /// `compliance_denied` for `{"compliant": false}`, `compliance_unavailable` for everything
    /// else that is not a yes.
    pub async fn check(&self, device_id: &str) -> Result<(), Rejection> {
        let unavailable = |detail: String| Rejection::new(Refusal::ComplianceUnavailable, detail);
        let url = format!("{}/devices/{device_id}", self.config.url);
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.config.bearer_token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                unavailable(format!(
                    "the compliance service did not answer within {} s",
                    self.config.timeout.as_secs()
                ))
            } else {
                unavailable(format!(
                    "the compliance service cannot be reached: {}",
                    error_chain(&e)
                ))
            }
        })?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(unavailable(format!(
                "the compliance service answered {status} for this device"
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(unavailable("the compliance answer is too large".into()));
        }
        let body = response.bytes().await.map_err(|e| {
            unavailable(format!(
                "the compliance answer could not be read: {}",
                error_chain(&e)
            ))
        })?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err(unavailable("the compliance answer is too large".into()));
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            unavailable("the compliance answer is not {\"compliant\": true|false}".into())
        })?;
        if answer.compliant {
            Ok(())
        } else {
            Err(Rejection::new(
                Refusal::ComplianceDenied,
                "the device-management system says the device is not compliant",
            ))
        }
    }
}
