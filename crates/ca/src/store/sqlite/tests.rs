//! The SQLite store against a real database file: round trips, one winner among concurrent
//! users of a session or challenge, busy retries.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;

use super::*;

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    let url = format!("sqlite://{}", dir.path().join("ca.db").display());
    SqliteStore::open_with(&url, Duration::from_millis(200))
        .await
        .unwrap()
}

fn device(id: &str, user: &str) -> Device {
    Device {
        id: id.into(),
        ek_cert: vec![0x30, 0x00],
        user: user.into(),
        name: Some("laptop".into()),
        status: DeviceStatus::Active,
        ak: None,
        pcr_policy: None,
        created_at: 1000,
        enrolled_at: None,
        retired_at: None,
    }
}

fn session(id: &str, expires_at: u64) -> Session {
    Session {
        id: id.into(),
        nonce: vec![7; 32],
        created_at: 1000,
        expires_at,
    }
}

fn issuance(serial: u64, device_id: &str, valid_before: u64) -> Issuance {
    Issuance {
        serial,
        device_id: device_id.into(),
        user: "alice".into(),
        key_fingerprint: "SHA256:abc".into(),
        principals: vec!["alice".into(), "admin".into()],
        issued_at: 1000,
        valid_after: 700,
        valid_before,
        certificate: "ecdsa-sha2-nistp256-cert-v01@openssh.com AAAA".into(),
        evidence: serde_json::json!({"quote": {"attest": "AA"}}),
    }
}

#[tokio::test]
async fn devices_round_trip_and_ids_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let d = device("d1", "alice");
    store.add_device(&d).await.unwrap();
    assert_eq!(store.device("d1").await.unwrap(), Some(d.clone()));
    assert!(store.device("d2").await.unwrap().is_none());
    assert!(matches!(
        store.add_device(&d).await,
        Err(StoreError::DeviceExists(id)) if id == "d1"
    ));

    assert!(store.set_pcr_policy("d1", Some("{}")).await.unwrap());
    assert!(!store.set_pcr_policy("nope", Some("{}")).await.unwrap());
    assert!(store.retire_device("d1", 2000).await.unwrap());
    let retired = store.device("d1").await.unwrap().unwrap();
    assert_eq!(retired.status, DeviceStatus::Retired);
    assert_eq!(retired.retired_at, Some(2000));
    assert_eq!(retired.pcr_policy.as_deref(), Some("{}"));
    assert!(!store.retire_device("nope", 2000).await.unwrap());
    assert_eq!(store.devices().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_session_is_used_once_even_when_late() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.create_session(&session("s1", 2000)).await.unwrap();
    store.create_session(&session("s2", 2000)).await.unwrap();
    assert_eq!(
        store.use_session("s1", 1500).await.unwrap(),
        SessionUse::Fresh(session("s1", 2000))
    );
    assert_eq!(
        store.use_session("s1", 1500).await.unwrap(),
        SessionUse::Replayed
    );
    assert_eq!(
        store.use_session("s2", 2000).await.unwrap(),
        SessionUse::Expired
    );
    assert_eq!(
        store.use_session("s2", 1500).await.unwrap(),
        SessionUse::Replayed
    );
    assert_eq!(
        store.use_session("s3", 1500).await.unwrap(),
        SessionUse::Unknown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_many_concurrent_requests_gets_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).await);
    for round in 0..5 {
        let id = format!("s{round}");
        store.create_session(&session(&id, 2000)).await.unwrap();
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move { store.use_session(&id, 1500).await.unwrap() })
            })
            .collect();
        let mut fresh = 0;
        for t in tasks {
            match t.await.unwrap() {
                SessionUse::Fresh(_) => fresh += 1,
                SessionUse::Replayed => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fresh, 1, "round {round}");
    }
}

fn challenge(id: &str, secret: u8) -> Challenge {
    Challenge {
        id: id.into(),
        device_id: "d1".into(),
        user: "alice".into(),
        secret_hash: [secret; 32],
        ak: PinnedAk {
            public: vec![1, 2, 3],
            name: vec![0, 0x0b, 9],
        },
        created_at: 1000,
        expires_at: 2000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_pins_the_ak_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).await);
    store.add_device(&device("d1", "alice")).await.unwrap();
    store.create_challenge(&challenge("c1", 5)).await.unwrap();

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.activate("c1", &[5; 32], 1500).await.unwrap() })
        })
        .collect();
    let mut activated = 0;
    for t in tasks {
        match t.await.unwrap() {
            Activation::Activated {
                device_id, ak_name, ..
            } => {
                assert_eq!(
                    (device_id.as_str(), ak_name.as_slice()),
                    ("d1", &[0, 0x0b, 9][..])
                );
                activated += 1;
            }
            Activation::Used => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(activated, 1);
    let d = store.device("d1").await.unwrap().unwrap();
    assert_eq!(d.ak.unwrap().public, vec![1, 2, 3]);
    assert_eq!(d.enrolled_at, Some(1500));
}

#[tokio::test]
async fn a_wrong_or_late_secret_spends_the_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.add_device(&device("d1", "alice")).await.unwrap();
    store.create_challenge(&challenge("c1", 5)).await.unwrap();
    store.create_challenge(&challenge("c2", 5)).await.unwrap();
    store.create_challenge(&challenge("c3", 5)).await.unwrap();

    assert_eq!(
        store.activate("c1", &[6; 32], 1500).await.unwrap(),
        Activation::WrongSecret
    );
    assert_eq!(
        store.activate("c1", &[5; 32], 1500).await.unwrap(),
        Activation::Used
    );
    assert_eq!(
        store.activate("c2", &[5; 32], 2000).await.unwrap(),
        Activation::Expired
    );
    assert_eq!(
        store.activate("cx", &[5; 32], 1500).await.unwrap(),
        Activation::Unknown
    );
    assert!(store.device("d1").await.unwrap().unwrap().ak.is_none());

    store.retire_device("d1", 1200).await.unwrap();
    assert_eq!(
        store.activate("c3", &[5; 32], 1500).await.unwrap(),
        Activation::DeviceInactive
    );
    assert!(store.device("d1").await.unwrap().unwrap().ak.is_none());
}

#[tokio::test]
async fn serials_are_unique_and_use_all_64_bits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.add_device(&device("d1", "alice")).await.unwrap();
    store
        .record_issuance(&issuance(u64::MAX, "d1", 5000))
        .await
        .unwrap();
    assert!(matches!(
        store.record_issuance(&issuance(u64::MAX, "d1", 5000)).await,
        Err(StoreError::SerialTaken(s)) if s == u64::MAX
    ));
    store
        .record_issuance(&issuance(42, "d1", 1200))
        .await
        .unwrap();
    let all = store.issuances().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], issuance(u64::MAX, "d1", 5000));

    assert!(store
        .live_serials_of_retired(1500)
        .await
        .unwrap()
        .is_empty());
    store.retire_device("d1", 1400).await.unwrap();
    assert_eq!(
        store.live_serials_of_retired(1500).await.unwrap(),
        vec![u64::MAX]
    );
}

#[tokio::test]
async fn refusals_are_kept_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    for code in ["token_nonce", "pcr_policy"] {
        let r = RefusalRecord {
            at: 1000,
            endpoint: "/v1/certificates".into(),
            code: code.into(),
            detail: "why".into(),
            user: Some("alice".into()),
            device_id: None,
        };
        store.record_refusal(&r).await.unwrap();
    }
    let codes: Vec<_> = store
        .refusals()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, ["token_nonce", "pcr_policy"]);
}

async fn lock_database(dir: &tempfile::TempDir) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", dir.path().join("ca.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_locked_database_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let _lock = lock_database(&dir).await;
    let started = std::time::Instant::now();
    let result = store.create_session(&session("s1", 2000)).await;
    assert!(matches!(result, Err(StoreError::Busy)), "{result:?}");
    // Four attempts of 200 ms each plus the pauses between them.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_released_during_the_retries_lets_the_write_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut lock = lock_database(&dir).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    });
    store.create_session(&session("s1", 2000)).await.unwrap();
    release.await.unwrap();
    assert!(matches!(
        store.use_session("s1", 1500).await.unwrap(),
        SessionUse::Fresh(_)
    ));
}

#[tokio::test]
async fn database_files_are_created_private() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.add_device(&device("d1", "alice")).await.unwrap();
    for name in ["ca.db", "ca.db-wal", "ca.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // An existing database opens as before.
    drop(store);
    let again = open(&dir).await;
    assert_eq!(again.devices().await.unwrap().len(), 1);
}
