//! The CA's attestation policy (docs/protocol.md, "The attestation key" and "Certificates"):
//! is this public area an acceptable AK, does this quote come from the pinned AK for this
//! request and which PCR values does it vouch for, do they satisfy the device's policy, and
//! does this certification prove that the SSH key was born in the same TPM and cannot leave it.
//!
//! Each check returns a [`Rejection`] with the protocol's refusal code and a precise detail.
//! Base64 that does not decode and a malformed `pcrs` map are `bad_request`; TPM structures
//! that do not decode are refused with the check's own code (`quote_invalid`,
//! `certify_invalid`), like any other evidence that does not hold up.
//!
//! Not checked, deliberately: `qualifiedSigner` and the certified key's `qualifiedName` (the
//! signature by the pinned AK and the name already bind the key to that TPM), the attestation
//! clock and firmware version (no policy uses them yet).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::{Evidence, QuoteEvidence, Refusal, Rejection};
use crate::tpm::{self, alg, curve, Attest, Attested, ObjectAttributes, Public, PublicParams};

/// The quote's PCR values the CA accepted: SHA-256 bank, index → 32-byte value.
/// Serialized as `{"0": "hex", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrValues(pub BTreeMap<u8, Vec<u8>>);

/// A device's boot policy: SHA-256 PCR index → the values allowed for it. PCRs not named are
/// not restricted; a PCR named with an empty list allows nothing.
/// Serialized as `{"0": ["hex", …], …}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrPolicy(pub BTreeMap<u8, Vec<Vec<u8>>>);

/// The PCRs every quote must select, in the SHA-256 bank.
pub const QUOTED_PCRS: std::ops::RangeInclusive<u8> = 0..=7;

/// The AK attributes the CA looks at, and the ones of them that must be set.
const AK_CONSIDERED: u32 = ObjectAttributes::FIXED_TPM
    | ObjectAttributes::FIXED_PARENT
    | ObjectAttributes::SENSITIVE_DATA_ORIGIN
    | ObjectAttributes::RESTRICTED
    | ObjectAttributes::SIGN_ENCRYPT
    | ObjectAttributes::DECRYPT;
const AK_REQUIRED: u32 = AK_CONSIDERED & !ObjectAttributes::DECRYPT;

fn reject(refusal: Refusal, detail: impl Into<String>) -> Rejection {
    Rejection::new(refusal, detail)
}

/// Whether `ak` is an acceptable attestation key: exactly `fixedTPM | fixedParent |
/// sensitiveDataOrigin | restricted | sign` among those and `decrypt`, nameAlg SHA-256, and
/// ECC P-256 with ECDSA-SHA256 or RSA 2048 with RSASSA-SHA256, holding a usable public key.
///
/// # Errors
///
/// [`Refusal::AkInvalid`] naming the first property that is wrong.
pub fn check_ak_public(ak: &Public) -> Result<(), Rejection> {
    let invalid = |detail: String| reject(Refusal::AkInvalid, detail);
    if ak.name_alg != tpm::HashAlg::Sha256 {
        return Err(invalid(format!(
            "nameAlg is {}, not sha256",
            ak.name_alg.label()
        )));
    }
    let attrs = ak.attributes.0 & AK_CONSIDERED;
    if attrs != AK_REQUIRED {
        return Err(invalid(format!(
            "attributes 0x{:08x}: an AK must have fixedTPM, fixedParent, sensitiveDataOrigin, \
             restricted and sign, and not decrypt",
            ak.attributes.0
        )));
    }
    let scheme = ak.scheme();
    let expected = match &ak.params {
        PublicParams::Ecc { curve: id, kdf, .. } => {
            if *id != curve::NIST_P256 {
                return Err(invalid(format!("ECC curve 0x{id:04x}, not NIST P-256")));
            }
            if kdf.is_some() {
                return Err(invalid("an ECC AK must have no KDF".into()));
            }
            alg::ECDSA
        }
        PublicParams::Rsa { key_bits, .. } => {
            if *key_bits != 2048 {
                return Err(invalid(format!("RSA key of {key_bits} bits, not 2048")));
            }
            alg::RSASSA
        }
    };
    match scheme {
        Some(s) if s.scheme == expected && s.hash == alg::SHA256 => {}
        Some(s) => {
            return Err(invalid(format!(
                "scheme {}-{}, expected {}-sha256",
                tpm::alg_label(s.scheme),
                tpm::alg_label(s.hash),
                tpm::alg_label(expected)
            )))
        }
        None => return Err(invalid("the AK has no signing scheme".into())),
    }
    // The unique field must be a real key, or nothing signed by it could be checked.
    ak.ssh_key_data()
        .map_err(|e| invalid(format!("the AK's public key is unusable: {e}")))?;
    Ok(())
}

/// Verifies a quote by `ak` over `qualifying_data` and returns the PCR values it vouches for.
///
/// The quote must be signed by `ak`, carry `TPM_GENERATED_VALUE` and `TPM_ST_ATTEST_QUOTE`,
/// have `extraData` equal to `qualifying_data`, select exactly SHA-256 PCRs 0–7, and its PCR
/// digest must be the hash (with the signature's digest algorithm) of the reported values,
/// which must cover exactly the selection, concatenated in selection order.
///
/// # Errors
///
/// [`Refusal::BadRequest`] for base64 or a `pcrs` map that cannot be read;
/// [`Refusal::QuoteInvalid`] for everything else.
pub fn check_quote(
    ak: &Public,
    ev: &QuoteEvidence,
    qualifying_data: &[u8; 32],
) -> Result<PcrValues, Rejection> {
    let invalid = |detail: String| reject(Refusal::QuoteInvalid, detail);
    let values = parse_pcrs(&ev.pcrs)?;
    let (attest, sig_hash) = verified_attest(
        ak,
        &ev.attest,
        &ev.signature,
        "quote",
        Refusal::QuoteInvalid,
    )?;

    check_header(
        &attest,
        qualifying_data,
        tpm::ST_ATTEST_QUOTE,
        "quote",
        Refusal::QuoteInvalid,
    )?;
    let Attested::Quote {
        pcr_selections,
        pcr_digest,
    } = &attest.attested
    else {
        return Err(invalid("the attestation is not a quote".into()));
    };

    let selected = match pcr_selections.as_slice() {
        [one] if one.hash == alg::SHA256 => one.indices(),
        _ => {
            return Err(invalid(
                "the quote must select one PCR bank, sha256, with PCRs 0-7".into(),
            ))
        }
    };
    let expected: Vec<u16> = QUOTED_PCRS.map(u16::from).collect();
    if selected != expected {
        return Err(invalid(format!(
            "the quote selects sha256 PCRs {selected:?}, expected 0-7"
        )));
    }
    let reported: Vec<u16> = values.0.keys().map(|&i| u16::from(i)).collect();
    if reported != selected {
        return Err(invalid(format!(
            "the request reports PCRs {reported:?} but the quote selects {selected:?}"
        )));
    }
    let concatenated: Vec<u8> = values.0.values().flatten().copied().collect();
    if sig_hash.digest(&concatenated) != *pcr_digest {
        return Err(invalid(
            "the reported PCR values do not match the quote's PCR digest".into(),
        ));
    }
    Ok(values)
}

/// Checks the quoted values against a device's policy.
///
/// # Errors
///
/// [`Refusal::PcrPolicy`] naming the first PCR that is missing or has a value the policy
/// does not allow.
pub fn check_pcr_policy(values: &PcrValues, policy: &PcrPolicy) -> Result<(), Rejection> {
    for (index, allowed) in &policy.0 {
        let Some(value) = values.0.get(index) else {
            return Err(reject(
                Refusal::PcrPolicy,
                format!("PCR {index} is in the policy but was not quoted"),
            ));
        };
        if !allowed.iter().any(|a| a == value) {
            return Err(reject(
                Refusal::PcrPolicy,
                format!(
                    "PCR {index} is {}, which the device's policy does not allow",
                    crate::derive::hex(value)
                ),
            ));
        }
    }
    Ok(())
}

/// Verifies a TPM2_Certify by `ak` of the key whose public area is `key_public`, over
/// `qualifying_data`, and that this key is `ssh_key`, was generated in the TPM and cannot
/// leave it.
///
/// # Errors
///
/// [`Refusal::BadRequest`] for base64 that does not decode; [`Refusal::CertifyInvalid`] for a
/// signature not by `ak`, a wrong magic, type, `extraData` or name, or a key that is
/// restricted, a decryption key or not a signing key; [`Refusal::KeyNotTpmGenerated`] when
/// `sensitiveDataOrigin`, `fixedTPM` or `fixedParent` is clear; [`Refusal::KeyMismatch`] when
/// the certified public key is not `ssh_key`.
pub fn check_certify(
    ak: &Public,
    ev: &Evidence,
    key_public: &[u8],
    ssh_key: &ssh_key::PublicKey,
    qualifying_data: &[u8; 32],
) -> Result<(), Rejection> {
    let invalid = |detail: String| reject(Refusal::CertifyInvalid, detail);
    let (attest, _) = verified_attest(
        ak,
        &ev.attest,
        &ev.signature,
        "certification",
        Refusal::CertifyInvalid,
    )?;
    check_header(
        &attest,
        qualifying_data,
        tpm::ST_ATTEST_CERTIFY,
        "certification",
        Refusal::CertifyInvalid,
    )?;
    let Attested::Certify { name, .. } = &attest.attested else {
        return Err(invalid("the attestation is not a certification".into()));
    };

    let key = Public::decode(key_public).map_err(|e| {
        invalid(format!(
            "key_public is not a usable TPMT_PUBLIC: {}",
            e.reason()
        ))
    })?;
    if key.name() != *name {
        return Err(invalid(
            "the certified name is not the name of key_public".into(),
        ));
    }

    let a = key.attributes;
    if !a.sensitive_data_origin() {
        return Err(reject(
            Refusal::KeyNotTpmGenerated,
            "the key was not generated by the TPM (sensitiveDataOrigin is clear): \
             it was imported or wrapped",
        ));
    }
    if !a.fixed_tpm() || !a.fixed_parent() {
        return Err(reject(
            Refusal::KeyNotTpmGenerated,
            "the key can be duplicated out of the TPM (fixedTPM or fixedParent is clear)",
        ));
    }
    if a.restricted() || a.decrypt() || !a.sign() {
        return Err(invalid(format!(
            "the key must be an unrestricted signing key, not a decryption key \
             (attributes 0x{:08x})",
            a.0
        )));
    }

    let certified = key
        .ssh_key_data()
        .map_err(|e| reject(Refusal::KeyMismatch, format!("the certified key: {e}")))?;
    if certified != *ssh_key.key_data() {
        return Err(reject(
            Refusal::KeyMismatch,
            "the certified key is not the SSH public key of the request",
        ));
    }
    Ok(())
}

fn decode_b64(text: &str, field: &str) -> Result<Vec<u8>, Rejection> {
    crate::b64::decode(text).map_err(|_| {
        reject(
            Refusal::BadRequest,
            format!("{field} is not unpadded base64url"),
        )
    })
}

/// Decodes the attestation and its signature and verifies the signature by `ak`; returns the
/// attestation and the signature's digest algorithm.
fn verified_attest(
    ak: &Public,
    attest_b64: &str,
    signature_b64: &str,
    what: &str,
    refusal: Refusal,
) -> Result<(Attest, tpm::HashAlg), Rejection> {
    let attest_bytes = decode_b64(attest_b64, &format!("{what} attest"))?;
    let sig_bytes = decode_b64(signature_b64, &format!("{what} signature"))?;
    let sig = tpm::Signature::decode(&sig_bytes).map_err(|e| {
        reject(
            refusal,
            format!(
                "the {what} signature is not a usable TPMT_SIGNATURE: {}",
                e.reason()
            ),
        )
    })?;
    crate::verify::verify_signature(ak, &attest_bytes, &sig).map_err(|e| {
        reject(
            refusal,
            format!(
                "the {what} is not signed by the device's AK: {}",
                e.reason()
            ),
        )
    })?;
    let attest = Attest::decode(&attest_bytes).map_err(|e| {
        reject(
            refusal,
            format!("the {what} is not a usable TPMS_ATTEST: {}", e.reason()),
        )
    })?;
    Ok((attest, sig.hash()))
}

fn check_header(
    attest: &Attest,
    qualifying_data: &[u8; 32],
    attest_type: u16,
    what: &str,
    refusal: Refusal,
) -> Result<(), Rejection> {
    if attest.magic != tpm::TPM_GENERATED_VALUE {
        return Err(reject(
            refusal,
            format!(
                "the {what} was not made by the TPM (magic 0x{:08x})",
                attest.magic
            ),
        ));
    }
    if attest.attest_type() != attest_type {
        return Err(reject(
            refusal,
            format!(
                "the {what} has type 0x{:04x}, expected 0x{attest_type:04x}",
                attest.attest_type()
            ),
        ));
    }
    if attest.extra_data != qualifying_data {
        return Err(reject(
            refusal,
            format!("the {what} was made for other qualifying data (another session or key)"),
        ));
    }
    Ok(())
}

/// Reads the request's `pcrs` map: only the `sha256` bank, canonical decimal indices up to
/// 23, 32-byte hex values.
fn parse_pcrs(pcrs: &BTreeMap<String, BTreeMap<String, String>>) -> Result<PcrValues, Rejection> {
    let bad = |detail: String| reject(Refusal::BadRequest, detail);
    let mut out = BTreeMap::new();
    for (bank, values) in pcrs {
        if bank != "sha256" {
            return Err(bad(format!("pcrs: unknown bank {bank:?}, only \"sha256\"")));
        }
        for (index, value) in values {
            let i = parse_index(index).ok_or_else(|| bad(format!("pcrs: bad index {index:?}")))?;
            let v = hex_decode(value)
                .filter(|v| v.len() == 32)
                .ok_or_else(|| bad(format!("pcrs: PCR {i} is not 64 hex digits")))?;
            out.insert(i, v);
        }
    }
    Ok(PcrValues(out))
}

fn parse_index(text: &str) -> Option<u8> {
    let i: u8 = text.parse().ok()?;
    (i < 24 && i.to_string() == text).then_some(i)
}

pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

fn serde_hex<E: serde::de::Error>(text: &str) -> Result<Vec<u8>, E> {
    hex_decode(text).ok_or_else(|| E::custom(format!("{text:?} is not hex")))
}

impl Serialize for PcrValues {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<u8, String> = self
            .0
            .iter()
            .map(|(i, v)| (*i, crate::derive::hex(v)))
            .collect();
        m.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PcrValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<u8, String>::deserialize(d)?;
        m.into_iter()
            .map(|(i, v)| Ok((i, serde_hex(&v)?)))
            .collect::<Result<_, _>>()
            .map(PcrValues)
    }
}

impl Serialize for PcrPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<u8, Vec<String>> = self
            .0
            .iter()
            .map(|(i, vs)| (*i, vs.iter().map(|v| crate::derive::hex(v)).collect()))
            .collect();
        m.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PcrPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<u8, Vec<String>>::deserialize(d)?;
        m.into_iter()
            .map(|(i, vs)| {
                Ok((
                    i,
                    vs.iter().map(|v| serde_hex(v)).collect::<Result<_, _>>()?,
                ))
            })
            .collect::<Result<_, _>>()
            .map(PcrPolicy)
    }
}
