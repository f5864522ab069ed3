//! The CA's HTTP API in process, over loopback: issuance with real swtpm evidence, every
//! refusal this world can provoke (with its status, code and audit record), the one-use
//! session, the body cap, rate limits, enrolment up to the TPM's part, and the KRL.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use ssh_key::certificate::{CertType, Certificate};
use ssh_tpm_attest::b64;
use ssh_tpm_ca::store::DeviceStatus;
use support::{fixture, fixture_request, Options, World};

const ALICE: &str = "alice@example.com";

/// Changes one thing in a good certificate request.
type Tamper = fn(&mut ssh_tpm_attest::protocol::CertificateRequest);
/// Makes a token for a session's OIDC nonce.
type MakeToken<'a> = Box<dyn Fn(&str) -> String + 'a>;

async fn request_certificate(world: &World, token: &str, device: &str) -> (u16, Value) {
    let req = fixture_request(support::FIXTURE_SESSION, token, device);
    world
        .post("/v1/certificates", &serde_json::to_value(&req).unwrap())
        .await
}

fn assert_refused(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], code, "{}", answer.1);
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_a_certificate_for_swtpm_evidence_and_records_it() {
    let world = World::start(Options::default()).await;
    world
        .add_device("dev-ok", ALICE, true, DeviceStatus::Active)
        .await;
    let nonce = world.fixture_session().await;
    let token = world.idp.token(ALICE, &nonce);

    let (status, answer) = request_certificate(&world, &token, "dev-ok").await;
    assert_eq!(status, 200, "{answer}");
    let cert = Certificate::from_openssh(answer["certificate"].as_str().unwrap()).unwrap();
    assert_eq!(cert.serial(), answer["serial"].as_u64().unwrap());
    assert_ne!(cert.serial(), 0);
    assert_eq!(cert.cert_type(), CertType::User);
    assert_eq!(cert.key_id(), format!("user={ALICE} device=dev-ok"));
    assert_eq!(cert.valid_principals(), [ALICE, "root"]);
    assert_eq!(cert.valid_after(), answer["valid_after"].as_u64().unwrap());
    assert_eq!(cert.valid_before() - cert.valid_after(), 3600 + 300);
    assert_eq!(cert.extensions().get("device@ssh-tpm").unwrap(), "dev-ok");
    assert_eq!(cert.signature_key(), world.ca.public_key().key_data());
    let key =
        ssh_key::PublicKey::from_openssh(String::from_utf8(fixture("key.ssh")).unwrap().trim())
            .unwrap();
    assert_eq!(cert.public_key(), key.key_data());

    // The audit log holds it with its evidence.
    let issued = world.store().issuances().await.unwrap();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].serial, cert.serial());
    assert_eq!(
        issued[0].evidence["quote"]["pcrs"]["sha256"]
            .as_object()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(issued[0].evidence["token"]["sub"], format!("sub-{ALICE}"));
    let audit = ssh_tpm_ca::audit::audit_text(world.store()).await.unwrap();
    assert!(
        audit.contains(&format!("serial={}", cert.serial())),
        "{audit}"
    );

    // The session is spent.
    let again = request_certificate(&world, &token, "dev-ok").await;
    assert_refused(&again, 403, "session_replayed");

    // Retiring the device puts the live certificate into the KRL.
    ssh_tpm_ca::inventory::retire(world.store(), "dev-ok")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let krl = dir.path().join("revoked.krl");
    let revoked = ssh_tpm_ca::audit::write_krl(world.store(), world.ca.public_key(), &[], &krl)
        .await
        .unwrap();
    assert_eq!(revoked, [cert.serial()]);
    let cert_path = dir.path().join("id-cert.pub");
    std::fs::write(&cert_path, answer["certificate"].as_str().unwrap()).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(&krl)
        .arg(&cert_path)
        .output()
        .expect("ssh-keygen is needed (Debian: openssh-client)");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcr_policy_is_enforced() {
    let world = World::start(Options::default()).await;
    world
        .add_device("dev-ok", ALICE, true, DeviceStatus::Active)
        .await;
    let pcrs = fixture("quote.pcrs");
    let good = format!("0={}", support::hex(&pcrs[..32]));
    let bad = format!("0={}", "ab".repeat(32));

    let policy = ssh_tpm_ca::inventory::parse_pcrs(std::slice::from_ref(&bad)).unwrap();
    ssh_tpm_ca::inventory::set_policy(world.store(), "dev-ok", &policy)
        .await
        .unwrap();
    let nonce = world.fixture_session().await;
    let answer = request_certificate(&world, &world.idp.token(ALICE, &nonce), "dev-ok").await;
    assert_refused(&answer, 403, "pcr_policy");

    let policy = ssh_tpm_ca::inventory::parse_pcrs(&[bad, good]).unwrap();
    ssh_tpm_ca::inventory::set_policy(world.store(), "dev-ok", &policy)
        .await
        .unwrap();
    sqlx_delete_fixture_session(&world).await;
    let nonce = world.fixture_session().await;
    let answer = request_certificate(&world, &world.idp.token(ALICE, &nonce), "dev-ok").await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(
        world.store().issuances().await.unwrap()[0].evidence["pcr_policy"],
        true
    );
}

/// The fixture session can be stored once per database; purging it makes room again.
async fn sqlx_delete_fixture_session(world: &World) {
    world.store().purge_expired(u64::MAX / 2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_that_does_not_hold_is_refused() {
    let world = World::start(Options::default()).await;
    world
        .add_device("dev-ok", ALICE, true, DeviceStatus::Active)
        .await;
    let cases: [(&str, Tamper, u16); 4] = [
        (
            "quote_invalid",
            |r| r.quote.signature = r.certify.signature.clone(),
            403,
        ),
        (
            "certify_invalid",
            |r| r.certify.attest = r.quote.attest.clone(),
            403,
        ),
        // Another SSH key changes the qualifying data, so the quote no longer fits, first.
        (
            "quote_invalid",
            |r| {
                r.ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwxmKAIgnPjE0imuS4MatILyNDQNaN4DKo3LNt9rNmZ".into()
            },
            403,
        ),
        ("bad_request", |r| r.key_public = "***".into(), 400),
    ];
    for (code, tamper, status) in cases {
        sqlx_delete_fixture_session(&world).await;
        let nonce = world.fixture_session().await;
        let mut req = fixture_request(
            support::FIXTURE_SESSION,
            &world.idp.token(ALICE, &nonce),
            "dev-ok",
        );
        tamper(&mut req);
        let answer = world
            .post("/v1/certificates", &serde_json::to_value(&req).unwrap())
            .await;
        assert_refused(&answer, status, code);
    }
    assert!(world.store().issuances().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refusals_are_told_apart() {
    let world = World::start(Options::default()).await;
    world
        .add_device("dev-ok", ALICE, true, DeviceStatus::Active)
        .await;
    let idp = &world.idp;
    let now = ssh_tpm_ca::now();

    let mut cases: Vec<(&str, MakeToken)> = vec![
        ("token_invalid", Box::new(|_| "not.a.jwt".to_owned())),
        (
            "token_invalid",
            Box::new(|n| support::IdpKey::new("k1").sign(&idp.claims(ALICE, n))),
        ),
        (
            "token_invalid",
            Box::new(|n| {
                let mut c = idp.claims(ALICE, n);
                c["iss"] = json!("http://127.0.0.1:9/other");
                idp.key.sign(&c)
            }),
        ),
        (
            "token_expired",
            Box::new(move |n| {
                let mut c = idp.claims(ALICE, n);
                c["exp"] = json!(now - 120);
                idp.key.sign(&c)
            }),
        ),
        (
            "token_audience",
            Box::new(|n| {
                let mut c = idp.claims(ALICE, n);
                c["aud"] = json!("another-client");
                idp.key.sign(&c)
            }),
        ),
        (
            "token_nonce",
            Box::new(|_| idp.token(ALICE, "another-sessions-nonce")),
        ),
        (
            "token_invalid",
            Box::new(|n| {
                let mut c = idp.claims(ALICE, n);
                c.as_object_mut().unwrap().remove("email");
                idp.key.sign(&c)
            }),
        ),
    ];
    // Within the leeway (60 s) an expired token still passes the expiry check.
    cases.push((
        "device_unknown",
        Box::new(move |n| {
            let mut c = idp.claims(ALICE, n);
            c["exp"] = json!(now - 10);
            idp.key.sign(&c)
        }),
    ));
    let mut expected = Vec::new();
    for (code, make) in &cases {
        let (session, nonce) = world.session().await;
        let body = json!({
            "session_id": session, "id_token": make(&nonce), "device_id": "nope",
            "ssh_public_key": "x", "key_public": "", "certify": {"attest": "", "signature": ""},
            "quote": {"attest": "", "signature": "", "pcrs": {}}
        });
        let answer = world.post("/v1/certificates", &body).await;
        assert_refused(&answer, 403, code);
        expected.push(code.to_string());
    }
    assert_eq!(world.refusal_codes().await, expected);
    let refusals = world.store().refusals().await.unwrap();
    assert_eq!(refusals.last().unwrap().user.as_deref(), Some(ALICE));
    assert_eq!(refusals.last().unwrap().device_id.as_deref(), Some("nope"));
    // Secrets stay out of the audit log.
    for r in refusals {
        assert!(!r.detail.contains("eyJ"), "{}", r.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_provider_key_is_fetched_again() {
    let world = World::start(Options::default()).await;
    let (session, nonce) = world.session().await;
    let body = |s: &str, t: String| {
        json!({
            "session_id": s, "id_token": t, "device_id": "nope",
            "ssh_public_key": "x", "key_public": "", "certify": {"attest": "", "signature": ""},
            "quote": {"attest": "", "signature": "", "pcrs": {}}
        })
    };
    // First use discovers the provider.
    let answer = world
        .post(
            "/v1/certificates",
            &body(&session, world.idp.token(ALICE, &nonce)),
        )
        .await;
    assert_refused(&answer, 403, "device_unknown");

    // After the refresh interval, a token by a newly published key is accepted.
    let rotated = support::IdpKey::new("k2");
    world.idp.publish(&rotated);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (session, nonce) = world.session().await;
    let token = rotated.sign(&world.idp.claims(ALICE, &nonce));
    let answer = world.post("/v1/certificates", &body(&session, token)).await;
    assert_refused(&answer, 403, "device_unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_compliance_refusals_in_order() {
    let world = World::start(Options::default()).await;
    world
        .add_device("dev-bob", "bob@example.com", true, DeviceStatus::Active)
        .await;
    world
        .add_device("dev-retired", ALICE, true, DeviceStatus::Retired)
        .await;
    world
        .add_device("dev-new", ALICE, false, DeviceStatus::Active)
        .await;
    for id in ["denied-1", "broken-1", "slow-1", "garbled-1"] {
        world
            .add_device(id, ALICE, true, DeviceStatus::Active)
            .await;
    }
    let cases = [
        ("dev-unknown", "device_unknown"),
        ("dev-bob", "device_wrong_user"),
        ("dev-retired", "device_retired"),
        ("dev-new", "device_not_enrolled"),
        ("denied-1", "compliance_denied"),
        ("broken-1", "compliance_unavailable"),
        ("slow-1", "compliance_unavailable"),
        ("garbled-1", "compliance_unavailable"),
    ];
    for (device, code) in cases {
        sqlx_delete_fixture_session(&world).await;
        let nonce = world.fixture_session().await;
        let started = std::time::Instant::now();
        let answer = request_certificate(&world, &world.idp.token(ALICE, &nonce), device).await;
        assert_refused(&answer, 403, code);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{device} took too long"
        );
    }
    let codes = world.refusal_codes().await;
    assert_eq!(codes, cases.map(|(_, c)| c.to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_used_once_and_expire() {
    let world = World::start(Options {
        session_lifetime_secs: 1,
        ..Options::default()
    })
    .await;
    let body = |s: &str| json!({"challenge_id": s, "secret": "AAAA"});
    let enroll =
        |s: &str, t: &str| json!({"session_id": s, "id_token": t, "ek_cert": "", "ak_public": ""});
    let unknown = world.post("/v1/enroll", &enroll("nope", "t")).await;
    assert_refused(&unknown, 404, "session_unknown");

    let (session, _) = world.session().await;
    assert_refused(
        &world.post("/v1/enroll", &enroll(&session, "t")).await,
        403,
        "token_invalid",
    );
    assert_refused(
        &world.post("/v1/enroll", &enroll(&session, "t")).await,
        403,
        "session_replayed",
    );

    let (late, _) = world.session().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_refused(
        &world.post("/v1/enroll", &enroll(&late, "t")).await,
        403,
        "session_expired",
    );
    assert_refused(
        &world.post("/v1/enroll", &enroll(&late, "t")).await,
        403,
        "session_replayed",
    );

    assert_refused(
        &world.post("/v1/enroll/activate", &body("nope")).await,
        403,
        "challenge_failed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_session_have_one_winner() {
    let world = std::sync::Arc::new(World::start(Options::default()).await);
    let (session, nonce) = world.session().await;
    let token = world.idp.token(ALICE, &nonce);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (world, session, token) = (world.clone(), session.clone(), token.clone());
            tokio::spawn(async move {
                let body = json!({"session_id": session, "id_token": token,
                                  "ek_cert": "", "ak_public": ""});
                world.post("/v1/enroll", &body).await
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap().1["error"].as_str().unwrap().to_owned());
    }
    // The winner gets past the session (and fails later, on the empty EK certificate).
    assert_eq!(
        codes.iter().filter(|c| *c == "session_replayed").count(),
        7,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "bad_request").count(),
        1,
        "{codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_and_malformed_json_are_refused() {
    let world = World::start(Options::default()).await;
    let big = vec![b' '; 64 * 1024 + 1];
    let answer = world.post_raw("/v1/certificates", big).await;
    assert_refused(&answer, 413, "bad_request");
    let answer = world.post_raw("/v1/enroll", b"{".to_vec()).await;
    assert_refused(&answer, 400, "bad_request");
    let answer = world.post("/v1/enroll", &json!({"session_id": 1})).await;
    assert_refused(&answer, 400, "bad_request");
    assert_eq!(world.refusal_codes().await, ["bad_request"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_devices_are_rate_limited() {
    let world = World::start(Options {
        per_user: 2,
        per_device: 100,
        ..Options::default()
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (session, nonce) = world.session().await;
        let body = json!({"session_id": session, "id_token": world.idp.token(ALICE, &nonce),
                          "ek_cert": "", "ak_public": ""});
        let answer = world.post("/v1/enroll", &body).await;
        codes.push((answer.0, answer.1["error"].as_str().unwrap().to_owned()));
    }
    assert_eq!(codes[2], (429, "rate_limited".to_owned()), "{codes:?}");
    assert_eq!(codes[0].1, "bad_request");

    let world = World::start(Options {
        per_device: 1,
        ..Options::default()
    })
    .await;
    world
        .add_device("dev-new", ALICE, false, DeviceStatus::Active)
        .await;
    let mut codes = Vec::new();
    for _ in 0..2 {
        sqlx_delete_fixture_session(&world).await;
        let nonce = world.fixture_session().await;
        let answer = request_certificate(&world, &world.idp.token(ALICE, &nonce), "dev-new").await;
        codes.push(answer.1["error"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes, ["device_not_enrolled", "rate_limited"]);
}

async fn enroll(world: &World, ek: &str, ak: &str) -> (u16, Value) {
    let (session, nonce) = world.session().await;
    let body = json!({
        "session_id": session, "id_token": world.idp.token(ALICE, &nonce),
        "ek_cert": b64::encode(&fixture(ek)), "ak_public": b64::encode(&fixture(ak)),
    });
    world.post("/v1/enroll", &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_challenges_and_its_refusals() {
    let world = World::start(Options::default()).await;
    let ek = ssh_tpm_ca::inventory::read_ek_cert(&fixture("ek-rsa.der")).unwrap();
    let id = String::from_utf8(fixture("ek-rsa.device-id")).unwrap();
    assert_eq!(ek.device_id(), id.trim());

    assert_refused(
        &enroll(&world, "ek-rsa.der", "ak-ecc.pub").await,
        403,
        "device_unknown",
    );
    let anchors = ssh_tpm_ca::serve::load_anchors(&[]).err();
    assert!(anchors.is_some());
    let added = ssh_tpm_ca::inventory::add(
        world.store(),
        &ek,
        &ssh_tpm_attest::ekcert::TrustAnchors::new(),
        ALICE,
        Some("laptop"),
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(added.untrusted.is_some());

    assert_refused(
        &enroll(&world, "ek-rsa.der", "decrypt.pub").await,
        403,
        "ak_invalid",
    );
    let (status, challenge) = enroll(&world, "ek-rsa.der", "ak-ecc.pub").await;
    assert_eq!(status, 200, "{challenge}");
    assert!(!challenge["credential_blob"].as_str().unwrap().is_empty());
    assert!(!challenge["encrypted_secret"].as_str().unwrap().is_empty());

    // Only the TPM can answer; a guess spends the challenge.
    let activate =
        json!({"challenge_id": challenge["challenge_id"], "secret": b64::encode(&[0; 32])});
    assert_refused(
        &world.post("/v1/enroll/activate", &activate).await,
        403,
        "challenge_failed",
    );
    assert_refused(
        &world.post("/v1/enroll/activate", &activate).await,
        403,
        "challenge_failed",
    );
    assert!(world
        .store()
        .device(&added.device_id)
        .await
        .unwrap()
        .unwrap()
        .ak
        .is_none());

    ssh_tpm_ca::inventory::retire(world.store(), &added.device_id)
        .await
        .unwrap();
    assert_refused(
        &enroll(&world, "ek-rsa.der", "ak-ecc.pub").await,
        403,
        "device_retired",
    );

    let impostor = World::start(Options {
        anchors: vec!["impostor-ca.pem"],
        ..Options::default()
    })
    .await;
    assert_refused(
        &enroll(&impostor, "ek-rsa.der", "ak-ecc.pub").await,
        403,
        "ek_untrusted",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_names_the_provider_and_the_ca_key() {
    let world = World::start(Options::default()).await;
    let info: Value = world
        .http
        .get(format!("{}/v1/info", world.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["issuer"], world.idp.issuer);
    assert_eq!(info["client_id"], support::CLIENT_ID);
    assert_eq!(info["default_validity_secs"], 3600);
    assert_eq!(
        info["ca_public_key"],
        world.ca.public_key().to_openssh().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_refused_off_loopback() {
    let world = World::start(Options::default()).await;
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let result = ssh_tpm_ca::serve(world.ca.clone(), listener, async {}).await;
    let message = result.unwrap_err().to_string();
    assert!(message.contains("without TLS"), "{message}");
}
