//! The attestation key: a restricted ECDSA P-256 signing primary of the endorsement
//! hierarchy, made from the fixed template of docs/protocol.md ("The attestation key").

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{
    EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public,
    PublicBuilder, PublicEccParametersBuilder, SignatureScheme,
};

use super::AkTemplate;
use crate::device::Tpm;
use crate::error::{Error, Result};

impl AkTemplate {
    /// The AK's template: ECC P-256, ECDSA-SHA256, no KDF, nameAlg SHA-256, empty
    /// authPolicy, fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted |
    /// sign, and `unique` two empty coordinates (a variant puts its byte in `x`).
    pub(crate) fn template(self) -> Result<Public> {
        let op = "building the attestation key template";
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_restricted(true)
            .with_sign_encrypt(true)
            .build()
            .map_err(|e| Error::tss(op, e))?;
        let parameters = PublicEccParametersBuilder::new()
            .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
            .with_curve(EccCurve::NistP256)
            .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
            .with_is_signing_key(true)
            .with_restricted(true)
            .build()
            .map_err(|e| Error::tss(op, e))?;
        let x = match self {
            AkTemplate::Standard => Vec::new(),
            AkTemplate::Variant(byte) => vec![byte],
        };
        let unique = EccPoint::new(
            EccParameter::try_from(x).map_err(|e| Error::tss(op, e))?,
            EccParameter::default(),
        );
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_ecc_parameters(parameters)
            .with_ecc_unique_identifier(unique)
            .build()
            .map_err(|e| Error::tss(op, e))
    }

    /// The scheme the AK signs with, named again in TPM2_Certify and TPM2_Quote.
    pub(crate) fn scheme() -> SignatureScheme {
        SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        }
    }
}

impl Tpm {
    /// Creates the AK in the endorsement hierarchy; the caller flushes it.
    pub(crate) fn create_ak(&mut self, ak: AkTemplate) -> Result<tss_esapi::handles::KeyHandle> {
        let template = ak.template()?;
        self.create_primary_in(
            ssh_tpm_keyfile::handle::ENDORSEMENT,
            &template,
            "creating the attestation key",
        )
    }

    pub(crate) fn attestation_key_public_once(&mut self, ak: AkTemplate) -> Result<Vec<u8>> {
        use tss_esapi::traits::Marshall as _;
        let handle = self.create_ak(ak)?;
        let public = self.public_of(handle, "reading the attestation key");
        self.flush_object(handle);
        public?
            .marshall()
            .map_err(|e| Error::tss("encoding the attestation key", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_exactly_the_protocol_attributes() {
        let public = AkTemplate::Standard.template().expect("builds");
        // fixedTPM 0x2, fixedParent 0x10, sensitiveDataOrigin 0x20, userWithAuth 0x40,
        // restricted 0x10000, sign 0x40000 (TPM 2.0 Part 2, 8.3).
        assert_eq!(public.object_attributes().0, 0x0005_0072);
        assert!(public.auth_policy().is_empty());
        let variant = AkTemplate::Variant(1).template().expect("builds");
        assert_ne!(public, variant);
    }
}
