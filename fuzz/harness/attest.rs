//! The property of the `attest` fuzz target, shared with its stable replay test
//! (crates/attest/tests/fuzz_corpus.rs), which includes this file with `#[path]`.
//!
//! The first byte chooses what the rest is: a `TPMT_PUBLIC`, a `TPMS_ATTEST`, a
//! `TPMT_SIGNATURE` (TPM 2.0 Part 2, 12.2.4, 10.12.12, 11.3.4), the fields of a quote or of a
//! key certification for the CA's checks, or a DER EK certificate. Fields are split by
//! [`fields`]. Decoders and checks must not panic; the invariants asserted are the ones that
//! hold by construction or by cryptography (nobody can forge the swtpm AK's signature).

use std::sync::OnceLock;

use ssh_tpm_attest::checks::{check_ak_public, check_certify, check_pcr_policy, check_quote};
use ssh_tpm_attest::checks::{PcrPolicy, QUOTED_PCRS};
use ssh_tpm_attest::credential::{make_credential, EkPublicKey};
use ssh_tpm_attest::ekcert::{EkCertificate, TrustAnchors};
use ssh_tpm_attest::protocol::{Evidence, QuoteEvidence};
use ssh_tpm_attest::tpm::{alg, Attest, Attested, HashAlg, Public, Signature};
use ssh_tpm_attest::{b64, derive, verify, Refusal};

/// What the first byte of an input selects (modulo the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The rest is a `TPMT_PUBLIC`.
    Public = 0,
    /// The rest is a `TPMS_ATTEST`.
    Attest = 1,
    /// The rest is a `TPMT_SIGNATURE`.
    Signature = 2,
    /// [`fields`]: AK public (empty: the fixture AK), attest, signature, `pcrs` JSON.
    Quote = 3,
    /// [`fields`]: AK public (empty: the fixture AK), attest, signature, key public, SSH
    /// public key text (empty: the fixture key).
    Certify = 4,
    /// The rest is a DER EK certificate.
    EkCert = 5,
}

const MODES: [Mode; 6] = [
    Mode::Public,
    Mode::Attest,
    Mode::Signature,
    Mode::Quote,
    Mode::Certify,
    Mode::EkCert,
];

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../crates/attest/tests/fixtures/", $name))
    };
}

/// Splits `data` into `N` fields: each but the last is a 2-byte big-endian length and that
/// many bytes (fewer when the input ends first); the last field is whatever remains.
pub fn fields<const N: usize>(mut data: &[u8]) -> [&[u8]; N] {
    let mut out = [&[][..]; N];
    for field in out.iter_mut().take(N - 1) {
        let Some((len, rest)) = data.split_first_chunk::<2>() else {
            return out;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        (*field, data) = rest.split_at(len);
    }
    out[N - 1] = data;
    out
}

/// The inverse of [`fields`], for writing seeds.
pub fn join(mode: Mode, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![mode as u8];
    for (i, part) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            let len = u16::try_from(part.len()).expect("a field of at most 64 KiB");
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(part);
    }
    out
}

/// Runs one input; true when it got through: it decoded, the check passed, or the EK
/// certificate chains to the fixture CA.
pub fn run(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    match MODES[usize::from(selector) % MODES.len()] {
        Mode::Public => public(rest),
        Mode::Attest => attest(rest),
        Mode::Signature => signature(rest),
        Mode::Quote => quote(rest),
        Mode::Certify => certify(rest),
        Mode::EkCert => ek_cert(rest),
    }
}

fn fixture_ak() -> Public {
    Public::decode(fixture!("ak-ecc.pub")).expect("the fixture AK decodes")
}

/// The manufacturer CA of the fixture EK certificates, root and intermediate.
fn anchors() -> &'static TrustAnchors {
    static ANCHORS: OnceLock<TrustAnchors> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let pem = [
            &fixture!("ca-root.pem")[..],
            fixture!("ca-intermediate.pem"),
        ]
        .concat();
        TrustAnchors::from_pem(&pem).expect("the fixture CA reads")
    })
}

fn qualifying_data() -> [u8; 32] {
    *fixture!("qualifying-data.bin")
}

/// No proper prefix of an input that decodes decodes too (the decoders read left to right
/// and refuse trailing bytes), and neither does the input with one more byte.
fn assert_prefix_free<T, E>(bytes: &[u8], decode: impl Fn(&[u8]) -> Result<T, E>) {
    if let Some((_, shorter)) = bytes.split_last() {
        assert!(decode(shorter).is_err(), "a prefix decodes too");
    }
    assert!(
        decode(&[bytes, &[0]].concat()).is_err(),
        "a trailing byte is accepted"
    );
}

fn public(bytes: &[u8]) -> bool {
    let Ok(key) = Public::decode(bytes) else {
        return false;
    };
    assert_eq!(key.encoded(), bytes, "encoded() is the input");
    let again = Public::decode(key.encoded()).expect("encoded() decodes again");
    assert_eq!(again, key, "decoding is deterministic");
    assert_prefix_free(bytes, Public::decode);

    let name = key.name();
    assert_eq!(name.len(), 2 + key.name_alg.size());
    assert_eq!(name[..2], key.name_alg.id().to_be_bytes());
    let _ = key.scheme();
    let ssh = key.ssh_key_data();
    if check_ak_public(&key).is_ok() {
        assert!(ssh.is_ok(), "an acceptable AK has a usable public key");
    }
    let _ = EkPublicKey::from_tpm_public(&key);

    // This key checking real signatures (made by other keys, or by a key like it).
    let pss = Signature::decode(fixture!("sign-pss.sig")).expect("fixture");
    let p384 = Signature::decode(fixture!("sign-p384.sig")).expect("fixture");
    let message = fixture!("signed.msg");
    let _ = verify::verify_signature(&key, message, &pss);
    let _ = verify::verify_signature(&key, message, &p384);
    true
}

fn attest(bytes: &[u8]) -> bool {
    let Ok(attest) = Attest::decode(bytes) else {
        return false;
    };
    assert_prefix_free(bytes, Attest::decode);
    assert!(attest.qualified_signer.len() <= 66 && attest.extra_data.len() <= 66);
    match &attest.attested {
        Attested::Certify {
            name,
            qualified_name,
        } => {
            assert!(name.len() <= 66 && qualified_name.len() <= 66);
        }
        Attested::Quote {
            pcr_selections,
            pcr_digest,
        } => {
            assert!(pcr_digest.len() <= 64 && pcr_selections.len() <= 16);
            for selection in pcr_selections {
                let indices = selection.indices();
                assert!(indices.windows(2).all(|w| w[0] < w[1]), "ascending");
                let bits = selection.select.iter().map(|b| b.count_ones()).sum::<u32>();
                assert_eq!(indices.len(), bits as usize);
                assert!(indices
                    .iter()
                    .all(|&i| usize::from(i) < 8 * selection.select.len()));
            }
        }
    }
    true
}

fn signature(bytes: &[u8]) -> bool {
    let Ok(sig) = Signature::decode(bytes) else {
        return false;
    };
    assert_prefix_free(bytes, Signature::decode);
    assert!(matches!(sig.hash(), HashAlg::Sha256 | HashAlg::Sha384));
    assert!([alg::RSASSA, alg::RSAPSS, alg::ECDSA].contains(&sig.scheme()));

    // No input is the swtpm AKs' signature over a message they never signed.
    let message = b"ssh-tpm fuzz: never signed by a TPM";
    for ak in [&fixture!("ak-ecc.pub")[..], fixture!("ak-rsa.pub")] {
        let ak = Public::decode(ak).expect("fixture");
        assert!(verify::verify_signature(&ak, message, &sig).is_err());
    }
    // The fixture keys checking it over what they did sign: no panic, whatever the answer
    // (ECDSA signatures have more than one encoding and more than one valid value).
    for key in [&fixture!("sign-pss.pub")[..], fixture!("sign-p384.pub")] {
        let key = Public::decode(key).expect("fixture");
        let _ = verify::verify_signature(&key, fixture!("signed.msg"), &sig);
    }
    true
}

/// The AK named by a field: the fixture AK when empty, `None` when it does not decode.
fn ak_from(field: &[u8]) -> Option<Public> {
    if field.is_empty() {
        Some(fixture_ak())
    } else {
        Public::decode(field).ok()
    }
}

fn quote(rest: &[u8]) -> bool {
    let [ak, attest, signature, pcrs] = fields(rest);
    let Some(ak) = ak_from(ak) else {
        return false;
    };
    let Ok(pcrs) = serde_json::from_slice(pcrs) else {
        return false;
    };
    let ev = QuoteEvidence {
        attest: b64::encode(attest),
        signature: b64::encode(signature),
        pcrs,
    };
    match check_quote(&ak, &ev, &qualifying_data()) {
        Ok(values) => {
            let indices: Vec<u8> = values.0.keys().copied().collect();
            assert_eq!(indices, QUOTED_PCRS.collect::<Vec<_>>());
            assert!(values.0.values().all(|v| v.len() == 32));
            assert!(check_pcr_policy(&values, &PcrPolicy::default()).is_ok());
            let exact = values
                .0
                .iter()
                .map(|(&i, v)| (i, vec![v.clone()]))
                .collect();
            assert!(check_pcr_policy(&values, &PcrPolicy(exact)).is_ok());
            let none = values.0.keys().map(|&i| (i, Vec::new())).collect();
            assert!(check_pcr_policy(&values, &PcrPolicy(none)).is_err());
            true
        }
        Err(e) => {
            let expected = [Refusal::QuoteInvalid, Refusal::BadRequest];
            assert!(expected.contains(&e.refusal), "{e}");
            false
        }
    }
}

fn certify(rest: &[u8]) -> bool {
    let [ak, attest, signature, key_public, ssh] = fields(rest);
    let Some(ak) = ak_from(ak) else {
        return false;
    };
    let ssh = if ssh.is_empty() {
        &fixture!("key.ssh")[..]
    } else {
        ssh
    };
    let Some(ssh) = std::str::from_utf8(ssh)
        .ok()
        .and_then(|text| ssh_key::PublicKey::from_openssh(text.trim()).ok())
    else {
        return false;
    };
    let ev = Evidence {
        attest: b64::encode(attest),
        signature: b64::encode(signature),
    };
    match check_certify(&ak, &ev, key_public, &ssh, &qualifying_data()) {
        Ok(()) => {
            let key = Public::decode(key_public).expect("a certified key decodes");
            assert_eq!(&key.ssh_key_data().expect("usable"), ssh.key_data());
            assert!(key.attributes.fixed_tpm() && key.attributes.sign());
            true
        }
        Err(e) => {
            let expected = [
                Refusal::CertifyInvalid,
                Refusal::KeyNotTpmGenerated,
                Refusal::KeyMismatch,
                Refusal::BadRequest,
            ];
            assert!(expected.contains(&e.refusal), "{e}");
            false
        }
    }
}

fn ek_cert(der: &[u8]) -> bool {
    let parsed = EkCertificate::from_der(der);
    assert_eq!(
        parsed.is_ok(),
        TrustAnchors::new().add_der(der).is_ok(),
        "EK certificates and trust anchors are parsed alike"
    );
    let Ok(cert) = parsed else {
        return false;
    };
    assert_eq!(cert.der(), der);
    assert_eq!(cert.device_id(), derive::device_id(cert.spki_der()));
    assert!(cert.device_id().bytes().all(|c| c.is_ascii_hexdigit()));
    let _ = cert.issuer();

    let trusted = cert.verify_chain(anchors()).is_ok();

    // A key the CA would challenge gets a credential.
    if let Ok(ek) = cert.public_key() {
        let name = fixture_ak().name();
        let made = make_credential(&ek, &name, &[0x5a; 32], &mut FixedRng(1));
        assert!(made.is_ok(), "MakeCredential for a usable EK: {made:?}");
    }
    trusted
}

/// A deterministic generator (SplitMix64), so that a failing input fails again; nothing here
/// needs real randomness.
pub struct FixedRng(pub u64);

impl rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for FixedRng {}
