//! The endorsement key: the templates of the TCG EK Credential Profile 2.x (L-1, L-2, H-3),
//! the policy that authorizes it, its certificates in NV, and its public key as the
//! certificate carries it (SubjectPublicKeyInfo).

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::handles::{KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Digest, EccParameter, EccPoint, MaxNvBuffer, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent,
    SymmetricDefinitionObject,
};

use super::EkKind;
use crate::device::Tpm;
use crate::error::{response_kind, Error, Result};

/// PolicyA (SHA-256): TPM2_PolicySecret(TPM_RH_ENDORSEMENT), the authPolicy of templates L-1
/// and L-2 (EK Credential Profile 2.x, "Computing PolicyA").
pub(crate) const POLICY_A_SHA256: [u8; 32] =
    hex32(b"837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa");

/// PolicyA (SHA-384), one branch of PolicyB.
pub(crate) const POLICY_A_SHA384: [u8; 48] = hex48(
    b"8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e\
      143e8bb1133824ccb431053871c6db53",
);

/// PolicyC (SHA-384): TPM2_PolicyAuthorizeNV(0x01c07f02), the other branch of PolicyB.
pub(crate) const POLICY_C_SHA384: [u8; 48] = hex48(
    b"d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5\
      b4947c2d73e63005eed2dc2b3593d165",
);

/// PolicyB (SHA-384) = TPM2_PolicyOR(PolicyA, PolicyC): the authPolicy of template H-3.
pub(crate) const POLICY_B_SHA384: [u8; 48] = hex48(
    b"b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419ca\
      cb47ba09699646150f9fc000f3f80e12",
);

impl EkKind {
    /// The EK's name algorithm: SHA-256 for the L templates, SHA-384 for H-3.
    pub(crate) fn name_alg(self) -> HashingAlgorithm {
        match self {
            EkKind::Rsa2048 | EkKind::EccP256 => HashingAlgorithm::Sha256,
            EkKind::EccP384 => HashingAlgorithm::Sha384,
        }
    }

    /// The template's name in the EK Credential Profile.
    pub fn template_name(self) -> &'static str {
        match self {
            EkKind::Rsa2048 => "L-1",
            EkKind::EccP256 => "L-2",
            EkKind::EccP384 => "H-3",
        }
    }

    /// What users call this kind of EK.
    pub fn describe(self) -> &'static str {
        match self {
            EkKind::Rsa2048 => "RSA 2048",
            EkKind::EccP256 => "ECC NIST P-256",
            EkKind::EccP384 => "ECC NIST P-384",
        }
    }

    /// The TCG template (EK Credential Profile 2.x, B.3.3 and B.3.4): a restricted decryption
    /// key authorized only through its policy (adminWithPolicy); L-1 and L-2 also refuse the
    /// empty authValue for user actions, H-3 has userWithAuth. L templates carry a zero-filled
    /// `unique` of the key size, H templates an empty one.
    pub(crate) fn template(self) -> Result<Public> {
        let op = "building the EK template";
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(self == EkKind::EccP384)
            .with_admin_with_policy(true)
            .with_restricted(true)
            .with_decrypt(true)
            .build()
            .map_err(|e| Error::tss(op, e))?;
        let policy = match self {
            EkKind::Rsa2048 | EkKind::EccP256 => POLICY_A_SHA256.to_vec(),
            EkKind::EccP384 => POLICY_B_SHA384.to_vec(),
        };
        let builder = PublicBuilder::new()
            .with_name_hashing_algorithm(self.name_alg())
            .with_object_attributes(attributes)
            .with_auth_policy(Digest::try_from(policy).map_err(|e| Error::tss(op, e))?);
        let builder = match self {
            EkKind::Rsa2048 => builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new_restricted_decryption_key(
                        SymmetricDefinitionObject::AES_128_CFB,
                        RsaKeyBits::Rsa2048,
                        RsaExponent::default(),
                    )
                    .build()
                    .map_err(|e| Error::tss(op, e))?,
                )
                .with_rsa_unique_identifier(
                    PublicKeyRsa::try_from(vec![0u8; 256]).map_err(|e| Error::tss(op, e))?,
                ),
            EkKind::EccP256 | EkKind::EccP384 => {
                let (curve, symmetric, unique_size) = match self {
                    EkKind::EccP256 => (
                        EccCurve::NistP256,
                        SymmetricDefinitionObject::AES_128_CFB,
                        32,
                    ),
                    _ => (
                        EccCurve::NistP384,
                        SymmetricDefinitionObject::AES_256_CFB,
                        0,
                    ),
                };
                let zeros = || {
                    EccParameter::try_from(vec![0u8; unique_size]).map_err(|e| Error::tss(op, e))
                };
                builder
                    .with_public_algorithm(PublicAlgorithm::Ecc)
                    .with_ecc_parameters(
                        PublicEccParametersBuilder::new_restricted_decryption_key(symmetric, curve)
                            .build()
                            .map_err(|e| Error::tss(op, e))?,
                    )
                    .with_ecc_unique_identifier(EccPoint::new(zeros()?, zeros()?))
            }
        };
        builder.build().map_err(|e| Error::tss(op, e))
    }
}

impl Tpm {
    /// Creates the EK of `kind` from its standard template in the endorsement hierarchy; the
    /// caller flushes it.
    pub(crate) fn create_ek(&mut self, kind: EkKind) -> Result<KeyHandle> {
        let template = kind.template()?;
        self.create_primary_in(
            ssh_tpm_keyfile::handle::ENDORSEMENT,
            &template,
            "creating the endorsement key",
        )
    }

    /// The public area of a loaded object.
    pub(crate) fn public_of(&mut self, key: KeyHandle, op: &'static str) -> Result<Public> {
        self.ctx
            .execute_without_session(|ctx| ctx.read_public(key))
            .map(|(public, _, _)| public)
            .map_err(|e| Error::tss(op, e))
    }

    /// Flushes a transient object we created; a failure only leaves it loaded.
    pub(crate) fn flush_object(&mut self, key: KeyHandle) {
        let _ = self.ctx.flush_context(key.into());
    }

    pub(crate) fn ek_public_key_der_once(&mut self, kind: EkKind) -> Result<Vec<u8>> {
        let ek = self.create_ek(kind)?;
        let public = self.public_of(ek, "reading the endorsement key");
        self.flush_object(ek);
        subject_public_key_info(&public?)
    }

    pub(crate) fn ek_certificates_once(&mut self) -> Result<Vec<(EkKind, Vec<u8>)>> {
        let chunk = self.nv_buffer_max()?;
        let mut certificates = Vec::new();
        for kind in EkKind::ALL {
            if let Some(der) = self.read_nv_certificate(kind.nv_index(), chunk)? {
                certificates.push((kind, der));
            }
        }
        Ok(certificates)
    }

    /// How many bytes one TPM2_NV_Read may return (TPM_PT_NV_BUFFER_MAX).
    fn nv_buffer_max(&mut self) -> Result<u16> {
        let (caps, _) = self
            .ctx
            .get_capability(
                CapabilityType::TpmProperties,
                PropertyTag::NvBufferMax.into(),
                1,
            )
            .map_err(|e| Error::tss("reading the TPM's NV buffer size", e))?;
        let reported = match caps {
            CapabilityData::TpmProperties(properties) => {
                properties.find(PropertyTag::NvBufferMax).map(|p| p.value())
            }
            _ => None,
        };
        // 512 is what every TPM must take (PC Client Platform TPM Profile); tss-esapi's
        // buffer holds at most MaxNvBuffer::MAX_SIZE.
        let size = reported
            .unwrap_or(512)
            .clamp(1, MaxNvBuffer::MAX_SIZE as u32);
        Ok(size as u16)
    }

    /// Reads a certificate from the NV index `index`, in reads of at most `chunk` bytes;
    /// `None` when the TPM has no such index.
    fn read_nv_certificate(&mut self, index: u32, chunk: u16) -> Result<Option<Vec<u8>>> {
        let op = "reading an EK certificate";
        let tpm_handle = NvIndexTpmHandle::new(index).map_err(|e| Error::tss(op, e))?;
        let object = match self
            .ctx
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle)))
        {
            Ok(object) => object,
            Err(e) if response_kind(e) == Some(Tss2ResponseCodeKind::Handle) => return Ok(None),
            Err(e) => return Err(Error::tss(op, e)),
        };
        let nv = NvIndexHandle::from(object);
        let result = self.read_nv(nv, chunk);
        let mut object = ObjectHandle::from(nv);
        let _ = self.ctx.tr_close(&mut object);
        match result {
            Ok(data) => Ok(Some(trim_der(data))),
            // Defined but never written: no certificate there.
            Err(e) if response_kind(e) == Some(Tss2ResponseCodeKind::NvUninitialized) => Ok(None),
            Err(e) => Err(match response_kind(e) {
                Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth) => {
                    Error::Unsupported(format!(
                        "the EK certificate at NV index {index:#010x} needs a password to be \
                         read, which this tool cannot give; read it with tpm2_nvread and \
                         enrol with that file"
                    ))
                }
                _ => Error::tss(op, e),
            }),
        }
    }

    /// Reads all of an NV index, authorized by the index itself (authRead, an empty
    /// authValue, as EK certificate indexes are provisioned) or, without authRead, by the
    /// owner hierarchy with an empty password.
    fn read_nv(&mut self, nv: NvIndexHandle, chunk: u16) -> tss_esapi::Result<Vec<u8>> {
        let (public, _) = self
            .ctx
            .execute_without_session(|ctx| ctx.nv_read_public(nv))?;
        let size = public.data_size();
        let auth = match public.attributes().auth_read() {
            true => NvAuth::NvIndex(nv),
            false => NvAuth::Owner,
        };
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            let offset = data.len() as u16;
            let len = chunk.min((size - data.len()) as u16);
            let part = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.nv_read(auth, nv, len, offset)
                })?;
            if part.is_empty() {
                // A TPM that answers a read with nothing would otherwise loop here.
                return Err(tss_esapi::Error::WrapperError(
                    tss_esapi::WrapperErrorKind::InvalidParam,
                ));
            }
            data.extend_from_slice(part.value());
        }
        Ok(data)
    }
}

/// An NV index may be larger than the certificate in it; keeps the DER element only.
/// Anything that does not start like a DER SEQUENCE is returned as read.
pub(crate) fn trim_der(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(len) = der_element_length(&data) {
        if len < data.len() {
            data.truncate(len);
        }
    }
    data
}

/// The length of the DER SEQUENCE at the start of `data`, header included.
fn der_element_length(data: &[u8]) -> Option<usize> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 || rest.len() < count {
        return None;
    }
    let len = rest[..count]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some(2 + count + len)
}

/// The DER SubjectPublicKeyInfo of an RSA or NIST-curve ECC public area, as an X.509
/// certificate carries it.
pub(crate) fn subject_public_key_info(public: &Public) -> Result<Vec<u8>> {
    use p256::pkcs8::EncodePublicKey as _;
    let encoding = |e: &dyn std::fmt::Display| {
        Error::Unsupported(format!("cannot encode the EK public key: {e}"))
    };
    match public {
        Public::Rsa {
            parameters, unique, ..
        } => {
            let exponent = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(unique.value()),
                rsa::BigUint::from(exponent),
            )
            .map_err(|e| encoding(&e))?;
            key.to_public_key_der()
                .map(|d| d.into_vec())
                .map_err(|e| encoding(&e))
        }
        Public::Ecc {
            parameters, unique, ..
        } => {
            let point = [&[0x04][..], unique.x().value(), unique.y().value()].concat();
            let der = match parameters.ecc_curve() {
                EccCurve::NistP256 => p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|e| encoding(&e))?
                    .to_public_key_der(),
                EccCurve::NistP384 => p384::PublicKey::from_sec1_bytes(&point)
                    .map_err(|e| encoding(&e))?
                    .to_public_key_der(),
                EccCurve::NistP521 => p521::PublicKey::from_sec1_bytes(&point)
                    .map_err(|e| encoding(&e))?
                    .to_public_key_der(),
                other => {
                    return Err(Error::Unsupported(format!(
                        "EKs on the curve {other:?} are not supported"
                    )))
                }
            };
            der.map(|d| d.into_vec()).map_err(|e| encoding(&e))
        }
        _ => Err(Error::Unsupported(
            "the EK is neither RSA nor ECC".to_string(),
        )),
    }
}

/// The DER SubjectPublicKeyInfo inside an X.509 certificate.
pub(crate) fn certificate_spki(der: &[u8]) -> Option<Vec<u8>> {
    use x509_cert::der::{Decode as _, Encode as _};
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .ok()
}

/// Decodes 64 hex digits at compile time.
const fn hex32(text: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]);
        i += 1;
    }
    out
}

/// Decodes 96 hex digits at compile time.
const fn hex48(text: &[u8; 96]) -> [u8; 48] {
    let mut out = [0u8; 48];
    let mut i = 0;
    while i < 48 {
        out[i] = nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not a lowercase hex digit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TPM_CC_PolicySecret (TPM 2.0 Part 2, 6.5.2).
    const CC_POLICY_SECRET: u32 = 0x0000_0151;
    /// TPM_CC_PolicyOR.
    const CC_POLICY_OR: u32 = 0x0000_0171;
    /// TPM_RH_ENDORSEMENT, whose name is its handle.
    const RH_ENDORSEMENT: u32 = 0x4000_000B;

    /// The digest a policy session holds after TPM2_PolicySecret(TPM_RH_ENDORSEMENT) with an
    /// empty policyRef (TPM 2.0 Part 3, 23.4: PolicyUpdate): PolicyA.
    fn policy_a<D: sha2::Digest>() -> Vec<u8> {
        let zero = vec![0u8; <D as sha2::Digest>::output_size()];
        let first = D::new()
            .chain_update(&zero)
            .chain_update(CC_POLICY_SECRET.to_be_bytes())
            .chain_update(RH_ENDORSEMENT.to_be_bytes())
            .finalize();
        D::new().chain_update(first).finalize().to_vec()
    }

    /// TPM2_PolicyOR's digest over `branches` from a fresh session (Part 3, 23.6).
    fn policy_or<D: sha2::Digest>(branches: &[&[u8]]) -> Vec<u8> {
        let zero = vec![0u8; <D as sha2::Digest>::output_size()];
        let mut hash = D::new()
            .chain_update(&zero)
            .chain_update(CC_POLICY_OR.to_be_bytes());
        for branch in branches {
            hash.update(branch);
        }
        hash.finalize().to_vec()
    }

    #[test]
    fn policy_digests_follow_from_their_commands() {
        assert_eq!(policy_a::<sha2::Sha256>(), POLICY_A_SHA256);
        assert_eq!(policy_a::<sha2::Sha384>(), POLICY_A_SHA384);
        assert_eq!(
            policy_or::<sha2::Sha384>(&[&POLICY_A_SHA384, &POLICY_C_SHA384]),
            POLICY_B_SHA384
        );
    }

    #[test]
    fn templates_match_the_profile() {
        let rsa = EkKind::Rsa2048.template().expect("L-1 builds");
        assert_eq!(rsa.object_attributes().0, 0x0003_00B2);
        assert_eq!(rsa.auth_policy().value(), POLICY_A_SHA256);
        let p384 = EkKind::EccP384.template().expect("H-3 builds");
        assert_eq!(p384.object_attributes().0, 0x0003_00F2);
        assert_eq!(p384.name_hashing_algorithm(), HashingAlgorithm::Sha384);
        let Public::Ecc { unique, .. } = p384 else {
            panic!("H-3 is ECC");
        };
        assert!(unique.x().is_empty() && unique.y().is_empty());
        let Public::Ecc { unique, .. } = EkKind::EccP256.template().expect("L-2 builds") else {
            panic!("L-2 is ECC");
        };
        assert_eq!(unique.x().value(), [0u8; 32]);
    }

    #[test]
    fn trailing_nv_padding_is_cut_off() {
        let der = vec![0x30, 0x03, 1, 2, 3];
        assert_eq!(trim_der([&der[..], &[0xff; 10]].concat()), der);
        let long = [&[0x30, 0x81, 0x80][..], &[7u8; 0x80], &[0, 0]].concat();
        assert_eq!(trim_der(long.clone()).len(), 0x83);
        assert_eq!(trim_der(vec![0xff; 4]), vec![0xff; 4]);
    }
}
