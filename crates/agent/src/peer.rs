//! The client at the other end of one connection: its process, as the kernel reported it
//! (SO_PEERCRED), and the chain of parents above it from `/proc`, so that a confirmation
//! prompt can say who is asking; and the ssh sessions the connection is bound to.

use std::path::Path;

use crate::destination::{self, Binding};
use crate::error::Result;

/// How many processes a chain names, the client included.
const CHAIN_LENGTH: usize = 4;

/// What the agent knows about one client connection.
#[derive(Debug, Default)]
pub struct Peer {
    pid: Option<u32>,
    bindings: Vec<Binding>,
    /// The session-bind requests behind `bindings`, as sent, to repeat to `-A` agents.
    bind_requests: Vec<Vec<u8>>,
}

impl Peer {
    /// A connection from process `pid`, when the kernel told it.
    pub fn new(pid: Option<u32>) -> Self {
        Peer {
            pid,
            ..Peer::default()
        }
    }

    /// The sessions this connection is bound to, oldest first.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The session-bind requests that made the bindings, as the client sent them.
    pub fn bind_requests(&self) -> &[Vec<u8>] {
        &self.bind_requests
    }

    /// Records a binding from a session-bind `request` (the whole message).
    pub fn bind(&mut self, binding: Binding, request: &[u8]) -> Result<()> {
        if destination::record(&mut self.bindings, binding)? {
            self.bind_requests.push(request.to_vec());
        }
        Ok(())
    }

    /// The client process and its parents, e.g.
    /// `ssh (pid 4242) ← bash (pid 4200) ← sshd (pid 4100)`.
    pub fn process_chain(&self) -> String {
        let Some(pid) = self.pid.filter(|&pid| pid > 0) else {
            return "an unknown process".into();
        };
        let chain = process_chain(Path::new("/proc"), pid);
        if chain.is_empty() {
            format!("process {pid}")
        } else {
            chain.join(" ← ")
        }
    }
}

/// `name (pid N)` for `pid` and up to [`CHAIN_LENGTH`] - 1 ancestors, stopping below init.
fn process_chain(proc: &Path, pid: u32) -> Vec<String> {
    let mut chain = Vec::new();
    let mut pid = pid;
    while chain.len() < CHAIN_LENGTH && pid > 1 {
        let status = std::fs::read_to_string(proc.join(pid.to_string()).join("status"));
        let Some((name, parent)) = status.ok().as_deref().and_then(parse_status) else {
            break;
        };
        chain.push(format!("{} (pid {pid})", printable(&name)));
        pid = parent;
    }
    chain
}

/// `Name:` and `PPid:` of a `/proc/PID/status` file.
fn parse_status(text: &str) -> Option<(String, u32)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let name = field("Name")?.to_string();
    let parent = field("PPid")?.parse().ok()?;
    Some((name, parent))
}

/// A process names itself; it must not be able to add lines to a prompt or restyle it.
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_name_and_parent() {
        let text = "Name:\tssh-keygen\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\n\
                    Ngid:\t0\nPid:\t42\nPPid:\t7\nTracerPid:\t0\n";
        assert_eq!(parse_status(text), Some(("ssh-keygen".into(), 7)));
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn control_characters_are_masked() {
        assert_eq!(printable("evil\nAllow? yes\x1b[2J"), "evil?Allow? yes?[2J");
    }

    /// The chain of this test process: itself first, each entry naming its pid.
    #[test]
    fn chain_of_this_process_starts_with_it() {
        let pid = std::process::id();
        let chain = process_chain(Path::new("/proc"), pid);
        assert!(!chain.is_empty());
        assert!(chain[0].ends_with(&format!("(pid {pid})")), "{chain:?}");
        assert!(chain.len() <= CHAIN_LENGTH);
        let text = Peer::new(Some(pid)).process_chain();
        assert!(text.starts_with(&chain[0]), "{text}");
        assert_eq!(Peer::new(None).process_chain(), "an unknown process");
    }
}
