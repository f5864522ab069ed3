//! Starting the CA: open the database, load the CA key and the EK trust anchors, and serve the
//! API on a listener, over TLS (rustls, ring) unless the listener is on a loopback address.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ssh_key::PrivateKey;
use ssh_tpm_attest::ekcert::TrustAnchors;

use crate::authority::Authority;
use crate::config::{Config, TlsConfig};
use crate::error::CaError;
use crate::store::{SqliteStore, Store};

/// Sessions and challenges are forgotten this long after they expire.
const PURGE_AFTER_SECS: u64 = 3600;

/// Opens everything `config` names and builds the CA.
///
/// # Errors
///
/// [`CaError`] naming the file or setting that is wrong.
pub async fn open(config: Config) -> Result<Arc<Authority>, CaError> {
    let ca_key = load_ca_key(&config.ca_key)?;
    let anchors = load_anchors(&config.ek_roots)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.database_url).await?);
    Ok(Arc::new(Authority::new(config, store, ca_key, anchors)?))
}

/// Reads the CA's OpenSSH private key (unencrypted).
///
/// # Errors
///
/// [`CaError::Io`] or [`CaError::Setup`].
pub fn load_ca_key(path: &Path) -> Result<PrivateKey, CaError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| CaError::io("cannot read the CA key", path, e))?,
    );
    let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
        CaError::Setup(format!(
            "{} is not an OpenSSH private key: {e}",
            path.display()
        ))
    })?;
    if key.is_encrypted() {
        return Err(CaError::Setup(format!(
            "{} is encrypted; the CA needs an unencrypted key (ssh-keygen -p -N '' -f {})",
            path.display(),
            path.display()
        )));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!("{} can be read by others; chmod 600 it", path.display());
        }
    }
    Ok(key)
}

/// Reads the EK roots: PEM files with one or more certificates each.
///
/// # Errors
///
/// [`CaError::Setup`] when none is configured or a file holds no certificate (naming it).
pub fn load_anchors(paths: &[std::path::PathBuf]) -> Result<TrustAnchors, CaError> {
    if paths.is_empty() {
        return Err(CaError::Setup(
            "no EK trust anchors: list the TPM manufacturers' root certificates in ek_roots".into(),
        ));
    }
    let mut pem = Vec::new();
    for path in paths {
        pem.extend_from_slice(&read_ek_root(path)?);
        pem.push(b'\n');
    }
    TrustAnchors::from_pem(&pem)
        .map_err(|e| CaError::Setup(format!("EK roots ({}): {e}", join_paths(paths))))
}

/// Reads one EK root file and checks that it holds at least one PEM certificate, and only
/// readable ones; returns its contents.
///
/// # Errors
///
/// [`CaError::Io`] when it cannot be read; [`CaError::Setup`] naming it otherwise.
pub fn read_ek_root(path: &Path) -> Result<Vec<u8>, CaError> {
    let pem = std::fs::read(path).map_err(|e| CaError::io("cannot read the EK root", path, e))?;
    check_ek_root(&pem)
        .map_err(|why| CaError::Setup(format!("EK root {}: {why}", path.display())))?;
    Ok(pem)
}

/// Why `pem` is not an EK root file, with what to give instead.
pub(crate) fn check_ek_root(pem: &[u8]) -> Result<(), String> {
    TrustAnchors::from_pem(pem).map(|_| ()).map_err(|e| {
        format!(
            "{}; ek_roots lists PEM files of TPM manufacturers' CA certificates (convert a DER \
             one with `openssl x509 -inform der -in FILE -out FILE.pem`)",
            e.reason()
        )
    })
}

fn join_paths(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn tls_server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, CaError> {
    let setup = |what: &str, path: &Path, e: String| {
        CaError::Setup(format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| setup("cannot read the TLS certificate", &tls.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| setup("bad TLS certificate in", &tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(setup("no certificate in", &tls.cert, "empty".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| setup("cannot read the TLS key", &tls.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CaError::Setup(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| CaError::Setup(format!("TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How long the server waits for a slow or silent client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the connection (or the end of the previous request) to the end of the request's
    /// headers; a client that takes longer is disconnected.
    pub header_read: Duration,
    /// For the TLS handshake.
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, with the default [`Timeouts`].
///
/// TLS is used when the configuration has it; without it the listener must be on a loopback
/// address.
///
/// # Errors
///
/// [`CaError::Setup`] for a non-loopback listener without TLS or a bad TLS key;
/// [`CaError::Serve`] when the server fails.
pub async fn serve(
    authority: Arc<Authority>,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CaError> {
    serve_with(authority, listener, shutdown, Timeouts::default()).await
}

/// [`serve`] with other timeouts (tests use short ones).
///
/// # Errors
///
/// As [`serve`].
pub async fn serve_with(
    authority: Arc<Authority>,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: Timeouts,
) -> Result<(), CaError> {
    let addr = listener
        .local_addr()
        .map_err(|e| CaError::Serve(format!("listener: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| CaError::Serve(format!("listener: {e}")))?;
    let tls = match &authority.config.tls {
        Some(tls) => Some(tls_server_config(tls)?),
        None if addr.ip().is_loopback() => None,
        None => {
            return Err(CaError::Setup(format!(
                "refusing to serve on {addr} without TLS: set tls_cert and tls_key in {}",
                authority.config.path.display()
            )))
        }
    };

    let purger = tokio::spawn(purge_loop(authority.clone()));
    let app = crate::api::router(authority).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let result = match tls {
        Some(tls) => {
            tracing::info!("listening on https://{addr}");
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(timeouts.tls_handshake);
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
            read_headers_within(server.http_builder(), timeouts.header_read);
            server.handle(handle).serve(app).await
        }
        None => {
            tracing::info!("listening on http://{addr} (loopback, no TLS)");
            let mut server = axum_server::from_tcp(listener);
            read_headers_within(server.http_builder(), timeouts.header_read);
            server.handle(handle).serve(app).await
        }
    };
    purger.abort();
    result.map_err(|e| CaError::Serve(e.to_string()))
}

/// Disconnects HTTP/1.1 clients that do not finish their request headers within `timeout`
/// (hyper needs a timer for that; without one it waits forever).
fn read_headers_within(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

async fn purge_loop(authority: Arc<Authority>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let before = crate::now().saturating_sub(PURGE_AFTER_SECS);
        if let Err(e) = authority.store.purge_expired(before).await {
            tracing::warn!("cannot purge expired sessions: {e}");
        }
    }
}

/// `ssh-tpm-ca serve`: binds the configured address and serves until SIGINT or SIGTERM.
///
/// # Errors
///
/// As [`open`] and [`serve`].
pub async fn run(config: Config) -> Result<(), CaError> {
    let addr: SocketAddr = config.listen;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let authority = open(config).await?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| CaError::Serve(format!("cannot listen on {addr}: {e}")))?;
    serve(authority, listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/fixtures");

    #[test]
    fn an_ek_root_without_a_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("vendor.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let good = std::path::PathBuf::from(format!("{FIXTURES}/ca-root.pem"));
        let other = std::path::PathBuf::from(format!("{FIXTURES}/ca-intermediate.pem"));
        assert_eq!(
            load_anchors(&[good.clone(), other.clone()]).unwrap().len(),
            2
        );

        let e = load_anchors(&[good, empty.clone(), other]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "EK root {}: no CERTIFICATE in it; ek_roots lists PEM files of TPM \
                 manufacturers' CA certificates (convert a DER one with `openssl x509 -inform \
                 der -in FILE -out FILE.pem`)",
                empty.display()
            )
        );
    }
}
