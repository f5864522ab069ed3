//! Fuzzes requests to the CA's HTTP API: the real `ssh_tpm_ca::api::router` over an
//! `Authority` with an SQLite store in a temporary directory, the first byte choosing the
//! endpoint and method, the rest the body; then what the CA does with the request's fields
//! once the (unreachable) OpenID provider has vouched for the token. The property, shared
//! with the stable replay test, is in fuzz/harness/ca_request.rs.
#![no_main]

#[allow(dead_code)] // the seed writers are for the replay test
#[path = "../harness/ca_request.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn harness() -> &'static harness::Harness {
    static HARNESS: OnceLock<harness::Harness> = OnceLock::new();
    HARNESS.get_or_init(harness::Harness::new)
}

fuzz_target!(|data: &[u8]| {
    harness().run(data);
});
