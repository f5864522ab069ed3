//! One test per refusal of the CA (docs/protocol.md, "Refusals"), with real parts: a swtpm
//! manufactured with EK certificates, node's oidc-provider logging users in through the
//! scripted browser, `ssh-tpm-ca serve` with its SQLite store. Each test builds a request
//! with the client library as `ssh-tpm-cert` would, changes one piece, and checks both the
//! code the CA answers and the reason it wrote to its audit log.

mod support;

use std::time::Instant;

use ssh_key::PublicKey;
use ssh_tpm_attest::b64;
use ssh_tpm_attest::derive::qualifying_data;
use ssh_tpm_attest::protocol::{CertificateRequest, Evidence, SessionResponse};
use ssh_tpm_cert::renew::key_public_area;
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::{AkTemplate, Pin};
use support::ca::{jwt_claims, plain_key, ComplianceAnswer};
use support::ca_world::{
    alice, assert_refusal, bob, read_tpm_key, sleep_until, CaSettings, EkRoots, World,
};
use support::{assert_ok, keygen, product, run};

/// The world with the device in alice's name and enrolled by her.
fn alice_world() -> World {
    World::enrolled(CaSettings::default(), "alice")
}

/// The qualifying data the CA expects for `request` in `session`.
fn expected_qualifying_data(session: &SessionResponse, request: &CertificateRequest) -> [u8; 32] {
    let nonce = b64::decode(&session.nonce).expect("session nonce");
    let key = PublicKey::from_openssh(&request.ssh_public_key).expect("ssh_public_key");
    let blob = key.to_bytes().expect("SSH key blob");
    qualifying_data(&session.session_id, &nonce, &blob)
}

/// TPM2_Certify of `key` by the AK `ak` over `data`, as the request's `certify`.
fn certification(world: &World, key: &TpmKey, ak: AkTemplate, data: &[u8]) -> Evidence {
    let mut tpm = world.open_tpm();
    let attestation = tpm
        .certify_key(key, &Pin::empty(), ak, data)
        .expect("TPM2_Certify");
    Evidence {
        attest: b64::encode(&attestation.attest),
        signature: b64::encode(&attestation.signature),
    }
}

// ---------------------------------------------------------------------------------------------
// The session

/// A session is good for one request: the same request again is refused, though everything
/// in it is as valid as the first time.
#[test]
fn session_replayed() {
    let world = alice_world();
    let request = world.good_request("alice");
    let issued = world.submit(&request);
    assert!(issued.is_ok(), "first use: {issued:?}\n{}", world.ca.log());

    world.assert_refused(&request, "session_replayed", &["user=- ", "already used"]);
}

/// A session used after its lifetime is refused, the rest of the request being good.
#[test]
fn session_expired() {
    let settings = CaSettings {
        session_lifetime_secs: Some(4),
        ..CaSettings::default()
    };
    let world = World::enrolled(settings, "alice");
    let session = world.session();
    let token = world.token("alice", &session.oidc_nonce);
    let request = world.request(&world.tpm_key(), &session, &token);

    sleep_until(session.expires_at);
    world.assert_refused(
        &request,
        "session_expired",
        &["user=- ", "lifetime is over"],
    );
}

/// Certification and quote over qualifying data made with another session's nonce: the
/// session and the token are this session's, the evidence is not. The quote is checked
/// first, so it is the quote that is refused.
#[test]
fn wrong_nonce() {
    let world = alice_world();
    let session = world.session();
    let other = world.session();
    let token = world.token("alice", &session.oidc_nonce);
    let mixed = SessionResponse {
        nonce: other.nonce.clone(),
        ..session.clone()
    };
    let request = world.request(&world.tpm_key(), &mixed, &token);
    assert_eq!(request.session_id, session.session_id);

    world.assert_refused(
        &request,
        "quote_invalid",
        &["user=alice", "quote was made for other qualifying data"],
    );
}

// ---------------------------------------------------------------------------------------------
// The key and its certification

/// A key imported into the TPM (`ssh-tpm-keygen --import`) lacks sensitiveDataOrigin: the
/// TPM certifies it, and the CA refuses it.
#[test]
fn key_imported_rather_than_born_in_the_tpm() {
    let world = alice_world();
    let plain = plain_key(world.dir.path(), "plain", "ecdsa");
    let imported = world.dir.path().join("imported");
    let out = run(product("ssh-tpm-keygen")
        .arg("--tcti")
        .arg(world.tpm.tcti())
        .arg("--import")
        .arg(&plain)
        .arg("-f")
        .arg(&imported)
        .args(["-N", ""]));
    assert_ok(&out, "ssh-tpm-keygen --import");
    let key = read_tpm_key(&imported.with_extension("tpm"));

    let session = world.session();
    let token = world.token("alice", &session.oidc_nonce);
    let request = world.request(&key, &session, &token);
    world.assert_refused(
        &request,
        "key_not_tpm_generated",
        &["user=alice", "sensitiveDataOrigin is clear"],
    );
}

/// The key certified by another AK of the same TPM (not the one pinned at enrolment), the
/// quote by the pinned one.
#[test]
fn key_certified_by_another_ak() {
    let world = alice_world();
    let key = world.tpm_key();
    let session = world.session();
    let token = world.token("alice", &session.oidc_nonce);
    let mut request = world.request(&key, &session, &token);
    let data = expected_qualifying_data(&session, &request);
    request.certify = certification(&world, &key, AkTemplate::Variant(1), &data);

    world.assert_refused(
        &request,
        "certify_invalid",
        &[
            "user=alice",
            "certification is not signed by the device's AK",
        ],
    );
}

/// A certification, by the pinned AK, of another TPM key than the one the request names:
/// `key_public` and the certification agree with each other but not with `ssh_public_key`.
#[test]
fn certification_over_a_different_public_key() {
    let world = alice_world();
    let (other, _) = keygen(&world.tpm, world.dir.path(), "other", &["-N", ""]);
    let other = read_tpm_key(&other.tpm);
    let session = world.session();
    let token = world.token("alice", &session.oidc_nonce);
    let mut request = world.request(&world.tpm_key(), &session, &token);
    let data = expected_qualifying_data(&session, &request);
    request.certify = certification(&world, &other, AkTemplate::Standard, &data);
    request.key_public = b64::encode(key_public_area(&other).expect("public area"));

    world.assert_refused(
        &request,
        "key_mismatch",
        &["user=alice", "not the SSH public key of the request"],
    );
}

// ---------------------------------------------------------------------------------------------
// The device

/// The CA trusts another manufacturer's root: the TPM's EK certificate chains to nothing
/// it knows, so enrolment stops there.
#[test]
fn ek_cert_not_chaining_to_the_roots() {
    let settings = CaSettings {
        ek_roots: EkRoots::Foreign,
        ..CaSettings::default()
    };
    let world = World::with(settings);
    let result = world.enroll("alice");
    assert_refusal(&result, "ek_untrusted", &world.ca);
    world
        .ca
        .assert_refusal_logged("ek_untrusted", &["user=alice"]);
}

/// A genuine EK certificate, but the device is not in the inventory.
#[test]
fn ek_cert_fine_but_device_unknown() {
    let world = World::start();
    let result = world.enroll("alice");
    assert_refusal(&result, "device_unknown", &world.ca);
    world
        .ca
        .assert_refusal_logged("device_unknown", &[&world.device_id]);
}

/// The device belongs to bob; alice cannot enrol it.
#[test]
fn device_assigned_to_another_user() {
    let world = World::start();
    world.ca.add_device(&world.ek_cert, "bob");
    let result = world.enroll("alice");
    assert_refusal(&result, "device_wrong_user", &world.ca);
    world.ca.assert_refusal_logged(
        "device_wrong_user",
        &["user=alice", "assigned to another user"],
    );
}

/// A retired device gets no certificate, though it was enrolled and its evidence is good.
#[test]
fn device_retired() {
    let world = alice_world();
    world.ca.retire(&world.device_id);
    let request = world.good_request("alice");
    world.assert_refused(
        &request,
        "device_retired",
        &[&format!("device={}", world.device_id), "retired"],
    );
}

/// A PCR value outside the device's policy. The policy with the TPM's real PCR 0 lets the
/// same kind of request through, so it is the value that is refused, not the policy's form.
#[test]
fn pcr_value_outside_policy() {
    let world = alice_world();
    let request = world.good_request("alice");
    let pcr0 = request.quote.pcrs["sha256"]["0"].clone();
    world.ca.run_ok(&[
        "device",
        "policy",
        &world.device_id,
        "--pcr",
        &format!("0={pcr0}"),
    ]);
    let issued = world.submit(&request);
    assert!(
        issued.is_ok(),
        "PCR 0 as in policy: {issued:?}\n{}",
        world.ca.log()
    );

    let wrong = "11".repeat(32);
    world.ca.run_ok(&[
        "device",
        "policy",
        &world.device_id,
        "--pcr",
        &format!("0={wrong}"),
    ]);
    let request = world.good_request("alice");
    world.assert_refused(
        &request,
        "pcr_policy",
        &[&format!("PCR 0 is {pcr0}"), "policy does not allow"],
    );
}

// ---------------------------------------------------------------------------------------------
// Compliance

/// The device-management system says the device is not compliant.
#[test]
fn compliance_says_no() {
    let world = alice_world();
    world
        .compliance
        .set(&world.device_id, ComplianceAnswer::NotCompliant);
    let request = world.good_request("alice");
    world.assert_refused(&request, "compliance_denied", &["not compliant"]);
    let asked = world.compliance.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.device_id.as_deref() == Some(&world.device_id)),
        "the CA never asked about the device: {asked:?}"
    );
}

/// The device-management system is down: the CA fails closed.
#[test]
fn compliance_unreachable() {
    let mut world = alice_world();
    world.compliance.stop();
    let request = world.good_request("alice");
    world.assert_refused(&request, "compliance_unavailable", &["cannot be reached"]);
}

/// The device-management system accepts the connection and never answers: the CA gives up
/// after its timeout and fails closed.
#[test]
fn compliance_hangs_until_the_timeout() {
    let settings = CaSettings {
        compliance_timeout_secs: Some(1),
        ..CaSettings::default()
    };
    let world = World::enrolled(settings, "alice");
    world
        .compliance
        .set(&world.device_id, ComplianceAnswer::Hang);
    let request = world.good_request("alice");
    let started = Instant::now();
    let result = world.submit(&request);
    let waited = started.elapsed();
    assert_refusal(&result, "compliance_unavailable", &world.ca);
    assert!(waited.as_millis() >= 900, "answered after {waited:?}");
    assert!(waited.as_secs() < 5, "answered after {waited:?}");
    world
        .ca
        .assert_refusal_logged("compliance_unavailable", &["did not answer within 1 s"]);
}

// ---------------------------------------------------------------------------------------------
// The ID token

/// An ID token that expired between login and request (one-second tokens, no leeway).
#[test]
fn token_expired() {
    let settings = CaSettings {
        leeway_secs: Some(0),
        ..CaSettings::default()
    };
    let world = World::enrolled(settings, "alice");
    world.idp.set_accounts(&[alice().id_token_ttl(1), bob()]);
    let session = world.session();
    let token = world.token("alice", &session.oidc_nonce);
    let request = world.request(&world.tpm_key(), &session, &token);

    let expires = jwt_claims(token.as_str())["exp"].as_u64().expect("exp");
    sleep_until(expires);
    world.assert_refused(&request, "token_expired", &["expired"]);
}

/// An ID token the provider issued to another of its clients, with the right nonce.
#[test]
fn token_for_another_audience() {
    let world = alice_world();
    let session = world.session();
    let token = world.token_for(
        support::ca_world::OTHER_CLIENT_ID,
        "alice",
        &session.oidc_nonce,
    );
    let request = world.request(&world.tpm_key(), &session, &token);
    world.assert_refused(&request, "token_audience", &["not for client"]);
}

/// An ID token minted for another CA session.
#[test]
fn token_with_another_nonce() {
    let world = alice_world();
    let session = world.session();
    let other = world.session();
    let token = world.token("alice", &other.oidc_nonce);
    let request = world.request(&world.tpm_key(), &session, &token);
    world.assert_refused(&request, "token_nonce", &["issued for another login"]);
}
