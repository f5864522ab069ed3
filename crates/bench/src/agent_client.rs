//! A blocking agent-protocol client (draft-miller-ssh-agent 4.4 list, 4.5 sign), the same
//! for every agent measured, so that their figures differ only by the agent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use signature::Verifier;
use ssh_agent_lib::proto::{PublicCredential, Request, Response, SignRequest};
use ssh_encoding::{Decode, Encode};
use ssh_key::public::KeyData;
use ssh_key::Signature;

use crate::error::{Error, Result};

/// SSH_AGENT_RSA_SHA2_512 (draft-miller-ssh-agent 4.5.1).
pub const RSA_SHA2_512: u32 = 0x04;
/// The agent's own cap on a message (OpenSSH's AGENT_MAX_LEN).
const MAX_MESSAGE: usize = 256 * 1024;

/// A key an agent lists.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: KeyData,
    pub comment: String,
}

/// One connection to an agent.
pub struct AgentClient {
    socket: PathBuf,
    stream: UnixStream,
    frame: Vec<u8>,
}

impl AgentClient {
    pub fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| Error::io(format!("connecting to {}", socket.display()), e))?;
        Ok(AgentClient {
            socket: socket.to_path_buf(),
            stream,
            frame: Vec::new(),
        })
    }

    /// SSH_AGENTC_REQUEST_IDENTITIES.
    pub fn list(&mut self) -> Result<Vec<Identity>> {
        match self.call(&Request::RequestIdentities)? {
            Response::IdentitiesAnswer(identities) => Ok(identities
                .into_iter()
                .map(|identity| Identity {
                    key: identity.credential.key_data().clone(),
                    comment: identity.comment,
                })
                .collect()),
            other => Err(self.refused("list", &other)),
        }
    }

    /// SSH_AGENTC_SIGN_REQUEST for `key` over `data`.
    pub fn sign(&mut self, key: &KeyData, data: &[u8], flags: u32) -> Result<Signature> {
        let request = Request::SignRequest(SignRequest {
            credential: PublicCredential::Key(key.clone()),
            data: data.to_vec(),
            flags,
        });
        match self.call(&request)? {
            Response::SignResponse(signature) => Ok(signature),
            other => Err(self.refused("sign", &other)),
        }
    }

    /// Signs and checks the signature against the public key: a benchmark of an agent
    /// that answers with garbage would measure nothing.
    pub fn sign_verified(&mut self, key: &KeyData, data: &[u8], flags: u32) -> Result<()> {
        let signature = self.sign(key, data, flags)?;
        key.verify(data, &signature).map_err(|e| Error::Agent {
            socket: self.socket.clone(),
            reason: format!("its {} signature does not verify: {e}", key.algorithm()),
        })
    }

    fn call(&mut self, request: &Request) -> Result<Response> {
        let fail = |reason: String| Error::Agent {
            socket: self.socket.clone(),
            reason,
        };
        self.frame.clear();
        request
            .encoded_len()
            .and_then(|len| (len as u32).encode(&mut self.frame))
            .and_then(|()| request.encode(&mut self.frame))
            .map_err(|e| fail(format!("cannot encode the request: {e}")))?;
        self.stream
            .write_all(&self.frame)
            .map_err(|e| fail(format!("cannot send: {e}")))?;

        let mut length = [0u8; 4];
        self.stream
            .read_exact(&mut length)
            .map_err(|e| fail(format!("no answer: {e}")))?;
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_MESSAGE {
            return Err(fail(format!("answer of {length} bytes is too large")));
        }
        self.frame.resize(length, 0);
        self.stream
            .read_exact(&mut self.frame)
            .map_err(|e| fail(format!("truncated answer: {e}")))?;
        Response::decode(&mut &self.frame[..]).map_err(|e| fail(format!("garbled answer: {e}")))
    }

    fn refused(&self, what: &str, response: &Response) -> Error {
        let answer = match response {
            Response::Failure => "SSH_AGENT_FAILURE".to_string(),
            other => format!("an unexpected {other:?}"),
        };
        Error::Agent {
            socket: self.socket.clone(),
            reason: format!("{what} request answered with {answer}; see the agent's log"),
        }
    }
}

/// Data shaped like an SSH user-authentication request (RFC 4252 7): a 32-byte session
/// id and the request fields, varied by `n` so that no two signatures are alike.
pub fn auth_data(n: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(180);
    let mut session_id = [0u8; 32];
    for (i, byte) in session_id.iter_mut().enumerate() {
        *byte = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 8 * 8)) as u8 ^ i as u8;
    }
    let fields: [&[u8]; 5] = [
        &session_id,
        b"bench",
        b"ssh-connection",
        b"publickey",
        b"ecdsa-sha2-nistp256",
    ];
    for field in fields {
        data.extend_from_slice(&(field.len() as u32).to_be_bytes());
        data.extend_from_slice(field);
    }
    data.extend_from_slice(&[0x32; 100]);
    data
}
