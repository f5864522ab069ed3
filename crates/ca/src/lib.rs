//! The ssh-tpm certificate authority: attested enrolment and short-lived SSH user certificates.
//!
//! `docs/protocol.md` is the wire contract and `docs/ca.md` the operator's guide. The library
//! holds everything; the `ssh-tpm-ca` binary only parses arguments and sets up logging.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod audit;
pub mod authority;
pub mod certificate;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod enroll;
pub mod error;
mod http;
pub mod init;
pub mod inventory;
pub mod issue;
pub mod krl;
pub mod oidc;
pub mod ratelimit;
pub mod serve;
pub mod store;

pub use authority::{Authority, Failure};
pub use config::Config;
pub use error::CaError;
pub use serve::{open, serve};
pub use store::{SqliteStore, Store};

/// The current time in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
