//! The CA's storage: the device inventory, sessions and challenges that are used once, and the
//! audit log. [`Store`] is the interface; [`SqliteStore`] the one backend so far (a PostgreSQL
//! one implements the same trait).
//!
//! Using a session or a challenge is a single conditional update, so that of two concurrent
//! requests exactly one wins, and every multi-step change is one transaction.

mod sqlite;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

/// A boxed future, so that [`Store`] can be used as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database stayed busy or locked through every retry.
    #[error("the database is busy (locked by another process); try again")]
    Busy,
    /// A device with this id is already in the inventory.
    #[error("device {0} is already in the inventory")]
    DeviceExists(String),
    /// The random serial is taken; draw another.
    #[error("serial {0} is already used")]
    SerialTaken(u64),
    /// The database could not be opened or migrated.
    #[error("cannot open the database {url}: {detail}")]
    Open {
        /// The database URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
    /// A row holds something this version cannot read.
    #[error("corrupt database row: {0}")]
    Corrupt(String),
}

/// Whether a device may still get certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// In use.
    Active,
    /// Retired by the operator: no more enrolment or certificates.
    Retired,
}

impl DeviceStatus {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// A device in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Hex SHA-256 of the EK certificate's SubjectPublicKeyInfo.
    pub id: String,
    /// The EK certificate, DER.
    pub ek_cert: Vec<u8>,
    /// The user (ID-token claim value) it is assigned to.
    pub user: String,
    /// A name for people.
    pub name: Option<String>,
    /// Active or retired.
    pub status: DeviceStatus,
    /// The pinned AK's `TPMT_PUBLIC` and name, once enrolled.
    pub ak: Option<PinnedAk>,
    /// Allowed PCR values, JSON (see [`crate::policy`]).
    pub pcr_policy: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last enrolment.
    pub enrolled_at: Option<u64>,
    /// Unix seconds.
    pub retired_at: Option<u64>,
}

/// The attestation key pinned to a device by enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedAk {
    /// `TPMT_PUBLIC`.
    pub public: Vec<u8>,
    /// `0x000B ‖ SHA-256(TPMT_PUBLIC)`.
    pub name: Vec<u8>,
}

/// A CA session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random id.
    pub id: String,
    /// Random nonce bytes.
    pub nonce: Vec<u8>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// What happened when a request tried to use a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionUse {
    /// This request used it; it is now spent.
    Fresh(Session),
    /// This request used it, but too late; it is now spent.
    Expired,
    /// Another request used it first.
    Replayed,
    /// No such session.
    Unknown,
}

/// An enrolment challenge.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Random id.
    pub id: String,
    /// The device being enrolled.
    pub device_id: String,
    /// The user who asked.
    pub user: String,
    /// SHA-256 of the credential secret.
    pub secret_hash: [u8; 32],
    /// The AK to pin on success.
    pub ak: PinnedAk,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("id", &self.id)
            .field("device_id", &self.device_id)
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What happened when a request tried to answer a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// The secret matched; the AK is now pinned to the device.
    Activated {
        /// The device.
        device_id: String,
        /// The user who enrolled.
        user: String,
        /// The pinned AK name.
        ak_name: Vec<u8>,
    },
    /// No such challenge.
    Unknown,
    /// Already answered.
    Used,
    /// Answered too late (now spent).
    Expired,
    /// The secret did not match (now spent).
    WrongSecret,
    /// The device was retired or removed meanwhile (now spent).
    DeviceInactive,
}

/// One certificate, as recorded before it is returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Issuance {
    /// The certificate's serial.
    pub serial: u64,
    /// The device.
    pub device_id: String,
    /// The user.
    pub user: String,
    /// SHA-256 fingerprint of the certified SSH key.
    pub key_fingerprint: String,
    /// The certificate's principals.
    pub principals: Vec<String>,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds.
    pub valid_before: u64,
    /// The certificate in OpenSSH format.
    pub certificate: String,
    /// The evidence: quote, certification, PCR values, token claims (JSON).
    pub evidence: serde_json::Value,
}

/// One refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRecord {
    /// Unix seconds.
    pub at: u64,
    /// The API path.
    pub endpoint: String,
    /// The refusal code.
    pub code: String,
    /// Why, precisely (never secrets).
    pub detail: String,
    /// The user, when known by then.
    pub user: Option<String>,
    /// The device, when known by then.
    pub device_id: Option<String>,
}

/// The CA's storage. Every method is one atomic operation.
pub trait Store: Send + Sync {
    /// Adds a device.
    ///
    /// # Errors
    ///
    /// [`StoreError::DeviceExists`] when the id is taken.
    fn add_device<'a>(&'a self, device: &'a Device) -> BoxFuture<'a, StoreResult<()>>;

    /// The device with this id.
    fn device<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<Device>>>;

    /// Every device, oldest first.
    fn devices(&self) -> BoxFuture<'_, StoreResult<Vec<Device>>>;

    /// Marks a device retired; false when there is no such device.
    fn retire_device<'a>(&'a self, id: &'a str, now: u64) -> BoxFuture<'a, StoreResult<bool>>;

    /// Sets or clears the device's PCR policy (JSON); false when there is no such device.
    fn set_pcr_policy<'a>(
        &'a self,
        id: &'a str,
        policy: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Stores a new session.
    fn create_session<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, StoreResult<()>>;

    /// Uses the session: exactly one caller ever gets [`SessionUse::Fresh`] or
    /// [`SessionUse::Expired`] for an id.
    fn use_session<'a>(&'a self, id: &'a str, now: u64) -> BoxFuture<'a, StoreResult<SessionUse>>;

    /// Stores a new enrolment challenge.
    fn create_challenge<'a>(&'a self, challenge: &'a Challenge) -> BoxFuture<'a, StoreResult<()>>;

    /// Uses the challenge and, if `secret_hash` matches (compared in constant time) and the
    /// device is still active, pins the AK, all in one transaction.
    fn activate<'a>(
        &'a self,
        id: &'a str,
        secret_hash: &'a [u8; 32],
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Activation>>;

    /// Records an issuance.
    ///
    /// # Errors
    ///
    /// [`StoreError::SerialTaken`] when the serial was used before.
    fn record_issuance<'a>(&'a self, issuance: &'a Issuance) -> BoxFuture<'a, StoreResult<()>>;

    /// Every issuance, oldest first.
    fn issuances(&self) -> BoxFuture<'_, StoreResult<Vec<Issuance>>>;

    /// Records a refusal.
    fn record_refusal<'a>(&'a self, refusal: &'a RefusalRecord) -> BoxFuture<'a, StoreResult<()>>;

    /// Every refusal, oldest first.
    fn refusals(&self) -> BoxFuture<'_, StoreResult<Vec<RefusalRecord>>>;

    /// Serials of certificates still valid at `now` issued to devices now retired.
    fn live_serials_of_retired(&self, now: u64) -> BoxFuture<'_, StoreResult<Vec<u64>>>;

    /// Forgets sessions and challenges that expired before `before`.
    fn purge_expired(&self, before: u64) -> BoxFuture<'_, StoreResult<()>>;
}
