//! The ssh-tpm CA client (docs/protocol.md): enrolment of a device's TPM, renewal of the
//! short-lived SSH certificates the CA issues to TPM-born keys, and their status.
//!
//! Each step is its own function so that a caller (the `ssh-tpm-cert` binary, or a test that
//! wants to tamper with one piece) can drive the flow step by step:
//!
//! - [`client::CaClient`]: the HTTP calls, one per endpoint;
//! - [`login::authorize`]: the OpenID Connect login that yields the ID token;
//! - [`enroll`]: the EK certificate, the AK and TPM2_ActivateCredential;
//! - [`renew`]: TPM2_Certify and TPM2_Quote over the session's qualifying data;
//! - [`certfile`]: reading and writing `NAME-cert.pub`, and when to renew;
//! - [`state`]: which CA this device is enrolled with, and its device id;
//! - [`agent`]: handing a fresh certificate to a running ssh-tpm-agent.
//!
//! The library logs nothing but debug traces; the only thing it prints is the login URL.

pub mod agent;
pub mod certfile;
pub mod client;
pub mod enroll;
mod error;
mod files;
pub mod login;
pub mod renew;
pub mod state;

pub use client::{CaClient, HttpOptions};
pub use error::{hint, Error, Result};
pub use login::{IdToken, LoginOptions};
