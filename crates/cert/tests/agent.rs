//! Handing a certificate to an agent that is not ssh-tpm-agent: OpenSSH's own ssh-agent
//! refuses the `tpm-add-key` extension, and the hand-over says which agent that is and what
//! to do, rather than pointing at a log that has nothing to say.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ssh_tpm_cert::agent::{hand_over, Handover};
use ssh_tpm_keyfile::TpmKey;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../keyfile/tests/fixtures/interop")
        .join(name)
}

/// A certificate line for the `.pub` file `public`, signed by a fresh ssh-keygen CA.
fn certificate(dir: &Path, public: &Path) -> String {
    let copy = dir.join("id.pub");
    std::fs::copy(public, &copy).unwrap();
    let ca = dir.join("ca");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ca));
    run(Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "id", "-n", "alice", "-V", "-5m:+1h"])
        .arg(&copy));
    std::fs::read_to_string(dir.join("id-cert.pub")).unwrap()
}

#[test]
fn openssh_agent_is_named_as_not_ssh_tpm_agent() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = fixture("ossl-p256-owner.tpm");
    let key = TpmKey::from_bytes(&std::fs::read(&key_path).unwrap()).unwrap();
    let cert = certificate(dir.path(), &fixture("ossl-p256-owner.pub"));

    let socket = dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // One test in this binary, each test its own process: no other thread reads the
    // environment.
    std::env::remove_var("SSH_TPM_AUTH_SOCK");
    std::env::set_var("SSH_AUTH_SOCK", &socket);
    let handover = hand_over(&key_path, &key, &cert);
    let _ = agent.kill();
    let _ = agent.wait();

    assert_eq!(handover, Handover::NotTpmAgent(socket.clone()));
    assert_eq!(
        handover.to_string(),
        format!(
            "the agent at {} is not ssh-tpm-agent (OpenSSH's ssh-agent?) and cannot hold TPM \
             keys; point SSH_TPM_AUTH_SOCK or SSH_AUTH_SOCK at ssh-tpm-agent's socket, or use \
             --no-agent",
            socket.display()
        )
    );
}
