//! Fuzzes the key-file reader (`TpmKey::from_bytes`: PEM or DER, lenient BER) and checks
//! the round trip: whatever it reads, it writes as strict DER and PEM that read back to the
//! same key, and that DER is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssh_tpm_keyfile::TpmKey;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = TpmKey::from_bytes(data) else {
        return;
    };
    let der = key.to_der();
    let again = TpmKey::from_der(&der).expect("our own DER reads back");
    assert_eq!(again, key);
    assert_eq!(again.to_der(), der, "strict DER is a fixed point");
    let pem = key.to_pem();
    assert_eq!(TpmKey::from_pem(&pem).expect("our own PEM reads back"), key);
});
