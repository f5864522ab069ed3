//! Replays the fuzz corpus (fuzz/corpus/keyfile) through the reader on stable Rust, with the
//! checks of the fuzz target (fuzz/fuzz_targets/keyfile.rs): nothing panics, and whatever
//! reads back writes as strict DER and PEM that read back the same. Every seed is also cut
//! at every length and has every byte flipped, so the suite covers the neighbourhood of
//! each real file even where nobody ran the fuzzer.
#![allow(clippy::unwrap_used)]

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;

use corpus::{corpus, is_seed};

use ssh_tpm_keyfile::{Error, TpmKey};

/// The fuzz target's property.
fn check(data: &[u8]) -> Result<(), Error> {
    let key = TpmKey::from_bytes(data)?;
    let der = key.to_der();
    let again = TpmKey::from_der(&der).expect("our own DER reads back");
    assert_eq!(again, key);
    assert_eq!(again.to_der(), der, "strict DER is a fixed point");
    assert_eq!(
        TpmKey::from_pem(&key.to_pem()).expect("our PEM reads back"),
        key
    );
    Ok(())
}

#[test]
fn corpus_replays_without_panics_and_round_trips() {
    let files = corpus("keyfile");
    assert!(files.len() >= 30, "the corpus has {} files", files.len());
    let mut read = 0;
    for (path, bytes) in &files {
        let result = std::panic::catch_unwind(|| check(bytes));
        match result {
            Ok(Ok(())) => read += 1,
            Ok(Err(_)) => {}
            Err(_) => panic!(
                "{} panics the reader or breaks the round trip",
                path.display()
            ),
        }
    }
    // The seeds from real tools all read (the old-label one is refused, as it should be).
    assert!(read >= 29, "only {read} corpus files read as keys");
}

#[test]
fn seeds_cut_short_or_with_a_flipped_byte_never_panic() {
    for (path, bytes) in corpus("keyfile").iter().filter(|(p, _)| is_seed(p)) {
        // DER inside the PEM seeds, so that cuts and flips hit the structure, not base64.
        let der = match TpmKey::from_bytes(bytes) {
            Ok(key) => key.to_der(),
            Err(_) => bytes.clone(),
        };
        for len in 0..der.len() {
            let result = check(&der[..len]);
            assert!(
                result.is_err(),
                "{}: a {len}-byte prefix read",
                path.display()
            );
        }
        for at in 0..der.len() {
            let mut flipped = der.clone();
            flipped[at] ^= 0xFF;
            let _ = check(&flipped);
        }
    }
}
