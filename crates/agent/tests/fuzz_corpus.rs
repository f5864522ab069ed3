//! Replays the agent-message fuzz corpus (fuzz/corpus/agent) on stable Rust, with the checks
//! of the fuzz target (fuzz/fuzz_targets/agent.rs): a fresh agent with no TPM serves each
//! file as the bytes of one connection, does not panic, and writes back only whole,
//! non-empty replies. The seeds (`seed-*`) are written by the ignored test
//! `write_seeds` below; each is also cut at every length and has bytes flipped, so the suite
//! covers the neighbourhood of every request kind even where nobody ran the fuzzer.
#![allow(clippy::unwrap_used)]

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;

use std::path::Path;

use corpus::{corpus, corpus_dir, is_seed};

use ssh_tpm_agent_core::addkey;
use ssh_tpm_agent_core::constraint::{Constraints, Destination, Hop};
use ssh_tpm_agent_core::peer::Peer;
use ssh_tpm_agent_core::server::serve_connection;
use ssh_tpm_agent_core::{Agent, AgentKey};
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::TpmService;

const FAILURE: u8 = 5;

fn runtime() -> tokio::runtime::Runtime {
    // No prompt may run (a key added with -c would start ssh-askpass), and a paused clock
    // skips the delay after a wrong unlock passphrase.
    std::env::set_var("SSH_ASKPASS_REQUIRE", "never");
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The fuzz target's property; returns the replies' bodies.
fn serve(runtime: &tokio::runtime::Runtime, data: &[u8]) -> Vec<Vec<u8>> {
    let agent = Agent::new(TpmService::without_tpm(), false);
    let mut written = Vec::new();
    let _ = runtime.block_on(serve_connection(
        &agent,
        Peer::new(None),
        data,
        &mut written,
    ));
    let mut replies = Vec::new();
    let mut rest = &written[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "a reply's length prefix is cut");
        let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert!(
            length >= 1 && rest.len() >= 4 + length,
            "a reply is empty or cut"
        );
        replies.push(rest[4..4 + length].to_vec());
        rest = &rest[4 + length..];
    }
    assert!(
        replies.len() <= data.len() / 5,
        "more replies than requests"
    );
    replies
}

#[test]
fn corpus_replays_without_panics() {
    let runtime = runtime();
    let files = corpus("agent");
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    for (path, bytes) in &files {
        let result = std::panic::catch_unwind(|| serve(&runtime, bytes));
        assert!(result.is_ok(), "{} panics the agent", path.display());
    }
}

/// The seeds do what they were written for: the well-formed requests get answers that are
/// not FAILURE, so the corpus reaches past the decoders.
#[test]
fn seeds_reach_the_requests_they_name() {
    let runtime = runtime();
    let seed = |name: &str| std::fs::read(corpus_dir("agent").join(name)).unwrap();
    let replies = serve(&runtime, &seed("seed-add-list-sign-remove"));
    let kinds: Vec<u8> = replies.iter().map(|r| r[0]).collect();
    // Added, listed (answer 12), sign fails without a TPM, removed, listed again.
    assert_eq!(kinds, [6, 12, FAILURE, 6, 12], "{replies:?}");
    assert!(replies[1].len() > 9, "the added key is listed");
    assert_eq!(replies[4], [12, 0, 0, 0, 0], "the removed key is gone");

    let replies = serve(&runtime, &seed("seed-lock-unlock"));
    let kinds: Vec<u8> = replies.iter().map(|r| r[0]).collect();
    assert_eq!(kinds, [6, FAILURE, FAILURE, 6, 12], "{replies:?}");
}

#[test]
fn seeds_cut_short_or_with_flipped_bytes_never_panic() {
    let runtime = runtime();
    for (path, bytes) in corpus("agent").iter().filter(|(p, _)| is_seed(p)) {
        let name = path.display();
        for len in 0..bytes.len() {
            let cut = std::panic::catch_unwind(|| serve(&runtime, &bytes[..len]));
            assert!(cut.is_ok(), "{name}: the {len}-byte prefix panics");
        }
        // Every byte of the small seeds; every 7th of those with a key file in them.
        let step = if bytes.len() > 512 { 7 } else { 1 };
        for at in (0..bytes.len()).step_by(step) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0xFF;
            let result = std::panic::catch_unwind(|| serve(&runtime, &flipped));
            assert!(result.is_ok(), "{name}: flipping byte {at} panics");
        }
    }
}

// Writing the seeds: `cargo test -p ssh-tpm-agent-core --test fuzz_corpus -- --ignored`.

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// One framed message of type `kind` with `body`.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend_from_slice(body);
    let mut out = (message.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&message);
    out
}

fn strings(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        string(&mut out, field);
    }
    out
}

fn extension(name: &str, details: &[u8]) -> Vec<u8> {
    let mut body = strings(&[name.as_bytes()]);
    body.extend_from_slice(details);
    frame(27, &body)
}

fn sign(blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
    let mut body = strings(&[blob, data]);
    body.extend_from_slice(&flags.to_be_bytes());
    frame(13, &body)
}

fn test_key(name: &str) -> TpmKey {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/keyfile");
    TpmKey::from_bytes(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

#[test]
#[ignore = "writes fuzz/corpus/agent/seed-*; run by hand when the protocol changes"]
fn write_seeds() {
    let p256 = test_key("seed-ossl-p256-owner.tpm");
    let rsa = test_key("seed-goagent-rsa2048-owner-auth.tpm");
    let blob = AgentKey::new(p256.clone(), None).unwrap().public_blob;
    let rsa_blob = AgentKey::new(rsa.clone(), None).unwrap().public_blob;
    let add = |key: &TpmKey, constraints: &Constraints| {
        extension(
            addkey::EXTENSION,
            &addkey::encode(key, None, constraints).unwrap(),
        )
    };
    let plain = Constraints::default();
    let constrained = Constraints {
        lifetime: Some(60),
        confirm: true,
        destinations: vec![Destination {
            from: Hop::default(),
            to: Hop {
                user: Some("alice".into()),
                hostname: Some("host.example".into()),
                keys: vec![rsa_blob.clone()],
            },
        }],
    };
    let list = frame(11, &[]);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("seed-list", list.clone()),
        ("seed-sign-unknown-key", sign(&blob, b"data", 0)),
        ("seed-remove-unknown-key", frame(18, &strings(&[&blob]))),
        ("seed-remove-all", frame(19, &[])),
        ("seed-query", extension("query", &[])),
        (
            "seed-unknown-extension",
            extension("nope@example.com", b"x"),
        ),
        (
            "seed-session-bind-bad-signature",
            extension(
                "session-bind@openssh.com",
                &[strings(&[&rsa_blob, &[7; 32], b"not a signature"]), vec![0]].concat(),
            ),
        ),
        (
            "seed-add-rsa",
            [add(&rsa, &plain), sign(&rsa_blob, b"d", 4)].concat(),
        ),
        ("seed-add-constrained", add(&p256, &constrained)),
        (
            "seed-add-list-sign-remove",
            [
                add(&p256, &plain),
                list.clone(),
                sign(&blob, b"data to sign", 0),
                frame(18, &strings(&[&blob])),
                list.clone(),
            ]
            .concat(),
        ),
        (
            "seed-lock-unlock",
            [
                frame(22, &strings(&[b"secret"])),
                frame(19, &[]),
                frame(23, &strings(&[b"wrong"])),
                frame(23, &strings(&[b"secret"])),
                list.clone(),
            ]
            .concat(),
        ),
        (
            "seed-add-identity-plain",
            frame(17, &strings(&[b"ssh-ed25519"])),
        ),
        ("seed-legacy-request", frame(1, &[])),
        ("seed-oversized", [0, 4, 0, 1, 11].to_vec()),
        ("seed-half-message", [0, 0, 0, 9, 13, 0].to_vec()),
    ];
    let dir = corpus_dir("agent");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
