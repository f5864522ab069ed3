//! [`Store`] on SQLite through sqlx: one file, WAL journal, migrations applied at open.
//!
//! SQLite serialises writers. Each connection waits up to its busy timeout for a lock; an
//! operation that still finds the database busy or locked is retried a few times with a short
//! pause, then reported as [`StoreError::Busy`].

use std::future::Future;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row as _;
use subtle::ConstantTimeEq as _;

use super::{
    Activation, BoxFuture, Challenge, Device, DeviceStatus, Issuance, PinnedAk, RefusalRecord,
    Session, SessionUse, Store, StoreError, StoreResult,
};

/// How long one statement waits for a lock before SQLite reports it busy.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a busy operation is tried in all.
const ATTEMPTS: u32 = 4;

/// The SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    retry_pause: Duration,
}

/// An operation's failure before it is turned into a [`StoreError`].
enum OpError {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for OpError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

type OpResult<T> = Result<T, OpError>;

fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)), // SQLITE_BUSY, SQLITE_LOCKED
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Creates the database file, empty and mode 0600, when it does not exist yet: it holds the
/// inventory and the audit log, and SQLite would create it with the umask's mode (often 0644).
/// SQLite gives its `-wal` and `-shm` files the database file's mode.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;

    let name = path.to_string_lossy();
    if name == ":memory:" || name.starts_with("file:") {
        return Ok(());
    }
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(std::io::Error::new(
            e.kind(),
            format!("cannot create {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`) and applies the
    /// migrations.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file cannot be opened or migrated.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_with(url, DEFAULT_BUSY_TIMEOUT).await
    }

    /// [`SqliteStore::open`] with another busy timeout (tests use a short one).
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`].
    pub async fn open_with(url: &str, busy_timeout: Duration) -> StoreResult<Self> {
        let open_err = |detail: String| StoreError::Open {
            url: url.to_owned(),
            detail,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| open_err(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        if !url.contains("mode=memory") {
            create_private(options.get_filename()).map_err(|e| open_err(e.to_string()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(busy_timeout + Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| open_err(format!("migration failed: {e}")))?;
        Ok(Self {
            pool,
            retry_pause: busy_timeout / 4,
        })
    }

    /// The connection pool, for tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs `op`, retrying while the database is busy or locked.
    async fn retry<'a, T, F, Fut>(&'a self, mut op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = OpResult<T>> + 'a,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(OpError::Store(e)) => return Err(e),
                Err(OpError::Sql(e)) if is_busy(&e) => {
                    if attempt >= ATTEMPTS {
                        return Err(StoreError::Busy);
                    }
                    tracing::debug!(attempt, "database busy; retrying");
                    tokio::time::sleep(self.retry_pause * attempt).await;
                    attempt += 1;
                }
                Err(OpError::Sql(e)) => return Err(StoreError::Database(e.to_string())),
            }
        }
    }

    async fn add_device_once(&self, d: &Device) -> OpResult<()> {
        let (ak_public, ak_name) = match &d.ak {
            Some(ak) => (Some(ak.public.as_slice()), Some(ak.name.as_slice())),
            None => (None, None),
        };
        let result = sqlx::query(
            "INSERT INTO devices (id, ek_cert, user, name, status, ak_public, ak_name, \
             pcr_policy, created_at, enrolled_at, retired_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.id)
        .bind(&d.ek_cert)
        .bind(&d.user)
        .bind(&d.name)
        .bind(d.status.as_str())
        .bind(ak_public)
        .bind(ak_name)
        .bind(&d.pcr_policy)
        .bind(secs(d.created_at))
        .bind(d.enrolled_at.map(secs))
        .bind(d.retired_at.map(secs))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(OpError::Store(StoreError::DeviceExists(d.id.clone())))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn use_session_once(&self, id: &str, now: u64) -> OpResult<SessionUse> {
        let row = sqlx::query(
            "UPDATE sessions SET used = 1 WHERE id = ? AND used = 0 \
             RETURNING nonce, created_at, expires_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let session = Session {
                id: id.to_owned(),
                nonce: row.try_get("nonce")?,
                created_at: unsecs(row.try_get("created_at")?),
                expires_at: unsecs(row.try_get("expires_at")?),
            };
            return Ok(if now >= session.expires_at {
                SessionUse::Expired
            } else {
                SessionUse::Fresh(session)
            });
        }
        let exists = sqlx::query("SELECT 1 FROM sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(if exists.is_some() {
            SessionUse::Replayed
        } else {
            SessionUse::Unknown
        })
    }

    async fn activate_once(
        &self,
        id: &str,
        secret_hash: &[u8; 32],
        now: u64,
    ) -> OpResult<Activation> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE challenges SET used = 1 WHERE id = ? AND used = 0 \
             RETURNING device_id, user, secret_hash, ak_public, ak_name, expires_at",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists = sqlx::query("SELECT 1 FROM challenges WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(if exists.is_some() {
                Activation::Used
            } else {
                Activation::Unknown
            });
        };

        let device_id: String = row.try_get("device_id")?;
        let user: String = row.try_get("user")?;
        let stored_hash: Vec<u8> = row.try_get("secret_hash")?;
        let ak_public: Vec<u8> = row.try_get("ak_public")?;
        let ak_name: Vec<u8> = row.try_get("ak_name")?;
        let expires_at = unsecs(row.try_get("expires_at")?);

        let outcome = if now >= expires_at {
            Activation::Expired
        } else if !bool::from(stored_hash.as_slice().ct_eq(secret_hash.as_slice())) {
            Activation::WrongSecret
        } else {
            let pinned = sqlx::query(
                "UPDATE devices SET ak_public = ?, ak_name = ?, enrolled_at = ? \
                 WHERE id = ? AND user = ? AND status = 'active'",
            )
            .bind(&ak_public)
            .bind(&ak_name)
            .bind(secs(now))
            .bind(&device_id)
            .bind(&user)
            .execute(&mut *tx)
            .await?;
            if pinned.rows_affected() == 1 {
                Activation::Activated {
                    device_id,
                    user,
                    ak_name,
                }
            } else {
                Activation::DeviceInactive
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn record_issuance_once(&self, i: &Issuance) -> OpResult<()> {
        let principals = serde_json::to_string(&i.principals)
            .map_err(|e| OpError::Store(StoreError::Database(e.to_string())))?;
        let evidence = i.evidence.to_string();
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "INSERT INTO issuances (serial, device_id, user, key_fingerprint, principals, \
             issued_at, valid_after, valid_before, certificate, evidence) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(serial_to_sql(i.serial))
        .bind(&i.device_id)
        .bind(&i.user)
        .bind(&i.key_fingerprint)
        .bind(principals)
        .bind(secs(i.issued_at))
        .bind(secs(i.valid_after))
        .bind(secs(i.valid_before))
        .bind(&i.certificate)
        .bind(evidence)
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(OpError::Store(StoreError::SerialTaken(i.serial)))
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Unix seconds as SQLite's signed integer (saturating far beyond any real date).
fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn unsecs(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// Serials use all 64 bits: stored bit for bit in a signed integer.
fn serial_to_sql(serial: u64) -> i64 {
    i64::from_ne_bytes(serial.to_ne_bytes())
}

fn serial_from_sql(serial: i64) -> u64 {
    u64::from_ne_bytes(serial.to_ne_bytes())
}

fn device_from_row(row: &SqliteRow) -> OpResult<Device> {
    let status: String = row.try_get("status")?;
    let status = match status.as_str() {
        "active" => DeviceStatus::Active,
        "retired" => DeviceStatus::Retired,
        other => {
            return Err(OpError::Store(StoreError::Corrupt(format!(
                "device status {other:?}"
            ))))
        }
    };
    let ak_public: Option<Vec<u8>> = row.try_get("ak_public")?;
    let ak_name: Option<Vec<u8>> = row.try_get("ak_name")?;
    Ok(Device {
        id: row.try_get("id")?,
        ek_cert: row.try_get("ek_cert")?,
        user: row.try_get("user")?,
        name: row.try_get("name")?,
        status,
        ak: match (ak_public, ak_name) {
            (Some(public), Some(name)) => Some(PinnedAk { public, name }),
            _ => None,
        },
        pcr_policy: row.try_get("pcr_policy")?,
        created_at: unsecs(row.try_get("created_at")?),
        enrolled_at: row.try_get::<Option<i64>, _>("enrolled_at")?.map(unsecs),
        retired_at: row.try_get::<Option<i64>, _>("retired_at")?.map(unsecs),
    })
}

fn issuance_from_row(row: &SqliteRow) -> OpResult<Issuance> {
    let corrupt = |what: &str, e: serde_json::Error| {
        OpError::Store(StoreError::Corrupt(format!("issuance {what}: {e}")))
    };
    let principals: String = row.try_get("principals")?;
    let evidence: String = row.try_get("evidence")?;
    Ok(Issuance {
        serial: serial_from_sql(row.try_get("serial")?),
        device_id: row.try_get("device_id")?,
        user: row.try_get("user")?,
        key_fingerprint: row.try_get("key_fingerprint")?,
        principals: serde_json::from_str(&principals).map_err(|e| corrupt("principals", e))?,
        issued_at: unsecs(row.try_get("issued_at")?),
        valid_after: unsecs(row.try_get("valid_after")?),
        valid_before: unsecs(row.try_get("valid_before")?),
        certificate: row.try_get("certificate")?,
        evidence: serde_json::from_str(&evidence).map_err(|e| corrupt("evidence", e))?,
    })
}

const DEVICE_COLUMNS: &str = "id, ek_cert, user, name, status, ak_public, ak_name, pcr_policy, \
                              created_at, enrolled_at, retired_at";

impl Store for SqliteStore {
    fn add_device<'a>(&'a self, device: &'a Device) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.retry(move || self.add_device_once(device)))
    }

    fn device<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<Device>>> {
        Box::pin(self.retry(move || async move {
            let row = sqlx::query(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?"
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(device_from_row).transpose()
        }))
    }

    fn devices(&self) -> BoxFuture<'_, StoreResult<Vec<Device>>> {
        Box::pin(self.retry(move || async move {
            let rows = sqlx::query(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at, id"
            ))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(device_from_row).collect()
        }))
    }

    fn retire_device<'a>(&'a self, id: &'a str, now: u64) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.retry(move || async move {
            let done = sqlx::query(
                "UPDATE devices SET status = 'retired', retired_at = COALESCE(retired_at, ?) \
                 WHERE id = ?",
            )
            .bind(secs(now))
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }))
    }

    fn set_pcr_policy<'a>(
        &'a self,
        id: &'a str,
        policy: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.retry(move || async move {
            let done = sqlx::query("UPDATE devices SET pcr_policy = ? WHERE id = ?")
                .bind(policy)
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }))
    }

    fn create_session<'a>(&'a self, s: &'a Session) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.retry(move || async move {
            sqlx::query(
                "INSERT INTO sessions (id, nonce, created_at, expires_at) VALUES (?, ?, ?, ?)",
            )
            .bind(&s.id)
            .bind(&s.nonce)
            .bind(secs(s.created_at))
            .bind(secs(s.expires_at))
            .execute(&self.pool)
            .await?;
            Ok(())
        }))
    }

    fn use_session<'a>(&'a self, id: &'a str, now: u64) -> BoxFuture<'a, StoreResult<SessionUse>> {
        Box::pin(self.retry(move || self.use_session_once(id, now)))
    }

    fn create_challenge<'a>(&'a self, c: &'a Challenge) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.retry(move || async move {
            sqlx::query(
                "INSERT INTO challenges (id, device_id, user, secret_hash, ak_public, ak_name, \
                 created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.id)
            .bind(&c.device_id)
            .bind(&c.user)
            .bind(c.secret_hash.as_slice())
            .bind(&c.ak.public)
            .bind(&c.ak.name)
            .bind(secs(c.created_at))
            .bind(secs(c.expires_at))
            .execute(&self.pool)
            .await?;
            Ok(())
        }))
    }

    fn activate<'a>(
        &'a self,
        id: &'a str,
        secret_hash: &'a [u8; 32],
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Activation>> {
        Box::pin(self.retry(move || self.activate_once(id, secret_hash, now)))
    }

    fn record_issuance<'a>(&'a self, issuance: &'a Issuance) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.retry(move || self.record_issuance_once(issuance)))
    }

    fn issuances(&self) -> BoxFuture<'_, StoreResult<Vec<Issuance>>> {
        Box::pin(self.retry(move || async move {
            let rows = sqlx::query(
                "SELECT serial, device_id, user, key_fingerprint, principals, issued_at, \
                 valid_after, valid_before, certificate, evidence \
                 FROM issuances ORDER BY issued_at, rowid",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(issuance_from_row).collect()
        }))
    }

    fn record_refusal<'a>(&'a self, r: &'a RefusalRecord) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.retry(move || async move {
            sqlx::query(
                "INSERT INTO refusals (at, endpoint, code, detail, user, device_id) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(secs(r.at))
            .bind(&r.endpoint)
            .bind(&r.code)
            .bind(&r.detail)
            .bind(&r.user)
            .bind(&r.device_id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }))
    }

    fn refusals(&self) -> BoxFuture<'_, StoreResult<Vec<RefusalRecord>>> {
        Box::pin(self.retry(move || async move {
            let rows = sqlx::query(
                "SELECT at, endpoint, code, detail, user, device_id FROM refusals ORDER BY id",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(RefusalRecord {
                        at: unsecs(row.try_get("at")?),
                        endpoint: row.try_get("endpoint")?,
                        code: row.try_get("code")?,
                        detail: row.try_get("detail")?,
                        user: row.try_get("user")?,
                        device_id: row.try_get("device_id")?,
                    })
                })
                .collect()
        }))
    }

    fn live_serials_of_retired(&self, now: u64) -> BoxFuture<'_, StoreResult<Vec<u64>>> {
        Box::pin(self.retry(move || async move {
            let rows = sqlx::query(
                "SELECT i.serial FROM issuances i JOIN devices d ON d.id = i.device_id \
                 WHERE d.status = 'retired' AND i.valid_before > ? ORDER BY i.serial",
            )
            .bind(secs(now))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| Ok(serial_from_sql(row.try_get("serial")?)))
                .collect()
        }))
    }

    fn purge_expired(&self, before: u64) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.retry(move || async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM sessions WHERE expires_at < ?")
                .bind(secs(before))
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM challenges WHERE expires_at < ?")
                .bind(secs(before))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests;
