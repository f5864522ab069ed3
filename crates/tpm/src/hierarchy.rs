//! The TPM's hierarchies as parents: creating a primary key under one (TPM2_CreatePrimary,
//! TPM 2.0 Part 3, 24.1) with the hierarchy's password when it has one.
//!
//! The owner password authorizes in the HMAC session salted to the null hierarchy's storage
//! key (whose hierarchy never has a password), so it does not cross the bus in clear. An
//! authorization failure of TPM2_CreatePrimary can only be the hierarchy's: no other handle
//! of that command is authorized. It is reported as such, never as a wrong PIN.

use ssh_tpm_keyfile::handle;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::Public;

use crate::device::{auth_value, Tpm};
use crate::error::{response_kind, Error, Result};
use crate::secret::Pin;

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
            .map(|created| created.key_handle)
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
