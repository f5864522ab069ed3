//! The CA as an HTTP client of the OpenID provider and the compliance service: reqwest clients
//! that trust the public web PKI plus the operator's extra roots (`tls_roots`, for a private
//! PKI), and error messages that keep their causes.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Reads a `tls_roots` file: at least one PEM certificate.
///
/// # Errors
///
/// What is wrong with the file, naming it.
pub(crate) fn read_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: {}", path.display(), error_chain(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A client that follows no redirects, gives up after `timeout`, and trusts the web PKI roots
/// and those in the `roots` files.
///
/// # Errors
///
/// A message when a roots file is unusable or the client cannot be built.
pub(crate) fn client(roots: &[PathBuf], timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    for path in roots {
        for cert in read_roots(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// `e` followed by its `source()` chain: "error sending request for url (…): client error
/// (Connect): invalid peer certificate: UnknownIssuer". Reqwest's own message leaves the cause
/// out; a cause already contained in the previous message is not repeated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn chains_sources_without_repeats() {
        let e = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer("client error (Connect)", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "error sending request: client error (Connect)"
        );
    }

    #[test]
    fn roots_files_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = read_roots(&empty).unwrap_err();
        assert!(
            e.ends_with("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        assert!(read_roots(&missing).unwrap_err().starts_with("cannot read"));
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/fixtures");
        let two = read_roots(Path::new(&format!("{fixtures}/ca-root.pem"))).unwrap();
        assert_eq!(two.len(), 1);
    }
}
