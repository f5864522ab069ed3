//! The keys the agent serves: TPM key files with their public key, comment and optional
//! certificate, loaded from a directory or added by clients.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};
use ssh_tpm_keyfile::{KeyType, TpmKey};
use ssh_tpm_tpm::KeySpec;

use crate::cert::{key_blob, CertBlob};
use crate::error::{Error, Result};

/// One TPM key as the agent knows it.
#[derive(Debug)]
pub struct AgentKey {
    pub key: TpmKey,
    pub public: KeyData,
    /// `public` in wire encoding, as clients name the key.
    pub public_blob: Vec<u8>,
    pub spec: KeySpec,
    pub comment: String,
    pub certificate: Option<CertBlob>,
}

impl AgentKey {
    /// Builds an agent key from a parsed key file; the comment is the file's description
    /// unless the caller has a better one.
    pub fn new(key: TpmKey, certificate: Option<CertBlob>) -> Result<Self> {
        let invalid = |reason: String| Error::Protocol(reason);
        match key.key_type {
            KeyType::Loadable => {}
            KeyType::Sealed => {
                return Err(invalid("this file holds TPM-sealed data, not a key".into()))
            }
            KeyType::Importable => {
                return Err(invalid(
                    "importable keys are not supported yet; convert the key with \
                     ssh-tpm-keygen on the target machine"
                        .into(),
                ))
            }
        }
        let public = ssh_tpm_tpm::decode_public(&key.pubkey)?;
        let spec = ssh_tpm_tpm::key_spec(&public)?;
        let public = ssh_tpm_tpm::ssh_public_key(&public)?;
        if let Some(cert) = &certificate {
            if !cert.certifies(&public) {
                return Err(invalid("the certificate is for another key".into()));
            }
        }
        let public_blob = key_blob(&public).map_err(|e| invalid(e.to_string()))?;
        Ok(AgentKey {
            comment: key.description.clone().unwrap_or_default(),
            key,
            public,
            public_blob,
            spec,
            certificate,
        })
    }

    /// Reads `NAME.tpm`, with `NAME.pub` for the comment and `NAME-cert.pub` when present.
    /// A certificate that is unreadable or for another key is skipped with a warning; the
    /// key itself still loads.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file_error = |reason: String| Error::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
        let key = TpmKey::from_bytes(&bytes).map_err(|e| file_error(e.to_string()))?;
        let mut agent_key = AgentKey::new(key, None).map_err(|e| match e {
            Error::Protocol(reason) => file_error(reason),
            other => file_error(other.to_string()),
        })?;
        let cert_path = sibling(path, "-cert.pub");
        if let Some(text) = read_if_exists(&cert_path) {
            match CertBlob::from_openssh(text.trim()) {
                Ok(cert) if cert.certifies(&agent_key.public) => agent_key.certificate = Some(cert),
                Ok(_) => tracing::warn!(
                    "{}: certificate is for another key; serving the key without it",
                    cert_path.display()
                ),
                Err(e) => tracing::warn!(
                    "{}: {e}; serving the key without its certificate",
                    cert_path.display()
                ),
            }
        }
        let comment = read_if_exists(&sibling(path, ".pub"))
            .and_then(|text| PublicKey::from_openssh(text.trim()).ok())
            .map(|public| public.comment().to_string())
            .filter(|c| !c.is_empty());
        if let Some(comment) = comment {
            agent_key.comment = comment;
        } else if agent_key.comment.is_empty() {
            agent_key.comment = path.display().to_string();
        }
        Ok(agent_key)
    }

    /// `SHA256:...`, for logs and prompts.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint(HashAlg::Sha256).to_string()
    }

    /// How the key is named to the user: fingerprint and comment.
    pub fn label(&self) -> String {
        format!("{} ({})", self.fingerprint(), self.comment)
    }
}

/// `dir/stem.tpm` → `dir/stem{suffix}`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}{suffix}"))
}

fn read_if_exists(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The agent's keys. Cheap to read; adding replaces a key with the same public key.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: RwLock<Vec<Arc<AgentKey>>>,
}

impl Keyring {
    /// A snapshot of the keys, in the order they were added.
    pub fn keys(&self) -> Vec<Arc<AgentKey>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds `key`, replacing one with the same public key.
    pub fn add(&self, key: AgentKey) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.retain(|k| k.public != key.public);
        keys.push(Arc::new(key));
    }

    /// Removes the key with this public key blob (or certificate blob); returns it.
    pub fn remove(&self, blob: &[u8]) -> Option<Arc<AgentKey>> {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let index = keys.iter().position(|k| {
            k.public_blob == blob || k.certificate.as_ref().is_some_and(|c| c.as_bytes() == blob)
        })?;
        Some(keys.remove(index))
    }

    /// Removes every key.
    pub fn clear(&self) {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Loads every `*.tpm` under `dir` (recursively). Files that fail are returned with
    /// their error so the caller can report each by name; the rest are loaded.
    pub fn load_dir(&self, dir: &Path) -> Vec<Error> {
        let mut failures = Vec::new();
        let mut files = Vec::new();
        collect_key_files(dir, &mut files, &mut failures);
        files.sort();
        for path in files {
            match AgentKey::from_file(&path) {
                Ok(key) => {
                    tracing::info!(key = %key.label(), file = %path.display(), "key loaded");
                    self.add(key);
                }
                Err(e) => failures.push(e),
            }
        }
        failures
    }
}

fn collect_key_files(dir: &Path, files: &mut Vec<PathBuf>, failures: &mut Vec<Error>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            failures.push(Error::KeyFile {
                path: dir.to_path_buf(),
                reason: format!("cannot read the key directory: {e}"),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // file_type() does not follow symlinks, so a link loop cannot trap the walk.
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_key_files(&path, files, failures),
            Ok(_) if path.extension().is_some_and(|e| e == "tpm") && path.is_file() => {
                files.push(path)
            }
            _ => {}
        }
    }
}
