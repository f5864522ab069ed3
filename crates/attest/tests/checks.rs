//! The CA's checks against evidence a real TPM (swtpm) produced: every accept path and every
//! refusal, each with the refusal code the protocol names. Fixtures: tests/fixtures, made by
//! make-fixtures.sh.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ssh_tpm_attest::checks::{
    check_ak_public, check_certify, check_pcr_policy, check_quote, PcrPolicy, PcrValues,
};
use ssh_tpm_attest::protocol::{Evidence, Refusal};
use ssh_tpm_attest::tpm::{Attest, Attested, Public};
use ssh_tpm_attest::{b64, derive};

fn public(name: &str) -> Public {
    Public::decode(&fixture(name)).unwrap()
}

fn ssh_key() -> ssh_key::PublicKey {
    ssh_key::PublicKey::from_openssh(std::str::from_utf8(&fixture("key.ssh")).unwrap().trim())
        .unwrap()
}

fn certify(ak: &str, ev: &Evidence, key: &str) -> Result<(), Refusal> {
    check_certify(
        &public(ak),
        ev,
        &fixture(key),
        &ssh_key(),
        &qualifying_data(),
    )
    .map_err(|r| r.refusal)
}

#[test]
fn the_fixtures_use_the_protocols_qualifying_data() {
    let blob = ssh_key().to_bytes().unwrap();
    assert_eq!(
        derive::qualifying_data(SESSION_ID, &nonce(), &blob),
        qualifying_data()
    );
}

#[test]
fn tpm_made_aks_are_accepted() {
    check_ak_public(&public("ak-ecc.pub")).unwrap();
    check_ak_public(&public("ak-rsa.pub")).unwrap();
}

#[test]
fn other_keys_are_not_aks() {
    for name in ["key.pub", "decrypt.pub", "duplicable.pub", "imported.pub"] {
        let r = check_ak_public(&public(name)).unwrap_err();
        assert_eq!(r.refusal, Refusal::AkInvalid, "{name}");
        assert!(r.detail.contains("attributes"), "{name}: {r}");
    }
    // The AK template with decrypt added, or with another nameAlg or scheme.
    let mut bytes = fixture("ak-ecc.pub");
    bytes[5] |= 0x02; // decrypt is bit 17: the third byte of the attributes
    assert_eq!(
        check_ak_public(&Public::decode(&bytes).unwrap())
            .unwrap_err()
            .refusal,
        Refusal::AkInvalid
    );
    let mut bytes = fixture("ak-ecc.pub");
    bytes[3] = 0x0c; // nameAlg SHA-384
    let r = check_ak_public(&Public::decode(&bytes).unwrap()).unwrap_err();
    assert!(r.detail.contains("nameAlg"), "{r}");
    let mut bytes = fixture("ak-ecc.pub");
    bytes[15] = 0x0c; // ECDSA with SHA-384
    let r = check_ak_public(&Public::decode(&bytes).unwrap()).unwrap_err();
    assert!(r.detail.contains("scheme"), "{r}");
    let mut bytes = fixture("ak-ecc.pub");
    bytes[17] = 0x04; // curve P-384 with P-256 coordinates
    assert_eq!(
        check_ak_public(&Public::decode(&bytes).unwrap())
            .unwrap_err()
            .refusal,
        Refusal::AkInvalid
    );
}

#[test]
fn the_ak_name_is_name_alg_and_digest() {
    use sha2::Digest as _;
    let ak = public("ak-ecc.pub");
    let mut expected = vec![0x00, 0x0b];
    expected.extend_from_slice(&sha2::Sha256::digest(fixture("ak-ecc.pub")));
    assert_eq!(ak.name(), expected);
}

#[test]
fn certification_of_a_tpm_born_key_is_accepted() {
    certify("ak-ecc.pub", &evidence("certify"), "key.pub").unwrap();
    certify("ak-rsa.pub", &evidence("certify-by-rsa-ak"), "key.pub").unwrap();
}

#[test]
fn certification_by_another_ak_is_refused() {
    let err = certify("ak-rsa.pub", &evidence("certify"), "key.pub").unwrap_err();
    assert_eq!(err, Refusal::CertifyInvalid);
    let soft = SoftAk::new();
    let r = check_certify(
        &Public::decode(&soft.public).unwrap(),
        &evidence("certify"),
        &fixture("key.pub"),
        &ssh_key(),
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::CertifyInvalid);
    assert!(r.detail.contains("not signed by the device's AK"), "{r}");
}

#[test]
fn certification_for_another_session_is_refused() {
    let other =
        derive::qualifying_data("another-session", &nonce(), &ssh_key().to_bytes().unwrap());
    let r = check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify"),
        &fixture("key.pub"),
        &ssh_key(),
        &other,
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::CertifyInvalid);
    assert!(r.detail.contains("qualifying data"), "{r}");
}

#[test]
fn every_flipped_byte_of_the_evidence_is_refused() {
    let attest = fixture("certify.attest");
    let sig = fixture("certify.sig");
    for i in 0..attest.len() {
        let mut a = attest.clone();
        a[i] ^= 0x01;
        let ev = Evidence {
            attest: b64::encode(&a),
            signature: b64::encode(&sig),
        };
        assert_eq!(
            certify("ak-ecc.pub", &ev, "key.pub").unwrap_err(),
            Refusal::CertifyInvalid,
            "attest byte {i}"
        );
    }
    for i in 0..sig.len() {
        let mut s = sig.clone();
        s[i] ^= 0x01;
        let ev = Evidence {
            attest: b64::encode(&attest),
            signature: b64::encode(&s),
        };
        assert_eq!(
            certify("ak-ecc.pub", &ev, "key.pub").unwrap_err(),
            Refusal::CertifyInvalid,
            "sig byte {i}"
        );
    }
}

#[test]
fn a_key_public_other_than_the_certified_one_is_refused() {
    let err = certify("ak-ecc.pub", &evidence("certify"), "duplicable.pub").unwrap_err();
    assert_eq!(err, Refusal::CertifyInvalid);
    // One flipped byte of the public area changes its name.
    let mut key = fixture("key.pub");
    let last = key.len() - 1;
    key[last] ^= 1;
    let r = check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify"),
        &key,
        &ssh_key(),
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::CertifyInvalid);
}

#[test]
fn keys_not_born_in_the_tpm_or_able_to_leave_it_are_refused() {
    let r = check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify-imported"),
        &fixture("imported.pub"),
        &ssh_key(),
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::KeyNotTpmGenerated);
    assert!(r.detail.contains("sensitiveDataOrigin"), "{r}");

    let r = check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify-duplicable"),
        &fixture("duplicable.pub"),
        &ssh_key(),
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::KeyNotTpmGenerated);
    assert!(r.detail.contains("fixedTPM"), "{r}");
}

#[test]
fn restricted_and_decryption_keys_are_refused() {
    for (ev, key) in [
        ("certify-restricted", "ak-rsa.pub"),
        ("certify-decrypt", "decrypt.pub"),
    ] {
        let r = check_certify(
            &public("ak-ecc.pub"),
            &evidence(ev),
            &fixture(key),
            &ssh_key(),
            &qualifying_data(),
        )
        .unwrap_err();
        assert_eq!(r.refusal, Refusal::CertifyInvalid, "{ev}");
        assert!(r.detail.contains("unrestricted signing key"), "{ev}: {r}");
    }
}

#[test]
fn another_ssh_key_is_a_mismatch() {
    let other = ssh_key::PublicKey::new(public("imported.pub").ssh_key_data().unwrap(), "other");
    let r = check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify"),
        &fixture("key.pub"),
        &other,
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::KeyMismatch);
}

#[test]
fn the_certified_key_is_the_ssh_key() {
    assert_eq!(
        public("key.pub").ssh_key_data().unwrap(),
        *ssh_key().key_data()
    );
}

#[test]
fn magic_and_type_are_checked_under_a_valid_signature() {
    let soft = SoftAk::new();
    let ak = Public::decode(&soft.public).unwrap();
    let key = fixture("key.pub");
    let run = |attest: &[u8]| {
        check_certify(
            &ak,
            &soft.evidence(attest),
            &key,
            &ssh_key(),
            &qualifying_data(),
        )
    };
    run(&fixture("certify.attest")).unwrap();

    let mut forged = fixture("certify.attest");
    forged[0] = 0x00;
    let r = run(&forged).unwrap_err();
    assert_eq!(r.refusal, Refusal::CertifyInvalid);
    assert!(r.detail.contains("magic"), "{r}");

    let r = run(&fixture("quote.attest")).unwrap_err();
    assert_eq!(r.refusal, Refusal::CertifyInvalid);
    assert!(r.detail.contains("type"), "{r}");

    let r = check_quote(
        &ak,
        &{
            let ev = soft.evidence(&fixture("certify.attest"));
            ssh_tpm_attest::protocol::QuoteEvidence {
                attest: ev.attest,
                signature: ev.signature,
                pcrs: pcrs_map(&fixture("quote.pcrs")),
            }
        },
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::QuoteInvalid);
    assert!(r.detail.contains("type"), "{r}");
}

#[test]
fn base64_that_does_not_decode_is_a_bad_request() {
    let mut ev = evidence("certify");
    ev.attest.push('=');
    assert_eq!(
        certify("ak-ecc.pub", &ev, "key.pub").unwrap_err(),
        Refusal::BadRequest
    );
    let mut q = quote_evidence("quote");
    q.signature = "not base64!".into();
    assert_eq!(
        check_quote(&public("ak-ecc.pub"), &q, &qualifying_data())
            .unwrap_err()
            .refusal,
        Refusal::BadRequest
    );
}

fn quote(ak: &str, ev: &ssh_tpm_attest::protocol::QuoteEvidence) -> Result<PcrValues, Refusal> {
    check_quote(&public(ak), ev, &qualifying_data()).map_err(|r| r.refusal)
}

#[test]
fn a_quote_of_pcrs_0_to_7_is_accepted_with_its_values() {
    let values = quote("ak-ecc.pub", &quote_evidence("quote")).unwrap();
    let raw = fixture("quote.pcrs");
    assert_eq!(values.0.len(), 8);
    for (i, v) in &values.0 {
        assert_eq!(v[..], raw[usize::from(*i) * 32..][..32]);
    }
    // The fixture extended PCRs 0, 2, 4 and 7.
    assert_ne!(values.0[&0], [0; 32]);
    assert_eq!(values.0[&1], [0; 32]);
    assert_eq!(
        quote("ak-rsa.pub", &quote_evidence("quote-by-rsa-ak")).unwrap(),
        values
    );
}

#[test]
fn quotes_by_another_ak_or_for_another_session_are_refused() {
    assert_eq!(
        quote("ak-rsa.pub", &quote_evidence("quote")).unwrap_err(),
        Refusal::QuoteInvalid
    );
    let r = check_quote(&public("ak-ecc.pub"), &quote_evidence("quote"), &[7; 32]).unwrap_err();
    assert_eq!(r.refusal, Refusal::QuoteInvalid);
    assert!(r.detail.contains("qualifying data"), "{r}");
    let mut ev = quote_evidence("quote");
    let mut attest = b64::decode(&ev.attest).unwrap();
    attest[40] ^= 0x80;
    ev.attest = b64::encode(&attest);
    assert_eq!(quote("ak-ecc.pub", &ev).unwrap_err(), Refusal::QuoteInvalid);
}

#[test]
fn reported_pcr_values_must_match_the_digest() {
    let raw = fixture("quote.pcrs");
    let mut wrong = raw.clone();
    wrong[32 * 3] ^= 1;
    let mut ev = quote_evidence("quote");
    ev.pcrs = pcrs_map(&wrong);
    let r = check_quote(&public("ak-ecc.pub"), &ev, &qualifying_data()).unwrap_err();
    assert_eq!(r.refusal, Refusal::QuoteInvalid);
    assert!(r.detail.contains("PCR digest"), "{r}");

    // Missing PCR 7, or an extra PCR 8.
    let mut ev = quote_evidence("quote");
    ev.pcrs.get_mut("sha256").unwrap().remove("7");
    assert_eq!(quote("ak-ecc.pub", &ev).unwrap_err(), Refusal::QuoteInvalid);
    let mut ev = quote_evidence("quote");
    ev.pcrs
        .get_mut("sha256")
        .unwrap()
        .insert("8".into(), hex(&[0; 32]));
    assert_eq!(quote("ak-ecc.pub", &ev).unwrap_err(), Refusal::QuoteInvalid);
}

#[test]
fn a_quote_of_fewer_pcrs_is_refused() {
    let mut ev = quote_evidence("quote-short");
    ev.pcrs = pcrs_map(&fixture("quote.pcrs")[..4 * 32]);
    let r = check_quote(&public("ak-ecc.pub"), &ev, &qualifying_data()).unwrap_err();
    assert_eq!(r.refusal, Refusal::QuoteInvalid);
    assert!(r.detail.contains("expected 0-7"), "{r}");
    let attest = Attest::decode(&fixture("quote-short.attest")).unwrap();
    assert!(matches!(attest.attested, Attested::Quote { .. }));
}

#[test]
fn malformed_pcr_maps_are_bad_requests() {
    let cases: [(&str, &str, String); 5] = [
        ("sha1", "0", hex(&[0; 32])),
        ("sha256", "08", hex(&[0; 32])),
        ("sha256", "24", hex(&[0; 32])),
        ("sha256", "0", hex(&[0; 31])),
        ("sha256", "0", "zz".repeat(32)),
    ];
    for (bank, index, value) in cases {
        let mut ev = quote_evidence("quote");
        ev.pcrs
            .entry(bank.into())
            .or_default()
            .insert(index.into(), value.clone());
        assert_eq!(
            quote("ak-ecc.pub", &ev).unwrap_err(),
            Refusal::BadRequest,
            "{bank} {index} {value}"
        );
    }
}

#[test]
fn pcr_policy() {
    let values = quote("ak-ecc.pub", &quote_evidence("quote")).unwrap();
    let good = PcrPolicy(
        [
            (0u8, vec![vec![9; 32], values.0[&0].clone()]),
            (1, vec![vec![0; 32]]),
        ]
        .into(),
    );
    check_pcr_policy(&values, &good).unwrap();
    check_pcr_policy(&values, &PcrPolicy::default()).unwrap();

    let bad = PcrPolicy([(0u8, vec![vec![9; 32]])].into());
    let r = check_pcr_policy(&values, &bad).unwrap_err();
    assert_eq!(r.refusal, Refusal::PcrPolicy);
    assert!(r.detail.contains("PCR 0"), "{r}");
    let nothing = PcrPolicy([(4u8, vec![])].into());
    assert_eq!(
        check_pcr_policy(&values, &nothing).unwrap_err().refusal,
        Refusal::PcrPolicy
    );
    let unquoted = PcrPolicy([(10u8, vec![vec![0; 32]])].into());
    assert!(check_pcr_policy(&values, &unquoted)
        .unwrap_err()
        .detail
        .contains("not quoted"));

    // Both serialize as index → hex and come back the same.
    let json = serde_json::to_string(&good).unwrap();
    assert!(json.starts_with("{\"0\":[\"0909"), "{json}");
    assert_eq!(serde_json::from_str::<PcrPolicy>(&json).unwrap(), good);
    let json = serde_json::to_string(&values).unwrap();
    assert_eq!(serde_json::from_str::<PcrValues>(&json).unwrap(), values);
    assert!(serde_json::from_str::<PcrPolicy>(r#"{"0":["xyz"]}"#).is_err());
}

#[test]
fn an_rsa_ssh_key_is_accepted_and_compared_by_modulus_and_exponent() {
    let rsa_ssh = ssh_key::PublicKey::from_openssh(
        std::str::from_utf8(&fixture("rsakey.ssh")).unwrap().trim(),
    )
    .unwrap();
    assert_eq!(
        public("rsakey.pub").ssh_key_data().unwrap(),
        *rsa_ssh.key_data()
    );
    check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify-rsakey"),
        &fixture("rsakey.pub"),
        &rsa_ssh,
        &qualifying_data(),
    )
    .unwrap();
    // The ECDSA key of the request is not this RSA key, and the other way round.
    let r = check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify-rsakey"),
        &fixture("rsakey.pub"),
        &ssh_key(),
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::KeyMismatch);
    let r = check_certify(
        &public("ak-ecc.pub"),
        &evidence("certify"),
        &fixture("key.pub"),
        &rsa_ssh,
        &qualifying_data(),
    )
    .unwrap_err();
    assert_eq!(r.refusal, Refusal::KeyMismatch);
}
