//! The agent's bounds on its clients, in process, with no TPM behind it: a client that sends
//! half a message and stalls holds up nobody and is dropped after the message timeout; the
//! connection limit closes excess connections at once and serves again when one leaves; a
//! malformed message gets FAILURE and the connection stays up.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ssh_tpm_agent_core::server::{serve, Limits};
use ssh_tpm_agent_core::Agent;
use ssh_tpm_tpm::TpmService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::timeout;

const LIST: [u8; 5] = [0, 0, 0, 1, 11];
const EMPTY_LIST: [u8; 9] = [0, 0, 0, 5, 12, 0, 0, 0, 0];
const FAILURE: [u8; 5] = [0, 0, 0, 1, 5];
/// Long enough for an answer on a loaded CI machine, far shorter than any hang.
const PROMPT: Duration = Duration::from_secs(5);

/// A socket path unique to this test.
fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssh-tpm-conn-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("agent.sock")
}

/// Serves an agent with `limits` on a new socket until the returned sender is dropped.
fn start(name: &str, limits: Limits) -> (PathBuf, tokio::sync::oneshot::Sender<()>) {
    let path = socket_path(name);
    let listener = UnixListener::bind(&path).unwrap();
    let agent = Arc::new(
        Agent::new(TpmService::without_tpm(), false)
            .with_limits(limits)
            .serving_own_process(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(agent, listener, async {
        let _ = stopped.await;
    }));
    (path, stop)
}

/// Sends `request` and reads a reply of `expected.len()` bytes within [`PROMPT`].
async fn ask(stream: &mut UnixStream, request: &[u8], expected: &[u8]) {
    stream.write_all(request).await.unwrap();
    let mut reply = vec![0u8; expected.len()];
    timeout(PROMPT, stream.read_exact(&mut reply))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(reply, expected);
}

/// True when the agent closes `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut UnixStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_half_message_stalls_nobody_and_is_dropped_after_the_timeout() {
    let limits = Limits {
        message_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (path, _stop) = start("stall", limits);

    // Half a sign request: a length of 100, then 10 bytes.
    let mut staller = UnixStream::connect(&path).await.unwrap();
    staller
        .write_all(&[0, 0, 0, 100, 13, 0, 0, 0, 4])
        .await
        .unwrap();
    // And a staller that sent only part of the length.
    let mut short = UnixStream::connect(&path).await.unwrap();
    short.write_all(&[0, 0]).await.unwrap();

    let mut other = UnixStream::connect(&path).await.unwrap();
    ask(&mut other, &LIST, &EMPTY_LIST).await;

    assert!(closed_within(&mut staller, Duration::from_secs(5)).await);
    assert!(closed_within(&mut short, Duration::from_secs(5)).await);
    // An idle connection is not a stalled message: it stays.
    assert!(!closed_within(&mut other, Duration::from_secs(1)).await);
    ask(&mut other, &LIST, &EMPTY_LIST).await;
}

#[tokio::test]
async fn excess_connections_are_closed_at_once_until_one_leaves() {
    let limits = Limits {
        max_connections: 8,
        ..Limits::default()
    };
    let (path, _stop) = start("limit", limits);
    let mut served = Vec::new();
    for _ in 0..8 {
        let mut stream = UnixStream::connect(&path).await.unwrap();
        ask(&mut stream, &LIST, &EMPTY_LIST).await;
        served.push(stream);
    }
    for _ in 0..3 {
        let mut excess = UnixStream::connect(&path).await.unwrap();
        assert!(
            closed_within(&mut excess, Duration::from_secs(2)).await,
            "a ninth connection is served"
        );
    }
    for stream in &mut served {
        ask(stream, &LIST, &EMPTY_LIST).await;
    }

    drop(served.pop());
    let mut stream = UnixStream::connect(&path).await;
    // The slot is given back when the agent sees the close; allow it a moment.
    for _ in 0..50 {
        let mut candidate = stream.unwrap();
        candidate.write_all(&LIST).await.unwrap();
        let mut reply = [0u8; 9];
        if let Ok(Ok(_)) = timeout(PROMPT, candidate.read_exact(&mut reply)).await {
            assert_eq!(reply, EMPTY_LIST);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream = UnixStream::connect(&path).await;
    }
    panic!("no connection served after one left");
}

#[tokio::test]
async fn malformed_messages_get_failure_and_the_connection_stays() {
    let (path, _stop) = start("malformed", Limits::default());
    let mut stream = UnixStream::connect(&path).await.unwrap();
    let malformed: [&[u8]; 6] = [
        // A list request with a body.
        &[0, 0, 0, 2, 11, 0],
        // A sign request whose key blob length runs past the message.
        &[0, 0, 0, 5, 13, 0, 0, 1, 0],
        // Protocol-1 leftovers and unknown types.
        &[0, 0, 0, 1, 1],
        &[0, 0, 0, 1, 200],
        // An extension whose name is cut.
        &[0, 0, 0, 3, 27, 0, 9],
        // A remove request with trailing bytes.
        &[0, 0, 0, 7, 18, 0, 0, 0, 1, 7, 7],
    ];
    for message in malformed {
        ask(&mut stream, message, &FAILURE).await;
    }
    ask(&mut stream, &LIST, &EMPTY_LIST).await;

    // Oversized and empty messages end the connection; the agent stays up.
    let mut oversized = UnixStream::connect(&path).await.unwrap();
    oversized.write_all(&[0, 4, 0, 1, 11]).await.unwrap();
    assert!(closed_within(&mut oversized, PROMPT).await);
    let mut empty = UnixStream::connect(&path).await.unwrap();
    empty.write_all(&[0, 0, 0, 0]).await.unwrap();
    assert!(closed_within(&mut empty, PROMPT).await);
    ask(&mut stream, &LIST, &EMPTY_LIST).await;
}
