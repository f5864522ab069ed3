-- The CA's state: the device inventory, one-use sessions and enrolment challenges, and the
-- audit log (issuances with their evidence, refusals with their reason). Times are Unix
-- seconds. Serials are unsigned 64-bit values stored bit for bit in a signed INTEGER.

CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,            -- hex SHA-256 of the EK certificate's SPKI
    ek_cert BLOB NOT NULL,                   -- DER
    user TEXT NOT NULL,                      -- the ID-token claim value it is assigned to
    name TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    ak_public BLOB,                          -- pinned AK TPMT_PUBLIC, after activation
    ak_name BLOB,
    pcr_policy TEXT,                         -- JSON: {"sha256": {"0": ["hex", ...]}}
    created_at INTEGER NOT NULL,
    enrolled_at INTEGER,
    retired_at INTEGER
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    nonce BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE challenges (
    id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices (id),
    user TEXT NOT NULL,
    secret_hash BLOB NOT NULL,               -- SHA-256 of the credential secret
    ak_public BLOB NOT NULL,
    ak_name BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE issuances (
    serial INTEGER PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices (id),
    user TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    principals TEXT NOT NULL,                -- JSON array
    issued_at INTEGER NOT NULL,
    valid_after INTEGER NOT NULL,
    valid_before INTEGER NOT NULL,
    certificate TEXT NOT NULL,
    evidence TEXT NOT NULL                   -- JSON
);
CREATE INDEX issuances_device ON issuances (device_id, valid_before);

CREATE TABLE refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    user TEXT,
    device_id TEXT
);
