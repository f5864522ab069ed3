//! Bringing keys into a TPM with TPM2_Import (TPM 2.0 Part 3, 13.3): private keys read from
//! files ([`ExternalKey`]), and importable key files (OID 2.23.133.10.1.4) wrapped for this
//! TPM by [`crate::wrap`] on another machine.
//!
//! An imported key becomes an ordinary TPM object under its parent, loadable like a created
//! one. It differs in its attributes: the TPM imports no object that is fixedTPM or
//! fixedParent (Part 1, 23.3.1), and it was not made by the TPM, so it is not
//! sensitiveDataOrigin either. It gets userWithAuth and sign, and noDA when it has no PIN,
//! as created keys do. Its authPolicy is empty, so TPM2_Duplicate (which needs a policy
//! session) can never take it out again.
//!
//! A private key from a file travels to the TPM inside an inner wrapper (Part 1, 23.3.2.3):
//! AES-128-CFB under a fresh key that itself travels encrypted by the salted session, so
//! neither the private key nor its new PIN crosses the bus in clear.

use std::borrow::Cow;

use sha2::Digest as _;
use ssh_tpm_keyfile::{KeyType, TpmKey};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Data, EccParameter, EccPoint, EncryptedSecret, Private, Public, PublicBuilder, PublicKeyRsa,
    PublicRsaParametersBuilder, RsaExponent, RsaScheme, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;
use zeroize::Zeroizing;

use crate::device::{auth_value, tpm2b, tpm2b_contents, Tpm};
use crate::error::{Error, Result};
use crate::external::{ExternalKey, Material};
use crate::public::decode_public;
use crate::secret::Pin;
use crate::template::signing_key;
use crate::wrap::{cfb_encrypt, random_bytes};

/// TPM_ALG_RSA and TPM_ALG_ECC (Part 2, 6.3), as TPMT_SENSITIVE's sensitiveType.
const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
/// TPM_ALG_SHA256, the nameAlg of every key we make.
const ALG_SHA256: u16 = 0x000B;

/// Importable keys remembered at once; each is a few hundred bytes.
const MAX_IMPORTED: usize = 64;

/// The TPM private blobs of importable keys already imported in this connection, so that
/// an importable key costs one TPM2_Import per connection, not one per signature.
#[derive(Default)]
pub(crate) struct ImportCache {
    entries: Vec<Imported>,
}

struct Imported {
    parent: u32,
    duplicate: Vec<u8>,
    seed: Vec<u8>,
    /// TPM2B_PRIVATE as TPM2_Import returned it, ready for TPM2_Load.
    private: Vec<u8>,
}

impl ImportCache {
    fn find(&self, key: &TpmKey) -> Option<&[u8]> {
        let seed = key.secret.as_deref().unwrap_or_default();
        self.entries
            .iter()
            .find(|e| e.parent == key.parent && e.duplicate == key.privkey && e.seed == seed)
            .map(|e| e.private.as_slice())
    }

    fn insert(&mut self, key: &TpmKey, private: Vec<u8>) {
        if self.entries.len() >= MAX_IMPORTED {
            self.entries.remove(0);
        }
        self.entries.push(Imported {
            parent: key.parent,
            duplicate: key.privkey.clone(),
            seed: key.secret.clone().unwrap_or_default(),
            private,
        });
    }
}

impl Tpm {
    /// Imports a private key under `parent` (a hierarchy's H-2 storage key or a persistent
    /// storage key), with `pin` as its new PIN. The result is a loadable key file.
    pub fn import_key(&mut self, key: &ExternalKey, pin: &Pin, parent: u32) -> Result<TpmKey> {
        let result = self.import_key_once(key, pin, parent);
        self.note(result)
    }

    fn import_key_once(
        &mut self,
        key: &ExternalKey,
        pin: &Pin,
        parent_handle: u32,
    ) -> Result<TpmKey> {
        auth_value(pin)?;
        let public = imported_public(key, !pin.is_empty())?;
        let name = object_name(&public)?;
        let sensitive = sensitive_area(key, pin)?;
        let inner_key = random_bytes(16)?;
        let duplicate = inner_wrap(&sensitive, &name, &inner_key);

        let parent = self.parent(parent_handle)?;
        let session = self.session(parent)?;
        let imported = self
            .ctx
            .execute_with_session(Some(session), |ctx| {
                ctx.import(
                    parent.into(),
                    Some(Data::try_from(inner_key.to_vec())?),
                    public.clone(),
                    Private::try_from(duplicate.to_vec())?,
                    EncryptedSecret::default(),
                    SymmetricDefinitionObject::AES_128_CFB,
                )
            })
            .map_err(|e| self.session_failed("importing the key", e))?;

        let public = tss_esapi::structures::PublicBuffer::try_from(public)
            .and_then(|p| p.marshall())
            .map_err(|e| Error::tss("encoding the imported key", e))?;
        Ok(TpmKey::new_loadable(
            parent_handle,
            public,
            tpm2b(imported.value()),
            pin.is_empty(),
        ))
    }

    /// Imports an importable key file (made by `ssh-tpm-keygen --wrap` or another tool for
    /// this TPM) and returns the loadable key file that replaces it.
    pub fn import_importable(&mut self, key: &TpmKey) -> Result<TpmKey> {
        if key.key_type != KeyType::Importable {
            return Err(Error::Unsupported(
                "this key file is not an importable key; there is nothing to import".into(),
            ));
        }
        let result = self.import_duplicate(key);
        let private = self.note(result)?;
        Ok(TpmKey {
            key_type: KeyType::Loadable,
            secret: None,
            privkey: private,
            ..key.clone()
        })
    }

    /// The TPM2B_PRIVATE that TPM2_Load takes for `key`: the key file's own for a loadable
    /// key; for an importable key, the result of importing it, done once per connection.
    pub(crate) fn loadable_private<'k>(&mut self, key: &'k TpmKey) -> Result<Cow<'k, [u8]>> {
        if key.key_type != KeyType::Importable {
            return Ok(Cow::Borrowed(&key.privkey));
        }
        if let Some(private) = self.imported.find(key) {
            return Ok(Cow::Owned(private.to_vec()));
        }
        let private = self.import_duplicate(key)?;
        tracing::debug!(parent = key.parent, "imported an importable key");
        self.imported.insert(key, private.clone());
        Ok(Cow::Owned(private))
    }

    /// TPM2_Import of an importable key file: outer wrapper, seed encrypted to the parent,
    /// no inner wrapper (the key file has no place for its key).
    fn import_duplicate(&mut self, key: &TpmKey) -> Result<Vec<u8>> {
        let seed = key.secret.as_ref().ok_or_else(|| {
            Error::Unsupported("the importable key file has no `secret` (encrypted seed)".into())
        })?;
        let seed = EncryptedSecret::try_from(seed.clone()).map_err(|_| {
            Error::Unsupported("the importable key's encrypted seed is too large".into())
        })?;
        let public = decode_public(&key.pubkey)?;
        let duplicate = Private::try_from(tpm2b_contents(&key.privkey)?.to_vec())
            .map_err(|_| Error::Unsupported("the key's private part is too large".into()))?;

        let parent = self.parent(key.parent)?;
        self.with_room(|ctx| {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.import(
                    parent.into(),
                    None,
                    public.clone(),
                    duplicate.clone(),
                    seed.clone(),
                    SymmetricDefinitionObject::Null,
                )
            })
        })
        .map(|private| tpm2b(private.value()))
        .map_err(|e| {
            let refused = |why: String| {
                Error::Unsupported(format!(
                    "the TPM refused to import the key ({why}); it was wrapped for another \
                     TPM, or for another parent than {:#010x}",
                    key.parent
                ))
            };
            match Error::tss("importing the key", e) {
                Error::Tss { source, .. } => refused(source.to_string()),
                Error::ForeignKey => refused("integrity check failed".into()),
                other => other,
            }
        })
    }
}

/// The public area of an imported signing key (TPM 2.0 Part 2, 12.2.4): the parameters of
/// a created key, the attributes an imported object may have, and the key's own public
/// point or modulus as unique.
pub(crate) fn imported_public(key: &ExternalKey, has_pin: bool) -> Result<Public> {
    let op = "building the imported key's public area";
    let attributes = ObjectAttributesBuilder::new()
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_no_da(!has_pin)
        .build()
        .map_err(|e| Error::tss(op, e))?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    let too_long = |_| Error::Unsupported("the key's public part is too long for a TPM".into());
    let builder = match (signing_key(key.spec(), has_pin)?, key.material()) {
        (Public::Ecc { parameters, .. }, Material::Ecc { x, y, .. }) => {
            let x = EccParameter::try_from(x.clone()).map_err(too_long)?;
            let y = EccParameter::try_from(y.clone()).map_err(too_long)?;
            builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(parameters)
                .with_ecc_unique_identifier(EccPoint::new(x, y))
        }
        (Public::Rsa { parameters, .. }, Material::Rsa { n, exponent, .. }) => {
            // 0 stands for the default exponent 65537 (Part 2, 12.2.3.5).
            let exponent = match *exponent {
                65537 => RsaExponent::ZERO_EXPONENT,
                e => RsaExponent::create(e).map_err(|_| {
                    Error::Unsupported(format!("the TPM cannot take RSA exponent {e}"))
                })?,
            };
            let parameters = PublicRsaParametersBuilder::new()
                .with_scheme(RsaScheme::Null)
                .with_key_bits(parameters.key_bits())
                .with_exponent(exponent)
                .build()
                .map_err(|e| Error::tss(op, e))?;
            builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(parameters)
                .with_rsa_unique_identifier(PublicKeyRsa::try_from(n.clone()).map_err(too_long)?)
        }
        _ => unreachable!("signing_key follows the key's spec"),
    };
    builder.build().map_err(|e| Error::tss(op, e))
}

/// The object's Name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC) (Part 1, 16).
pub(crate) fn object_name(public: &Public) -> Result<Vec<u8>> {
    let marshalled = public
        .marshall()
        .map_err(|e| Error::tss("encoding the key's public area", e))?;
    let mut name = ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&sha2::Sha256::digest(&marshalled));
    Ok(name)
}

/// TPM2B_SENSITIVE (Part 2, 12.3.7) of `key` with `pin` as its authValue: sensitiveType,
/// authValue, seedValue (the obfuscation value of an asymmetric key: random, of the nameAlg's
/// digest size), and the private scalar or prime.
pub(crate) fn sensitive_area(key: &ExternalKey, pin: &Pin) -> Result<Zeroizing<Vec<u8>>> {
    let (kind, private) = match key.material() {
        Material::Ecc { d, .. } => (ALG_ECC, d),
        Material::Rsa { prime, .. } => (ALG_RSA, prime),
    };
    let seed_value = random_bytes(32)?;
    let mut area = Zeroizing::new(Vec::with_capacity(8 + 64 + 32 + 256));
    area.extend_from_slice(&kind.to_be_bytes());
    put_tpm2b(&mut area, pin.expose());
    put_tpm2b(&mut area, &seed_value);
    put_tpm2b(&mut area, private.expose());
    let mut sized = Zeroizing::new(Vec::with_capacity(2 + area.len()));
    put_tpm2b(&mut sized, &area);
    Ok(sized)
}

/// The inner duplication wrapper (Part 1, 23.3.2.3): CFB(innerKey, 0, TPM2B(innerIntegrity)
/// ‖ sensitive) with innerIntegrity = H_nameAlg(sensitive ‖ name).
fn inner_wrap(sensitive: &[u8], name: &[u8], inner_key: &[u8]) -> Zeroizing<Vec<u8>> {
    let integrity = sha2::Sha256::new()
        .chain_update(sensitive)
        .chain_update(name)
        .finalize();
    let mut wrapped = Zeroizing::new(Vec::with_capacity(2 + integrity.len() + sensitive.len()));
    put_tpm2b(&mut wrapped, &integrity);
    wrapped.extend_from_slice(sensitive);
    cfb_encrypt(inner_key, &mut wrapped);
    wrapped
}

/// Appends a TPM2B: big-endian u16 size, then the bytes.
pub(crate) fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A P-256 key for tests here and in [`crate::wrap`].
    pub(crate) fn p256_key() -> ExternalKey {
        // A throwaway test key: `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
            MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2/EdKdN3mL02dAqh\n\
            0Juz4WbsIEKOpzR4uRTInNkgiCuhRANCAAScEYvAHeWuWiWU59elI0AI6/z0xi1l\n\
            yQgmKMB4a6PEAtqSETy4rQgWF17n36WtxTQ4S+J4QP73/sbHhKMDRFO5\n\
            -----END PRIVATE KEY-----\n";
        ExternalKey::from_bytes(pem.as_bytes(), None).unwrap()
    }

    #[test]
    fn imported_keys_have_importable_attributes() {
        let key = p256_key();
        let public = imported_public(&key, true).unwrap();
        let attributes = public.object_attributes();
        assert!(!attributes.fixed_tpm() && !attributes.fixed_parent());
        assert!(!attributes.sensitive_data_origin());
        assert!(attributes.user_with_auth() && attributes.sign_encrypt());
        assert!(
            !attributes.no_da(),
            "a PIN key is dictionary-attack protected"
        );
        assert!(imported_public(&key, false)
            .unwrap()
            .object_attributes()
            .no_da());
        let Public::Ecc { unique, .. } = public else {
            panic!("ECC")
        };
        assert_eq!(unique.x().value().len(), 32);
    }

    #[test]
    fn sensitive_area_layout() {
        let key = p256_key();
        let pin = Pin::from("1234".to_string());
        let area = sensitive_area(&key, &pin).unwrap();
        // size, type, authValue, seedValue, ecc scalar
        assert_eq!(area.len(), 2 + 2 + (2 + 4) + (2 + 32) + (2 + 32));
        assert_eq!(
            u16::from_be_bytes([area[0], area[1]]) as usize,
            area.len() - 2
        );
        assert_eq!(area[2..4], ALG_ECC.to_be_bytes());
        assert_eq!(&area[4..10], b"\x00\x041234");
    }

    #[test]
    fn name_is_sha256_of_the_public_area() {
        let public = imported_public(&p256_key(), false).unwrap();
        let name = object_name(&public).unwrap();
        assert_eq!(name.len(), 34);
        assert_eq!(name[..2], [0x00, 0x0B]);
    }

    #[test]
    fn inner_wrap_round_trips() {
        let sensitive = b"\x00\x03abc";
        let name = [0u8, 0x0B, 1, 2];
        let key = [9u8; 16];
        let mut wrapped = inner_wrap(sensitive, &name, &key).to_vec();
        crate::wrap::cfb_decrypt(&key, &mut wrapped);
        assert_eq!(&wrapped[..2], [0, 32]);
        assert_eq!(&wrapped[34..], sensitive);
        let integrity = sha2::Sha256::new()
            .chain_update(sensitive)
            .chain_update(name)
            .finalize();
        assert_eq!(&wrapped[2..34], integrity.as_slice());
    }
}
