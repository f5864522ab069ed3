//! Which TPM to talk to: a TCTI string as tpm2-tools take it, or the embedded swtpm.

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The TCTI used when the user names none.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// How long the probe of a `swtpm:`/`mssim:` TCTI waits for the TCP handshake.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the TPM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmTarget {
    /// A TCTI configuration string (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`).
    Tcti(String),
    /// A private swtpm whose state lives in this directory, started on demand.
    Embedded(PathBuf),
}

impl TpmTarget {
    /// Picks the TPM from the command line: `--tcti` wins, then `--swtpm`, then the default
    /// device. The default device must exist; if it does not, the error suggests `--swtpm`.
    pub fn resolve(tcti: Option<&str>, swtpm: bool) -> Result<Self> {
        if let Some(tcti) = tcti.filter(|t| !t.is_empty()) {
            return Ok(TpmTarget::Tcti(tcti.to_string()));
        }
        if swtpm {
            return Ok(TpmTarget::Embedded(embedded_state_dir()?));
        }
        let device = device_path(DEFAULT_TCTI).unwrap_or(Path::new("/dev/tpmrm0"));
        if !device.exists() {
            return Err(Error::NoTpm(device.to_path_buf()));
        }
        Ok(TpmTarget::Tcti(DEFAULT_TCTI.to_string()))
    }
}

/// Checks a TCTI string against what this build can reach. tss-esapi 7.7 understands
/// `device:PATH`, `mssim:`/`swtpm:` with `host=` and `port=`, and `tabrmd:`; anything else
/// it would silently replace by a default (localhost:2321), so it is refused here.
///
/// For `swtpm:` and `mssim:` it also checks that something listens on the command port
/// (see [`probe_tcp`]): tss-esapi would only say "response code not recognized".
pub fn check_tcti(tcti: &str) -> Result<()> {
    let (kind, options) = tcti.split_once(':').unwrap_or((tcti, ""));
    let unsupported = |what: String| {
        Err(Error::Tcti {
            tcti: tcti.to_string(),
            reason: format!(
                "{what}; this build reaches device:PATH, swtpm:host=H,port=P, \
                 mssim:host=H,port=P and tabrmd:"
            ),
        })
    };
    match kind {
        "device" | "tabrmd" => Ok(()),
        "swtpm" | "mssim" => {
            for option in options.split(',').filter(|o| !o.is_empty()) {
                let key = option.split_once('=').map_or(option, |(k, _)| k);
                if key != "host" && key != "port" {
                    return unsupported(format!("the {kind} option `{key}` is not supported"));
                }
            }
            probe_tcp(options).map_err(|reason| Error::Tcti {
                tcti: tcti.to_string(),
                reason,
            })
        }
        _ if tcti.starts_with('/') => Ok(()),
        other => unsupported(format!("the TCTI `{other}` is not supported")),
    }
}

/// Connects to the command port of a `swtpm:`/`mssim:` TCTI's `options` and hangs up at
/// once (swtpm serves one connection at a time, and goes back to listening when this one
/// closes); the error is the reason nobody answered, with what to do.
fn probe_tcp(options: &str) -> std::result::Result<(), String> {
    let option = |name: &str| {
        options
            .split(',')
            .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
    };
    // tss-esapi's defaults for a missing option.
    let host = option("host").unwrap_or("localhost");
    let port = option("port").unwrap_or("2321");
    let place = format!("{host}:{port}");
    let hint = "start swtpm there, or pick another TPM with --tcti or --swtpm";
    let port: u16 = port
        .parse()
        .map_err(|_| format!("the port `{port}` is not a TCP port number"))?;
    let addresses = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host `{host}` ({e}); {hint}"))?;

    let mut last = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == ErrorKind::ConnectionRefused => {
            format!("nothing listens on {place} (connection refused); {hint}")
        }
        Some(e) => format!("cannot connect to {place} ({}); {hint}", plain_io(&e)),
        None => format!("the host `{host}` has no address; {hint}"),
    })
}

/// An I/O error's text without the `(os error N)` tail, for use inside a sentence.
fn plain_io(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.split_once(" (os error") {
        Some((head, _)) => head.to_lowercase(),
        None => text,
    }
}

/// The device node named by a `device:` TCTI (or a bare path), if it names one.
pub fn device_path(tcti: &str) -> Option<&Path> {
    let conf = tcti.strip_prefix("device:").unwrap_or(tcti);
    conf.starts_with('/').then(|| Path::new(conf))
}

/// `$XDG_STATE_HOME/ssh-tpm/swtpm`, or `~/.local/state/ssh-tpm/swtpm`.
pub fn embedded_state_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::Swtpm("neither XDG_STATE_HOME nor HOME is set; set one of them".into())
                })?;
            PathBuf::from(home).join(".local/state")
        }
    };
    Ok(base.join("ssh-tpm").join("swtpm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcti_flag_wins_over_swtpm() {
        let target = TpmTarget::resolve(Some("swtpm:port=1"), true).expect("resolves");
        assert_eq!(target, TpmTarget::Tcti("swtpm:port=1".into()));
    }

    #[test]
    fn a_tcp_tcti_where_nothing_listens_says_so() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let tcti = format!("swtpm:host=127.0.0.1,port={port}");
        let err = check_tcti(&tcti).expect_err("nothing listens");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the TPM through `{tcti}`: nothing listens on 127.0.0.1:{port} \
                 (connection refused); start swtpm there, or pick another TPM with --tcti or \
                 --swtpm"
            )
        );
    }

    #[test]
    fn a_tcp_tcti_where_something_listens_passes_and_the_probe_hangs_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("address").port();
        check_tcti(&format!("mssim:host=127.0.0.1,port={port}")).expect("listens");
        let (mut probe, _) = listener.accept().expect("the probe");
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut probe, &mut buf).expect("eof"), 0);
    }

    #[test]
    fn unsupported_tcti_options_are_refused() {
        assert!(check_tcti("device:/dev/tpmrm0").is_ok());
        let err = check_tcti("swtpm:path=/run/swtpm.sock").expect_err("path refused");
        assert!(
            err.to_string().contains("option `path` is not supported"),
            "{err}"
        );
        assert!(check_tcti("cmd:swtpm chardev").is_err());
    }

    #[test]
    fn device_paths() {
        assert_eq!(
            device_path("device:/dev/tpm0"),
            Some(Path::new("/dev/tpm0"))
        );
        assert_eq!(device_path("/dev/tpmrm0"), Some(Path::new("/dev/tpmrm0")));
        assert_eq!(device_path("swtpm:host=127.0.0.1,port=2321"), None);
    }
}
