//! The interop vectors (tests/fixtures/interop, made by make-interop.sh with tpm2-openssl,
//! tpm2-tools and OpenSSL's ASN.1 generator): each parses, carries the fields its writer
//! puts there, and rewrites as strict DER. That the keys also load and sign in a TPM is
//! checked end to end in crates/cli/tests/e2e_interop.rs.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ssh_tpm_keyfile::{handle, Error, KeyType, TpmKey};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop")
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{name}.tpm"))).unwrap()
}

fn key(name: &str) -> TpmKey {
    TpmKey::from_bytes(&bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every vector but the refused ones, by file stem.
fn signable() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "tpm"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("refused-"))
        .collect();
    names.sort();
    names
}

/// TPM2B_PUBLIC type field: TPM_ALG_RSA or TPM_ALG_ECC.
fn public_type(key: &TpmKey) -> u16 {
    u16::from_be_bytes([key.pubkey[2], key.pubkey[3]])
}

#[test]
fn every_vector_parses_and_round_trips() {
    let names = signable();
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        let key = key(&name);
        assert_eq!(key.key_type, KeyType::Loadable, "{name}");
        assert_eq!(TpmKey::from_der(&key.to_der()).unwrap(), key, "{name}");

        let rsa = name.split('-').any(|part| part == "rsa2048");
        assert_eq!(
            public_type(&key),
            if rsa { 0x0001 } else { 0x0023 },
            "{name}"
        );
        let persistent = name.contains("persistent");
        let parent = if persistent {
            0x8100_0001
        } else {
            handle::OWNER
        };
        assert_eq!(key.parent, parent, "{name}");
    }
}

#[test]
fn tpm2_openssl_writes_empty_auth_and_nothing_optional() {
    for name in signable().iter().filter(|n| n.starts_with("ossl-")) {
        let key = key(name);
        assert_eq!(key.empty_auth, !name.ends_with("-auth"), "{name}");
        assert!(key.policy.is_empty() && key.description.is_none() && !key.rsa_parent);
        // tpm2-openssl writes TRUE as 01 and FALSE explicitly; byte 15 or so, after the
        // OID, is emptyAuth's content.
        let der = ssh_tpm_keyfile_der(&bytes(name));
        let at = der
            .windows(4)
            .position(|w| w == [0xA0, 0x03, 0x01, 0x01])
            .unwrap();
        assert_eq!(der[at + 4], u8::from(key.empty_auth), "{name}");
    }
}

#[test]
fn tpm2_encodeobject_empty_auth_is_inverted() {
    // Without -p: FALSE although none of these keys has a password but the -auth one.
    assert!(!key("tools-p256-persistent").empty_auth);
    assert!(!key("tools-p256-persistent-noda").empty_auth);
    assert!(!key("tools-p384-owner-auth").empty_auth);
    // With -p: TRUE.
    assert!(key("tools-p256-persistent-p").empty_auth);
    assert!(key("tools-rsa2048-owner").empty_auth);
}

#[test]
fn go_agent_layout_has_a_description_and_empty_auth_only_when_true() {
    let key = key("goagent-p256-owner");
    assert!(key.empty_auth);
    assert!(key.description.unwrap().starts_with("goagent-p256-owner"));
    let der = ssh_tpm_keyfile_der(&bytes("goagent-p256-owner"));
    assert_eq!(
        TpmKey::from_der(&der).unwrap().to_der(),
        der,
        "already strict DER"
    );

    let key = self::key("goagent-rsa2048-owner-auth");
    assert!(!key.empty_auth, "an absent emptyAuth means a PIN is needed");
    assert!(key.description.is_some());
}

#[test]
fn engine_layout_has_rsa_parent_policy_and_description() {
    let name = "engine-p256-rsaparent-pcr-auth";
    let key = key(name);
    assert!(key.rsa_parent && !key.empty_auth);
    assert!(key.description.is_some());
    let codes: Vec<u32> = key.policy.iter().map(|p| p.command_code).collect();
    assert_eq!(codes, [0x17F, 0x16B]);
    // TPML_PCR_SELECTION { 1, { sha256, 3, 00 00 01 } }, then SHA-256 of PCR 16's zeros.
    let pcr = &key.policy[0].command_policy;
    assert_eq!(pcr[..10], [0, 0, 0, 1, 0x00, 0x0B, 3, 0, 0, 1]);
    assert_eq!(pcr.len(), 10 + 32);
    assert!(key.policy[1].command_policy.is_empty());

    // The file has no emptyAuth; we write an explicit FALSE right after the OID, and the
    // rest as it was.
    let der = ssh_tpm_keyfile_der(&bytes(name));
    let ours = key.to_der();
    assert_eq!(ours[12..17], [0xA0, 0x03, 0x01, 0x01, 0x00]);
    assert_eq!(ours[17..], der[12..]);
}

#[test]
fn draft_layout_puts_the_pcr_digest_first() {
    let key = key("draft-p384-owner-pcr");
    assert!(key.empty_auth);
    let pcr = &key.policy[0].command_policy;
    assert_eq!(pcr[..2], [0x00, 0x20], "TPM2B_DIGEST of 32 bytes");
    assert_eq!(pcr[34..], [0, 0, 0, 1, 0x00, 0x0B, 3, 0, 0, 1]);
}

#[test]
fn signed_layout_has_auth_policy_and_policy_authorize_first() {
    let key = key("signed-p256-owner-authpolicy");
    assert!(key.empty_auth && key.description.is_some());
    assert_eq!(key.policy.len(), 1);
    assert_eq!(key.policy[0].command_code, 0x16A);
    // TPM2B_PUBLIC keySign, empty policyRef, then TPM_ALG_NULL: no signature here.
    assert!(key.policy[0].command_policy.ends_with(&[0, 0, 0x00, 0x10]));
    assert_eq!(key.auth_policy.len(), 1);
    assert_eq!(
        key.auth_policy[0].name.as_deref(),
        Some("pcr16 at start-up")
    );
    let codes: Vec<u32> = key.auth_policy[0]
        .policy
        .iter()
        .map(|p| p.command_code)
        .collect();
    assert_eq!(codes, [0x17F, 0x16A]);
    let der = ssh_tpm_keyfile_der(&bytes("signed-p256-owner-authpolicy"));
    assert_eq!(
        key.to_der(),
        der,
        "OpenSSL's encoder writes strict DER; so do we"
    );
}

#[test]
fn refused_vectors_parse_to_what_the_agent_refuses() {
    assert_eq!(key("refused-sealed").key_type, KeyType::Sealed);
    let signed = key("refused-authpolicy");
    assert_eq!(signed.auth_policy.len(), 1);
    assert_eq!(signed.auth_policy[0].name.as_deref(), Some("boot state"));
    let codes: Vec<u32> = signed.auth_policy[0]
        .policy
        .iter()
        .map(|p| p.command_code)
        .collect();
    assert_eq!(codes, [0x17F, 0x16A]);
    assert_eq!(key("refused-locality").policy[0].command_code, 0x16F);
    assert_eq!(
        TpmKey::from_bytes(&bytes("refused-old-label")),
        Err(Error::OldFormat)
    );
}

/// The DER inside a PEM vector (base64 between the armour lines).
fn ssh_tpm_keyfile_der(pem: &[u8]) -> Vec<u8> {
    let key = TpmKey::from_bytes(pem).unwrap();
    // Re-read the body without our encoder: decode the base64 by hand.
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64_decode(&body);
    assert_eq!(TpmKey::from_der(&der).unwrap(), key);
    der
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes().filter(|&b| b != b'=') {
        let value = ALPHABET.iter().position(|&a| a == byte).unwrap() as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
