//! A TCP proxy between a TPM client and swtpm that reads the command frames going by: it
//! counts them per command code, times how long swtpm takes to answer each, counts failed
//! responses, and can hold each command back for a fixed delay to behave like a slow
//! hardware TPM. The figures come from the wire, not from the client reporting on itself.
//!
//! The swtpm TCTI uses two ports: `P` carries TPM frames, `P + 1` swtpm's control
//! channel, which is passed through byte for byte.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::frame::{command_name, Header, CC_SIGN, HEADER_LEN};

/// What went by for one command code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeStats {
    pub commands: u64,
    /// Responses with a code other than TPM_RC_SUCCESS.
    pub failures: u64,
    /// The response code of the latest failure.
    pub last_failure: u32,
    /// Time from forwarding the command to receiving the whole response.
    pub tpm_time: Duration,
}

/// Commands seen, by TPM_CC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub by_code: BTreeMap<u32, CodeStats>,
}

impl Counts {
    /// What happened after `earlier` was taken.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut by_code = BTreeMap::new();
        for (code, now) in &self.by_code {
            let before = earlier.by_code.get(code).copied().unwrap_or_default();
            let diff = CodeStats {
                commands: now.commands - before.commands,
                failures: now.failures - before.failures,
                last_failure: now.last_failure,
                tpm_time: now.tpm_time.saturating_sub(before.tpm_time),
            };
            if diff.commands > 0 {
                by_code.insert(*code, diff);
            }
        }
        Counts { by_code }
    }

    /// Adds what `other` counted.
    pub fn add(&mut self, other: &Counts) {
        for (code, stats) in &other.by_code {
            let entry = self.by_code.entry(*code).or_default();
            entry.commands += stats.commands;
            entry.failures += stats.failures;
            entry.tpm_time += stats.tpm_time;
            if stats.failures > 0 {
                entry.last_failure = stats.last_failure;
            }
        }
    }

    pub fn commands(&self) -> u64 {
        self.by_code.values().map(|s| s.commands).sum()
    }

    pub fn failures(&self) -> u64 {
        self.by_code.values().map(|s| s.failures).sum()
    }

    pub fn tpm_time(&self) -> Duration {
        self.by_code.values().map(|s| s.tpm_time).sum()
    }

    pub fn signs(&self) -> u64 {
        self.by_code.get(&CC_SIGN).map_or(0, |s| s.commands)
    }

    /// `Load 2 (1 failed, rc 0x902), Sign 1`: counts divided by `per` (per signature).
    pub fn breakdown(&self, per: u64) -> String {
        if self.by_code.is_empty() {
            return "none".into();
        }
        let per = per.max(1) as f64;
        let parts: Vec<String> = self
            .by_code
            .iter()
            .map(|(code, s)| {
                let mut part =
                    format!("{} {}", command_name(*code), round(s.commands as f64 / per));
                if s.failures > 0 {
                    let failed = round(s.failures as f64 / per);
                    part.push_str(&format!(" ({failed} failed, rc {:#x})", s.last_failure));
                }
                part
            })
            .collect();
        parts.join(", ")
    }
}

/// `3`, `1.5`, `0.333`: as short as the value allows.
fn round(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

struct Shared {
    upstream_port: u16,
    /// One connection to swtpm, kept across client connections: the swtpm TCTI connects
    /// anew for every command, and two connections per command would only add cost.
    upstream: Mutex<Option<TcpStream>>,
    delay_us: AtomicU64,
    counts: Mutex<Counts>,
}

/// A running proxy. Its threads live as long as the process; connections come and go.
#[derive(Clone)]
pub struct TpmProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl TpmProxy {
    /// Listens on a free loopback port pair and forwards to swtpm at `upstream` (data)
    /// and `upstream + 1` (control).
    pub fn start(upstream: u16) -> io::Result<Self> {
        let (data, control) = bind_port_pair()?;
        let port = data.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream_port: upstream,
            upstream: Mutex::new(None),
            delay_us: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
        });
        let for_data = Arc::clone(&shared);
        thread::Builder::new()
            .name("proxy-data".into())
            .spawn(move || serve_data(data, &for_data))?;
        thread::Builder::new()
            .name("proxy-ctrl".into())
            .spawn(move || serve_control(control, upstream + 1))?;
        Ok(TpmProxy { port, shared })
    }

    /// The TCTI string that reaches swtpm through this proxy.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Holds every later command back by `delay` before swtpm sees it.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(micros, Ordering::Relaxed);
    }

    /// Closes the connection to swtpm, so that a client can reach swtpm directly (it
    /// serves one connection at a time). The next command through the proxy reopens it.
    pub fn disconnect(&self) {
        if let Some(stream) = lock(&self.shared.upstream).take() {
            close_at_once(stream);
        }
    }

    /// Everything counted so far.
    pub fn counts(&self) -> Counts {
        lock(&self.shared.counts).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bind_port_pair() -> io::Result<(TcpListener, TcpListener)> {
    for _ in 0..64 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = first.local_addr()?.port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(second) = TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)) {
            return Ok((first, second));
        }
    }
    Err(io::Error::other("found no free pair of loopback ports"))
}

/// Closes with a reset instead of a FIN, once the peer is done: a client that connects
/// for every command would otherwise leave a socket in TIME-WAIT per command, and a run
/// of tens of thousands of commands would exhaust the machine's ephemeral ports.
fn close_at_once(stream: TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
    drop(stream);
}

/// Serves data connections one at a time, as swtpm itself does; a client that connects
/// while another is served waits in the listen queue.
fn serve_data(listener: TcpListener, shared: &Shared) {
    for client in listener.incoming().flatten() {
        let _ = client.set_nodelay(true);
        let _ = relay_frames(&client, shared);
        close_at_once(client);
    }
}

/// Forwards one command at a time, then its response, timing and counting each.
fn relay_frames(mut client: &TcpStream, shared: &Shared) -> io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let Some(command) = read_frame(&mut client, &mut buffer)? else {
            return Ok(());
        };
        let delay = shared.delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            thread::sleep(Duration::from_micros(delay));
        }
        let (response, elapsed) = exchange(shared, &mut buffer)?;
        {
            let mut counts = lock(&shared.counts);
            let entry = counts.by_code.entry(command.code).or_default();
            entry.commands += 1;
            if response.code != 0 {
                entry.failures += 1;
                entry.last_failure = response.code;
            }
            entry.tpm_time += elapsed;
        }
        client.write_all(&buffer)?;
    }
}

/// Sends the command in `buffer` to swtpm and leaves its response there.
fn exchange(shared: &Shared, buffer: &mut Vec<u8>) -> io::Result<(Header, Duration)> {
    let mut upstream = lock(&shared.upstream);
    if upstream.is_none() {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, shared.upstream_port))?;
        stream.set_nodelay(true)?;
        *upstream = Some(stream);
    }
    let Some(stream) = upstream.as_mut() else {
        unreachable!("connected above");
    };
    let result = (|| {
        stream.write_all(buffer)?;
        let sent = Instant::now();
        let response = read_frame(stream, buffer)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "swtpm hung up"))?;
        Ok((response, sent.elapsed()))
    })();
    if result.is_err() {
        if let Some(broken) = upstream.take() {
            close_at_once(broken);
        }
    }
    result
}

/// Reads one whole frame into `buffer` (header included); `None` at a clean end of stream.
fn read_frame(stream: &mut impl Read, buffer: &mut Vec<u8>) -> io::Result<Option<Header>> {
    let mut head = [0u8; HEADER_LEN];
    match stream.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header = Header::parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    buffer.clear();
    buffer.extend_from_slice(&head);
    buffer.resize(header.size as usize, 0);
    stream.read_exact(&mut buffer[HEADER_LEN..])?;
    Ok(Some(header))
}

/// The control channel: plain bytes both ways until either side closes, one thread per
/// connection (the TCTI opens one when it starts, not per command).
fn serve_control(listener: TcpListener, upstream_port: u16) {
    for client in listener.incoming().flatten() {
        let _ = thread::Builder::new().name("proxy-ctrl-conn".into()).spawn(
            move || -> io::Result<()> {
                let upstream = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port))?;
                let (mut client_read, mut upstream_write) =
                    (client.try_clone()?, upstream.try_clone()?);
                let to_upstream = thread::spawn(move || {
                    let _ = io::copy(&mut client_read, &mut upstream_write);
                    let _ = upstream_write.shutdown(Shutdown::Write);
                });
                let _ = io::copy(&mut &upstream, &mut &client);
                let _ = to_upstream.join();
                close_at_once(client);
                close_at_once(upstream);
                Ok(())
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake TPM on a port pair: answers every command with TPM_RC_SUCCESS, except
    /// code 0x157 (Load), which it fails with 0x902 (object memory).
    fn fake_tpm() -> u16 {
        let (data, _control) = bind_port_pair().expect("ports");
        let port = data.local_addr().expect("addr").port();
        thread::spawn(move || {
            let _control = _control;
            for stream in data.incoming().flatten() {
                let mut buffer = Vec::new();
                while let Ok(Some(command)) = read_frame(&mut &stream, &mut buffer) {
                    let rc: u32 = if command.code == 0x157 { 0x902 } else { 0 };
                    let mut reply = vec![0x80, 0x01, 0, 0, 0, 10];
                    reply.extend_from_slice(&rc.to_be_bytes());
                    if (&stream).write_all(&reply).is_err() {
                        break;
                    }
                }
            }
        });
        port
    }

    fn command(code: u32, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80, 0x01];
        frame.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&code.to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }

    #[test]
    fn counts_commands_and_failures_by_code() {
        let proxy = TpmProxy::start(fake_tpm()).expect("proxy starts");
        let before = proxy.counts();
        let mut tpm = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port)).expect("connect");
        let mut reply = [0u8; 10];
        for code in [CC_SIGN, CC_SIGN, 0x157] {
            tpm.write_all(&command(code, &[1, 2, 3])).expect("send");
            tpm.read_exact(&mut reply).expect("reply");
        }
        assert_eq!(&reply[6..], &[0, 0, 9, 2]);

        let seen = proxy.counts().since(&before);
        assert_eq!(seen.commands(), 3);
        assert_eq!(seen.signs(), 2);
        assert_eq!(seen.failures(), 1);
        assert_eq!(seen.breakdown(1), "Load 1 (1 failed, rc 0x902), Sign 2");
        assert_eq!(seen.breakdown(2), "Load 0.5 (0.5 failed, rc 0x902), Sign 1");
    }

    #[test]
    fn serves_a_client_that_reconnects_for_every_command() {
        // The swtpm TCTI opens a connection per command; swtpm sees one connection.
        let proxy = TpmProxy::start(fake_tpm()).expect("proxy starts");
        for _ in 0..20 {
            let mut tpm = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port)).expect("connect");
            tpm.write_all(&command(CC_SIGN, &[9; 40])).expect("send");
            let mut reply = [0u8; 10];
            tpm.read_exact(&mut reply).expect("reply");
        }
        assert_eq!(proxy.counts().signs(), 20);
    }

    #[test]
    fn delays_each_command() {
        let proxy = TpmProxy::start(fake_tpm()).expect("proxy starts");
        proxy.set_delay(Duration::from_millis(30));
        let mut tpm = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port)).expect("connect");
        let started = Instant::now();
        let mut reply = [0u8; 10];
        for _ in 0..2 {
            tpm.write_all(&command(CC_SIGN, &[])).expect("send");
            tpm.read_exact(&mut reply).expect("reply");
        }
        assert!(started.elapsed() >= Duration::from_millis(60));
    }
}
