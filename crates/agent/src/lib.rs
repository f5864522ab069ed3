//! The ssh-tpm agent: an ssh-agent whose private keys are TPM objects.
//!
//! Layout: [`socket`] decides where the agent listens and who may talk to it, unless
//! systemd passes the socket ([`activation`]); [`server`]
//! speaks the agent protocol to each [`peer`]; [`keyring`] holds the keys, with their
//! certificates as [`cert`] blobs and the [`constraint`]s clients set, checked against the
//! sessions a connection is bound to by [`destination`]; [`askpass`] asks for PINs and
//! confirmations; [`upstream`] passes requests on to other agents; [`known_hosts`] finds
//! host keys for `ssh-tpm-add -h`;
//! [`addkey`] is the `tpm-add-key` extension that [`client`] uses to add key files;
//! [`watch`] notices key files changing under the key directory.

pub mod activation;
pub mod addkey;
pub mod askpass;
pub mod cert;
pub mod client;
pub mod constraint;
pub mod destination;
mod error;
pub mod keyring;
pub mod known_hosts;
pub mod peer;
mod pincache;
pub mod server;
pub mod socket;
pub mod upstream;
pub mod watch;

pub use error::{Error, Result};
pub use keyring::{AgentKey, Keyring};
pub use server::Agent;
