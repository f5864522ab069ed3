//! The TPM's hierarchies: creating a primary key under one (TPM2_CreatePrimary, TPM 2.0
//! Part 3, 24.1) with the hierarchy's password when it has one, for storage parents and for
//! the hierarchy signing keys of `ssh-tpm-agent --hierarchy`.
//!
//! The owner password authorizes in the HMAC session salted to the null hierarchy's storage
//! key (whose hierarchy never has a password), so it does not cross the bus in clear. An
//! authorization failure of TPM2_CreatePrimary can only be the hierarchy's: no other handle
//! of that command is authorized. It is reported as such, never as a wrong PIN.

use ssh_tpm_keyfile::{handle, TpmKey};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Public, PublicBuffer};
use tss_esapi::traits::Marshall;

use crate::device::{auth_value, Tpm};
use crate::error::{response_kind, Error, Result};
use crate::public::{decode_public, key_spec};
use crate::secret::Pin;
use crate::template::{signing_key, KeySpec};

/// The hierarchy passwords a [`Tpm`] knows.
#[derive(Debug, Default)]
pub(crate) struct HierarchyAuth {
    owner: Pin,
}

impl Tpm {
    /// Sets the owner hierarchy's password, used when a storage or hierarchy key is created
    /// under the owner hierarchy. Empty means none, the TPM's default.
    pub fn set_owner_password(&mut self, password: Pin) {
        self.hierarchy_auth.owner = password;
    }

    /// Creates `template` as a primary key of the hierarchy `hierarchy_handle` (a handle of
    /// [`handle`]), authorized by that hierarchy's password.
    pub(crate) fn create_primary_in(
        &mut self,
        hierarchy_handle: u32,
        template: &Public,
        op: &'static str,
    ) -> Result<KeyHandle> {
        self.create_primary_with_public(hierarchy_handle, template, op)
            .map(|(handle, _)| handle)
    }

    /// [`Tpm::create_primary_in`], also returning the new key's public area.
    fn create_primary_with_public(
        &mut self,
        hierarchy_handle: u32,
        template: &Public,
        op: &'static str,
    ) -> Result<(KeyHandle, Public)> {
        let hierarchy = hierarchy_of(hierarchy_handle);
        let password = match hierarchy {
            Hierarchy::Owner => self.hierarchy_auth.owner.clone(),
            _ => Pin::empty(),
        };
        let session = if password.is_empty() {
            AuthSession::Password
        } else {
            let salt = self.parent(handle::NULL)?;
            let session = self.session(salt)?;
            self.ctx
                .tr_set_auth(hierarchy.into(), auth_value(&password)?)
                .map_err(|e| Error::tss("setting the owner password", e))?;
            session
        };
        let created = self.with_room(|ctx| {
            ctx.execute_with_session(Some(session), |ctx| {
                ctx.create_primary(hierarchy, template.clone(), None, None, None, None)
            })
            .map(|created| (created.key_handle, created.out_public))
        });
        created.map_err(|e| match response_kind(e) {
            Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth) => {
                self.session_failed(op, e);
                Error::HierarchyPassword {
                    hierarchy: hierarchy_name(hierarchy_handle),
                    given: !password.is_empty(),
                }
            }
            _ if !password.is_empty() => self.session_failed(op, e),
            _ => Error::tss(op, e),
        })
    }
}

impl Tpm {
    /// The signing keys of a hierarchy, as `ssh-tpm-agent --hierarchy` serves them: an
    /// ECDSA P-256 and an RSA-2048 primary made from fixed templates (unrestricted, noDA,
    /// no PIN), so that one TPM always yields the same two keys (the null hierarchy's change
    /// at every TPM reset). The key files returned have an empty private part: they stand
    /// for the primary, which is made again whenever it is needed.
    pub fn hierarchy_keys(&mut self, hierarchy_handle: u32) -> Result<Vec<TpmKey>> {
        let result = self.hierarchy_keys_once(hierarchy_handle);
        self.note(result)
    }

    fn hierarchy_keys_once(&mut self, hierarchy_handle: u32) -> Result<Vec<TpmKey>> {
        if !handle::is_hierarchy(hierarchy_handle) {
            return Err(Error::Unsupported(format!(
                "{hierarchy_handle:#010x} is not a hierarchy"
            )));
        }
        let mut keys = Vec::new();
        for spec in HIERARCHY_KEYS {
            let (key_handle, public) = self.create_signing_primary(hierarchy_handle, spec)?;
            let _ = self.ctx.flush_context(key_handle.into());
            keys.push(TpmKey::new_loadable(
                hierarchy_handle,
                public,
                Vec::new(),
                true,
            ));
        }
        Ok(keys)
    }

    /// Makes the hierarchy signing key `key` stands for (see [`is_hierarchy_key`]), checking
    /// that this TPM makes the same key.
    pub(crate) fn create_hierarchy_key(&mut self, key: &TpmKey) -> Result<KeyHandle> {
        let spec = key_spec(&decode_public(&key.pubkey)?)?;
        let (key_handle, public) = self.create_signing_primary(key.parent, spec)?;
        if public != key.pubkey {
            let _ = self.ctx.flush_context(key_handle.into());
            return Err(Error::ForeignKey);
        }
        Ok(key_handle)
    }

    /// Creates the signing primary of `spec` under a hierarchy; returns it with its
    /// TPM2B_PUBLIC.
    fn create_signing_primary(
        &mut self,
        hierarchy_handle: u32,
        spec: KeySpec,
    ) -> Result<(KeyHandle, Vec<u8>)> {
        let template = signing_key(spec, false)?;
        let op = "creating the hierarchy key";
        let (key_handle, public) =
            self.create_primary_with_public(hierarchy_handle, &template, op)?;
        let public = PublicBuffer::try_from(public)
            .and_then(|p| p.marshall())
            .map_err(|e| Error::tss("encoding the hierarchy key", e))?;
        Ok((key_handle, public))
    }
}

/// The keys a hierarchy serves, as the Go ssh-tpm-agent's `--hierarchy` does.
const HIERARCHY_KEYS: [KeySpec; 2] = [KeySpec::EcdsaP256, KeySpec::Rsa2048];

/// Whether `key` stands for a hierarchy's signing primary: a hierarchy parent and no
/// private part, which no key file of a real key has.
pub(crate) fn is_hierarchy_key(key: &TpmKey) -> bool {
    key.privkey.is_empty() && handle::is_hierarchy(key.parent)
}

/// What the loaded-key cache knows a hierarchy key by, in place of a private blob.
pub(crate) fn cache_name(key: &TpmKey) -> Vec<u8> {
    [b"hierarchy-primary:".as_slice(), &key.pubkey].concat()
}

/// The hierarchy a hierarchy handle names; the owner's for anything else.
pub(crate) fn hierarchy_of(hierarchy_handle: u32) -> Hierarchy {
    match hierarchy_handle {
        handle::ENDORSEMENT => Hierarchy::Endorsement,
        handle::NULL => Hierarchy::Null,
        handle::PLATFORM => Hierarchy::Platform,
        _ => Hierarchy::Owner,
    }
}

/// `owner`, `endorsement`, `null` or `platform`.
pub fn hierarchy_name(hierarchy_handle: u32) -> &'static str {
    match hierarchy_handle {
        handle::ENDORSEMENT => "endorsement",
        handle::NULL => "null",
        handle::PLATFORM => "platform",
        _ => "owner",
    }
}
