//! The ssh-tpm benchmark (issue 5): how fast `ssh-tpm-agent` signs through its socket,
//! side by side with OpenSSH's `ssh-agent` + tpm2-pkcs11 and with the floor (TPM2_Sign on a
//! loaded key), each on its own swtpm behind a [`proxy`] that counts TPM commands on the
//! wire and can slow them down to a hardware TPM's pace.
//!
//! Layout: [`frame`] reads TPM command headers and [`proxy`] relays them; [`agent_client`]
//! speaks the agent protocol; [`scenario`] holds the measurements made through a socket;
//! [`floor`] signs through tss-esapi alone; [`swtpm`] starts a private swtpm; [`ours`] and
//! [`peer`] start the two agents; [`run`] drives one whole run into [`results`], and
//! [`report`] turns those into Markdown. [`soak`] is the long run of many clients.

pub mod agent_client;
pub mod error;
pub mod floor;
pub mod frame;
pub mod latency;
pub mod machine;
pub mod ours;
pub mod peer;
pub mod process;
pub mod proxy;
pub mod report;
pub mod results;
pub mod run;
pub mod scenario;
pub mod soak;
pub mod swtpm;

pub use error::{Error, Result};
