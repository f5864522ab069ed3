//! A minimal agent client, for `ssh-tpm-add`: one request, one answer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use ssh_agent_lib::proto::{Extension, Request, Response};
use ssh_encoding::{Decode, Encode};
use ssh_tpm_keyfile::TpmKey;

use crate::addkey;
use crate::cert::CertBlob;
use crate::constraint::Constraints;
use crate::error::{Error, Result};
use crate::server::MAX_MESSAGE;

/// The agent socket a client should use: `$SSH_TPM_AUTH_SOCK`, else `$SSH_AUTH_SOCK`.
pub fn socket_from_env() -> Result<PathBuf> {
    ["SSH_TPM_AUTH_SOCK", "SSH_AUTH_SOCK"]
        .iter()
        .find_map(|name| std::env::var_os(name).filter(|v| !v.is_empty()))
        .map(PathBuf::from)
        .ok_or_else(|| Error::Socket {
            path: PathBuf::from("(none)"),
            reason: "neither SSH_TPM_AUTH_SOCK nor SSH_AUTH_SOCK is set; start \
                     ssh-tpm-agent and export SSH_TPM_AUTH_SOCK"
                .into(),
        })
}

/// Sends a key file (and its certificate) to the agent at `socket`, to be served within
/// `constraints`.
pub fn add_key(
    socket: &Path,
    key: &TpmKey,
    certificate: Option<&CertBlob>,
    constraints: &Constraints,
) -> Result<()> {
    let details = addkey::encode(key, certificate, constraints)?;
    let request = Request::Extension(Extension {
        name: addkey::EXTENSION.to_string(),
        details: details.into(),
    });
    match call(socket, &request)? {
        Response::Success => Ok(()),
        Response::ExtensionFailure => Err(Error::Protocol(
            "the agent does not know the tpm-add-key extension; is it ssh-tpm-agent?".into(),
        )),
        _ => Err(Error::Protocol(
            "the agent refused the key; its log says why".into(),
        )),
    }
}

fn call(socket: &Path, request: &Request) -> Result<Response> {
    let fail = |reason: String| Error::Socket {
        path: socket.to_path_buf(),
        reason,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "no agent is listening there; start ssh-tpm-agent, or point SSH_TPM_AUTH_SOCK \
                 at its socket"
                    .into()
            }
            _ => format!("cannot connect: {e}"),
        })
    })?;
    let mut frame = Vec::new();
    request
        .encoded_len()
        .and_then(|len| (len as u32).encode(&mut frame))
        .and_then(|()| request.encode(&mut frame))
        .map_err(|e| Error::Protocol(e.to_string()))?;
    stream
        .write_all(&frame)
        .map_err(|e| fail(format!("cannot send: {e}")))?;

    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .map_err(|e| fail(format!("no answer: {e}")))?;
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_MESSAGE {
        return Err(fail(format!("answer of {length} bytes is too large")));
    }
    let mut answer = vec![0u8; length];
    stream
        .read_exact(&mut answer)
        .map_err(|e| fail(format!("truncated answer: {e}")))?;
    Response::decode(&mut &answer[..]).map_err(|e| Error::Protocol(e.to_string()))
}
