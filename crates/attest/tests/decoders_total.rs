//! Every decoder of untrusted bytes is total: truncations and random mutations of the real
//! fixtures give a value or an error, never a panic. The checks, which decode on their own,
//! are run over the same mutations. (The fuzz targets go further; this runs in every test.)

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ssh_tpm_attest::checks::{check_ak_public, check_certify, check_quote};
use ssh_tpm_attest::ekcert::{EkCertificate, TrustAnchors};
use ssh_tpm_attest::protocol::{Evidence, QuoteEvidence};
use ssh_tpm_attest::tpm::{Attest, Public, Signature};
use ssh_tpm_attest::{b64, verify};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Truncations at every length, then mutations: flipped bits, bytes set to 0x00/0xff/random,
/// inserted and deleted bytes, sizes overwritten with large values.
fn variants(original: &[u8], rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..original.len())
        .map(|n| original[..n].to_vec())
        .collect();
    let mut extended = original.to_vec();
    extended.push(0);
    out.push(extended);
    for _ in 0..count {
        let mut v = original.to_vec();
        for _ in 0..=rng.below(3) {
            let i = rng.below(v.len());
            match rng.below(6) {
                0 => v[i] ^= 1 << rng.below(8),
                1 => v[i] = 0xff,
                2 => v[i] = 0,
                3 => v[i] = rng.next() as u8,
                4 => v.insert(i, rng.next() as u8),
                _ if v.len() > 1 => {
                    v.remove(i);
                }
                _ => {}
            }
        }
        out.push(v);
    }
    out
}

const TPM_FIXTURES: [&str; 23] = [
    "sign-pss.pub",
    "sign-pss.sig",
    "sign-p384.pub",
    "sign-p384.sig",
    "ak-ecc.pub",
    "ak-rsa.pub",
    "key.pub",
    "decrypt.pub",
    "imported.pub",
    "duplicable.pub",
    "certify.attest",
    "certify.sig",
    "certify-by-rsa-ak.attest",
    "certify-by-rsa-ak.sig",
    "certify-restricted.attest",
    "quote.attest",
    "quote.sig",
    "quote-by-rsa-ak.attest",
    "quote-by-rsa-ak.sig",
    "quote-short.attest",
    "certify-imported.attest",
    "certify-decrypt.sig",
    "qualifying-data.bin",
];

#[test]
fn tpm_decoders_are_total() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let ak = Public::decode(&fixture("ak-ecc.pub")).unwrap();
    for name in TPM_FIXTURES {
        for v in variants(&fixture(name), &mut rng, 1500) {
            if let Ok(p) = Public::decode(&v) {
                let _ = p.name();
                let _ = p.ssh_key_data();
                let _ = check_ak_public(&p);
                let _ = ssh_tpm_attest::credential::EkPublicKey::from_tpm_public(&p);
            }
            let _ = Attest::decode(&v);
            if let Ok(s) = Signature::decode(&v) {
                let _ = verify::verify_signature(&ak, b"message", &s);
            }
        }
    }
}

#[test]
fn decoders_accept_exactly_the_fixtures_and_refuse_truncations() {
    for name in ["ak-ecc.pub", "ak-rsa.pub", "key.pub", "imported.pub"] {
        let bytes = fixture(name);
        assert_eq!(Public::decode(&bytes).unwrap().encoded(), &bytes[..]);
        for n in 0..bytes.len() {
            assert!(Public::decode(&bytes[..n]).is_err(), "{name} cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            Public::decode(&longer).is_err(),
            "{name} with a trailing byte"
        );
    }
    for name in ["certify.attest", "quote.attest", "quote-short.attest"] {
        let bytes = fixture(name);
        Attest::decode(&bytes).unwrap();
        for n in 0..bytes.len() {
            assert!(Attest::decode(&bytes[..n]).is_err(), "{name} cut at {n}");
        }
    }
    for name in ["certify.sig", "quote-by-rsa-ak.sig"] {
        let bytes = fixture(name);
        Signature::decode(&bytes).unwrap();
        for n in 0..bytes.len() {
            assert!(Signature::decode(&bytes[..n]).is_err(), "{name} cut at {n}");
        }
    }
}

#[test]
fn sizes_beyond_the_structure_maximum_are_refused() {
    // An authPolicy claiming 0xffff bytes, followed by that many: refused by the maximum,
    // not by running out of input.
    let mut bytes = fixture("ak-ecc.pub")[..8].to_vec();
    bytes.extend_from_slice(&[0xff, 0xff]);
    bytes.resize(bytes.len() + 0xffff, 0);
    let err = Public::decode(&bytes).unwrap_err().to_string();
    assert!(err.contains("at most 64"), "{err}");
    // A quote claiming 2^32-1 PCR banks.
    let mut quote = fixture("quote.attest");
    let count_at = quote.len() - (4 + 2 + 1 + 3 + 2 + 32);
    quote[count_at..count_at + 4].copy_from_slice(&[0xff; 4]);
    let err = Attest::decode(&quote).unwrap_err().to_string();
    assert!(err.contains("PCR banks"), "{err}");
}

#[test]
fn the_checks_are_total_over_mutated_evidence() {
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    let ak = Public::decode(&fixture("ak-ecc.pub")).unwrap();
    let key = fixture("key.pub");
    let ssh =
        ssh_key::PublicKey::from_openssh(std::str::from_utf8(&fixture("key.ssh")).unwrap().trim())
            .unwrap();
    let qual = qualifying_data();
    let attest = fixture("certify.attest");
    let sig = fixture("certify.sig");
    for v in variants(&attest, &mut rng, 300) {
        let ev = Evidence {
            attest: b64::encode(&v),
            signature: b64::encode(&sig),
        };
        assert!(check_certify(&ak, &ev, &key, &ssh, &qual).is_err() || v == attest);
    }
    for v in variants(&key, &mut rng, 500) {
        let ev = evidence("certify");
        assert!(check_certify(&ak, &ev, &v, &ssh, &qual).is_err() || v == key);
    }
    let quote = fixture("quote.attest");
    let quote_sig = fixture("quote.sig");
    for v in variants(&quote_sig, &mut rng, 500) {
        let ev = QuoteEvidence {
            attest: b64::encode(&quote),
            signature: b64::encode(&v),
            pcrs: pcrs_map(&fixture("quote.pcrs")),
        };
        assert!(check_quote(&ak, &ev, &qual).is_err() || v == quote_sig);
    }
}

#[test]
fn certificate_decoders_are_total() {
    let mut rng = Rng(0x5eed_1234_abcd_0003);
    let anchors = TrustAnchors::from_pem(&fixture("ca-intermediate.pem")).unwrap();
    for name in ["ek-rsa.der", "ek-p384.der"] {
        let original = fixture(name);
        for v in variants(&original, &mut rng, 800) {
            if let Ok(cert) = EkCertificate::from_der(&v) {
                let _ = cert.public_key();
                let _ = cert.device_id();
                let ok = cert.verify_chain(&anchors).is_ok();
                assert!(
                    !ok || v == original,
                    "{name}: a changed certificate still verifies"
                );
            }
        }
    }
    for name in ["ca-root.pem", "ca-intermediate.pem", "impostor-ca.pem"] {
        for v in variants(&fixture(name), &mut rng, 500) {
            let _ = TrustAnchors::from_pem(&v);
            let _ = TrustAnchors::new().add_der(&v);
        }
    }
}
