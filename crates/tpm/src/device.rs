//! One open TPM: parents, loaded keys and the authorization session stay warm, so that a
//! signature with a key used before costs a single TPM2_Sign (TPM 2.0 Part 3, 20.2).

use std::str::FromStr;

use sha2::Digest as _;
use ssh_key::HashAlg;
use ssh_tpm_keyfile::{handle, KeyType, TpmKey};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType, StartupType};
use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, CapabilityData, Digest, HashScheme, HashcheckTicket, Private, Public, PublicBuffer,
    PublicParameters, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::tss2_esys::{TPM2B_DIGEST, TPMT_TK_HASHCHECK};
use tss_esapi::Context;

use crate::error::{response_kind, retry_busy, Error, Result, BUSY_RETRY};
use crate::policy::{self, pin_need, KeyPolicy, PinNeed};
use crate::public::{decode_public, key_spec, ssh_signature};
use crate::secret::Pin;
use crate::swtpm::EmbeddedSwtpm;
use crate::target::{check_tcti, device_path, TpmTarget};
use crate::template::{signing_key, storage_primary, storage_primary_rsa, KeySpec};

/// Most keys kept loaded at once; beyond this the least recently used is flushed.
const MAX_LOADED: usize = 16;

/// The digest a signature is made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignHash {
    Sha256,
    Sha384,
    Sha512,
}

impl SignHash {
    /// The hash SSH pairs with an ECDSA key (RFC 5656 6.2.1); `None` for RSA, whose hash
    /// the client picks.
    pub fn for_ecdsa(spec: KeySpec) -> Option<Self> {
        match spec {
            KeySpec::EcdsaP256 => Some(SignHash::Sha256),
            KeySpec::EcdsaP384 => Some(SignHash::Sha384),
            KeySpec::EcdsaP521 => Some(SignHash::Sha512),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            SignHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            SignHash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            SignHash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn tpm(self) -> HashingAlgorithm {
        match self {
            SignHash::Sha256 => HashingAlgorithm::Sha256,
            SignHash::Sha384 => HashingAlgorithm::Sha384,
            SignHash::Sha512 => HashingAlgorithm::Sha512,
        }
    }

    fn ssh(self) -> HashAlg {
        match self {
            SignHash::Sha512 => HashAlg::Sha512,
            _ => HashAlg::Sha256,
        }
    }
}

/// The TPM's dictionary-attack state (TPM 2.0 Part 2, 6.13: TPM_PT_PERMANENT inLockout,
/// TPM_PT_LOCKOUT_COUNTER, TPM_PT_MAX_AUTH_FAIL, TPM_PT_LOCKOUT_INTERVAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutStatus {
    pub in_lockout: bool,
    pub failures: u32,
    pub max_failures: u32,
    /// Seconds after which the TPM forgets one failure.
    pub interval_secs: u32,
}

impl LockoutStatus {
    /// Wrong PINs the TPM still accepts before it locks PIN keys.
    pub fn tries_left(&self) -> u32 {
        self.max_failures.saturating_sub(self.failures)
    }

    /// An upper bound on the wait until PINs are accepted again: the TPM forgets one
    /// failure per interval, and lockout ends as soon as one is forgotten.
    pub fn lockout_ends_within(&self) -> Option<u32> {
        (self.in_lockout && self.interval_secs > 0).then_some(self.interval_secs)
    }
}

/// A key the TPM currently holds, found again by its private blob.
struct LoadedKey {
    parent: u32,
    private: Vec<u8>,
    handle: KeyHandle,
    last_used: u64,
}

/// An open connection to a TPM. Not `Send`: keep it on one thread (see [`crate::service`]).
pub struct Tpm {
    // Field order is drop order: the TPM connection closes before the embedded swtpm stops.
    pub(crate) ctx: Context,
    parents: Vec<(u32, KeyHandle)>,
    /// RSA-2048 storage primaries, for key files that set rsaParent.
    rsa_parents: Vec<(u32, KeyHandle)>,
    session: Option<AuthSession>,
    loaded: Vec<LoadedKey>,
    /// Private blobs of importable keys already imported (see [`crate::import`]).
    pub(crate) imported: crate::import::ImportCache,
    clock: u64,
    /// How many keys fit in the TPM beside the parents, once the TPM has said so.
    key_slots: Option<usize>,
    /// Set when the connection failed; the owner should open a new `Tpm`.
    broken: bool,
    embedded: Option<EmbeddedSwtpm>,
    /// Hierarchy passwords (see [`crate::hierarchy`]).
    pub(crate) hierarchy_auth: crate::hierarchy::HierarchyAuth,
}

impl Tpm {
    /// Connects to the TPM, starting the embedded swtpm if that is the target.
    pub fn open(target: &TpmTarget) -> Result<Self> {
        let (tcti, embedded) = match target {
            TpmTarget::Tcti(tcti) => {
                check_tcti(tcti)?;
                if let Some(device) = device_path(tcti).filter(|d| !d.exists()) {
                    return Err(Error::NoTpm(device.to_path_buf()));
                }
                (tcti.clone(), None)
            }
            TpmTarget::Embedded(dir) => {
                let swtpm = EmbeddedSwtpm::start(dir)?;
                (swtpm.tcti(), Some(swtpm))
            }
        };
        let conf = TctiNameConf::from_str(&tcti).map_err(|_| Error::Tcti {
            tcti: tcti.clone(),
            reason: "not a TCTI string; examples: device:/dev/tpmrm0, \
                     swtpm:host=127.0.0.1,port=2321"
                .into(),
        })?;
        let mut ctx = Context::new(conf).map_err(|e| Error::Tcti {
            tcti: tcti.clone(),
            reason: e.to_string(),
        })?;

        // TPM2_Startup doubles as the "is anybody there" probe; a started TPM answers
        // TPM_RC_INITIALIZE, which is fine.
        if let Err(e) = ctx.startup(StartupType::Clear) {
            if response_kind(e) != Some(Tss2ResponseCodeKind::Initialize) {
                return Err(Error::Tcti {
                    tcti,
                    reason: format!("the TPM did not answer ({e})"),
                });
            }
        }
        tracing::debug!(%tcti, "TPM open");
        let tpm = Tpm {
            ctx,
            parents: Vec::new(),
            rsa_parents: Vec::new(),
            session: None,
            loaded: Vec::new(),
            clock: 0,
            key_slots: None,
            broken: false,
            imported: Default::default(),
            embedded,
            hierarchy_auth: Default::default(),
        };
        Ok(tpm)
    }

    /// Whether the connection failed; a new [`Tpm`] must be opened to go on.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the connection broken when `result` says it was lost.
    pub(crate) fn note<T>(&mut self, result: Result<T>) -> Result<T> {
        if matches!(result, Err(Error::ConnectionLost { .. })) {
            self.broken = true;
        }
        result
    }

    /// The key kinds this TPM can create (ECC curves it lists, RSA sizes it accepts).
    pub fn supported(&mut self) -> Result<Vec<KeySpec>> {
        let (caps, _) = self
            .ctx
            .get_capability(CapabilityType::EccCurves, 0, 64)
            .map_err(|e| Error::tss("reading the TPM's ECC curves", e))?;
        let curves = match caps {
            CapabilityData::EccCurves(list) => list.into_inner(),
            _ => Vec::new(),
        };
        let mut supported = Vec::new();
        for spec in KeySpec::ALL {
            let ok = match signing_key(spec, false)? {
                Public::Ecc { parameters, .. } => {
                    curves.iter().any(|c| *c == parameters.ecc_curve().into())
                }
                Public::Rsa { parameters, .. } => self
                    .ctx
                    .test_parms(PublicParameters::Rsa(parameters))
                    .is_ok(),
                _ => false,
            };
            if ok {
                supported.push(spec);
            }
        }
        Ok(supported)
    }

    /// Reads the dictionary-attack state in one TPM2_GetCapability.
    pub fn lockout_status(&mut self) -> Result<LockoutStatus> {
        let result = retry_busy(
            BUSY_RETRY,
            || self.lockout_status_once(),
            std::thread::sleep,
        );
        self.note(result)
    }

    fn lockout_status_once(&mut self) -> Result<LockoutStatus> {
        const PT_PERMANENT: u32 = 0x200;
        const IN_LOCKOUT: u32 = 1 << 9;
        let (caps, _) = self
            .ctx
            .get_capability(CapabilityType::TpmProperties, PT_PERMANENT, 18)
            .map_err(|e| Error::tss("reading the dictionary-attack state", e))?;
        let CapabilityData::TpmProperties(properties) = caps else {
            return Err(Error::Unsupported("the TPM returned no properties".into()));
        };
        let get = |tag: PropertyTag| properties.find(tag).map_or(0, |p| p.value());
        Ok(LockoutStatus {
            in_lockout: get(PropertyTag::Permanent) & IN_LOCKOUT != 0,
            failures: get(PropertyTag::LockoutCounter),
            max_failures: get(PropertyTag::MaxAuthFail),
            interval_secs: get(PropertyTag::LockoutInterval),
        })
    }

    /// Adds what the user needs to know to a PIN error: tries left, or when the lockout
    /// ends. Costs one command, and only on that failure path.
    pub(crate) fn explain_pin_error(&mut self, error: Error) -> Error {
        match error {
            Error::WrongPin { .. } => Error::WrongPin {
                tries_left: self.lockout_status().ok().map(|s| s.tries_left()),
            },
            Error::Lockout { .. } => Error::Lockout {
                retry_in_secs: self
                    .lockout_status()
                    .ok()
                    .and_then(|s| s.lockout_ends_within()),
            },
            other => other,
        }
    }

    /// Creates a signing key under the owner hierarchy's storage key. The PIN travels in
    /// a session salted to that key, with parameter encryption.
    pub fn create_key(&mut self, spec: KeySpec, pin: &Pin) -> Result<TpmKey> {
        self.create_key_under(spec, pin, handle::OWNER)
    }

    /// Creates a signing key under `parent`: a hierarchy's H-2 storage key, or a
    /// persistent storage key.
    pub fn create_key_under(&mut self, spec: KeySpec, pin: &Pin, parent: u32) -> Result<TpmKey> {
        let result = retry_busy(
            BUSY_RETRY,
            || self.create_key_once(spec, pin, parent),
            std::thread::sleep,
        );
        self.note(result)
    }

    fn create_key_once(&mut self, spec: KeySpec, pin: &Pin, parent_handle: u32) -> Result<TpmKey> {
        let template = signing_key(spec, !pin.is_empty())?;
        let parent = self.parent(parent_handle)?;
        let session = self.session(parent)?;
        let auth = auth_value(pin)?;
        let created = self
            .ctx
            .execute_with_session(Some(session), |ctx| {
                ctx.create(parent, template, Some(auth), None, None, None)
            })
            .map_err(|e| self.session_failed("creating the key", e))?;

        let public = PublicBuffer::try_from(created.out_public)
            .and_then(|p| p.marshall())
            .map_err(|e| Error::tss("encoding the new key", e))?;
        let private = tpm2b(created.out_private.value());
        Ok(TpmKey::new_loadable(
            parent_handle,
            public,
            private,
            pin.is_empty(),
        ))
    }

    /// Signs `data` with `key`. A key that needs a PIN is never tried with an empty one.
    pub fn sign(
        &mut self,
        key: &TpmKey,
        pin: &Pin,
        hash: SignHash,
        data: &[u8],
    ) -> Result<ssh_key::Signature> {
        let result = retry_busy(
            BUSY_RETRY,
            || self.sign_once(key, pin, hash, data),
            std::thread::sleep,
        );
        self.note(result)
    }

    fn sign_once(
        &mut self,
        key: &TpmKey,
        pin: &Pin,
        hash: SignHash,
        data: &[u8],
    ) -> Result<ssh_key::Signature> {
        if key.key_type == KeyType::Sealed {
            return Err(Error::Unsupported(
                "this file holds TPM-sealed data, not a key; it cannot sign".into(),
            ));
        }
        // A key with a policy signs in a policy session (see `crate::policy`); a policy
        // this code cannot run is refused before the TPM is asked anything.
        let policy = KeyPolicy::of_key(key)?;
        if pin.is_empty() && pin_need(key) == PinNeed::Required {
            return Err(Error::PinRequired);
        }
        let public = decode_public(&key.pubkey)?;
        let spec = key_spec(&public)?;
        let name_alg = public.name_hashing_algorithm();

        let (session, policy_session) = match &policy {
            Some(policy) => {
                let parent = self.key_parent(key)?;
                let session = policy.start(self, parent, name_alg)?;
                (AuthSession::from(session), Some(session))
            }
            None if pin.is_empty() => (AuthSession::Password, None),
            None => {
                let parent = self.key_parent(key)?;
                (self.session(parent)?, None)
            }
        };
        // Loaded after the policy ran, whose TPM2_LoadExternal may take a key's slot.
        let handle = match self.load(key, public) {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(session) = policy_session {
                    policy::flush(&mut self.ctx, session);
                }
                return Err(e);
            }
        };
        self.ctx
            .tr_set_auth(handle.into(), auth_value(pin)?)
            .map_err(|e| Error::tss("setting the PIN", e))?;

        let digest = Digest::try_from(hash.digest(data))
            .map_err(|e| Error::tss("preparing the digest", e))?;
        let hash_scheme = HashScheme::new(hash.tpm());
        let scheme = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => SignatureScheme::RsaSsa { hash_scheme },
            _ => SignatureScheme::EcDsa { hash_scheme },
        };
        let signed = self.ctx.execute_with_session(Some(session), |ctx| {
            ctx.sign(handle, digest, scheme, null_ticket()?)
        });
        match signed {
            Ok(signature) => {
                if let Some(session) = policy_session {
                    policy::forget(&mut self.ctx, session);
                }
                ssh_signature(spec, hash.ssh(), signature)
            }
            Err(e) => {
                if let Some(session) = policy_session {
                    policy::flush(&mut self.ctx, session);
                }
                let error = policy::sign_error(key, pin, self.session_failed("signing", e));
                Err(self.explain_pin_error(error))
            }
        }
    }

    /// The parent of `key`: the RSA-2048 storage primary of its hierarchy when the file sets
    /// rsaParent (openssl_tpm2_engine's RSA parents), else [`Tpm::parent`].
    pub(crate) fn key_parent(&mut self, key: &TpmKey) -> Result<KeyHandle> {
        if !(key.rsa_parent && handle::is_hierarchy(key.parent)) {
            return self.parent(key.parent);
        }
        if let Some((_, parent)) = self.rsa_parents.iter().find(|(h, _)| *h == key.parent) {
            return Ok(*parent);
        }
        let template = storage_primary_rsa()?;
        let parent =
            self.create_primary_in(key.parent, &template, "creating the RSA storage key")?;
        self.rsa_parents.push((key.parent, parent));
        Ok(parent)
    }

    /// The parent key a key file names: the H-2 storage primary of a hierarchy, created
    /// once per connection, or a persistent key by its handle.
    pub(crate) fn parent(&mut self, parent: u32) -> Result<KeyHandle> {
        if let Some((_, key)) = self.parents.iter().find(|(h, _)| *h == parent) {
            return Ok(*key);
        }
        let key = if handle::is_hierarchy(parent) {
            // One hierarchy storage key at a time: swtpm holds three objects, and keys
            // under several hierarchies would otherwise fill them with parents. Keys stay
            // loaded when their parent goes.
            self.flush_hierarchy_parents();
            let template = storage_primary()?;
            self.create_primary_in(parent, &template, "creating the storage key")?
        } else if handle::is_persistent(parent) {
            let persistent = PersistentTpmHandle::new(parent)
                .map_err(|e| Error::tss("naming the persistent parent", e))?;
            // Reading a persistent object takes an object slot for the while.
            self.with_room(|ctx| ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent)))
                .map_err(|e| match response_kind(e) {
                    Some(Tss2ResponseCodeKind::Handle) => Error::Unsupported(format!(
                        "the parent {parent:#010x} is not in this TPM (make it with \
                         tpm2_evictcontrol; a key file naming it belongs to another TPM, or \
                         its parent was evicted)"
                    )),
                    _ => Error::tss("reading the persistent parent", e),
                })?
                .into()
        } else {
            return Err(Error::Unsupported(format!(
                "parent handle {parent:#010x} is neither a hierarchy nor a persistent key"
            )));
        };
        self.parents.push((parent, key));
        Ok(key)
    }

    /// Flushes the storage primaries (made again when needed), for a command that needs
    /// the room and no parent. Persistent parents take no transient slot and stay.
    pub(crate) fn flush_parents(&mut self) {
        self.flush_hierarchy_parents();
        while self.flush_rsa_parent() {}
    }

    fn flush_hierarchy_parents(&mut self) {
        let ctx = &mut self.ctx;
        self.parents.retain(|(parent, key)| {
            if handle::is_hierarchy(*parent) {
                let _ = ctx.flush_context((*key).into());
                false
            } else {
                true
            }
        });
    }

    /// The HMAC session salted to `salt_key`, started once and reused.
    pub(crate) fn session(&mut self, salt_key: KeyHandle) -> Result<AuthSession> {
        if let Some(session) = self.session {
            return Ok(session);
        }
        let session = self
            .ctx
            .start_auth_session(
                Some(salt_key),
                None,
                None,
                SessionType::Hmac,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| Error::tss("starting an authorization session", e))?
            .ok_or_else(|| Error::Unsupported("the TPM returned no session".into()))?;
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_continue_session(true)
            .build();
        self.ctx
            .tr_sess_set_attributes(session, attributes, mask)
            .map_err(|e| Error::tss("configuring the session", e))?;
        self.session = Some(session);
        Ok(session)
    }

    /// Maps a failed command to an error; the session is dropped in case the failure
    /// left it out of step with the TPM (it is cheap to start another).
    pub(crate) fn session_failed(&mut self, op: &'static str, error: tss_esapi::Error) -> Error {
        self.drop_session();
        Error::tss(op, error)
    }

    fn drop_session(&mut self) {
        if let Some(session) = self.session.take() {
            let handle = tss_esapi::handles::SessionHandle::from(session);
            let _ = self.ctx.flush_context(handle.into());
        }
    }

    /// Loads a key (or finds it loaded), flushing the least recently used key when the
    /// TPM has no room left.
    pub(crate) fn load(&mut self, key: &TpmKey, public: Public) -> Result<KeyHandle> {
        // An importable key is imported on first use; see `crate::import`. A hierarchy's
        // signing key is made again from its template; see `crate::hierarchy`.
        let primary = crate::hierarchy::is_hierarchy_key(key);
        let privkey = match primary {
            true => std::borrow::Cow::Owned(crate::hierarchy::cache_name(key)),
            false => self.loadable_private(key)?,
        };
        self.clock += 1;
        let now = self.clock;
        if let Some(loaded) = self
            .loaded
            .iter_mut()
            .find(|l| l.parent == key.parent && *l.private == *privkey)
        {
            loaded.last_used = now;
            return Ok(loaded.handle);
        }
        if self.loaded.len() >= self.key_slots.unwrap_or(MAX_LOADED) {
            self.flush_least_recent();
        }
        if primary {
            let handle = self.create_hierarchy_key(key)?;
            self.loaded.push(LoadedKey {
                parent: key.parent,
                private: privkey.into_owned(),
                handle,
                last_used: now,
            });
            return Ok(handle);
        }
        let parent = self.key_parent(key)?;
        let private = Private::try_from(tpm2b_contents(&privkey)?.to_vec())
            .map_err(|_| Error::Unsupported("the key's private part is too large".into()))?;
        let handle = self
            .with_room(|ctx| {
                ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.load(parent, private.clone(), public.clone())
                })
            })
            .map_err(|e| Error::tss("loading the key", e))?;
        self.loaded.push(LoadedKey {
            parent: key.parent,
            private: privkey.into_owned(),
            handle,
            last_used: now,
        });
        Ok(handle)
    }

    /// Runs `op`, flushing loaded keys one by one while the TPM says it is out of object
    /// memory (swtpm holds three objects).
    pub(crate) fn with_room<T>(
        &mut self,
        mut op: impl FnMut(&mut Context) -> tss_esapi::Result<T>,
    ) -> tss_esapi::Result<T> {
        loop {
            match op(&mut self.ctx) {
                Err(e) if response_kind(e) == Some(Tss2ResponseCodeKind::ObjectMemory) => {
                    // Learn how many keys fit beside the parents, so that the next load
                    // flushes first instead of paying for a refused command.
                    self.key_slots = Some(self.loaded.len().max(1));
                    if !(self.flush_least_recent() || self.flush_rsa_parent()) {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Flushes an RSA storage primary (made again when needed). Only commands under a
    /// persistent parent need two free slots, and they use no primary: with both primaries
    /// loaded and no key left to flush, swtpm's three slots are otherwise too few.
    fn flush_rsa_parent(&mut self) -> bool {
        let Some((_, parent)) = self.rsa_parents.pop() else {
            return false;
        };
        let _ = self.ctx.flush_context(parent.into());
        true
    }

    fn flush_least_recent(&mut self) -> bool {
        let Some(index) = (0..self.loaded.len()).min_by_key(|&i| self.loaded[i].last_used) else {
            return false;
        };
        let key = self.loaded.swap_remove(index);
        let _ = self.ctx.flush_context(key.handle.into());
        true
    }
}

impl Drop for Tpm {
    /// Leaves the TPM as we found it: swtpm has no resource manager, so objects we
    /// loaded would otherwise stay and fill its three slots. An embedded swtpm also
    /// gets TPM2_Shutdown so that it stops in order.
    fn drop(&mut self) {
        for key in std::mem::take(&mut self.loaded) {
            let _ = self.ctx.flush_context(key.handle.into());
        }
        for (parent, key) in std::mem::take(&mut self.parents) {
            if handle::is_hierarchy(parent) {
                let _ = self.ctx.flush_context(key.into());
            }
        }
        for (_, key) in std::mem::take(&mut self.rsa_parents) {
            let _ = self.ctx.flush_context(key.into());
        }
        self.drop_session();
        if self.embedded.is_some() {
            let _ = self.ctx.shutdown(StartupType::Clear);
        }
    }
}

pub(crate) fn auth_value(pin: &Pin) -> Result<Auth> {
    Auth::try_from(pin.expose().to_vec())
        .map_err(|_| Error::Unsupported("the PIN is too long for a TPM (at most 64 bytes)".into()))
}

/// A "null" hashcheck ticket: the digest was not made by the TPM, which is fine for
/// unrestricted keys (TPM 2.0 Part 2, 10.7.6).
fn null_ticket() -> tss_esapi::Result<HashcheckTicket> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: TPM2B_DIGEST::default(),
    })
}

/// Prefixes `bytes` with its big-endian u16 size (a TPM2B).
pub(crate) fn tpm2b(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The contents of a TPM2B, checking its size prefix.
pub(crate) fn tpm2b_contents(bytes: &[u8]) -> Result<&[u8]> {
    let malformed = || Error::Unsupported("the key file's private part is malformed".into());
    let (size, rest) = bytes.split_first_chunk::<2>().ok_or_else(malformed)?;
    let size = u16::from_be_bytes(*size) as usize;
    if rest.len() != size {
        return Err(malformed());
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm2b_round_trip() {
        let wrapped = tpm2b(b"abc");
        assert_eq!(wrapped, [0, 3, b'a', b'b', b'c']);
        assert_eq!(tpm2b_contents(&wrapped).expect("well formed"), b"abc");
        assert!(tpm2b_contents(&[0, 4, 1]).is_err());
        assert!(tpm2b_contents(&[0]).is_err());
    }

    #[test]
    fn ecdsa_hashes_follow_rfc5656() {
        assert_eq!(
            SignHash::for_ecdsa(KeySpec::EcdsaP384),
            Some(SignHash::Sha384)
        );
        assert_eq!(SignHash::for_ecdsa(KeySpec::Rsa2048), None);
        assert_eq!(SignHash::Sha384.digest(b"").len(), 48);
    }
}
