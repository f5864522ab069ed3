//! The committed corpus of one fuzz target (`fuzz/corpus/TARGET`), as the stable replay tests
//! read it: every file with its bytes, sorted by name, and which files are hand-made seeds.
//! Included by each crate's `tests/fuzz_corpus.rs` with `#[path]`.

// Not every replay test needs every function.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `fuzz/corpus/TARGET`, from a crate under `crates/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Every file of the corpus with its bytes, sorted by path.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A hand-made seed (`seed-*`) rather than a file the fuzzer found.
pub fn is_seed(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
}
