//! verify_signature against signatures a TPM (swtpm) made: ECDSA P-256 and RSASSA by the AKs,
//! RSAPSS-SHA256 and ECDSA P-384-SHA384 by TPM2_Sign, and the refusals when the key, the
//! message or the scheme does not fit.

#![allow(clippy::unwrap_used)]

mod common;

use common::fixture;
use ssh_tpm_attest::tpm::{Public, Signature};
use ssh_tpm_attest::verify::verify_signature;
use ssh_tpm_attest::Error;

fn verify(key: &str, message: &[u8], sig: &[u8]) -> Result<(), Error> {
    verify_signature(
        &Public::decode(&fixture(key)).unwrap(),
        message,
        &Signature::decode(sig).unwrap(),
    )
}

#[test]
fn tpm_signatures_of_every_supported_scheme_verify() {
    verify(
        "ak-ecc.pub",
        &fixture("certify.attest"),
        &fixture("certify.sig"),
    )
    .unwrap();
    verify(
        "ak-rsa.pub",
        &fixture("certify-by-rsa-ak.attest"),
        &fixture("certify-by-rsa-ak.sig"),
    )
    .unwrap();
    verify(
        "sign-pss.pub",
        &fixture("signed.msg"),
        &fixture("sign-pss.sig"),
    )
    .unwrap();
    verify(
        "sign-p384.pub",
        &fixture("signed.msg"),
        &fixture("sign-p384.sig"),
    )
    .unwrap();
    assert!(matches!(
        Signature::decode(&fixture("sign-pss.sig")).unwrap(),
        Signature::RsaPss { .. }
    ));
}

#[test]
fn another_message_or_key_does_not_verify() {
    for (key, sig) in [
        ("sign-pss.pub", "sign-pss.sig"),
        ("sign-p384.pub", "sign-p384.sig"),
    ] {
        let err = verify(key, b"another message", &fixture(sig)).unwrap_err();
        assert!(matches!(err, Error::BadSignature(_)), "{key}: {err}");
    }
    // An RSASSA key given an RSAPSS signature, and ECC keys given the other curve's.
    let err = verify(
        "ak-rsa.pub",
        &fixture("signed.msg"),
        &fixture("sign-pss.sig"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("scheme"), "{err}");
    let err = verify(
        "ak-ecc.pub",
        &fixture("signed.msg"),
        &fixture("sign-p384.sig"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadSignature(_)), "{err}");
    let err = verify(
        "ak-ecc.pub",
        &fixture("signed.msg"),
        &fixture("sign-pss.sig"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadSignature(_)), "{err}");
}

#[test]
fn keys_without_a_scheme_take_any_fitting_one() {
    // The imported key has scheme NULL: an ECDSA signature is judged by the key alone.
    let imported = Public::decode(&fixture("imported.pub")).unwrap();
    assert!(imported.scheme().is_none());
    let err = verify_signature(
        &imported,
        &fixture("certify.attest"),
        &Signature::decode(&fixture("certify.sig")).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn attestations_decode_to_the_fields_the_tpm_wrote() {
    use ssh_tpm_attest::tpm::{Attested, ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE, TPM_GENERATED_VALUE};
    let qual = common::qualifying_data();

    let quote = ssh_tpm_attest::tpm::Attest::decode(&fixture("quote.attest")).unwrap();
    assert_eq!(quote.magic, TPM_GENERATED_VALUE);
    assert_eq!(quote.attest_type(), ST_ATTEST_QUOTE);
    assert_eq!(quote.extra_data, qual);
    assert!(quote.clock_info.safe);
    let Attested::Quote {
        pcr_selections,
        pcr_digest,
    } = &quote.attested
    else {
        panic!("not a quote");
    };
    assert_eq!(pcr_selections.len(), 1);
    assert_eq!(pcr_selections[0].hash, 0x000b);
    assert_eq!(pcr_selections[0].indices(), (0..8).collect::<Vec<u16>>());
    assert_eq!(pcr_digest.len(), 32);

    let certify = ssh_tpm_attest::tpm::Attest::decode(&fixture("certify.attest")).unwrap();
    assert_eq!(certify.attest_type(), ST_ATTEST_CERTIFY);
    let Attested::Certify { name, .. } = &certify.attested else {
        panic!("not a certification");
    };
    assert_eq!(*name, Public::decode(&fixture("key.pub")).unwrap().name());
    // The signer is named by its qualified name: the AK's name algorithm, then a digest.
    assert_eq!(certify.qualified_signer[..2], [0x00, 0x0b]);
    assert_eq!(certify.qualified_signer.len(), 34);
}
