//! EK certificates from swtpm's manufacturing (RSA-2048 at 0x01c00002, P-384 at 0x01c00016)
//! against the local CA that signed them. Fixtures: tests/fixtures, made by make-fixtures.sh.

#![allow(clippy::unwrap_used)]

mod common;

use common::fixture;
use ssh_tpm_attest::credential::EkPublicKey;
use ssh_tpm_attest::ekcert::{EkCertificate, TrustAnchors};
use ssh_tpm_attest::Error;

fn ek(name: &str) -> EkCertificate {
    EkCertificate::from_der(&fixture(name)).unwrap()
}

fn anchors(names: &[&str]) -> TrustAnchors {
    let pem: Vec<u8> = names.iter().flat_map(|n| fixture(n)).collect();
    TrustAnchors::from_pem(&pem).unwrap()
}

#[test]
fn swtpm_ek_certificates_parse_despite_their_critical_san_and_dates() {
    let rsa = ek("ek-rsa.der");
    let p384 = ek("ek-p384.der");
    assert!(matches!(
        rsa.public_key().unwrap(),
        EkPublicKey::Rsa2048 { .. }
    ));
    assert!(matches!(
        p384.public_key().unwrap(),
        EkPublicKey::EccP384 { .. }
    ));
    assert_eq!(rsa.issuer(), "CN=swtpm-localca");
    assert_eq!(rsa.der(), fixture("ek-rsa.der"));
}

#[test]
fn device_ids_match_openssl() {
    for name in ["ek-rsa", "ek-p384"] {
        let expected = String::from_utf8(fixture(&format!("{name}.device-id"))).unwrap();
        assert_eq!(ek(&format!("{name}.der")).device_id(), expected.trim());
    }
}

#[test]
fn the_issuing_ca_is_enough_and_a_bundle_works() {
    for name in ["ek-rsa.der", "ek-p384.der"] {
        ek(name)
            .verify_chain(&anchors(&["ca-intermediate.pem"]))
            .unwrap();
        ek(name)
            .verify_chain(&anchors(&["ca-root.pem", "ca-intermediate.pem"]))
            .unwrap();
    }
    let bundle = anchors(&["ca-root.pem", "ca-intermediate.pem"]);
    assert_eq!(bundle.len(), 2);
    assert_eq!(
        bundle.subjects(),
        ["CN=swtpm-localca-rootca", "CN=swtpm-localca"]
    );
}

#[test]
fn the_root_alone_does_not_vouch_for_an_unsent_intermediate() {
    let err = ek("ek-rsa.der")
        .verify_chain(&anchors(&["ca-root.pem"]))
        .unwrap_err();
    assert!(matches!(err, Error::Untrusted(_)), "{err}");
    assert!(
        err.to_string().contains("no configured manufacturer CA"),
        "{err}"
    );
    let err = ek("ek-rsa.der")
        .verify_chain(&TrustAnchors::new())
        .unwrap_err();
    assert!(matches!(err, Error::Untrusted(_)));
}

#[test]
fn a_ca_with_the_right_name_and_another_key_is_refused() {
    let err = ek("ek-p384.der")
        .verify_chain(&anchors(&["impostor-ca.pem"]))
        .unwrap_err();
    assert!(matches!(err, Error::Untrusted(_)), "{err}");
    assert!(err.to_string().contains("did not sign it"), "{err}");
    // The real one next to it still works.
    ek("ek-p384.der")
        .verify_chain(&anchors(&["impostor-ca.pem", "ca-intermediate.pem"]))
        .unwrap();
}

#[test]
fn a_tampered_certificate_is_refused() {
    let der = fixture("ek-rsa.der");
    let trusted = anchors(&["ca-intermediate.pem"]);
    // The last byte is in the signature; the one 300 bytes in is inside the signed part.
    for i in [der.len() - 1, 300] {
        let mut d = der.clone();
        d[i] ^= 0x01;
        if let Ok(cert) = EkCertificate::from_der(&d) {
            assert!(cert.verify_chain(&trusted).is_err(), "byte {i}");
        }
    }
}

#[test]
fn non_certificates_are_malformed() {
    assert!(matches!(
        EkCertificate::from_der(b"\x30\x03\x02\x01\x01"),
        Err(Error::Malformed { .. })
    ));
    assert!(TrustAnchors::from_pem(b"").is_err());
    assert!(TrustAnchors::from_pem(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    .is_err());
    let mut a = TrustAnchors::new();
    assert!(a.add_der(&fixture("ek-rsa.der")).is_ok());
    assert!(a.add_der(b"junk").is_err());
}
