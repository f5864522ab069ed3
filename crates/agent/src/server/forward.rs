//! Requests for keys this agent does not hold, passed to the agents given with `-A`
//! (see [`crate::upstream`]): their keys in our list, signatures and removals for their keys,
//! and plain keys that ssh-add adds. Whatever they answer is what the client gets; when they
//! cannot be reached the request fails, and the log names the socket. The client's
//! session-bind requests are repeated to them first, so that their destination constraints
//! see the same sessions ours do.

use super::{Agent, FAILURE, SIGN_RESPONSE, SUCCESS};
use crate::error::{Error, Result};
use crate::peer::Peer;
use crate::upstream::{self, Listed, USE_TIMEOUT};

impl Agent {
    /// The keys of every `-A` agent, in order. An agent that cannot be reached is left out
    /// with a warning, so that it does not hide the keys of the others and ours.
    pub(super) async fn upstream_identities(&self, peer: &Peer) -> Vec<Listed> {
        let mut all = Vec::new();
        for socket in self.upstreams.sockets() {
            match upstream::list(socket, peer.bind_requests()).await {
                Ok(keys) => all.extend(keys),
                Err(e) => tracing::warn!("{e}; listing the other keys without its keys"),
            }
        }
        all
    }

    /// Passes a sign request to the `-A` agent that lists the key, and returns its answer.
    pub(super) async fn sign_elsewhere(
        &self,
        peer: &Peer,
        blob: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let fingerprint = upstream::fingerprint(blob);
        let binds = peer.bind_requests();
        let mut unreachable = Vec::new();
        for socket in self.upstreams.sockets() {
            match upstream::list(socket, binds).await {
                Ok(keys) if keys.iter().any(|k| k.blob == blob) => {
                    let answer = upstream::call(socket, binds, message, USE_TIMEOUT).await?;
                    if answer.first() != Some(&SIGN_RESPONSE) {
                        return Err(Error::Upstream {
                            socket: socket.clone(),
                            reason: format!("refused to sign with key {fingerprint}"),
                        });
                    }
                    tracing::debug!(key = %fingerprint, agent = %socket.display(), "signed");
                    return Ok(answer);
                }
                Ok(_) => {}
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        Err(not_found(&fingerprint, &unreachable))
    }

    /// Removes a key we do not hold from the `-A` agent that has it.
    pub(super) async fn remove_elsewhere(
        &self,
        peer: &Peer,
        blob: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let fingerprint = upstream::fingerprint(blob);
        let mut unreachable = Vec::new();
        for socket in self.upstreams.sockets() {
            match upstream::call(socket, peer.bind_requests(), message, USE_TIMEOUT).await {
                Ok(answer) if answer == [SUCCESS] => {
                    tracing::info!(
                        key = %fingerprint,
                        agent = %socket.display(),
                        "key removed from another agent"
                    );
                    return Ok(answer);
                }
                // That agent does not have it; OpenSSH's ssh-agent answers FAILURE.
                Ok(_) => {}
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        Err(not_found(&fingerprint, &unreachable))
    }

    /// Passes remove-all to every `-A` agent; fails if any of them did not do it.
    pub(super) async fn remove_all_elsewhere(&self, peer: &Peer, message: &[u8]) -> Result<()> {
        let mut failures = Vec::new();
        for socket in self.upstreams.sockets() {
            match upstream::call(socket, peer.bind_requests(), message, USE_TIMEOUT).await {
                Ok(answer) if answer == [SUCCESS] => {
                    tracing::info!(agent = %socket.display(), "all keys removed from another agent")
                }
                Ok(_) => failures.push(format!(
                    "the agent at {} refused to remove its keys",
                    socket.display()
                )),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "this agent's keys were removed, but not all others: {}",
                failures.join("; ")
            )))
        }
    }

    /// Hands a plain or smartcard key (ADD_IDENTITY and the like) to the first `-A` agent,
    /// and returns its answer; with no `-A`, the request is refused.
    pub(super) async fn add_elsewhere(
        &self,
        peer: &Peer,
        kind: u8,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let Some(socket) = self.upstreams.first() else {
            return Err(Error::Protocol(format!(
                "{} cannot be held by this agent, which holds TPM keys only; add TPM keys \
                 with ssh-tpm-add, or start ssh-tpm-agent with -A SOCKET to hand other keys \
                 to another agent",
                what_is_added(kind)
            )));
        };
        let answer = upstream::call(socket, peer.bind_requests(), message, USE_TIMEOUT).await?;
        if answer != [SUCCESS] {
            let refused = if answer == [FAILURE] {
                "refused"
            } else {
                "did not accept"
            };
            return Err(Error::Upstream {
                socket: socket.to_path_buf(),
                reason: format!("{refused} the {}", what_is_added(kind)),
            });
        }
        let what = what_is_added(kind);
        tracing::info!(agent = %socket.display(), "{what} passed to another agent");
        Ok(answer)
    }
}

/// The thing a request of type `kind` adds or removes, in words.
fn what_is_added(kind: u8) -> &'static str {
    match kind {
        super::ADD_IDENTITY | super::ADD_ID_CONSTRAINED => "plain (non-TPM) key",
        super::REMOVE_SMARTCARD_KEY => "smartcard key removal",
        _ => "smartcard (PKCS#11) key",
    }
}

/// No agent has the key; the ones that could not be asked are named.
fn not_found(fingerprint: &str, unreachable: &[String]) -> Error {
    if unreachable.is_empty() {
        return Error::Protocol(format!(
            "no key in this agent or its -A agents is {fingerprint}"
        ));
    }
    Error::Protocol(format!(
        "key {fingerprint} is not in this agent, and not every -A agent could be asked: {}",
        unreachable.join("; ")
    ))
}
