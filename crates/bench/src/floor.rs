//! The floor: TPM2_Sign (TPM 2.0 Part 3, 20.2) on a key that is already loaded, sent
//! straight from tss-esapi with no agent in between. With a PIN it goes in the kind of
//! session our agent uses (HMAC, salted to the storage key, parameter encryption), so the
//! difference between the two floors is the session crypto of tpm2-tss.

use std::str::FromStr;
use std::time::{Duration, Instant};

use ssh_key::sha2::{Digest as _, Sha256, Sha384, Sha512};
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::KeySpec;
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, Digest, HashScheme, HashcheckTicket, Private, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::{TPM2B_DIGEST, TPMT_TK_HASHCHECK};
use tss_esapi::Context;

use crate::error::{Error, Result};

/// A key loaded for the floor measurement.
pub struct RawKey {
    handle: KeyHandle,
    spec: KeySpec,
}

/// A TPM reached through tss-esapi alone, with the owner's storage key loaded.
pub struct RawTpm {
    ctx: Context,
    primary: KeyHandle,
    session: Option<AuthSession>,
    /// Keys loaded and not yet unloaded, flushed on drop.
    loaded: Vec<KeyHandle>,
}

impl RawTpm {
    /// Connects and creates the storage key that key files with an owner parent name.
    pub fn open(tcti: &str) -> Result<Self> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| Error::tpm("TCTI", e))?;
        let mut ctx = Context::new(conf).map_err(|e| Error::tpm("connecting", e))?;
        // The same H-2 storage key the agent uses, so the floor loads the same key files.
        let template =
            ssh_tpm_tpm::storage_primary().map_err(|e| Error::tpm("storage key template", e))?;
        let primary = ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(|e| Error::tpm("creating the storage key", e))?
            .key_handle;
        Ok(RawTpm {
            ctx,
            primary,
            session: None,
            loaded: Vec::new(),
        })
    }

    /// TPM2_Load of a key file under the storage key.
    pub fn load(&mut self, key: &TpmKey) -> Result<RawKey> {
        let public = ssh_tpm_tpm::decode_public(&key.pubkey).map_err(|e| Error::tpm("key", e))?;
        let spec = ssh_tpm_tpm::key_spec(&public).map_err(|e| Error::tpm("key", e))?;
        let private = key
            .privkey
            .get(2..)
            .and_then(|bytes| Private::try_from(bytes.to_vec()).ok())
            .ok_or_else(|| Error::tpm("key", "malformed private part"))?;
        let primary = self.primary;
        let handle = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.load(primary, private, public)
            })
            .map_err(|e| Error::tpm("loading a key", e))?;
        self.loaded.push(handle);
        Ok(RawKey { handle, spec })
    }

    /// TPM2_FlushContext of a loaded key.
    pub fn unload(&mut self, key: RawKey) {
        self.loaded.retain(|h| *h != key.handle);
        let _ = self.ctx.flush_context(key.handle.into());
    }

    /// Signs the hash of `data` the way SSH wants it for this key (SHA-512 for RSA, as
    /// rsa-sha2-512). An empty `pin` uses a password session, any other the salted one.
    pub fn sign(&mut self, key: &RawKey, pin: &[u8], data: &[u8]) -> Result<Duration> {
        let (digest, hash) = match key.spec {
            KeySpec::EcdsaP256 => (Sha256::digest(data).to_vec(), HashingAlgorithm::Sha256),
            KeySpec::EcdsaP384 => (Sha384::digest(data).to_vec(), HashingAlgorithm::Sha384),
            _ => (Sha512::digest(data).to_vec(), HashingAlgorithm::Sha512),
        };
        let hash_scheme = HashScheme::new(hash);
        let scheme = match key.spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => SignatureScheme::RsaSsa { hash_scheme },
            _ => SignatureScheme::EcDsa { hash_scheme },
        };
        let session = if pin.is_empty() {
            AuthSession::Password
        } else {
            self.session()?
        };
        let auth = Auth::try_from(pin.to_vec()).map_err(|e| Error::tpm("PIN", e))?;
        let digest = Digest::try_from(digest).map_err(|e| Error::tpm("digest", e))?;
        let ticket = null_ticket()?;

        let started = Instant::now();
        self.ctx
            .tr_set_auth(key.handle.into(), auth)
            .map_err(|e| Error::tpm("setting the PIN", e))?;
        let handle = key.handle;
        self.ctx
            .execute_with_session(Some(session), |ctx| {
                ctx.sign(handle, digest, scheme, ticket)
            })
            .map_err(|e| Error::tpm("signing", e))?;
        Ok(started.elapsed())
    }

    /// An HMAC session salted to the storage key, with parameter encryption, started
    /// once (as our agent does).
    fn session(&mut self) -> Result<AuthSession> {
        if let Some(session) = self.session {
            return Ok(session);
        }
        let session = self
            .ctx
            .start_auth_session(
                Some(self.primary),
                None,
                None,
                SessionType::Hmac,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| Error::tpm("starting a session", e))?
            .ok_or_else(|| Error::tpm("starting a session", "no session returned"))?;
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_continue_session(true)
            .build();
        self.ctx
            .tr_sess_set_attributes(session, attributes, mask)
            .map_err(|e| Error::tpm("configuring the session", e))?;
        self.session = Some(session);
        Ok(session)
    }
}

impl Drop for RawTpm {
    /// swtpm has no resource manager: leave no object or session behind.
    fn drop(&mut self) {
        for key in std::mem::take(&mut self.loaded) {
            let _ = self.ctx.flush_context(key.into());
        }
        if let Some(session) = self.session.take() {
            let handle = tss_esapi::handles::SessionHandle::from(session);
            let _ = self.ctx.flush_context(handle.into());
        }
        let _ = self.ctx.flush_context(self.primary.into());
    }
}

/// The null ticket for a digest the TPM did not make (Part 2, 10.7.6).
fn null_ticket() -> Result<HashcheckTicket> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: TPM2B_DIGEST::default(),
    })
    .map_err(|e| Error::tpm("ticket", e))
}
