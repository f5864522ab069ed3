//! Fuzzes what the CA receives from clients as TPM structures (crates/attest): `TPMT_PUBLIC`,
//! `TPMS_ATTEST` and `TPMT_SIGNATURE`, the functions the CA calls on what decodes (name,
//! SSH key, scheme, signature verification), the quote and key-certification checks over
//! fields split from the input, and DER EK certificates. The property, shared with the
//! stable replay test, is in fuzz/harness/attest.rs.
#![no_main]

#[allow(dead_code)] // the seed writers are for the replay test
#[path = "../harness/attest.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::run(data);
});
