//! Fuzzes the agent's side of the protocol: the bytes one client sends on its socket, framed
//! (draft-miller-ssh-agent 3) and answered by a fresh agent with no TPM behind it. That
//! covers the framing, the requests decoded by hand (list, sign, remove), those decoded by
//! ssh-agent-lib (lock, unlock, extensions), the `tpm-add-key` extension with its key file,
//! certificate and constraints, and session-bind. The agent must not panic, and what it
//! writes back must be whole, non-empty replies, no more of them than requests.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ssh_tpm_agent_core::peer::Peer;
use ssh_tpm_agent_core::server::serve_connection;
use ssh_tpm_agent_core::Agent;
use ssh_tpm_tpm::TpmService;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // No prompt may run: a key added with -c would otherwise start ssh-askpass.
        std::env::set_var("SSH_ASKPASS_REQUIRE", "never");
        // A paused clock skips the growing delay after a wrong unlock passphrase.
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let agent = Agent::new(TpmService::without_tpm(), false);
    let mut written = Vec::new();
    let served = runtime().block_on(serve_connection(
        &agent,
        Peer::new(None),
        data,
        &mut written,
    ));
    let _ = served;

    let mut replies = 0;
    let mut rest = &written[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "a reply's length prefix is cut");
        let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert!(
            length >= 1 && rest.len() >= 4 + length,
            "a reply is empty or cut"
        );
        rest = &rest[4 + length..];
        replies += 1;
    }
    assert!(
        replies <= data.len() / 5,
        "{replies} replies to {} bytes",
        data.len()
    );
});
