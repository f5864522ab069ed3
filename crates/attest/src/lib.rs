//! Attestation for the ssh-tpm CA, in pure Rust: the wire protocol's JSON types, decoders for
//! the TPM structures a client sends, signature checks, MakeCredential for enrolment, EK
//! certificate verification, and the CA's policy checks over quotes and key certifications.
//!
//! Everything here reads untrusted bytes: decoders are total (an error, never a panic) and
//! never allocate from a length they have not bounded. `docs/protocol.md` is the contract.
//! The `attest` fuzz target (fuzz/fuzz_targets/attest.rs) drives the decoders, the checks and
//! EK certificate parsing; `tests/fuzz_corpus.rs` replays its corpus on stable Rust.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod b64;
pub mod checks;
pub mod credential;
pub mod derive;
pub mod ekcert;
mod error;
pub mod protocol;
pub mod tpm;
pub mod verify;

pub use error::{Error, Result};
pub use protocol::{Refusal, Rejection};
