//! TPM access for ssh-tpm: which TPM to reach (a TCTI or the embedded swtpm), the storage
//! parent every key file names, creating signing keys, and signing with them.
//!
//! The library logs nothing above `debug`; the binaries decide what the user sees.

mod attestation;
mod change_auth;
mod device;
mod error;
mod external;
mod hierarchy;
mod import;
pub mod policy;
mod public;
mod secret;
mod service;
mod swtpm;
mod target;
mod template;
mod wrap;

pub use attestation::{AkTemplate, Attestation, EkKind, Quote};
pub use device::{LockoutStatus, SignHash, Tpm};
pub use error::{Error, Result};
pub use external::{ExternalKey, SecretBytes};
pub use hierarchy::hierarchy_name;
pub use policy::{pin_need, PinNeed};
pub use public::{decode_public, key_spec, ssh_public_key};
pub use secret::Pin;
pub use service::TpmService;
pub use swtpm::EmbeddedSwtpm;
pub use target::{embedded_state_dir, TpmTarget, DEFAULT_TCTI};
pub use template::{storage_primary, KeySpec};
pub use wrap::{wrap_key, WrapParent};
