//! Changing a key's PIN with TPM2_ObjectChangeAuth (TPM 2.0 Part 3, 12.8): the TPM returns
//! a new private blob for the same key under the same parent; the old blob keeps working
//! with the old PIN, so the caller replaces the file that held it.
//!
//! The old PIN authorizes in the HMAC session salted to the parent, and the new one is the
//! command's first parameter, which that session encrypts. Neither crosses the bus in clear.
//! A key's attributes cannot change, noDA included: a key created without a PIN stays
//! exempt from dictionary-attack counting after it gets one.

use ssh_tpm_keyfile::{KeyType, TpmKey};

use crate::device::{auth_value, tpm2b, Tpm};
use crate::error::{Error, Result};
use crate::policy::{pin_need, KeyPolicy, PinNeed};
use crate::public::decode_public;
use crate::secret::Pin;

impl Tpm {
    /// Returns `key` with `new` as its PIN, authorized by `old`. The result is a loadable
    /// key file with the same public part, parent and policies.
    ///
    /// # Errors
    ///
    /// [`Error::WrongPin`] when the TPM rejects `old`; [`Error::PinRequired`] when `old` is
    /// empty and the key needs a PIN; [`Error::Unsupported`] for keys with a policy.
    pub fn change_auth(&mut self, key: &TpmKey, old: &Pin, new: &Pin) -> Result<TpmKey> {
        let result = self.change_auth_once(key, old, new);
        self.note(result)
    }

    fn change_auth_once(&mut self, key: &TpmKey, old: &Pin, new: &Pin) -> Result<TpmKey> {
        if key.key_type == KeyType::Sealed {
            return Err(Error::Unsupported(
                "this file holds TPM-sealed data, not a key; it has no PIN to change".into(),
            ));
        }
        // A policy may not ask for the PIN at all, and may (adminWithPolicy) guard the
        // change itself; such keys are left to the tool that made them.
        if KeyPolicy::of_key(key)?.is_some() {
            return Err(Error::Unsupported(
                "the key has a policy; its PIN cannot be changed here".into(),
            ));
        }
        if old.is_empty() && pin_need(key) == PinNeed::Required {
            return Err(Error::PinRequired);
        }
        let new_auth = auth_value(new)?;
        let public = decode_public(&key.pubkey)?;

        let parent = self.key_parent(key)?;
        let session = self.session(parent)?;
        let handle = self.load(key, public)?;
        self.ctx
            .tr_set_auth(handle.into(), auth_value(old)?)
            .map_err(|e| Error::tss("setting the PIN", e))?;
        let changed = self.ctx.execute_with_session(Some(session), |ctx| {
            ctx.object_change_auth(handle.into(), parent.into(), new_auth)
        });
        let private = match changed {
            Ok(private) => private,
            Err(e) => {
                let error = self.session_failed("changing the PIN", e);
                return Err(self.explain_pin_error(error));
            }
        };
        Ok(TpmKey {
            key_type: KeyType::Loadable,
            empty_auth: new.is_empty(),
            secret: None,
            privkey: tpm2b(private.value()),
            ..key.clone()
        })
    }
}
