//! Replays the attestation fuzz corpus (fuzz/corpus/attest) on stable Rust with the fuzz
//! target's own property (fuzz/harness/attest.rs, included here): TPM structures, the quote
//! and certification checks over them, and EK certificates, never a panic. The seeds
//! (`seed-*`, written from the swtpm fixtures by the ignored test `write_seeds`) must get
//! through, so the corpus reaches past the decoders, and each is also cut short and has bytes
//! flipped, so the suite covers their neighbourhood even where nobody ran the fuzzer.

#![allow(clippy::unwrap_used)]

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;

#[path = "../../../fuzz/harness/attest.rs"]
mod harness;

use corpus::{corpus, corpus_dir, is_seed};

use harness::{join, Mode};

#[test]
fn corpus_replays_without_panics() {
    let files = corpus("attest");
    assert!(files.len() >= 30, "the corpus has {} files", files.len());
    for (path, bytes) in &files {
        let result = std::panic::catch_unwind(|| harness::run(bytes));
        assert!(
            result.is_ok(),
            "{} panics or breaks an invariant",
            path.display()
        );
    }
}

/// Every seed gets through (decodes, passes its check, or chains to the fixture CA), except
/// the ones made from evidence the CA must refuse.
#[test]
fn seeds_get_through() {
    for (path, bytes) in corpus("attest").iter().filter(|(p, _)| is_seed(p)) {
        let name = path.file_name().unwrap().to_string_lossy();
        let refused = name.contains("-refused-");
        assert_eq!(harness::run(bytes), !refused, "{name}");
    }
}

#[test]
fn seeds_cut_short_or_with_flipped_bytes_never_panic() {
    for (path, bytes) in corpus("attest").iter().filter(|(p, _)| is_seed(p)) {
        let name = path.display();
        // About 50 cuts and 25 flips a seed: the flipped ones mostly reach a signature
        // check, which is slow in a debug build.
        for len in (0..bytes.len()).step_by(bytes.len().div_ceil(50)) {
            let cut = std::panic::catch_unwind(|| harness::run(&bytes[..len]));
            assert!(cut.is_ok(), "{name}: the {len}-byte prefix panics");
        }
        for at in (1..bytes.len()).step_by(bytes.len().div_ceil(25)) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0xff;
            let result = std::panic::catch_unwind(|| harness::run(&flipped));
            assert!(result.is_ok(), "{name}: flipping byte {at} panics");
        }
    }
}

#[test]
fn fields_split_by_length_prefix_and_join_inverts_it() {
    let joined = join(Mode::Quote, &[b"ab", b"", b"cde", b"rest"]);
    assert_eq!(joined[0], Mode::Quote as u8);
    assert_eq!(
        harness::fields::<4>(&joined[1..]),
        [&b"ab"[..], b"", b"cde", b"rest"]
    );
    // A length past the end takes what is left; missing fields are empty.
    assert_eq!(harness::fields::<3>(&[0, 9, 1, 2]), [&[1, 2][..], b"", b""]);
    assert_eq!(harness::fields::<2>(&[7]), [&b""[..], b""]);
}

// Writing the seeds: `cargo test -p ssh-tpm-attest --test fuzz_corpus -- --ignored`.

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `pcrs` member of a request for the quote fixture's values.
fn pcrs_json(values: &[u8]) -> Vec<u8> {
    let bank: serde_json::Map<String, serde_json::Value> = values
        .chunks(32)
        .enumerate()
        .map(|(i, v)| {
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            (i.to_string(), hex.into())
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "sha256": bank })).unwrap()
}

#[test]
#[ignore = "writes fuzz/corpus/attest/seed-*; run by hand when the fixtures change"]
fn write_seeds() {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let publics = [
        "ak-ecc",
        "ak-rsa",
        "key",
        "decrypt",
        "duplicable",
        "imported",
        "rsakey",
    ];
    for name in publics.into_iter().chain(["sign-pss", "sign-p384"]) {
        let bytes = fixture(&format!("{name}.pub"));
        seeds.push((format!("seed-public-{name}"), join(Mode::Public, &[&bytes])));
    }
    let attests = ["certify", "certify-by-rsa-ak", "quote", "quote-short"];
    for name in attests {
        let bytes = fixture(&format!("{name}.attest"));
        seeds.push((format!("seed-attest-{name}"), join(Mode::Attest, &[&bytes])));
    }
    let signatures = ["certify", "quote-by-rsa-ak", "sign-pss", "sign-p384"];
    for name in signatures {
        let bytes = fixture(&format!("{name}.sig"));
        seeds.push((
            format!("seed-signature-{name}"),
            join(Mode::Signature, &[&bytes]),
        ));
    }

    let pcrs = pcrs_json(&fixture("quote.pcrs"));
    let quote = |ak: &[u8], prefix: &str| {
        let (attest, sig) = (
            fixture(&format!("{prefix}.attest")),
            fixture(&format!("{prefix}.sig")),
        );
        join(Mode::Quote, &[ak, &attest, &sig, &pcrs])
    };
    seeds.push(("seed-quote".into(), quote(b"", "quote")));
    let ak_rsa = fixture("ak-rsa.pub");
    seeds.push((
        "seed-quote-rsa-ak".into(),
        quote(&ak_rsa, "quote-by-rsa-ak"),
    ));
    seeds.push(("seed-quote-refused-short".into(), quote(b"", "quote-short")));

    let certify = |ak: &[u8], prefix: &str, key: &str, ssh: &[u8]| {
        let attest = fixture(&format!("{prefix}.attest"));
        let sig = fixture(&format!("{prefix}.sig"));
        let key = fixture(&format!("{key}.pub"));
        join(Mode::Certify, &[ak, &attest, &sig, &key, ssh])
    };
    seeds.push(("seed-certify".into(), certify(b"", "certify", "key", b"")));
    let rsakey = fixture("rsakey.ssh");
    seeds.push((
        "seed-certify-rsakey".into(),
        certify(b"", "certify-rsakey", "rsakey", &rsakey),
    ));
    seeds.push((
        "seed-certify-rsa-ak".into(),
        certify(&ak_rsa, "certify-by-rsa-ak", "key", b""),
    ));
    for refused in ["decrypt", "duplicable", "imported", "restricted"] {
        seeds.push((
            format!("seed-certify-refused-{refused}"),
            certify(
                b"",
                &format!("certify-{refused}"),
                refused_key(refused),
                b"",
            ),
        ));
    }

    for name in ["ek-rsa", "ek-p384"] {
        let der = fixture(&format!("{name}.der"));
        seeds.push((format!("seed-ekcert-{name}"), join(Mode::EkCert, &[&der])));
    }

    let dir = corpus_dir("attest");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The public area each refused certification fixture certifies.
fn refused_key(kind: &str) -> &str {
    match kind {
        "restricted" => "ak-rsa",
        other => other,
    }
}
