//! Serving the agent protocol (draft-miller-ssh-agent, OpenSSH PROTOCOL.agent) on a Unix
//! socket: framing, dispatch, and the requests this agent answers.

use std::sync::Arc;

use ssh_agent_lib::proto::{Extension, Request, Response};
use ssh_encoding::{Decode, Encode};
use ssh_tpm_tpm::{KeySpec, Pin, SignHash, TpmService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::addkey;
use crate::askpass;
use crate::error::{Error, Result};
use crate::keyring::{AgentKey, Keyring};
use crate::socket;

/// Largest message accepted, as OpenSSH's ssh-agent (AGENT_MAX_LEN, 256 KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Message numbers (draft-miller-ssh-agent 6.1) of the requests handled below the library.
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const FAILURE: u8 = 5;
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

/// The agent: its keys and the TPM that holds them.
pub struct Agent {
    keyring: Keyring,
    tpm: TpmService,
}

impl Agent {
    /// An agent with no keys yet, signing through `tpm`.
    pub fn new(tpm: TpmService) -> Self {
        Agent {
            keyring: Keyring::default(),
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
        let result = match message.split_first() {
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
        let response = match request {
            Request::Extension(extension) => self.extension(extension)?,
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

        let pin = if key.key.empty_auth {
            Pin::empty()
        } else {
            let prompt = format!("Enter PIN for TPM key {}: ", key.label());
            askpass::ask_pin(&prompt)
                .await
                .map_err(|e| with_key(&key, e))?
        };

        let (tx, rx) = tokio::sync::oneshot::channel();
        let job_key = Arc::clone(&key);
        let data = request.data;
        self.tpm.submit(
            move |tpm| tpm.sign(&job_key.key, &pin, hash, &data),
            move |result| {
                let _ = tx.send(result);
            },
        )?;
        let signature = rx
            .await
            .map_err(|_| Error::Protocol("the TPM thread stopped".into()))?
            .map_err(|e| with_key(&key, Error::Tpm(e)))?;
        tracing::debug!(key = %key.fingerprint(), "signed");
        Ok(signature)
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
        Request::RemoveIdentity(_) => "remove identity (18)",
        Request::RemoveAllIdentities => "remove all identities (19)",
        Request::AddSmartcardKey(_) | Request::AddSmartcardKeyConstrained(_) => {
            "add smartcard key (20/26)"
        }
        Request::RemoveSmartcardKey(_) => "remove smartcard key (21)",
        Request::Lock(_) => "lock (22)",
        Request::Unlock(_) => "unlock (23)",
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
