//! Helpers shared by the fixture tests: reading fixtures, the session they were made for, and
//! a software "AK" that signs attestations the way a TPM would, for paths a real TPM never
//! produces (a wrong magic or type under a valid signature).

#![allow(dead_code, clippy::unwrap_used, clippy::new_without_default)]

use ssh_tpm_attest::b64;
use ssh_tpm_attest::protocol::{Evidence, QuoteEvidence};
use std::collections::BTreeMap;

pub const SESSION_ID: &str = "fixture-session";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn nonce() -> Vec<u8> {
    (0u8..32).collect()
}

pub fn qualifying_data() -> [u8; 32] {
    fixture("qualifying-data.bin").try_into().unwrap()
}

pub fn evidence(prefix: &str) -> Evidence {
    Evidence {
        attest: b64::encode(&fixture(&format!("{prefix}.attest"))),
        signature: b64::encode(&fixture(&format!("{prefix}.sig"))),
    }
}

/// The quote fixture's PCR values in the request's shape: sha256 → index → hex.
pub fn pcrs_map(values: &[u8]) -> BTreeMap<String, BTreeMap<String, String>> {
    let bank = values
        .chunks(32)
        .enumerate()
        .map(|(i, v)| (i.to_string(), hex(v)))
        .collect();
    BTreeMap::from([("sha256".to_owned(), bank)])
}

pub fn quote_evidence(prefix: &str) -> QuoteEvidence {
    let ev = evidence(prefix);
    QuoteEvidence {
        attest: ev.attest,
        signature: ev.signature,
        pcrs: pcrs_map(&fixture("quote.pcrs")),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A P-256 key in the AK's form, outside any TPM.
pub struct SoftAk {
    key: p256::ecdsa::SigningKey,
    pub public: Vec<u8>,
}

impl SoftAk {
    pub fn new() -> Self {
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        let mut public = vec![0x00, 0x23, 0x00, 0x0b];
        public.extend_from_slice(&0x0005_0072u32.to_be_bytes()); // the AK's attributes
        public.extend_from_slice(&[0, 0]); // authPolicy
        public.extend_from_slice(&[0x00, 0x10]); // symmetric NULL
        public.extend_from_slice(&[0x00, 0x18, 0x00, 0x0b]); // ECDSA SHA-256
        public.extend_from_slice(&[0x00, 0x03, 0x00, 0x10]); // P-256, KDF NULL
        for c in [point.x().unwrap(), point.y().unwrap()] {
            public.extend_from_slice(&[0, 32]);
            public.extend_from_slice(c);
        }
        Self { key, public }
    }

    /// A `TPMT_SIGNATURE` (ECDSA, SHA-256) over `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.key.sign(message);
        let mut out = vec![0x00, 0x18, 0x00, 0x0b];
        for half in [sig.r().to_bytes(), sig.s().to_bytes()] {
            out.extend_from_slice(&[0, 32]);
            out.extend_from_slice(&half);
        }
        out
    }

    pub fn evidence(&self, attest: &[u8]) -> Evidence {
        Evidence {
            attest: b64::encode(attest),
            signature: b64::encode(&self.sign(attest)),
        }
    }
}
