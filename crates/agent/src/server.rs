//! Serving the agent protocol (draft-miller-ssh-agent, OpenSSH PROTOCOL.agent) on a Unix
//! socket: framing, dispatch, and the requests this agent answers.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use ssh_agent_lib::proto::{Extension, Request, Response};
use ssh_encoding::{Decode, Encode};
use ssh_tpm_tpm::{KeySpec, Pin, SignHash, TpmService};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use crate::addkey;
use crate::askpass;
use crate::error::{Error, Result};
use crate::keyring::{AgentKey, Keyring};
use crate::pincache::PinCache;
use crate::socket;

/// Largest message accepted, as OpenSSH's ssh-agent (AGENT_MAX_LEN, 256 KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Message numbers (draft-miller-ssh-agent 6.1) of the requests handled below the library.
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const REMOVE_IDENTITY: u8 = 18;
const FAILURE: u8 = 5;
const SUCCESS: u8 = 6;
/// Sign-request flags (draft-miller-ssh-agent 4.5.1).
const RSA_SHA2_256: u32 = 0x02;
const RSA_SHA2_512: u32 = 0x04;

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

/// Wrong PINs accepted within one sign request before it fails.
const PIN_ATTEMPTS: u32 = 3;

/// The agent: its keys, the PINs it was told, and the TPM that holds the keys.
pub struct Agent {
    keyring: Keyring,
    pins: PinCache,
    /// SHA-256 of the lock passphrase while the agent is locked.
    lock: Mutex<Option<Zeroizing<[u8; 32]>>>,
    tpm: TpmService,
}

impl Agent {
    /// An agent with no keys yet, signing through `tpm`; `cache_pins` keeps PINs the TPM
    /// accepted for the agent's life.
    pub fn new(tpm: TpmService, cache_pins: bool) -> Self {
        Agent {
            keyring: Keyring::default(),
            pins: PinCache::new(cache_pins),
            lock: Mutex::new(None),
            tpm,
        }
    }

    /// The keys served.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Hands back the TPM so the caller can close it in order.
    pub fn into_tpm(self) -> TpmService {
        self.tpm
    }

    /// Answers one message (without its length prefix) with the reply's body. Malformed
    /// or unsupported messages get SSH_AGENT_FAILURE; the connection stays up.
    ///
    /// List and sign are decoded here rather than by ssh-agent-lib, because they carry
    /// certificates, which ssh-key 0.6 cannot always parse (see [`crate::cert`]).
    pub async fn handle(&self, message: &[u8]) -> Vec<u8> {
        let locked = self.is_locked();
        let result = match message.split_first() {
            // A locked agent lists nothing and signs nothing (PROTOCOL.agent, lock).
            Some((&REQUEST_IDENTITIES, [])) if locked => Ok(vec![IDENTITIES_ANSWER, 0, 0, 0, 0]),
            Some((&SIGN_REQUEST | &REMOVE_IDENTITY, _)) if locked => Err(Error::Locked),
            Some((&REMOVE_IDENTITY, body)) => self.remove(body),
            Some((&REQUEST_IDENTITIES, [])) => self.identities(),
            Some((&SIGN_REQUEST, body)) => match SignRequest::decode(body) {
                Some(request) => self
                    .sign(request)
                    .await
                    .and_then(|sig| encode_response(&Response::SignResponse(sig))),
                None => Err(Error::Protocol("malformed sign request".into())),
            },
            _ => self.handle_other(message),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!("request failed: {e}");
            vec![FAILURE]
        })
    }

    fn handle_other(&self, message: &[u8]) -> Result<Vec<u8>> {
        let request = Request::decode(&mut &message[..]).map_err(|e| {
            Error::Protocol(format!(
                "unreadable request (type {:?}): {e}",
                message.first()
            ))
        })?;
        if self.is_locked() && !matches!(request, Request::Unlock(_)) {
            return Err(Error::Locked);
        }
        let response = match request {
            Request::Extension(extension) => self.extension(extension)?,
            Request::RemoveAllIdentities => {
                self.keyring.clear();
                self.pins.clear();
                tracing::info!("all keys removed");
                Response::Success
            }
            Request::Lock(passphrase) => {
                let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                *lock = Some(passphrase_digest(passphrase));
                self.pins.clear();
                tracing::info!("agent locked");
                Response::Success
            }
            Request::Unlock(passphrase) => {
                let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                let digest = passphrase_digest(passphrase);
                match lock.as_ref() {
                    Some(expected) if bool::from(expected.ct_eq(&*digest)) => {
                        *lock = None;
                        tracing::info!("agent unlocked");
                        Response::Success
                    }
                    Some(_) => return Err(Error::Protocol("wrong passphrase to unlock".into())),
                    None => return Err(Error::Protocol("the agent is not locked".into())),
                }
            }
            Request::AddIdentity(_) | Request::AddIdConstrained(_) => {
                return Err(Error::Protocol(
                    "this agent holds TPM keys only; add them with ssh-tpm-add, or keep \
                     plain keys in another ssh-agent"
                        .into(),
                ))
            }
            other => {
                return Err(Error::Protocol(format!(
                    "request {} is not supported yet",
                    request_name(&other)
                )))
            }
        };
        encode_response(&response)
    }

    /// SSH_AGENT_IDENTITIES_ANSWER (draft-miller-ssh-agent 4.4): each key, and after it
    /// its certificate when it has one.
    fn identities(&self) -> Result<Vec<u8>> {
        let keys = self.keyring.keys();
        let mut entries: Vec<(&[u8], &str)> = Vec::new();
        for key in &keys {
            entries.push((&key.public_blob, &key.comment));
            if let Some(cert) = &key.certificate {
                entries.push((cert.as_bytes(), &key.comment));
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
        tracing::debug!(count = entries.len(), "listed identities");
        Ok(body)
    }

    async fn sign(&self, request: SignRequest) -> Result<ssh_key::Signature> {
        let key = self.find(&request.key_blob).ok_or(Error::NoSuchKey)?;
        let hash = sign_hash(key.spec, request.flags)?;
        tracing::debug!(key = %key.fingerprint(), ?hash, "sign request");
        let data = Arc::new(request.data);

        let mut wrong = 0;
        loop {
            let (pin, cached) = self.pin_for(&key, wrong).await?;
            let job_key = Arc::clone(&key);
            let (job_pin, job_data) = (pin.clone(), Arc::clone(&data));
            let signed = self
                .on_tpm(move |tpm| tpm.sign(&job_key.key, &job_pin, hash, &job_data))
                .await?;
            match signed {
                Ok(signature) => {
                    self.pins.put(&key.public_blob, pin);
                    tracing::debug!(key = %key.fingerprint(), "signed");
                    return Ok(signature);
                }
                Err(ssh_tpm_tpm::Error::WrongPin { tries_left }) => {
                    self.pins.forget(&key.public_blob);
                    // A stale cached PIN is not the user's mistake; ask, and count from there.
                    if !cached {
                        wrong += 1;
                    }
                    let error = ssh_tpm_tpm::Error::WrongPin { tries_left };
                    if wrong >= PIN_ATTEMPTS || tries_left == Some(0) {
                        return Err(with_key(&key, Error::Tpm(error)));
                    }
                    tracing::warn!("key {}: {error}; asking again", key.label());
                }
                Err(e) => return Err(with_key(&key, Error::Tpm(e))),
            }
        }
    }

    /// The PIN to try: none for keys without one, the cached one, or a prompt. Before a
    /// prompt, the TPM is asked whether it accepts PINs at all, so that a user in lockout
    /// is told so instead of typing a PIN that cannot work.
    async fn pin_for(&self, key: &Arc<AgentKey>, wrong: u32) -> Result<(Pin, bool)> {
        if key.key.empty_auth {
            return Ok((Pin::empty(), false));
        }
        if let Some(pin) = self.pins.get(&key.public_blob) {
            return Ok((pin, true));
        }
        let status = self.on_tpm(|tpm| tpm.lockout_status()).await?;
        if let Ok(status) = status {
            if status.in_lockout {
                let retry_in_secs = status.lockout_ends_within();
                let error = ssh_tpm_tpm::Error::Lockout { retry_in_secs };
                return Err(with_key(key, Error::Tpm(error)));
            }
        }
        let prompt = match wrong {
            0 => format!("Enter PIN for TPM key {}: ", key.label()),
            n => format!(
                "Wrong PIN. Enter PIN for TPM key {} (attempt {} of {PIN_ATTEMPTS}): ",
                key.label(),
                n + 1
            ),
        };
        let pin = askpass::ask_pin(&prompt)
            .await
            .map_err(|e| with_key(key, e))?;
        Ok((pin, false))
    }

    /// Runs `job` on the TPM thread and waits for it without blocking other clients.
    async fn on_tpm<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ssh_tpm_tpm::Tpm) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tpm.submit(job, move |result| {
            let _ = tx.send(result);
        })?;
        rx.await
            .map_err(|_| Error::Protocol("the TPM thread stopped".into()))
    }

    /// SSH_AGENTC_REMOVE_IDENTITY (draft-miller-ssh-agent 4.3): `string key blob`.
    fn remove(&self, mut body: &[u8]) -> Result<Vec<u8>> {
        let blob = Vec::<u8>::decode(&mut body)
            .ok()
            .filter(|_| body.is_empty())
            .ok_or_else(|| Error::Protocol("malformed remove request".into()))?;
        let removed = self.keyring.remove(&blob).ok_or(Error::NoSuchKey)?;
        self.pins.forget(&removed.public_blob);
        tracing::info!(key = %removed.label(), "key removed");
        Ok(vec![SUCCESS])
    }

    fn is_locked(&self) -> bool {
        self.lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn extension(&self, extension: Extension) -> Result<Response> {
        if extension.name != addkey::EXTENSION {
            tracing::debug!(name = %extension.name, "unknown extension");
            return Ok(Response::ExtensionFailure);
        }
        let request = addkey::decode(extension.details.as_ref())?;
        if !request.constraints.is_empty() {
            return Err(Error::Protocol(
                "key constraints (-c, -t) are not supported yet; add the key without them".into(),
            ));
        }
        let key = AgentKey::new(request.key, request.certificate)?;
        tracing::info!(key = %key.label(), "key added");
        self.keyring.add(key);
        Ok(Response::Success)
    }

    /// The key a client names by its public key blob or its certificate's blob.
    fn find(&self, blob: &[u8]) -> Option<Arc<AgentKey>> {
        self.keyring.keys().into_iter().find(|k| {
            k.public_blob == blob || k.certificate.as_ref().is_some_and(|c| c.as_bytes() == blob)
        })
    }
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

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::AddSmartcardKey(_) | Request::AddSmartcardKeyConstrained(_) => {
            "add smartcard key (20/26)"
        }
        Request::RemoveSmartcardKey(_) => "remove smartcard key (21)",
        _ => "this",
    }
}

/// Accepts clients until `shutdown` completes. Clients of another user are refused.
pub async fn serve(
    agent: Arc<Agent>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
        };
        match stream.peer_cred() {
            Ok(cred) if socket::peer_allowed(cred.uid()) => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "refused a client of another user");
                continue;
            }
            Err(e) => {
                tracing::warn!("refused a client whose user is unknown: {e}");
                continue;
            }
        }
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            if let Err(e) = connection(&agent, stream).await {
                tracing::debug!("client connection ended: {e}");
            }
        });
    }
}

/// Serves one client: length-prefixed messages, answered in order.
async fn connection(agent: &Agent, mut stream: UnixStream) -> std::io::Result<()> {
    loop {
        let mut length = [0u8; 4];
        match stream.read_exact(&mut length).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let length = u32::from_be_bytes(length) as usize;
        if length == 0 || length > MAX_MESSAGE {
            tracing::warn!(
                length,
                "client sent an oversized or empty message; disconnecting"
            );
            return Ok(());
        }
        let mut message = vec![0u8; length];
        stream.read_exact(&mut message).await?;

        let body = agent.handle(&message).await;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await?;
    }
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
}
