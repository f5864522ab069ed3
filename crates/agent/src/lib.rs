//! The ssh-tpm agent: an ssh-agent whose private keys are TPM objects.
//!
//! Layout: [`socket`] decides where the agent listens and who may talk to it; [`server`]
//! speaks the agent protocol; [`keyring`] holds the keys, with their certificates as
//! [`cert`] blobs; [`askpass`] asks for PINs;
//! [`addkey`] is the `tpm-add-key` extension that [`client`] uses to add key files.

pub mod addkey;
pub mod askpass;
pub mod cert;
pub mod client;
mod error;
pub mod keyring;
mod pincache;
pub mod server;
pub mod socket;

pub use error::{Error, Result};
pub use keyring::{AgentKey, Keyring};
pub use server::Agent;
