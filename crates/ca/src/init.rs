//! `ssh-tpm-ca init`: a commented `ca.toml` with every setting (mode 0600: it may get a bearer
//! token), and an Ed25519 CA key (`ca_key`, OpenSSH format, mode 0600, and `ca_key.pub`).
//! Existing files are never replaced.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::error::CaError;

/// What `init` fills into the configuration.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Directory for the files.
    pub dir: PathBuf,
    /// `listen`.
    pub listen: String,
    /// `oidc.issuer`.
    pub issuer: String,
    /// `oidc.client_id`.
    pub client_id: String,
    /// `oidc.user_claim`.
    pub user_claim: String,
    /// `compliance.url`.
    pub compliance_url: String,
    /// `ek_roots`, as given (relative to the current directory); `init` writes them
    /// canonicalized.
    pub ek_roots: Vec<PathBuf>,
    /// `certificate_validity_secs`.
    pub validity_secs: u64,
}

/// The files `init` wrote.
#[derive(Debug, Clone)]
pub struct Created {
    /// `ca.toml`.
    pub config: PathBuf,
    /// `ca_key`.
    pub key: PathBuf,
    /// `ca_key.pub`.
    pub public_key: PathBuf,
    /// The CA public key line.
    pub public_key_line: String,
}

fn toml_string(s: &str) -> String {
    // TOML basic strings accept JSON string escapes.
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The configuration text, with every setting and a comment for each.
pub fn config_text(o: &InitOptions) -> String {
    let roots = o
        .ek_roots
        .iter()
        .map(|p| toml_string(&p.display().to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# ssh-tpm-ca configuration. Relative paths are relative to this file's directory.
# docs/ca.md explains every setting.

# Address and port of the HTTP API. Anything but a loopback address needs TLS.
listen = {listen}
# TLS certificate chain and private key (PEM). Required unless `listen` is loopback.
# tls_cert = "tls/cert.pem"
# tls_key = "tls/key.pem"

# The database: SQLite, one file, created and migrated at start.
database = "sqlite://ca.db"

# The CA's signing key (OpenSSH private key, mode 0600). Its public half goes into sshd's
# TrustedUserCAKeys.
ca_key = "ca_key"

# PEM files with the TPM manufacturers' root certificates; EK certificates must chain to one.
ek_roots = [{roots}]

# How long a session (one enrolment or certificate request) may be used, in seconds.
session_lifetime_secs = 300

# How long certificates are valid from issuance, in seconds (at most 86400, 24 hours).
# Certificates also start 5 minutes before issuance, for clock differences.
certificate_validity_secs = {validity}

[oidc]
# The OpenID provider (https://, or http:// only on a loopback address).
issuer = {issuer}
# Our client id at the provider: ID tokens must be issued for it.
client_id = {client_id}
# Scopes clients request at login. Add "groups" (or your provider's scope for the groups
# claim) when [oidc.group_principals] below maps groups.
scopes = ["openid", "email", "profile"]
# The claim naming the user: matched against the inventory's --user, and the first principal.
user_claim = {user_claim}
# The claim listing the user's groups.
groups_claim = "groups"
# Tolerated clock difference with the provider, in seconds.
leeway_secs = 60
# PEM files of extra CA certificates trusted for the provider's TLS, besides the public web
# PKI roots (for a provider on a private PKI).
# tls_roots = ["private-root.pem"]

# Group -> extra principals for its members.
[oidc.group_principals]
# admins = ["root"]

[compliance]
# The device-management system: the CA asks GET {{url}}/devices/{{device_id}} before every
# certificate and needs 200 {{"compliant": true}} (docs/protocol.md, "Device compliance").
url = {compliance}
# Sent as "Authorization: Bearer ..." when set (or read from bearer_token_file).
# bearer_token = "..."
# bearer_token_file = "compliance.token"
# Seconds to wait for an answer before refusing the certificate.
timeout_secs = 5
# PEM files of extra CA certificates trusted for its TLS, besides the public web PKI roots.
# tls_roots = ["private-root.pem"]

[rate_limit]
# Requests per minute for one user, and for one device.
per_user_per_minute = 30
per_device_per_minute = 30
# Requests of any kind per minute from one client address (IPv6: one /64); loopback clients
# are not limited. 0 turns it off: do that behind a reverse proxy on another host, which the
# CA sees as one client.
per_address_per_minute = 120
"#,
        listen = toml_string(&o.listen),
        roots = roots,
        validity = o.validity_secs,
        issuer = toml_string(&o.issuer),
        client_id = toml_string(&o.client_id),
        user_claim = toml_string(&o.user_claim),
        compliance = toml_string(&o.compliance_url),
    )
}

/// The EK roots as absolute, canonical paths (the configuration resolves relative paths
/// against its own directory, not against where `init` ran), each checked to hold at least one
/// PEM certificate.
fn absolute_ek_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>, CaError> {
    roots
        .iter()
        .map(|root| {
            let usage =
                |why: String| CaError::Usage(format!("--ek-root {}: {why}", root.display()));
            let path = std::fs::canonicalize(root).map_err(|e| usage(e.to_string()))?;
            let pem = std::fs::read(&path).map_err(|e| usage(e.to_string()))?;
            crate::serve::check_ek_root(&pem).map_err(usage)?;
            Ok(path)
        })
        .collect()
}

fn create_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), CaError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CaError::io("cannot create", path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| CaError::io("cannot write", path, e))
}

/// Writes `ca.toml`, `ca_key` and `ca_key.pub` into `o.dir`.
///
/// # Errors
///
/// [`CaError::Usage`] when any of them exists or an EK root is not a PEM file of certificates;
/// [`CaError::Io`] when one cannot be written.
pub fn init(o: &InitOptions) -> Result<Created, CaError> {
    let o = &InitOptions {
        ek_roots: absolute_ek_roots(&o.ek_roots)?,
        ..o.clone()
    };
    let config = o.dir.join("ca.toml");
    let key = o.dir.join("ca_key");
    let public_key = o.dir.join("ca_key.pub");
    for path in [&config, &key, &public_key] {
        if path.exists() {
            return Err(CaError::Usage(format!(
                "{} already exists; init never replaces files (use another --dir)",
                path.display()
            )));
        }
    }
    std::fs::create_dir_all(&o.dir).map_err(|e| CaError::io("cannot create", &o.dir, e))?;

    // Check the text parses before writing anything.
    let text = config_text(o);
    crate::config::Config::from_toml(&text, &config)?;

    let mut private = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|e| CaError::Setup(format!("cannot generate the CA key: {e}")))?;
    private.set_comment("ssh-tpm-ca");
    let pem = private
        .to_openssh(LineEnding::LF)
        .map_err(|e| CaError::Setup(format!("cannot encode the CA key: {e}")))?;
    let public_key_line = private
        .public_key()
        .to_openssh()
        .map_err(|e| CaError::Setup(format!("cannot encode the CA key: {e}")))?;

    create_new(&key, 0o600, pem.as_bytes())?;
    create_new(
        &public_key,
        0o644,
        format!("{public_key_line}\n").as_bytes(),
    )?;
    // It may hold the compliance service's bearer token.
    create_new(&config, 0o600, text.as_bytes())?;
    Ok(Created {
        config,
        key,
        public_key,
        public_key_line,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn options(dir: &Path) -> InitOptions {
        InitOptions {
            dir: dir.to_owned(),
            listen: "127.0.0.1:8443".into(),
            issuer: "https://idp.example/realms/x".into(),
            client_id: "ssh-tpm".into(),
            user_claim: "preferred_username".into(),
            compliance_url: "https://mdm.example/api".into(),
            ek_roots: vec![],
            validity_secs: 3600,
        }
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/fixtures");

    #[test]
    fn writes_a_loadable_config_and_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("roots");
        std::fs::create_dir(&roots).unwrap();
        let odd = roots.join("a \"b\".pem");
        std::fs::copy(format!("{FIXTURES}/ca-root.pem"), &odd).unwrap();
        let mut o = options(&dir.path().join("ca"));
        o.ek_roots = vec![odd.clone()];
        let created = init(&o).unwrap();
        let c = crate::config::Config::load(&created.config).unwrap();
        assert_eq!(c.oidc.user_claim, "preferred_username");
        assert_eq!(c.certificate_validity.as_secs(), 3600);
        assert_eq!(c.ek_roots, [odd.canonicalize().unwrap()]);
        // The same as the default (docs/ca.md gives one value for both).
        assert_eq!(c.oidc.scopes, ["openid", "email", "profile"]);
        assert_eq!(c.ca_key, created.key);

        let mode = std::fs::metadata(&created.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&created.config)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "ca.toml may hold a bearer token");
        let key = crate::serve::load_ca_key(&created.key).unwrap();
        let public = std::fs::read_to_string(&created.public_key).unwrap();
        assert_eq!(public.trim(), key.public_key().to_openssh().unwrap());
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
    }

    /// Tests run in the crate's directory, so a path relative to it is one relative to the
    /// current directory: it must reach ca.toml absolute, not relative to ca.toml's directory.
    #[test]
    fn relative_ek_roots_are_written_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path());
        o.ek_roots = vec!["../attest/tests/fixtures/ca-intermediate.pem".into()];
        let created = init(&o).unwrap();
        let text = std::fs::read_to_string(&created.config).unwrap();
        let absolute = Path::new(FIXTURES).join("ca-intermediate.pem");
        let absolute = absolute.canonicalize().unwrap();
        assert!(absolute.is_absolute());
        assert!(
            text.contains(&toml_string(&absolute.display().to_string())),
            "{text}"
        );
        let c = crate::config::Config::load(&created.config).unwrap();
        assert_eq!(c.ek_roots, [absolute]);
        assert_eq!(crate::serve::load_anchors(&c.ek_roots).unwrap().len(), 1);
    }

    #[test]
    fn ek_roots_must_exist_and_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ek.der");
        std::fs::copy(format!("{FIXTURES}/ek-rsa.der"), &not_pem).unwrap();
        let text = dir.path().join("notes.pem");
        std::fs::write(&text, "certificates to come\n").unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let target = dir.path().join("ca");
        for (root, expected) in [
            (&missing, "No such file"),
            (&not_pem, "not UTF-8 text; ek_roots lists PEM files"),
            (&text, "no CERTIFICATE in it"),
            (&key, "where a CERTIFICATE belongs"),
        ] {
            let mut o = options(&target);
            o.ek_roots = vec![format!("{FIXTURES}/ca-root.pem").into(), root.clone()];
            let e = init(&o).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--ek-root {}", root.display())),
                "{e}"
            );
            assert!(e.contains(expected), "{e}");
            assert!(!target.exists(), "{e}");
        }
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca_key.pub"), "keep").unwrap();
        let e = init(&options(dir.path())).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(!dir.path().join("ca_key").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca_key.pub")).unwrap(),
            "keep"
        );
    }
}
