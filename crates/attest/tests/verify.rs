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
