//! Key files written by real tools (tests/fixtures/make-fixtures.sh made them): we read
//! what they write, and rewrite it as strict DER.
#![allow(clippy::unwrap_used)]

use ssh_tpm_keyfile::{handle, KeyType, TpmKey};

struct Fixture {
    pem: &'static str,
    der: &'static [u8],
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            pem: include_str!(concat!("fixtures/", $name, ".pem")),
            der: include_bytes!(concat!("fixtures/", $name, ".der")),
        }
    };
}

/// Reads the fixture as PEM and as DER, checks both agree, and checks the blobs look like a
/// P-256 key's: a TPM2B_PUBLIC of 0x56 bytes of type TPM_ALG_ECC, a TPM2B_PRIVATE of 0x7E.
fn read(fixture: &Fixture) -> TpmKey {
    let key = TpmKey::from_pem(fixture.pem).unwrap();
    assert_eq!(TpmKey::from_bytes(fixture.der).unwrap(), key);
    assert_eq!(TpmKey::from_bytes(fixture.pem.as_bytes()).unwrap(), key);

    assert_eq!(key.key_type, KeyType::Loadable);
    assert_eq!(key.pubkey.len(), 88);
    assert_eq!(key.pubkey[..4], [0x00, 0x56, 0x00, 0x23]);
    assert_eq!(key.privkey.len(), 128);
    assert_eq!(key.privkey[..2], [0x00, 0x7E]);
    assert_eq!(
        (&key.policy, &key.secret, &key.description),
        (&vec![], &None, &None)
    );
    assert!(!key.rsa_parent);
    key
}

#[test]
fn tpm2_openssl_true_as_01_is_rewritten_as_ff() {
    let fixture = fixture!("tpm2-openssl-owner");
    let key = read(&fixture);
    assert!(key.empty_auth);
    assert_eq!(key.parent, handle::OWNER);

    // Bytes 11..16 are emptyAuth: A0 03 01 01 01. Only the BOOLEAN's content changes.
    assert_eq!(fixture.der[11..16], [0xA0, 0x03, 0x01, 0x01, 0x01]);
    let mut strict = fixture.der.to_vec();
    strict[15] = 0xFF;
    assert_eq!(key.to_der(), strict);
}

#[test]
fn tpm2_openssl_explicit_false_is_kept() {
    let fixture = fixture!("tpm2-openssl-owner-auth");
    let key = read(&fixture);
    assert!(!key.empty_auth);
    assert_eq!(key.parent, handle::OWNER);

    // Bytes 11..16 are emptyAuth: A0 03 01 01 00. That is already strict DER, and FALSE is
    // written explicitly too, so the file is rewritten byte for byte.
    assert_eq!(fixture.der[11..16], [0xA0, 0x03, 0x01, 0x01, 0x00]);
    assert_eq!(key.to_der(), fixture.der);
}

#[test]
fn tpm2_tools_persistent_parent() {
    let fixture = fixture!("tpm2-tools-persistent");
    let key = read(&fixture);
    assert_eq!(key.parent, 0x8100_0001);
    assert!(handle::is_persistent(key.parent));

    // tpm2_encodeobject without -p writes an explicit FALSE, though the key has no password:
    // tpm2-tools' emptyAuth cannot be trusted.
    assert!(!key.empty_auth);
    assert_eq!(fixture.der[11..16], [0xA0, 0x03, 0x01, 0x01, 0x00]);
    // The explicit FALSE is kept, so the file is rewritten byte for byte.
    assert_eq!(key.to_der(), fixture.der);
}
