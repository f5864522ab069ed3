//! From TPM public areas (TPM 2.0 Part 2, 12.2.4 TPMT_PUBLIC) to SSH public keys, and from
//! TPM signatures to SSH signature blobs (RFC 5656 3.1.2, RFC 8332 3).

use ssh_encoding::Encode;
use ssh_key::public::{EcdsaPublicKey, KeyData, RsaPublicKey};
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, Mpint};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{Public, PublicBuffer, Signature as TpmSignature};
use tss_esapi::traits::UnMarshall;

use crate::error::{Error, Result};
use crate::template::KeySpec;

/// Decodes the TPM2B_PUBLIC carried in a key file.
pub fn decode_public(tpm2b_public: &[u8]) -> Result<Public> {
    let buffer = PublicBuffer::unmarshall(tpm2b_public)
        .map_err(|_| Error::Unsupported("the key file's public area is malformed".into()))?;
    Public::try_from(buffer)
        .map_err(|_| Error::Unsupported("the key file's public area is malformed".into()))
}

/// What kind of SSH key a TPM public area is, if it is one we can serve.
pub fn key_spec(public: &Public) -> Result<KeySpec> {
    match public {
        Public::Ecc { parameters, .. } => match parameters.ecc_curve() {
            EccCurve::NistP256 => Ok(KeySpec::EcdsaP256),
            EccCurve::NistP384 => Ok(KeySpec::EcdsaP384),
            EccCurve::NistP521 => Ok(KeySpec::EcdsaP521),
            other => Err(Error::Unsupported(format!(
                "ECC curve {other:?} has no SSH key type; only NIST P-256, P-384 and P-521 do"
            ))),
        },
        Public::Rsa { parameters, .. } => match u16::from(parameters.key_bits()) {
            2048 => Ok(KeySpec::Rsa2048),
            3072 => Ok(KeySpec::Rsa3072),
            bits => Err(Error::Unsupported(format!(
                "RSA keys of {bits} bits are not supported"
            ))),
        },
        _ => Err(Error::Unsupported(
            "the key file holds neither an ECC nor an RSA key".into(),
        )),
    }
}

/// The SSH public key of a TPM public area.
pub fn ssh_public_key(public: &Public) -> Result<KeyData> {
    let spec = key_spec(public)?;
    match public {
        Public::Ecc { unique, .. } => {
            let size = field_size(spec);
            let mut sec1 = Vec::with_capacity(1 + 2 * size);
            sec1.push(0x04);
            sec1.extend(left_pad(unique.x().value(), size)?);
            sec1.extend(left_pad(unique.y().value(), size)?);
            let key = EcdsaPublicKey::from_sec1_bytes(&sec1)
                .map_err(|e| Error::Unsupported(format!("the key's ECC point is invalid: {e}")))?;
            Ok(KeyData::Ecdsa(key))
        }
        Public::Rsa {
            parameters, unique, ..
        } => {
            let exponent = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let e = Mpint::from_positive_bytes(&exponent.to_be_bytes()).map_err(encoding)?;
            let n = Mpint::from_positive_bytes(unique.value()).map_err(encoding)?;
            Ok(KeyData::Rsa(RsaPublicKey { e, n }))
        }
        _ => unreachable!("key_spec accepted only ECC and RSA"),
    }
}

/// Turns a TPM signature into the SSH signature for `hash` (ECDSA: mpint r ‖ mpint s).
pub fn ssh_signature(
    spec: KeySpec,
    hash: HashAlg,
    sig: TpmSignature,
) -> Result<ssh_key::Signature> {
    let (algorithm, blob) = match sig {
        TpmSignature::EcDsa(ecc) => {
            let curve = match spec {
                KeySpec::EcdsaP256 => EcdsaCurve::NistP256,
                KeySpec::EcdsaP384 => EcdsaCurve::NistP384,
                _ => EcdsaCurve::NistP521,
            };
            let mut blob = Vec::new();
            for part in [ecc.signature_r().value(), ecc.signature_s().value()] {
                Mpint::from_positive_bytes(part)
                    .map_err(encoding)?
                    .encode(&mut blob)
                    .map_err(encoding)?;
            }
            (Algorithm::Ecdsa { curve }, blob)
        }
        TpmSignature::RsaSsa(rsa) => (
            Algorithm::Rsa { hash: Some(hash) },
            rsa.signature().value().to_vec(),
        ),
        _ => {
            return Err(Error::Unsupported(
                "the TPM returned an unexpected signature kind".into(),
            ))
        }
    };
    ssh_key::Signature::new(algorithm, blob).map_err(encoding)
}

fn field_size(spec: KeySpec) -> usize {
    match spec {
        KeySpec::EcdsaP256 => 32,
        KeySpec::EcdsaP384 => 48,
        _ => 66,
    }
}

fn left_pad(bytes: &[u8], size: usize) -> Result<Vec<u8>> {
    if bytes.len() > size {
        return Err(Error::Unsupported(
            "the key's ECC coordinate is too long".into(),
        ));
    }
    let mut out = vec![0u8; size - bytes.len()];
    out.extend_from_slice(bytes);
    Ok(out)
}

fn encoding(e: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("cannot encode the SSH key or signature: {e}"))
}
