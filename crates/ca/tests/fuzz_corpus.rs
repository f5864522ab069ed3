//! Replays the CA request fuzz corpus (fuzz/corpus/ca_request) on stable Rust with the fuzz
//! target's own property (fuzz/harness/ca_request.rs, included here): each file is one
//! request to the real API over an SQLite store, answered with a JSON error carrying a
//! protocol code (only a new session may succeed), and its fields go through what the CA does
//! after the ID token. The seeds (`seed-*`, written by the ignored test `write_seeds` from the
//! swtpm fixtures) reach the answers named below; each is also cut short and has bytes
//! flipped, so the suite covers their neighbourhood even where nobody ran the fuzzer.

#![allow(clippy::unwrap_used)]

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;

#[path = "../../../fuzz/harness/ca_request.rs"]
mod harness;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use corpus::{corpus, corpus_dir, is_seed};

use harness::{input, Endpoint, Harness};
use serde_json::json;
use ssh_tpm_attest::b64;
use ssh_tpm_attest::protocol::{CertificateRequest, Evidence, QuoteEvidence};

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir("ca_request").join(name)).unwrap()
}

#[test]
fn corpus_replays_without_panics() {
    let harness = Harness::new();
    let files = corpus("ca_request");
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    for (path, bytes) in &files {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(bytes)));
        assert!(
            result.is_ok(),
            "{} breaks the API's contract",
            path.display()
        );
    }
}

/// The seeds reach past the JSON: to the session and challenge checks and to the provider.
#[test]
fn seeds_reach_the_checks_they_name() {
    let harness = Harness::new();
    let status = |name: &str| harness.run(&seed(name)).unwrap().as_u16();
    assert_eq!(status("seed-sessions"), 200);
    assert_eq!(status("seed-sessions-empty"), 200);
    // A fresh session and a JWT: the provider is asked, and cannot be reached.
    assert_eq!(status("seed-certificates"), 503);
    assert_eq!(status("seed-enroll"), 503);
    assert_eq!(status("seed-certificates-expired-session"), 403);
    assert_eq!(status("seed-enroll-used-session"), 403);
    assert_eq!(status("seed-enroll-unknown-session"), 404);
    assert_eq!(status("seed-activate"), 403);
    assert_eq!(status("seed-activate-expired"), 403);
    assert_eq!(status("seed-activate-bad-base64"), 400);
    assert_eq!(status("seed-unknown-path"), 404);
    assert_eq!(status("seed-get-sessions"), 405);
}

#[test]
fn a_body_over_the_cap_is_refused_as_json() {
    let harness = Harness::new();
    let body = vec![b' '; 64 * 1024 + 1];
    let status = harness.run(&input(Endpoint::Certificates, &body)).unwrap();
    assert_eq!(status.as_u16(), 413);
}

#[test]
fn seeds_cut_short_or_with_flipped_bytes_never_panic() {
    let harness = Harness::new();
    for (path, bytes) in corpus("ca_request").iter().filter(|(p, _)| is_seed(p)) {
        let name = path.display();
        // The large seeds (with evidence in them) at every 97th byte, the others at every 7th.
        let step = if bytes.len() > 1000 { 97 } else { 7 };
        for len in (0..bytes.len()).step_by(step) {
            let cut = std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(&bytes[..len])));
            assert!(
                cut.is_ok(),
                "{name}: the {len}-byte prefix breaks the contract"
            );
        }
        for at in (0..bytes.len()).step_by(step) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x41;
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(&flipped)));
            assert!(
                result.is_ok(),
                "{name}: flipping byte {at} breaks the contract"
            );
        }
    }
}

// Writing the seeds: `cargo test -p ssh-tpm-ca --test fuzz_corpus -- --ignored`.

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../attest/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn evidence(prefix: &str) -> Evidence {
    Evidence {
        attest: b64::encode(&fixture(&format!("{prefix}.attest"))),
        signature: b64::encode(&fixture(&format!("{prefix}.sig"))),
    }
}

/// A JWT in form (header, claims, signature), signed by nobody.
fn jwt(nonce: &str) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
    let claims = json!({
        "iss": "https://127.0.0.1:1", "sub": "sub-alice", "aud": "ssh-tpm",
        "iat": 1_700_000_000u64, "exp": 4_000_000_000u64, "nonce": nonce,
        "email": harness::USER, "groups": ["staff"],
    });
    format!(
        "{}.{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes()),
        b64::encode(&[7; 64])
    )
}

fn certificate_request(session: &str) -> Vec<u8> {
    let oidc_nonce = ssh_tpm_attest::derive::oidc_nonce(session, &(0u8..32).collect::<Vec<_>>());
    let ev = evidence("quote");
    let bank = fixture("quote.pcrs")
        .chunks(32)
        .enumerate()
        .map(|(i, v)| {
            (
                i.to_string(),
                v.iter().map(|b| format!("{b:02x}")).collect(),
            )
        })
        .collect();
    let request = CertificateRequest {
        session_id: session.into(),
        id_token: jwt(&oidc_nonce),
        device_id: String::from_utf8(fixture("ek-rsa.device-id"))
            .unwrap()
            .trim()
            .into(),
        ssh_public_key: String::from_utf8(fixture("key.ssh")).unwrap().trim().into(),
        key_public: b64::encode(&fixture("key.pub")),
        certify: evidence("certify"),
        quote: QuoteEvidence {
            attest: ev.attest,
            signature: ev.signature,
            pcrs: BTreeMap::from([("sha256".to_owned(), bank)]),
        },
    };
    serde_json::to_vec(&request).unwrap()
}

fn enroll_request(session: &str, ek: &str, ak: &str) -> Vec<u8> {
    let oidc_nonce = ssh_tpm_attest::derive::oidc_nonce(session, &(0u8..32).collect::<Vec<_>>());
    serde_json::to_vec(&json!({
        "session_id": session,
        "id_token": jwt(&oidc_nonce),
        "ek_cert": b64::encode(&fixture(ek)),
        "ak_public": b64::encode(&fixture(ak)),
    }))
    .unwrap()
}

#[test]
#[ignore = "writes fuzz/corpus/ca_request/seed-*; run by hand when the protocol changes"]
fn write_seeds() {
    let activate = |id: &str, secret: &str| {
        serde_json::to_vec(&json!({"challenge_id": id, "secret": secret})).unwrap()
    };
    let secret = b64::encode(&[0x42; 32]);
    let get_sessions = [&[Endpoint::Sessions as u8 | harness::GET][..], b""].concat();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("seed-sessions", input(Endpoint::Sessions, b"{}")),
        ("seed-sessions-empty", input(Endpoint::Sessions, b"")),
        ("seed-get-sessions", get_sessions),
        (
            "seed-certificates",
            input(
                Endpoint::Certificates,
                &certificate_request(harness::SESSION),
            ),
        ),
        (
            "seed-certificates-expired-session",
            input(Endpoint::Certificates, &certificate_request("fuzz-expired")),
        ),
        (
            "seed-enroll",
            input(
                Endpoint::Enroll,
                &enroll_request(harness::SESSION, "ek-rsa.der", "ak-ecc.pub"),
            ),
        ),
        (
            "seed-enroll-p384",
            input(
                Endpoint::Enroll,
                &enroll_request(harness::SESSION, "ek-p384.der", "ak-rsa.pub"),
            ),
        ),
        (
            "seed-enroll-used-session",
            input(
                Endpoint::Enroll,
                &enroll_request("fuzz-used", "ek-rsa.der", "ak-ecc.pub"),
            ),
        ),
        (
            "seed-enroll-unknown-session",
            input(
                Endpoint::Enroll,
                &enroll_request("no-such-session", "ek-rsa.der", "ak-ecc.pub"),
            ),
        ),
        (
            "seed-activate",
            input(Endpoint::Activate, &activate(harness::CHALLENGE, &secret)),
        ),
        (
            "seed-activate-expired",
            input(
                Endpoint::Activate,
                &activate("fuzz-challenge-expired", &secret),
            ),
        ),
        (
            "seed-activate-bad-base64",
            input(Endpoint::Activate, &activate(harness::CHALLENGE, "a+b/=")),
        ),
        ("seed-unknown-path", input(Endpoint::Unknown, b"{}")),
    ];
    let dir = corpus_dir("ca_request");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
