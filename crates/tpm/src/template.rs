//! Public-area templates: the H-2 storage key that hierarchy parents stand for, and the
//! signing keys we create (TPM 2.0 Part 2, 12.2 TPMT_PUBLIC).

use std::fmt;

use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    EccPoint, EccScheme, KeyDerivationFunctionScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    SymmetricDefinitionObject,
};

use crate::error::{Error, Result};

/// The kinds of SSH key this project creates in a TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Rsa2048,
    Rsa3072,
}

impl KeySpec {
    /// Every kind, in the order `--supported` lists them.
    pub const ALL: [KeySpec; 5] = [
        KeySpec::EcdsaP256,
        KeySpec::EcdsaP384,
        KeySpec::EcdsaP521,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
    ];

    /// Picks a kind from `ssh-keygen`-style `-t` and `-b` (ECDSA defaults to 256 bits,
    /// RSA to 2048).
    pub fn from_type_and_bits(key_type: &str, bits: Option<u32>) -> Result<Self> {
        match (key_type, bits) {
            ("ecdsa", None | Some(256)) => Ok(KeySpec::EcdsaP256),
            ("ecdsa", Some(384)) => Ok(KeySpec::EcdsaP384),
            ("ecdsa", Some(521)) => Ok(KeySpec::EcdsaP521),
            ("rsa", None | Some(2048)) => Ok(KeySpec::Rsa2048),
            ("rsa", Some(3072)) => Ok(KeySpec::Rsa3072),
            ("ecdsa", Some(b)) => Err(Error::Unsupported(format!(
                "ECDSA keys can be 256, 384 or 521 bits, not {b}; pick one with -b"
            ))),
            ("rsa", Some(b)) => Err(Error::Unsupported(format!(
                "TPM RSA keys can be 2048 or 3072 bits, not {b}; pick one with -b"
            ))),
            (other, _) => Err(Error::Unsupported(format!(
                "key type `{other}` cannot live in a TPM; use -t ecdsa or -t rsa"
            ))),
        }
    }

    /// The SSH name of the key type (`ecdsa-sha2-nistp256`, `ssh-rsa`).
    pub fn ssh_name(self) -> &'static str {
        match self {
            KeySpec::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeySpec::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeySpec::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => "ssh-rsa",
        }
    }

    /// Key size in bits.
    pub fn bits(self) -> u32 {
        match self {
            KeySpec::EcdsaP256 => 256,
            KeySpec::EcdsaP384 => 384,
            KeySpec::EcdsaP521 => 521,
            KeySpec::Rsa2048 => 2048,
            KeySpec::Rsa3072 => 3072,
        }
    }

    /// The file stem `ssh-keygen` uses for this type (`id_ecdsa`, `id_rsa`).
    pub fn default_file_stem(self) -> &'static str {
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => "id_rsa",
            _ => "id_ecdsa",
        }
    }

    pub(crate) fn ecc_curve(self) -> Option<EccCurve> {
        match self {
            KeySpec::EcdsaP256 => Some(EccCurve::NistP256),
            KeySpec::EcdsaP384 => Some(EccCurve::NistP384),
            KeySpec::EcdsaP521 => Some(EccCurve::NistP521),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => None,
        }
    }

    pub(crate) fn rsa_bits(self) -> Option<RsaKeyBits> {
        match self {
            KeySpec::Rsa2048 => Some(RsaKeyBits::Rsa2048),
            KeySpec::Rsa3072 => Some(RsaKeyBits::Rsa3072),
            _ => None,
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => write!(f, "rsa {}", self.bits()),
            _ => write!(f, "ecdsa {}", self.bits()),
        }
    }
}

/// The attributes every storage primary has (TCG templates H-1 and H-2): a restricted
/// decryption key that never leaves this TPM and needs no dictionary-attack protection.
fn storage_attributes(op: &'static str) -> Result<ObjectAttributes> {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(|e| Error::tss(op, e))
}

/// The TCG storage primary key template H-2 (TCG EK Credential Profile / Provisioning
/// Guidance): ECC P-256, SHA-256, AES-128-CFB, and an *empty* unique field. Hierarchy parents
/// in key files stand for exactly this key; any other unique value makes a different key.
pub fn storage_primary() -> Result<Public> {
    let attributes = storage_attributes("building the storage key template")?;
    let parameters = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| Error::tss("building the storage key template", e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| Error::tss("building the storage key template", e))
}

/// The RSA-2048 storage primary that a key file's `rsaParent` TRUE asks for: the H-2
/// attributes with RSA 2048, exponent 0 (65537), AES-128-CFB, no scheme and an empty unique,
/// as openssl_tpm2_engine creates it.
pub fn storage_primary_rsa() -> Result<Public> {
    let op = "building the RSA storage key template";
    let attributes = storage_attributes(op)?;
    let parameters = PublicRsaParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        RsaKeyBits::Rsa2048,
        RsaExponent::default(),
    )
    .build()
    .map_err(|e| Error::tss(op, e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_rsa_parameters(parameters)
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
        .map_err(|e| Error::tss(op, e))
}

/// An unrestricted signing key that can never leave this TPM. Keys without a PIN are
/// exempt from dictionary-attack counting (noDA): there is no PIN to guess, and a stray
/// empty authorization must not lock the user's other keys out.
pub fn signing_key(spec: KeySpec, has_pin: bool) -> Result<Public> {
    let op = "building the key template";
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(!has_pin)
        .with_sign_encrypt(true)
        .build()
        .map_err(|e| Error::tss(op, e))?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    // The scheme stays TPM_ALG_NULL so that the signer picks the hash per signature, as
    // tpm2-openssl does. tss-esapi's builders refuse a NULL scheme on keys they are told
    // are signing keys, so they are not told; the sign attribute above is what the TPM
    // reads.
    let builder = match (spec.ecc_curve(), spec.rsa_bits()) {
        (Some(curve), _) => builder
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new()
                    .with_ecc_scheme(EccScheme::Null)
                    .with_curve(curve)
                    .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                    .build()
                    .map_err(|e| Error::tss(op, e))?,
            )
            .with_ecc_unique_identifier(EccPoint::default()),
        (None, Some(bits)) => builder
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new()
                    .with_scheme(RsaScheme::Null)
                    .with_key_bits(bits)
                    .with_exponent(RsaExponent::default())
                    .build()
                    .map_err(|e| Error::tss(op, e))?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default()),
        (None, None) => unreachable!("every KeySpec is ECC or RSA"),
    };
    builder.build().map_err(|e| Error::tss(op, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_style_type_and_bits() {
        assert_eq!(
            KeySpec::from_type_and_bits("ecdsa", None).ok(),
            Some(KeySpec::EcdsaP256)
        );
        assert_eq!(
            KeySpec::from_type_and_bits("ecdsa", Some(521)).ok(),
            Some(KeySpec::EcdsaP521)
        );
        assert_eq!(
            KeySpec::from_type_and_bits("rsa", None).ok(),
            Some(KeySpec::Rsa2048)
        );
        let err = KeySpec::from_type_and_bits("rsa", Some(4096)).expect_err("4096 refused");
        assert!(err.to_string().contains("2048 or 3072"), "{err}");
        let err = KeySpec::from_type_and_bits("ed25519", None).expect_err("ed25519 refused");
        assert!(err.to_string().contains("-t ecdsa or -t rsa"), "{err}");
    }

    #[test]
    fn storage_primary_has_empty_unique() {
        let public = storage_primary().expect("template builds");
        let Public::Ecc {
            unique,
            object_attributes,
            ..
        } = public
        else {
            panic!("storage primary must be ECC");
        };
        assert!(unique.x().is_empty() && unique.y().is_empty());
        assert!(object_attributes.restricted() && object_attributes.decrypt());
        assert!(object_attributes.no_da() && !object_attributes.sign_encrypt());
    }

    #[test]
    fn pin_keys_are_dictionary_attack_protected() {
        let with_pin = signing_key(KeySpec::EcdsaP256, true).expect("builds");
        let without = signing_key(KeySpec::Rsa2048, false).expect("builds");
        assert!(!with_pin.object_attributes().no_da());
        assert!(without.object_attributes().no_da());
        assert!(with_pin.object_attributes().fixed_tpm());
    }
}
