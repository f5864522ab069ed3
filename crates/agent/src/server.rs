//! Serving the agent protocol (draft-miller-ssh-agent, OpenSSH PROTOCOL.agent) on a Unix
//! socket: framing, dispatch, and the requests this agent answers. Requests for keys it does
//! not hold go to the other agents given with `-A` (see [`forward`]).

mod forward;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh_agent_lib::proto::extension::QueryResponse;
use ssh_agent_lib::proto::{Extension, Request, Response};
use ssh_encoding::{Decode, Encode};
use ssh_tpm_tpm::{KeySpec, Pin, PinNeed, SignHash, TpmService};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::OwnedMutexGuard;
use zeroize::Zeroizing;

use crate::addkey;
use crate::askpass;
use crate::destination::{self, Binding};
use crate::error::{Error, Result};
use crate::keyring::{AgentKey, Keyring};
use crate::peer::Peer;
use crate::pincache::PinCache;
use crate::socket;
use crate::upstream::{self, Upstreams};

/// Largest message accepted, as OpenSSH's ssh-agent (AGENT_MAX_LEN, 256 KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Message numbers (draft-miller-ssh-agent 6.1) of the requests handled below the library.
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const ADD_IDENTITY: u8 = 17;
const REMOVE_IDENTITY: u8 = 18;
const REMOVE_ALL_IDENTITIES: u8 = 19;
const ADD_SMARTCARD_KEY: u8 = 20;
const REMOVE_SMARTCARD_KEY: u8 = 21;
const UNLOCK: u8 = 23;
const ADD_ID_CONSTRAINED: u8 = 25;
const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
/// Every request number draft-miller-ssh-agent (6.1) and OpenSSH's PROTOCOL.agent define for
/// protocol 2. The rest are protocol-1 leftovers (1-9, 24) that `ssh-add -D` still sends, or
/// unknown; they get FAILURE without a warning.
const KNOWN_REQUESTS: [u8; 12] = [11, 13, 17, 18, 19, 20, 21, 22, 23, 25, 26, 27];
/// Requests that add or remove keys the agent cannot hold itself: plain private keys and
/// smartcard keys. They go to the first `-A` agent.
const ADD_ELSEWHERE: [u8; 5] = [
    ADD_IDENTITY,
    ADD_ID_CONSTRAINED,
    ADD_SMARTCARD_KEY,
    ADD_SMARTCARD_KEY_CONSTRAINED,
    REMOVE_SMARTCARD_KEY,
];
const FAILURE: u8 = 5;
const SUCCESS: u8 = 6;
/// Sign-request flags (draft-miller-ssh-agent 4.5.1).
const RSA_SHA2_256: u32 = 0x02;
const RSA_SHA2_512: u32 = 0x04;

/// The extension `query` lists what this agent supports (draft-miller-ssh-agent 3.8.1).
const QUERY: &str = "query";
/// Every extension this agent answers.
pub const EXTENSIONS: [&str; 3] = [QUERY, addkey::EXTENSION, destination::SESSION_BIND];

/// SSH_AGENTC_SIGN_REQUEST (draft-miller-ssh-agent 4.5): the key named by its wire blob.
struct SignRequest {
    key_blob: Vec<u8>,
    data: Vec<u8>,
    flags: u32,
}

impl SignRequest {
    fn decode(mut body: &[u8]) -> Option<Self> {
        let reader = &mut body;
        let request = SignRequest {
            key_blob: Vec::decode(reader).ok()?,
            data: Vec::decode(reader).ok()?,
            flags: u32::decode(reader).ok()?,
        };
        reader.is_empty().then_some(request)
    }
}

/// A PIN to try, whether it came from the cache, and the prompt turn it holds.
type PinChoice = (Pin, bool, Option<OwnedMutexGuard<()>>);

/// Wrong PINs accepted within one sign request before it fails.
const PIN_ATTEMPTS: u32 = 3;

/// The delay before answering a wrong unlock passphrase grows by this much per failure, as in
/// OpenSSH's ssh-agent (0.1 s steps)...
const UNLOCK_DELAY_STEP: Duration = Duration::from_millis(100);
/// ...up to this many steps (10 s).
const UNLOCK_DELAY_MAX_STEPS: u32 = 100;

/// Connections served at once, by default. Each costs a task and a few KiB, and file
/// descriptors; connections past the limit are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long the rest of a message may take once its first byte has arrived, by default, and
/// how long a reply may wait for the client to read it. Clients send whole messages at once;
/// one that stalls mid-message is disconnected instead of holding a connection.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A message body is read into a buffer that grows with the bytes that arrived, from this
/// size, so that a length prefix alone does not cost [`MAX_MESSAGE`] bytes.
const FIRST_READ: usize = 4096;

/// Bounds on what clients may hold in the agent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Time for the rest of a message, and for a reply to be read ([`MESSAGE_TIMEOUT`]).
    pub message_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            message_timeout: MESSAGE_TIMEOUT,
        }
    }
}

/// Pause after a failed accept(): its causes (EMFILE, ENFILE, ENOBUFS) last a while, and
/// retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The agent: its keys, the PINs it was told, the TPM that holds the keys, and the other
/// agents it passes requests to.
pub struct Agent {
    keyring: Keyring,
    pins: PinCache,
    /// One PIN prompt per key at a time, by the key's PIN slot; held from the prompt until
    /// the TPM has judged the PIN, so that a request waiting its turn finds it cached.
    prompts: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    /// SHA-256 of the lock passphrase while the agent is locked.
    lock: Mutex<Option<Zeroizing<[u8; 32]>>>,
    /// Wrong unlock passphrases since the last unlock. Held across the delay after a wrong
    /// one, so that guesses on parallel connections wait their turn.
    unlock_failures: tokio::sync::Mutex<u32>,
    /// Wakes the reaper when a key with a lifetime is added.
    lifetimes_changed: tokio::sync::Notify,
    upstreams: Upstreams,
    limits: Limits,
    /// Refuse connections from this process (see [`serve`]); off only in tests.
    refuse_own_process: bool,
    tpm: TpmService,
}

impl Agent {
    /// An agent with no keys yet, signing through `tpm`; `cache_pins` keeps PINs the TPM
    /// accepted for the agent's life.
    pub fn new(tpm: TpmService, cache_pins: bool) -> Self {
        Agent {
            keyring: Keyring::default(),
            pins: PinCache::new(cache_pins),
            prompts: Mutex::new(HashMap::new()),
            lock: Mutex::new(None),
            unlock_failures: tokio::sync::Mutex::new(0),
            lifetimes_changed: tokio::sync::Notify::new(),
            upstreams: Upstreams::default(),
            limits: Limits::default(),
            refuse_own_process: true,
            tpm,
        }
    }

    /// Passes requests for keys this agent does not hold to the agents at `upstreams`
    /// (`-A`), and plain keys added with ssh-add to the first of them.
    pub fn with_upstreams(mut self, upstreams: Upstreams) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// Serves within `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves clients in this very process, for tests that run the agent and its clients
    /// in one process. A real agent refuses them: only a `-A` socket leading back to it
    /// connects from its own pid.
    pub fn serving_own_process(mut self) -> Self {
        self.refuse_own_process = false;
        self
    }

    /// The keys served.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Hands back the TPM so the caller can close it in order.
    pub fn into_tpm(self) -> TpmService {
        self.tpm
    }

    /// Answers one message (without its length prefix) from `peer` with the reply's body.
    /// Malformed or unsupported messages get SSH_AGENT_FAILURE; the connection stays up.
    ///
    /// List and sign are decoded here rather than by ssh-agent-lib, because they carry
    /// certificates, which ssh-key 0.6 cannot always parse (see [`crate::cert`]); requests
    /// that may go to another agent are kept as the bytes the client sent.
    pub async fn handle(&self, peer: &mut Peer, message: &[u8]) -> Vec<u8> {
        // Keys past their lifetime are gone before any request sees them, even if the
        // reaper has not run yet; so are the PINs of key files a reload replaced.
        self.expire_keys();
        self.forget_replaced_pins();
        let Some((&kind, body)) = message.split_first() else {
            return vec![FAILURE];
        };
        if !KNOWN_REQUESTS.contains(&kind) {
            tracing::debug!(kind, "legacy or unknown request type; answering FAILURE");
            return vec![FAILURE];
        }
        // A locked agent lists nothing and does nothing but unlock (PROTOCOL.agent, lock).
        let result = match (self.is_locked(), kind) {
            (true, REQUEST_IDENTITIES) => Ok(vec![IDENTITIES_ANSWER, 0, 0, 0, 0]),
            (true, UNLOCK) => self.handle_other(peer, message).await,
            (true, _) => Err(Error::Locked),
            (false, _) => self.dispatch(peer, kind, body, message).await,
        };
        result.unwrap_or_else(|e| {
            tracing::warn!("request failed: {e}");
            vec![FAILURE]
        })
    }

    async fn dispatch(
        &self,
        peer: &mut Peer,
        kind: u8,
        body: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>> {
        match kind {
            REQUEST_IDENTITIES if body.is_empty() => self.identities(peer).await,
            REQUEST_IDENTITIES => Err(Error::Protocol(format!(
                "malformed list request: {} bytes after the message type, expected none",
                body.len()
            ))),
            SIGN_REQUEST => {
                let request = SignRequest::decode(body)
                    .ok_or_else(|| Error::Protocol("malformed sign request".into()))?;
                self.sign_request(peer, request, message).await
            }
            REMOVE_IDENTITY => self.remove(peer, body, message).await,
            REMOVE_ALL_IDENTITIES => self.remove_all(peer, message).await,
            kind if ADD_ELSEWHERE.contains(&kind) => self.add_elsewhere(peer, kind, message).await,
            _ => self.handle_other(peer, message).await,
        }
    }

    async fn handle_other(&self, peer: &mut Peer, message: &[u8]) -> Result<Vec<u8>> {
        let request = Request::decode(&mut &message[..]).map_err(|e| {
            Error::Protocol(format!(
                "unreadable request of type {}: {e}",
                message.first().copied().unwrap_or_default()
            ))
        })?;
        if self.is_locked() && !matches!(request, Request::Unlock(_)) {
            return Err(Error::Locked);
        }
        let response = match request {
            Request::Extension(extension) => self.extension(peer, extension, message)?,
            Request::Lock(passphrase) => {
                let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                *lock = Some(passphrase_digest(passphrase));
                self.pins.clear();
                tracing::info!("agent locked");
                Response::Success
            }
            Request::Unlock(passphrase) => self.unlock(passphrase).await?,
            _ => {
                return Err(Error::Protocol(format!(
                    "request type {} is not supported",
                    message.first().copied().unwrap_or_default()
                )))
            }
        };
        encode_response(&response)
    }

    /// SSH_AGENTC_UNLOCK (PROTOCOL.agent, lock): a wrong passphrase is answered only after a
    /// delay that grows with each failure, as OpenSSH's ssh-agent does, so that guessing is
    /// slow. Attempts are taken one at a time.
    async fn unlock(&self, passphrase: String) -> Result<Response> {
        let digest = passphrase_digest(passphrase);
        let mut failures = self.unlock_failures.lock().await;
        if !self.unlock_with(&digest)? {
            *failures = failures.saturating_add(1);
            let delay = unlock_delay(*failures);
            tokio::time::sleep(delay).await;
            return Err(Error::Protocol(format!(
                "wrong passphrase to unlock (failure {}; answered after {} ms)",
                *failures,
                delay.as_millis()
            )));
        }
        *failures = 0;
        tracing::info!("agent unlocked");
        Ok(Response::Success)
    }

    /// Unlocks when `digest` matches the lock passphrase's; `Ok(false)` when it does not.
    fn unlock_with(&self, digest: &[u8; 32]) -> Result<bool> {
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match lock.as_ref() {
            Some(expected) if bool::from(expected.ct_eq(digest)) => {
                *lock = None;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(Error::Protocol("the agent is not locked".into())),
        }
    }

    /// SSH_AGENT_IDENTITIES_ANSWER (draft-miller-ssh-agent 4.4): each key, and after it
    /// its certificate when it has one; then the keys of the `-A` agents that we do not
    /// hold ourselves. Keys whose destinations do not allow this connection's sessions
    /// are left out.
    async fn identities(&self, peer: &Peer) -> Result<Vec<u8>> {
        let keys: Vec<_> = self
            .keyring
            .keys()
            .into_iter()
            .filter(|key| visible(key, peer))
            .collect();
        let mut entries: Vec<(&[u8], &[u8])> = Vec::new();
        for key in &keys {
            entries.push((&key.public_blob, key.comment.as_bytes()));
            if let Some(cert) = &key.certificate {
                entries.push((cert.as_bytes(), key.comment.as_bytes()));
            }
        }
        let ours = entries.len();
        let theirs = self.upstream_identities(peer).await;
        for listed in &theirs {
            if !entries.iter().any(|(blob, _)| *blob == listed.blob) {
                entries.push((&listed.blob, &listed.comment));
            }
        }

        let mut body = vec![IDENTITIES_ANSWER];
        let encoded = (entries.len() as u32).encode(&mut body).and_then(|()| {
            entries.iter().try_for_each(|(blob, comment)| {
                blob.encode(&mut body)?;
                comment.encode(&mut body)
            })
        });
        encoded.map_err(|e| Error::Protocol(format!("cannot encode the key list: {e}")))?;
        tracing::debug!(ours, others = entries.len() - ours, "listed identities");
        Ok(body)
    }

    /// SSH_AGENTC_SIGN_REQUEST for one of our keys, or else for a key of an `-A` agent.
    async fn sign_request(
        &self,
        peer: &Peer,
        request: SignRequest,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        match self.find(&request.key_blob) {
            Some(key) => {
                let signature = self.sign(peer, &key, request).await?;
                encode_response(&Response::SignResponse(signature))
            }
            None => self.sign_elsewhere(peer, &request.key_blob, message).await,
        }
    }

    async fn sign(
        &self,
        peer: &Peer,
        key: &Arc<AgentKey>,
        request: SignRequest,
    ) -> Result<ssh_key::Signature> {
        let hash = sign_hash(key.spec, request.flags)?;
        tracing::debug!(key = %key.fingerprint(), ?hash, "sign request");
        let destination = check_destination(peer, key, &request).map_err(|e| with_key(key, e))?;
        if key.confirm {
            self.confirm_use(peer, key, destination.as_deref()).await?;
        }
        let data = Arc::new(request.data);

        let mut wrong = 0;
        // A noDA key whose file may wrongly claim a PIN: an empty one costs no
        // dictionary-attack try, so it goes first (see `ssh_tpm_tpm::PinNeed`).
        let mut try_empty = ssh_tpm_tpm::pin_need(&key.key) == PinNeed::TryEmptyFirst
            && self.pins.get(&key.pin_slot).is_none();
        loop {
            let epoch = self.pins.epoch();
            // `_turn`, this request's turn to prompt, lasts until the PIN is judged.
            let (pin, cached, _turn) = if try_empty {
                (Pin::empty(), true, None)
            } else {
                self.pin_for(key, wrong).await?
            };
            // A lock, remove or remove-all while the prompt was open wins over the PIN.
            if !cached {
                if self.is_locked() {
                    return Err(Error::Locked);
                }
                if self.pins.epoch() != epoch || self.find(&key.public_blob).is_none() {
                    return Err(with_key(
                        key,
                        Error::Protocol(
                            "the key was removed while its PIN prompt was open; the PIN was \
                             not used"
                                .into(),
                        ),
                    ));
                }
            }
            let job_key = Arc::clone(key);
            let (job_pin, job_data) = (pin.clone(), Arc::clone(&data));
            let signed = self
                .on_tpm(move |tpm| tpm.sign(&job_key.key, &job_pin, hash, &job_data))
                .await?;
            match signed {
                Ok(signature) => {
                    if !cached {
                        self.pins.put(&key.pin_slot, pin);
                    }
                    tracing::debug!(key = %key.fingerprint(), "signed");
                    return Ok(signature);
                }
                Err(ssh_tpm_tpm::Error::WrongPin { tries_left }) => {
                    self.pins.forget(&key.pin_slot);
                    // A stale cached PIN is not the user's mistake; ask, and count from there.
                    if !cached {
                        wrong += 1;
                    }
                    after_wrong_pin(key.key.empty_auth, tries_left, wrong)
                        .map_err(|e| with_key(key, e))?;
                    let error = ssh_tpm_tpm::Error::WrongPin { tries_left };
                    tracing::warn!("key {}: {error}; asking again", key.label());
                }
                Err(ssh_tpm_tpm::Error::PinRequired) if try_empty => {
                    tracing::debug!(key = %key.fingerprint(), "no empty PIN; asking");
                    try_empty = false;
                }
                Err(e) => return Err(with_key(key, Error::Tpm(e))),
            }
        }
    }

    /// Asks the user to allow this use of a key added with `-c`, naming the key and the
    /// processes asking, as OpenSSH's ssh-agent does. No answer is a refusal.
    async fn confirm_use(&self, peer: &Peer, key: &AgentKey, purpose: Option<&str>) -> Result<()> {
        let chain = peer.process_chain();
        let prompt = confirm_prompt(key, &chain, purpose);
        match askpass::confirm(&prompt).await {
            Ok(true) => {
                tracing::debug!(key = %key.fingerprint(), requester = %chain, "use confirmed");
                Ok(())
            }
            Ok(false) => Err(with_key(key, Error::NotConfirmed)),
            Err(e) => Err(with_key(
                key,
                Error::Protocol(format!("{}; {e}", Error::NotConfirmed)),
            )),
        }
    }

    /// The PIN to try, whether it came from the cache, and for a prompted PIN the turn
    /// to hold until the TPM has judged it: none for keys without one, the cached one, or
    /// a prompt. A key's prompts come one at a time; a request that waited for another's
    /// takes the PIN that one got accepted. Before a prompt, the TPM is asked whether it
    /// accepts PINs at all, so that a user in lockout is told so instead of typing a PIN
    /// that cannot work.
    async fn pin_for(&self, key: &Arc<AgentKey>, wrong: u32) -> Result<PinChoice> {
        if ssh_tpm_tpm::pin_need(&key.key) == PinNeed::None {
            return Ok((Pin::empty(), false, None));
        }
        if let Some(pin) = self.pins.get(&key.pin_slot) {
            return Ok((pin, true, None));
        }
        let turn = self.prompt_turn(&key.pin_slot).await;
        if let Some(pin) = self.pins.get(&key.pin_slot) {
            tracing::debug!(key = %key.fingerprint(), "PIN accepted during another prompt");
            return Ok((pin, true, None));
        }
        let tries_left = match self.on_tpm(|tpm| tpm.lockout_status()).await? {
            Ok(status) if status.in_lockout => {
                let retry_in_secs = status.lockout_ends_within();
                let error = ssh_tpm_tpm::Error::Lockout { retry_in_secs };
                return Err(with_key(key, Error::Tpm(error)));
            }
            Ok(status) => Some(status.tries_left()),
            // A PIN typed now could not be used.
            Err(e @ ssh_tpm_tpm::Error::ConnectionLost { .. }) => {
                return Err(with_key(key, Error::Tpm(e)))
            }
            Err(e) => {
                tracing::debug!("cannot read the TPM's dictionary-attack state: {e}");
                None
            }
        };
        let prompt = pin_prompt(&key.label(), wrong, tries_left);
        let pin = askpass::ask_pin(&prompt)
            .await
            .map_err(|e| with_key(key, e))?;
        Ok((pin, false, Some(turn)))
    }

    /// Waits for this request's turn to prompt for the key with PIN slot `slot`.
    async fn prompt_turn(&self, slot: &[u8; 32]) -> OwnedMutexGuard<()> {
        let lock = {
            let mut prompts = self.prompts.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for belong to finished prompts.
            prompts.retain(|_, lock| Arc::strong_count(lock) > 1);
            Arc::clone(prompts.entry(*slot).or_default())
        };
        lock.lock_owned().await
    }

    /// Runs `job` on the TPM thread and waits for it without blocking other clients. The
    /// inner result is the TPM's (a lost connection included); the outer one, the thread's.
    async fn on_tpm<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ssh_tpm_tpm::Tpm) -> ssh_tpm_tpm::Result<T> + Send + 'static,
    ) -> Result<ssh_tpm_tpm::Result<T>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tpm.submit(job, move |result| {
            let _ = tx.send(result);
        })?;
        rx.await
            .map_err(|_| Error::Protocol("the TPM thread stopped".into()))
    }

    /// SSH_AGENTC_REMOVE_IDENTITY (draft-miller-ssh-agent 4.3): `string key blob`. A key we
    /// do not hold is removed from the `-A` agent that has it.
    async fn remove(&self, peer: &Peer, mut body: &[u8], message: &[u8]) -> Result<Vec<u8>> {
        let blob = Vec::<u8>::decode(&mut body)
            .ok()
            .filter(|_| body.is_empty())
            .ok_or_else(|| Error::Protocol("malformed remove request".into()))?;
        // A key this connection may not see, it may not remove (as OpenSSH's ssh-agent).
        if let Some(key) = self.find(&blob).filter(|key| !visible(key, peer)) {
            return Err(with_key(&key, Error::NotPermitted("remove it".into())));
        }
        let Some(removed) = self.keyring.remove(&blob) else {
            return self.remove_elsewhere(peer, &blob, message).await;
        };
        self.pins.forget(&removed.pin_slot);
        tracing::info!(key = %removed.label(), "key removed");
        Ok(vec![SUCCESS])
    }

    /// SSH_AGENTC_REMOVE_ALL_IDENTITIES: ours, and those of every `-A` agent.
    async fn remove_all(&self, peer: &Peer, message: &[u8]) -> Result<Vec<u8>> {
        self.keyring.clear();
        self.pins.clear();
        tracing::info!("all keys removed");
        self.remove_all_elsewhere(peer, message).await?;
        Ok(vec![SUCCESS])
    }

    /// Drops the keys whose lifetime ran out, and their PINs.
    fn expire_keys(&self) {
        for key in self.keyring.expire(Instant::now()) {
            self.pins.forget(&key.pin_slot);
            tracing::info!(key = %key.label(), "key expired (its lifetime, set with -t, ended)");
        }
    }

    /// Drops the cached PINs of key files the agent no longer serves: a reload replaced
    /// them (a changed PIN, say), or removed them.
    fn forget_replaced_pins(&self) {
        let keys = self.keyring.keys();
        self.pins
            .retain(|slot| keys.iter().any(|key| key.pin_slot[..] == *slot));
    }

    /// Removes each key when its lifetime ends, so that it goes away on time even while
    /// no client asks. Runs until dropped.
    pub async fn reap_expired_keys(&self) {
        loop {
            let changed = self.lifetimes_changed.notified();
            match self.keyring.next_expiry() {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => self.expire_keys(),
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    fn is_locked(&self) -> bool {
        self.lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn extension(&self, peer: &mut Peer, extension: Extension, message: &[u8]) -> Result<Response> {
        match extension.name.as_str() {
            QUERY => {
                let extensions = EXTENSIONS.iter().map(|name| name.to_string()).collect();
                let answer = Extension::new_message(QueryResponse { extensions })
                    .map_err(|e| Error::Protocol(format!("cannot encode the answer: {e}")))?;
                Ok(Response::ExtensionResponse(answer))
            }
            addkey::EXTENSION => self.add_tpm_key(peer, extension.details.as_ref()),
            destination::SESSION_BIND => {
                let binding = Binding::decode_and_verify(extension.details.as_ref())?;
                let host = upstream::fingerprint(&binding.host_key);
                let forwarded = binding.forwarded;
                peer.bind(binding, message)?;
                tracing::debug!(host_key = %host, forwarded, "session bound");
                Ok(Response::Success)
            }
            name => {
                tracing::debug!(name, "unknown extension");
                Ok(Response::ExtensionFailure)
            }
        }
    }

    /// The `tpm-add-key` extension: a key file, its certificate and its constraints.
    fn add_tpm_key(&self, peer: &Peer, details: &[u8]) -> Result<Response> {
        let request = addkey::decode(details)?;
        let mut key = AgentKey::new(request.key, request.certificate)?;
        // A key this connection may not see, it may not replace (as OpenSSH's ssh-agent).
        if let Some(old) = self
            .find(&key.public_blob)
            .filter(|old| !visible(old, peer))
        {
            return Err(with_key(&old, Error::NotPermitted("replace it".into())));
        }
        key.constrain(&request.constraints, Instant::now());
        tracing::info!(
            key = %key.label(),
            constraints = %request.constraints.describe(),
            "key added"
        );
        let has_lifetime = key.expires.is_some();
        self.keyring.add(key);
        if has_lifetime {
            self.lifetimes_changed.notify_one();
        }
        Ok(Response::Success)
    }

    /// The key a client names by its public key blob or its certificate's blob.
    fn find(&self, blob: &[u8]) -> Option<Arc<AgentKey>> {
        self.keyring.keys().into_iter().find(|k| {
            k.public_blob == blob || k.certificate.as_ref().is_some_and(|c| c.as_bytes() == blob)
        })
    }
}

/// The confirmation prompt, worded as OpenSSH's ssh-agent words it, plus what the signature
/// is for, when known, and who is asking.
fn confirm_prompt(key: &AgentKey, requester: &str, purpose: Option<&str>) -> String {
    let purpose = purpose.map(|p| format!("\n{p}")).unwrap_or_default();
    format!(
        "Allow use of key {}?\nKey fingerprint {}.{purpose}\nRequested by {requester}.",
        key.comment,
        key.fingerprint()
    )
}

/// Whether `peer` may see `key`: always, unless the key has destinations that the
/// connection's sessions do not match.
fn visible(key: &AgentKey, peer: &Peer) -> bool {
    destination::permitted(&key.destinations, peer.bindings(), None).is_ok()
}

/// For a key with destinations, checks that this signature is an ssh user authentication
/// on the session the connection was bound to last, to a host the key may go to (OpenSSH's
/// `process_sign_request2`); returns what it is for, for the confirmation prompt.
fn check_destination(peer: &Peer, key: &AgentKey, request: &SignRequest) -> Result<Option<String>> {
    if key.destinations.is_empty() {
        return Ok(None);
    }
    let refuse = |why: &str| Err(Error::NotPermitted(why.into()));
    let Some(last) = peer.bindings().last() else {
        return refuse("sign on a connection that no ssh session is bound to");
    };
    let Some(auth) = destination::parse_userauth(&request.data, &request.key_blob) else {
        return refuse("sign anything but an ssh user authentication");
    };
    let host = destination::permitted(&key.destinations, peer.bindings(), Some(&auth.user))
        .map_err(|why| Error::NotPermitted(format!("sign here: {why}")))?;
    if !bool::from(auth.session_id.ct_eq(&last.session_id)) {
        return refuse("sign for a session other than the one bound last");
    }
    match &auth.host_key {
        None if peer.bindings().len() > 1 => {
            return refuse("sign a forwarded authentication that names no host key")
        }
        Some(host_key) if *host_key != last.host_key => {
            return refuse("sign for a host key other than the bound one")
        }
        _ => {}
    }
    let host = host.map(|h| format!(" on {h}")).unwrap_or_default();
    Ok(Some(format!(
        "For logging in as user \"{}\"{host}.",
        auth.user
    )))
}

/// After the TPM refused a PIN: `Ok` to ask again, or the error that ends the request.
///
/// A key whose file says it has no PIN was tried with the empty one, the only PIN the
/// agent may send for it; asking the user cannot help, and each retry would cost another
/// dictionary-attack try. When the TPM has no tries left, it is locking PIN keys now.
fn after_wrong_pin(empty_auth: bool, tries_left: Option<u32>, wrong: u32) -> Result<()> {
    if empty_auth {
        return Err(Error::EmptyAuthRefused);
    }
    if tries_left == Some(0) {
        return Err(Error::PinLockedOut);
    }
    if wrong >= PIN_ATTEMPTS {
        return Err(Error::Tpm(ssh_tpm_tpm::Error::WrongPin { tries_left }));
    }
    Ok(())
}

/// The askpass prompt for the key labelled `label`, after `wrong` wrong PINs in this
/// request; retries say how many more wrong PINs the TPM takes, when that is known.
fn pin_prompt(label: &str, wrong: u32, tries_left: Option<u32>) -> String {
    if wrong == 0 {
        return format!("Enter PIN for TPM key {label}: ");
    }
    let attempt = wrong + 1;
    let left = match tries_left {
        Some(1) => "; 1 try left before the TPM locks PIN keys".to_string(),
        Some(n) => format!("; {n} tries left before the TPM locks PIN keys"),
        None => String::new(),
    };
    format!(
        "Wrong PIN. Enter PIN for TPM key {label} (attempt {attempt} of {PIN_ATTEMPTS}{left}): "
    )
}

/// How long to wait before answering the `failures`-th wrong unlock passphrase in a row:
/// 0.1 s per failure, at most 10 s, as OpenSSH's ssh-agent.
fn unlock_delay(failures: u32) -> Duration {
    UNLOCK_DELAY_STEP * failures.min(UNLOCK_DELAY_MAX_STEPS)
}

/// The lock passphrase is kept only as its SHA-256, and compared in constant time.
fn passphrase_digest(passphrase: String) -> Zeroizing<[u8; 32]> {
    let passphrase = Zeroizing::new(passphrase);
    Zeroizing::new(Sha256::digest(passphrase.as_bytes()).into())
}

fn encode_response(response: &Response) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    response
        .encode(&mut body)
        .map_err(|e| Error::Protocol(format!("cannot encode the response: {e}")))?;
    Ok(body)
}

/// The digest for a signature: fixed by the curve for ECDSA, chosen by the client's
/// flags for RSA (RFC 8332). Plain `ssh-rsa` (SHA-1) is refused.
fn sign_hash(spec: KeySpec, flags: u32) -> Result<SignHash> {
    if let Some(hash) = SignHash::for_ecdsa(spec) {
        return Ok(hash);
    }
    if flags & RSA_SHA2_512 != 0 {
        Ok(SignHash::Sha512)
    } else if flags & RSA_SHA2_256 != 0 {
        Ok(SignHash::Sha256)
    } else {
        Err(Error::Sha1Refused)
    }
}

/// Prefixes an error with the key it concerns.
fn with_key(key: &AgentKey, error: Error) -> Error {
    Error::Protocol(format!("key {}: {error}", key.label()))
}

/// Accepts clients until `shutdown` completes. Clients of another user are refused. Keys
/// whose lifetime ends meanwhile are removed on time.
pub async fn serve(agent: Arc<Agent>, listener: UnixListener, shutdown: impl Future<Output = ()>) {
    let accept = || async { listener.accept().await.map(|(stream, _)| stream) };
    let slots = Arc::new(tokio::sync::Semaphore::new(agent.limits.max_connections));
    let mut refused = AcceptFailures::default();
    let accepting = accept_loop(accept, shutdown, |stream: UnixStream| {
        // Past the limit a connection is closed at once; a burst of them is logged once.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if refused.failed() {
                tracing::warn!(
                    limit = agent.limits.max_connections,
                    "too many clients connected; closing new connections until some leave"
                );
            }
            return;
        };
        if let Some(count) = refused.recovered() {
            tracing::info!(refused = count, "serving new connections again");
        }
        let pid = match stream.peer_cred() {
            Ok(cred) if socket::peer_allowed(cred.uid()) => cred.pid(),
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "refused a client of another user");
                return;
            }
            Err(e) => {
                tracing::warn!("refused a client whose user is unknown: {e}");
                return;
            }
        };
        let pid = pid.and_then(|pid| u32::try_from(pid).ok());
        if agent.refuse_own_process && pid == Some(std::process::id()) {
            // Only a -A socket that leads back here (a link, another path) connects from our
            // own pid; serving it would make every request call itself without end.
            tracing::warn!("refused a connection from this agent itself: a -A socket is ours");
            return;
        }
        let peer = Peer::new(pid);
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let (reader, writer) = stream.into_split();
            if let Err(e) = serve_connection(&agent, peer, reader, writer).await {
                tracing::debug!("client connection ended: {e}");
            }
            drop(slot);
        });
    });
    tokio::select! {
        () = accepting => {}
        () = agent.reap_expired_keys() => {}
    }
}

/// Raises the soft limit on open files towards the hard one, so that [`MAX_CONNECTIONS`]
/// clients fit beside the agent's own files (the usual soft limit is 1024). Failure is only
/// logged: the agent then serves fewer clients, and says so when accept() fails.
pub fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let wanted = MAX_CONNECTIONS as u64 + 64;
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), hard) = (limit.current, limit.maximum) else {
        return;
    };
    if current >= wanted {
        return;
    }
    let raised = hard.map_or(wanted, |hard| hard.min(wanted));
    let new = rustix::process::Rlimit {
        current: Some(raised),
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => tracing::debug!(from = current, to = raised, "raised the open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit above {current}: {e}"),
    }
}

/// Hands each connection `accept` yields to `serve_one` until `shutdown` completes. After a
/// failed accept it waits [`ACCEPT_BACKOFF`]; a run of failures is logged once.
async fn accept_loop<S, F>(
    mut accept: impl FnMut() -> F,
    shutdown: impl Future<Output = ()>,
    mut serve_one: impl FnMut(S),
) where
    F: Future<Output = std::io::Result<S>>,
{
    tokio::pin!(shutdown);
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = accept() => accepted,
        };
        match accepted {
            Ok(stream) => {
                if let Some(count) = failures.recovered() {
                    tracing::info!(failures = count, "accepting clients again");
                }
                serve_one(stream);
            }
            Err(e) => {
                if failures.failed() {
                    tracing::warn!(
                        "cannot accept clients: {e}; retrying every {} ms, quietly",
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Failed accepts in a row, so that a burst of them is logged once.
#[derive(Debug, Default)]
struct AcceptFailures {
    count: u64,
}

impl AcceptFailures {
    /// Counts a failure; true for the first of a burst, the one to log.
    fn failed(&mut self) -> bool {
        self.count += 1;
        self.count == 1
    }

    /// Ends a burst: how many failures it had, if there was one.
    fn recovered(&mut self) -> Option<u64> {
        let count = std::mem::take(&mut self.count);
        (count > 0).then_some(count)
    }
}

/// Serves one client: length-prefixed messages (draft-miller-ssh-agent 3), answered in
/// order, until the client closes the connection. A message over [`MAX_MESSAGE`], an empty
/// one, or one whose rest does not arrive within the agent's message timeout ends the
/// connection; a malformed one is answered with FAILURE.
pub async fn serve_connection<R, W>(
    agent: &Agent,
    mut peer: Peer,
    mut reader: R,
    mut writer: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let timeout = agent.limits.message_timeout;
    loop {
        // Waiting for a request is free; once one has begun, it must arrive in time.
        let mut first = [0u8; 1];
        if reader.read(&mut first).await? == 0 {
            return Ok(());
        }
        let message = match tokio::time::timeout(timeout, read_message(&mut reader, first[0])).await
        {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                tracing::warn!(
                    "client sent part of a message and stalled for {} s; disconnecting",
                    timeout.as_secs()
                );
                return Ok(());
            }
        };

        let body = agent.handle(&mut peer, &message).await;
        drop(message);
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        match tokio::time::timeout(timeout, writer.write_all(&frame)).await {
            Ok(written) => written?,
            Err(_) => {
                tracing::warn!("client does not read its replies; disconnecting");
                return Ok(());
            }
        }
    }
}

/// Reads the rest of a length prefix whose first byte was `first`, then the message.
/// `None` when the length is out of bounds (logged). The buffer grows with the bytes that
/// arrive, wiping what it leaves behind: ssh-add sends private keys and lock passphrases.
async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    first: u8,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut length = [first, 0, 0, 0];
    reader.read_exact(&mut length[1..]).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > MAX_MESSAGE {
        tracing::warn!(
            length,
            "client sent an oversized or empty message; disconnecting"
        );
        return Ok(None);
    }
    let mut message = Zeroizing::new(Vec::with_capacity(length.min(FIRST_READ)));
    while message.len() < length {
        if message.len() == message.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity((message.len() * 2).min(length)));
            grown.extend_from_slice(&message);
            message = grown;
        }
        let start = message.len();
        let end = message.capacity().min(length);
        message.resize(end, 0);
        match reader.read(&mut message[start..]).await {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => message.truncate(start + n),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_hash_follows_flags_and_refuses_sha1() {
        assert_eq!(
            sign_hash(KeySpec::Rsa2048, RSA_SHA2_512).ok(),
            Some(SignHash::Sha512)
        );
        assert_eq!(
            sign_hash(KeySpec::Rsa2048, RSA_SHA2_256).ok(),
            Some(SignHash::Sha256)
        );
        assert!(matches!(
            sign_hash(KeySpec::Rsa3072, 0),
            Err(Error::Sha1Refused)
        ));
        assert_eq!(
            sign_hash(KeySpec::EcdsaP521, 0).ok(),
            Some(SignHash::Sha512)
        );
    }

    /// A key file that wrongly claims "no PIN" fails at the first refusal: retrying the
    /// empty PIN would only burn more dictionary-attack tries.
    #[test]
    fn empty_auth_key_refused_by_the_tpm_fails_at_once() {
        let refused = after_wrong_pin(true, Some(31), 1);
        assert!(
            matches!(refused, Err(Error::EmptyAuthRefused)),
            "{refused:?}"
        );
        let text = Error::EmptyAuthRefused.to_string();
        assert!(text.contains("claims the key has no PIN"), "{text}");
        assert!(text.contains("emptyAuth"), "{text}");
    }

    #[test]
    fn wrong_pin_asks_again_until_attempts_or_tries_run_out() {
        assert!(after_wrong_pin(false, Some(31), 1).is_ok());
        assert!(after_wrong_pin(false, None, 2).is_ok());
        let last = after_wrong_pin(false, Some(5), PIN_ATTEMPTS);
        assert!(
            matches!(
                last,
                Err(Error::Tpm(ssh_tpm_tpm::Error::WrongPin {
                    tries_left: Some(5)
                }))
            ),
            "{last:?}"
        );
    }

    /// With no tries left the TPM is locking PIN keys now; "0 tries left" would undersell it.
    #[test]
    fn last_try_says_the_tpm_is_now_locking() {
        let locked = after_wrong_pin(false, Some(0), 1);
        assert!(matches!(locked, Err(Error::PinLockedOut)), "{locked:?}");
        let text = Error::PinLockedOut.to_string();
        assert!(text.contains("now locking PIN keys"), "{text}");
        assert!(!text.contains("0 tries left"), "{text}");
    }

    #[test]
    fn retry_prompt_counts_attempts_and_the_tpm_tries_left() {
        assert_eq!(pin_prompt("K", 0, Some(9)), "Enter PIN for TPM key K: ");
        assert_eq!(
            pin_prompt("K", 1, Some(9)),
            "Wrong PIN. Enter PIN for TPM key K (attempt 2 of 3; 9 tries left before the TPM \
             locks PIN keys): "
        );
        assert!(pin_prompt("K", 2, Some(1)).contains("(attempt 3 of 3; 1 try left before"));
        assert_eq!(
            pin_prompt("K", 1, None),
            "Wrong PIN. Enter PIN for TPM key K (attempt 2 of 3): "
        );
    }

    /// OpenSSH's schedule: 0.1 s more per failure, capped at 10 s.
    #[test]
    fn unlock_delay_grows_per_failure_and_is_capped() {
        assert_eq!(unlock_delay(1), Duration::from_millis(100));
        assert_eq!(unlock_delay(2), Duration::from_millis(200));
        assert_eq!(unlock_delay(100), Duration::from_secs(10));
        assert_eq!(unlock_delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn known_requests_exclude_protocol_1_leftovers() {
        for legacy in [1, 3, 7, 8, 9, 24] {
            assert!(!KNOWN_REQUESTS.contains(&legacy), "{legacy}");
        }
        for known in [
            REQUEST_IDENTITIES,
            SIGN_REQUEST,
            REMOVE_IDENTITY,
            19,
            22,
            23,
            27,
        ] {
            assert!(KNOWN_REQUESTS.contains(&known), "{known}");
        }
    }

    #[test]
    fn accept_failures_are_logged_once_per_burst() {
        let mut failures = AcceptFailures::default();
        assert_eq!(failures.recovered(), None);
        assert!(failures.failed());
        assert!(!failures.failed());
        assert!(!failures.failed());
        assert_eq!(failures.recovered(), Some(3));
        assert!(failures.failed(), "a new burst is logged again");
    }

    /// accept() failing without pause (EMFILE) must not spin: over 350 ms the loop may try
    /// only a handful of times. Without the backoff it tries hundreds of thousands of times.
    #[tokio::test]
    async fn failing_accept_backs_off() {
        let calls = std::cell::Cell::new(0u32);
        let accept = || {
            calls.set(calls.get() + 1);
            async {
                // Yield, so that the runtime can run the shutdown timer even without a backoff.
                tokio::task::yield_now().await;
                Err::<(), _>(std::io::Error::from_raw_os_error(24))
            }
        };
        let shutdown = tokio::time::sleep(Duration::from_millis(350));
        accept_loop(accept, shutdown, |()| panic!("nothing was accepted")).await;
        let calls = calls.get();
        assert!(
            (1..=10).contains(&calls),
            "accept() was tried {calls} times"
        );
    }
}
