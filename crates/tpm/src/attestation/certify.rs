//! TPM2_Certify (TPM 2.0 Part 3, 18.2): the AK signs that an SSH key is loaded in this TPM,
//! naming the key and the caller's qualifying data.
//!
//! swtpm holds three objects: the key's parent, the key and the AK fit, and when they do
//! not, the storage parents go first (the key no longer needs its parent once loaded).

use ssh_tpm_keyfile::{KeyType, TpmKey};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::Data;
use tss_esapi::traits::Marshall as _;

use super::{AkTemplate, Attestation};
use crate::device::{auth_value, Tpm};
use crate::error::{response_kind, Error, Result};
use crate::policy::{self, pin_need, PinNeed};
use crate::public::decode_public;
use crate::secret::Pin;

impl Tpm {
    pub(crate) fn certify_key_once(
        &mut self,
        key: &TpmKey,
        pin: &Pin,
        ak: AkTemplate,
        qualifying_data: &[u8],
    ) -> Result<Attestation> {
        if key.key_type == KeyType::Sealed {
            return Err(Error::Unsupported(
                "this file holds TPM-sealed data, not a key; it cannot be certified".into(),
            ));
        }
        if !key.policy.is_empty() || !key.auth_policy.is_empty() {
            return Err(Error::Unsupported(
                "certifying policy-bound keys is not supported yet; request a certificate for \
                 a key without a policy"
                    .into(),
            ));
        }
        if pin.is_empty() && pin_need(key) == PinNeed::Required {
            return Err(Error::PinRequired);
        }
        let data = qualifying_data_of(qualifying_data)?;
        let public = decode_public(&key.pubkey)?;

        // The PIN travels in the session salted to the key's parent, started while the
        // parent is surely loaded.
        let session = match pin.is_empty() {
            true => AuthSession::Password,
            false => {
                let parent = self.key_parent(key)?;
                self.session(parent)?
            }
        };
        self.load(key, public.clone())?;
        let ak_handle = self.create_ak_beside_key(ak)?;
        let result = self
            .load(key, public)
            .and_then(|handle| self.certify_with(key, pin, session, handle, ak_handle, data));
        self.flush_object(ak_handle);
        result
    }

    /// Creates the AK next to a loaded key: if the TPM is full, the storage parents are
    /// flushed before any loaded key.
    fn create_ak_beside_key(&mut self, ak: AkTemplate) -> Result<KeyHandle> {
        let template = ak.template()?;
        let first = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(
                    Hierarchy::Endorsement,
                    template.clone(),
                    None,
                    None,
                    None,
                    None,
                )
            });
        match first {
            Ok(created) => Ok(created.key_handle),
            Err(e) if response_kind(e) == Some(Tss2ResponseCodeKind::ObjectMemory) => {
                self.flush_parents();
                self.create_ak(ak)
            }
            // Made again through the common path, which words the errors.
            Err(_) => self.create_ak(ak),
        }
    }

    fn certify_with(
        &mut self,
        key: &TpmKey,
        pin: &Pin,
        session: AuthSession,
        handle: KeyHandle,
        ak_handle: KeyHandle,
        data: Data,
    ) -> Result<Attestation> {
        self.ctx
            .tr_set_auth(handle.into(), auth_value(pin)?)
            .map_err(|e| Error::tss("setting the PIN", e))?;
        let certified = self
            .ctx
            .execute_with_sessions((Some(session), Some(AuthSession::Password), None), |ctx| {
                ctx.certify(handle.into(), ak_handle, data, AkTemplate::scheme())
            });
        match certified {
            Ok((attest, signature)) => attestation(&attest, &signature),
            Err(e) => {
                let error = policy::sign_error(key, pin, self.session_failed("certifying", e));
                Err(self.explain_pin_error(error))
            }
        }
    }
}

/// The qualifying data as a TPM2B_DATA (at most 64 bytes, the size of the largest digest).
pub(crate) fn qualifying_data_of(bytes: &[u8]) -> Result<Data> {
    Data::try_from(bytes.to_vec()).map_err(|_| {
        Error::Unsupported(format!(
            "qualifying data of {} bytes is too long for the TPM (at most 64)",
            bytes.len()
        ))
    })
}

/// The TPM's answer in wire form.
pub(crate) fn attestation(
    attest: &tss_esapi::structures::Attest,
    signature: &tss_esapi::structures::Signature,
) -> Result<Attestation> {
    let encode = |e| Error::tss("encoding the attestation", e);
    Ok(Attestation {
        attest: attest.marshall().map_err(encode)?,
        signature: signature.marshall().map_err(encode)?,
    })
}
