//! The keys the agent serves: TPM key files with their public key, comment and optional
//! certificate, loaded from a directory or added by clients, with the constraints a client set.

use std::fs::FileType;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};
use ssh_tpm_keyfile::{KeyType, TpmKey};
use ssh_tpm_tpm::KeySpec;

use crate::cert::{key_blob, CertBlob};
use crate::constraint::{Constraints, Destination};
use crate::error::{Error, Result};

/// Largest key file read. Real ones are a few KiB (under 16 KiB even with policies); a larger
/// file is not a key file, and is refused before it is read.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

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
    /// Each use must be confirmed by the user (`ssh-tpm-add -c`).
    pub confirm: bool,
    /// When the key leaves the agent (`ssh-tpm-add -t`).
    pub expires: Option<Instant>,
    /// The hosts the key may be used for (`ssh-tpm-add -h`); empty means any.
    pub destinations: Vec<Destination>,
    /// The `*.tpm` file the agent loaded the key from; `None` for keys clients added. A
    /// reload drops the key when this file is gone or now holds another key.
    pub source: Option<PathBuf>,
    /// Names the key's PIN in the cache: SHA-256 of the key file's contents (its DER). The
    /// same key rewritten with another PIN (`ssh-tpm-keygen -p`) has another private blob,
    /// so the PIN cached for the old file is never sent for the new one.
    pub pin_slot: [u8; 32],
}

impl AgentKey {
    /// Builds an agent key from a parsed key file; the comment is the file's description
    /// unless the caller has a better one.
    pub fn new(key: TpmKey, certificate: Option<CertBlob>) -> Result<Self> {
        let invalid = |reason: String| Error::Protocol(reason);
        match key.key_type {
            // The TPM layer imports an importable key on its first signature.
            KeyType::Loadable | KeyType::Importable => {}
            KeyType::Sealed => {
                return Err(invalid("this file holds TPM-sealed data, not a key".into()))
            }
        }
        // A policy the TPM layer cannot run is refused now, not at the first signature.
        ssh_tpm_tpm::policy::KeyPolicy::of_key(&key)?;
        let public = ssh_tpm_tpm::decode_public(&key.pubkey)?;
        let spec = ssh_tpm_tpm::key_spec(&public)?;
        let public = ssh_tpm_tpm::ssh_public_key(&public)?;
        check_public(&public, spec).map_err(|why| {
            invalid(format!(
                "the public key is damaged: {why}; the file cannot be used (restore it from a \
                 backup, or make a new key)"
            ))
        })?;
        if let Some(cert) = &certificate {
            if !cert.certifies(&public) {
                return Err(invalid("the certificate is for another key".into()));
            }
        }
        let public_blob = key_blob(&public).map_err(|e| invalid(e.to_string()))?;
        let pin_slot = Sha256::digest(key.to_der()).into();
        Ok(AgentKey {
            comment: key.description.clone().unwrap_or_default(),
            key,
            public,
            public_blob,
            spec,
            certificate,
            confirm: false,
            expires: None,
            destinations: Vec::new(),
            source: None,
            pin_slot,
        })
    }

    /// Applies the constraints a client sent with the key; a lifetime counts from `now`.
    pub fn constrain(&mut self, constraints: &Constraints, now: Instant) {
        self.confirm = constraints.confirm;
        self.expires = constraints
            .lifetime
            .map(|seconds| now + Duration::from_secs(seconds.into()));
        self.destinations = constraints.destinations.clone();
    }

    /// True once the key's lifetime has run out at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// True when a client set limits on the key.
    pub fn is_constrained(&self) -> bool {
        self.confirm || self.expires.is_some() || !self.destinations.is_empty()
    }

    /// Reads `NAME.tpm`, with `NAME.pub` for the comment and `NAME-cert.pub` when present.
    /// A certificate that is unreadable or for another key is skipped with a warning; the
    /// key itself still loads.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file_error = |reason: String| Error::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = read_small_file(path).map_err(file_error)?;
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

/// Refuses a public key that OpenSSH would refuse: one such key in a list answer makes
/// OpenSSH drop the whole answer ("invalid format"), and with it every other key. An ECDSA
/// point must lie on its curve; an RSA modulus must have the key's size and be odd, and the
/// exponent must be odd and at least 3.
fn check_public(public: &KeyData, spec: KeySpec) -> std::result::Result<(), String> {
    match public {
        KeyData::Ecdsa(key) => {
            let point = key.as_sec1_bytes();
            let (on_curve, curve) = match spec {
                KeySpec::EcdsaP256 => (p256::PublicKey::from_sec1_bytes(point).is_ok(), "P-256"),
                KeySpec::EcdsaP384 => (p384::PublicKey::from_sec1_bytes(point).is_ok(), "P-384"),
                KeySpec::EcdsaP521 => (p521::PublicKey::from_sec1_bytes(point).is_ok(), "P-521"),
                KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
                    return Err("an ECDSA key where the file says RSA".into())
                }
            };
            if !on_curve {
                return Err(format!("its ECDSA point is not on the NIST {curve} curve"));
            }
            Ok(())
        }
        KeyData::Rsa(key) => {
            let expected = match spec {
                KeySpec::Rsa2048 => 2048,
                KeySpec::Rsa3072 => 3072,
                _ => return Err("an RSA key where the file says ECDSA".into()),
            };
            let n = key.n.as_positive_bytes().unwrap_or_default();
            let bits = match n.first() {
                Some(top) => n.len() * 8 - top.leading_zeros() as usize,
                None => 0,
            };
            if bits != expected || n.last().is_some_and(|low| low % 2 == 0) {
                return Err(format!(
                    "its RSA modulus is not an odd {expected}-bit number ({bits} bits)"
                ));
            }
            let e = key.e.as_positive_bytes().unwrap_or_default();
            let odd = e.last().is_some_and(|low| low % 2 == 1);
            if !odd || (e.len() == 1 && e[0] < 3) {
                return Err("its RSA exponent is not an odd number of at least 3".into());
            }
            Ok(())
        }
        _ => Err("neither an ECDSA nor an RSA key".into()),
    }
}

/// `dir/stem.tpm` → `dir/stem{suffix}`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// How long reading a key file, or its `.pub` or `-cert.pub`, may take. One that does not
/// answer (a link to `/proc/kmsg`, a stalled network file system) is reported and skipped,
/// instead of holding up the agent's event loop, which reloads keys.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Files whose read has not returned: asked for again, they are skipped at once, so that a
/// file that never answers costs one stuck thread, not one more at each reload.
static PENDING_READS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A file's bytes, or why they were not read.
pub type ReadResult = std::result::Result<Vec<u8>, String>;

/// What to do when a key file cannot be read for want of permission (EACCES).
pub const UNREADABLE_KEY_HINT: &str =
    "check the file's owner and mode (key files are 0600, owned by you)";

/// The bytes of a key file or its companions (see [`read_bounded`]), read on a thread of its
/// own and waited for at most [`READ_TIMEOUT`].
fn read_small_file(path: &Path) -> ReadResult {
    read_within(path, READ_TIMEOUT, |path| read_bounded(path, "key file"))
}

/// Runs `read` on `path` on a new thread and waits for it at most `timeout`. A read that
/// has not returned goes on in the background (nothing can cancel a blocked read(2)).
fn read_within(
    path: &Path,
    timeout: Duration,
    read: impl FnOnce(&Path) -> ReadResult + Send + 'static,
) -> ReadResult {
    let pending = || PENDING_READS.lock().unwrap_or_else(|e| e.into_inner());
    if read_is_pending(path) {
        return Err("an earlier read of it has not finished; skipped".into());
    }
    pending().push(path.to_path_buf());
    let (done, result) = mpsc::channel();
    let owned = path.to_path_buf();
    let reader = std::thread::Builder::new()
        .name("key-file-read".into())
        .spawn(move || {
            let bytes = read(&owned);
            pending().retain(|p| *p != owned);
            let _ = done.send(bytes);
        });
    if let Err(e) = reader {
        pending().retain(|p| p != path);
        return Err(format!("cannot start a thread to read it: {e}"));
    }
    result.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(format!(
            "reading it did not finish within {} s (a device behind a link, or a stalled \
             network file system?); skipped",
            timeout.as_secs_f32()
        ))
    })
}

/// Whether a read of `path` has been started and has not returned.
fn read_is_pending(path: &Path) -> bool {
    let pending = PENDING_READS.lock().unwrap_or_else(|e| e.into_inner());
    pending.iter().any(|p| p == path)
}

/// The bytes of a key file or its companions (`what` names it in errors): a regular file of
/// at most [`MAX_KEY_FILE`] bytes. Its size is checked before reading, and the read stops
/// past the limit should the file grow meanwhile. The error is the reason alone, without
/// the file's name; a permission error carries [`UNREADABLE_KEY_HINT`].
///
/// # Errors
///
/// Why the file was not read.
pub fn read_bounded(path: &Path, what: &str) -> ReadResult {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("{}, not a {what}", file_kind(meta.file_type())));
    }
    let too_large = |size: u64| {
        format!("{size} bytes is too large for a {what} (at most {MAX_KEY_FILE} bytes); not read")
    };
    if meta.len() > MAX_KEY_FILE {
        return Err(too_large(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!("{e}; {UNREADABLE_KEY_HINT}"),
        _ => e.to_string(),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, in words.
fn file_kind(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// The text of `NAME.pub` or `NAME-cert.pub`: `None` when absent, and also, with a warning,
/// when it cannot be read.
fn read_if_exists(path: &Path) -> Option<String> {
    if !path.exists() {
        return None;
    }
    let text = read_small_file(path)
        .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string()));
    text.map_err(|reason| tracing::warn!("{}: {reason}; ignored", path.display()))
        .ok()
}

/// The agent's keys. Cheap to read; adding replaces a key with the same public key.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: RwLock<Vec<Arc<AgentKey>>>,
    /// Public key blobs a client removed (`ssh-add -d`/`-D`): a reload prompted by a file
    /// change does not bring them back; adding them, or SIGHUP, does.
    removed: RwLock<Vec<Vec<u8>>>,
}

impl Keyring {
    /// A snapshot of the keys, in the order they were added.
    pub fn keys(&self) -> Vec<Arc<AgentKey>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds `key`, replacing one with the same public key.
    pub fn add(&self, key: AgentKey) {
        self.removed_mut().retain(|blob| *blob != key.public_blob);
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
        let removed = keys.remove(index);
        self.removed_mut().push(removed.public_blob.clone());
        Some(removed)
    }

    /// Removes every key.
    pub fn clear(&self) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        self.removed_mut()
            .extend(keys.drain(..).map(|k| k.public_blob.clone()));
    }

    /// Lets the next reload bring back keys clients removed (an explicit SIGHUP).
    pub fn forget_removals(&self) {
        self.removed_mut().clear();
    }

    fn removed_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Vec<u8>>> {
        self.removed.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a key read from a file, replacing one with the same public key but keeping that
    /// one's constraints: a reload must not lift limits a client set.
    fn add_loaded(&self, mut key: AgentKey) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = keys.iter().find(|k| k.public == key.public) {
            key.confirm = old.confirm;
            key.expires = old.expires;
            key.destinations = old.destinations.clone();
            if old.source.is_none() {
                // A client added it: it stays when the file goes.
                key.source = None;
            }
        }
        keys.retain(|k| k.public != key.public);
        keys.push(Arc::new(key));
    }

    /// Removes the keys whose lifetime has run out at `now`; returns them.
    pub fn expire(&self, now: Instant) -> Vec<Arc<AgentKey>> {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let (gone, kept): (Vec<_>, Vec<_>) = keys.drain(..).partition(|k| k.expired(now));
        *keys = kept;
        gone
    }

    /// When the next key expires, if any key has a lifetime.
    pub fn next_expiry(&self) -> Option<Instant> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter().filter_map(|k| k.expires).min()
    }

    /// Loads every `*.tpm` under `dir` (recursively), in path order. Files that fail, entries
    /// named `*.tpm` that are not regular files, and files holding a key already loaded from
    /// an earlier file are returned with the reason, so the caller can report each by name;
    /// the rest are loaded. Keys loaded earlier from a file that is now gone, or that now
    /// holds another key, are dropped; a file that exists but fails to load (perhaps half
    /// written) keeps its key until it loads again or goes away. Keys clients added stay.
    pub fn load_dir(&self, dir: &Path) -> Vec<Error> {
        let mut failures = Vec::new();
        let mut files = Vec::new();
        collect_key_files(dir, &mut files, &mut failures);
        files.sort();
        let mut loaded: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        for path in &files {
            let path = path.clone();
            let mut key = match AgentKey::from_file(&path) {
                Ok(key) => key,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            if let Some((_, first)) = loaded.iter().find(|(blob, _)| *blob == key.public_blob) {
                failures.push(Error::KeyFile {
                    reason: format!(
                        "holds the same key as {}, which is served; remove one of the two",
                        first.display()
                    ),
                    path,
                });
                continue;
            }
            key.source = Some(path.clone());
            if self.removed_mut().contains(&key.public_blob) {
                tracing::debug!(key = %key.label(), "not reloaded: a client removed it");
                loaded.push((key.public_blob.clone(), path));
                continue;
            }
            tracing::info!(key = %key.label(), file = %path.display(), "key loaded");
            loaded.push((key.public_blob.clone(), path));
            self.add_loaded(key);
        }
        self.drop_stale(dir, &files, &loaded);
        failures
    }

    /// Drops the keys loaded from a file under `dir` that is no longer among `files`, or that
    /// this reload loaded with another key.
    fn drop_stale(&self, dir: &Path, files: &[PathBuf], loaded: &[(Vec<u8>, PathBuf)]) {
        let stale = |key: &AgentKey| {
            let Some(source) = key.source.as_deref().filter(|s| s.starts_with(dir)) else {
                return false;
            };
            let reloaded_as = loaded.iter().find(|(_, path)| path == source);
            match reloaded_as {
                Some((blob, _)) => *blob != key.public_blob,
                None => !files.iter().any(|path| path == source),
            }
        };
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.retain(|key| {
            let gone = stale(key);
            if gone {
                tracing::info!(key = %key.label(), "key file removed; key dropped");
            }
            !gone
        });
    }
}

/// Gathers the regular files named `*.tpm` under `dir`. Other entries with that name (a
/// directory, FIFO, dangling symlink, symlink loop) are failures; directories are walked
/// whatever their name, but symlinks to directories are not, so a link loop cannot trap the
/// walk.
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
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                failures.push(Error::KeyFile {
                    path: dir.to_path_buf(),
                    reason: format!("cannot list the key directory: {e}"),
                });
                continue;
            }
        };
        let path = entry.path();
        let named_as_key = path.extension().is_some_and(|e| e == "tpm");
        // file_type() does not follow symlinks.
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if named_as_key => {
                failures.push(Error::KeyFile {
                    path,
                    reason: e.to_string(),
                });
                continue;
            }
            Err(_) => continue,
        };
        if file_type.is_dir() {
            if named_as_key {
                failures.push(Error::KeyFile {
                    reason: "a directory, not a key file (the keys inside are loaded)".into(),
                    path: path.clone(),
                });
            }
            collect_key_files(&path, files, failures);
            continue;
        }
        if !named_as_key {
            continue;
        }
        // metadata() follows symlinks: a link to a key file is a key file.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push(path),
            Ok(meta) => {
                let via_link = if file_type.is_symlink() {
                    "a symbolic link to "
                } else {
                    ""
                };
                failures.push(Error::KeyFile {
                    reason: format!("{via_link}{}, not a key file", file_kind(meta.file_type())),
                    path,
                })
            }
            Err(e) => failures.push(Error::KeyFile {
                reason: unreachable_reason(&path, &e),
                path,
            }),
        }
    }
}

/// Why a `*.tpm` entry cannot be opened: mostly a symlink that leads nowhere.
fn unreachable_reason(path: &Path, error: &std::io::Error) -> String {
    let target = std::fs::read_link(path).ok();
    let errno = rustix::io::Errno::from_io_error(error);
    match (target, errno) {
        (Some(_), Some(rustix::io::Errno::LOOP)) => "a symbolic link loop, not a key file".into(),
        (Some(target), Some(rustix::io::Errno::NOENT)) => format!(
            "a symbolic link to {}, which does not exist",
            target.display()
        ),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A key file written by tpm2-openssl (see crates/keyfile/tests/fixtures/make-fixtures.sh).
    const FIXTURE: &str = include_str!("../../keyfile/tests/fixtures/tpm2-openssl-owner.pem");

    /// A private directory under the system's temporary directory, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "ssh-tpm-agent-keyring-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir(&dir).expect("create a test directory");
            TestDir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The failures of `load_dir`, as "file name: reason" lines.
    fn failures_by_name(keyring: &Keyring, dir: &TestDir) -> Vec<String> {
        let mut lines: Vec<String> = keyring
            .load_dir(&dir.0)
            .iter()
            .map(|e| match e {
                Error::KeyFile { path, reason } => {
                    let name = path.strip_prefix(&dir.0).unwrap_or(path);
                    format!("{}: {reason}", name.display())
                }
                other => panic!("not a key file error: {other}"),
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn entries_named_tpm_that_are_not_files_are_reported() {
        let dir = TestDir::new();
        std::fs::create_dir(dir.join("folder.tpm")).expect("mkdir");
        let fifo = dir.join("fifo.tpm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        std::os::unix::fs::symlink(dir.join("missing.tpm"), dir.join("dangling.tpm"))
            .expect("symlink");
        std::os::unix::fs::symlink(dir.join("loop.tpm"), dir.join("loop.tpm")).expect("symlink");
        // Not named *.tpm: none of the agent's business.
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("notes")).expect("symlink");

        let keyring = Keyring::default();
        let failures = failures_by_name(&keyring, &dir);
        assert!(keyring.keys().is_empty());
        let expected = [
            "dangling.tpm: a symbolic link to",
            "fifo.tpm: a FIFO, not a key file",
            "folder.tpm: a directory, not a key file",
            "loop.tpm: a symbolic link loop, not a key file",
        ];
        assert_eq!(failures.len(), expected.len(), "{failures:#?}");
        for (failure, start) in failures.iter().zip(expected) {
            assert!(
                failure.starts_with(start),
                "{failure:?} should start {start:?}"
            );
        }
        assert!(
            failures[0].ends_with("which does not exist"),
            "{failures:?}"
        );
    }

    #[test]
    fn the_first_of_two_files_with_one_key_is_kept() {
        let dir = TestDir::new();
        std::fs::write(dir.join("a.tpm"), FIXTURE).expect("write a.tpm");
        std::fs::write(dir.join("b.tpm"), FIXTURE).expect("write b.tpm");

        let keyring = Keyring::default();
        let failures = failures_by_name(&keyring, &dir);
        let keys = keyring.keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].comment, dir.join("a.tpm").display().to_string());
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert!(
            failures[0].starts_with("b.tpm: holds the same key as "),
            "{failures:?}"
        );
        assert!(failures[0].contains("a.tpm"), "{failures:?}");
    }

    /// A huge file is refused from its size, without being read.
    #[test]
    fn oversized_key_file_is_refused_unread() {
        let dir = TestDir::new();
        let big = dir.join("big.tpm");
        let file = std::fs::File::create(&big).expect("create big.tpm");
        // Sparse: it takes no disk space, and no memory unless the agent reads it.
        file.set_len(256 << 20).expect("grow big.tpm");
        std::fs::write(dir.join("ok.tpm"), FIXTURE).expect("write ok.tpm");

        let keyring = Keyring::default();
        let failures = failures_by_name(&keyring, &dir);
        assert_eq!(keyring.keys().len(), 1, "the other file still loads");
        assert_eq!(
            failures,
            [
                "big.tpm: 268435456 bytes is too large for a key file (at most 65536 bytes); \
              not read"
            ]
        );
    }

    /// Keys leave when their lifetime ends; the next expiry is the earliest one left.
    #[test]
    fn keys_expire_at_the_end_of_their_lifetime() {
        let dir = TestDir::new();
        let path = dir.join("id.tpm");
        std::fs::write(&path, FIXTURE).expect("write id.tpm");
        let now = Instant::now();
        let mut brief = AgentKey::from_file(&path).expect("loads");
        brief.constrain(
            &Constraints {
                lifetime: Some(2),
                confirm: true,
                ..Constraints::default()
            },
            now,
        );
        assert!(brief.confirm && brief.is_constrained());

        let keyring = Keyring::default();
        keyring.add(brief);
        assert_eq!(keyring.next_expiry(), Some(now + Duration::from_secs(2)));
        assert!(keyring.expire(now + Duration::from_secs(1)).is_empty());
        assert_eq!(keyring.expire(now + Duration::from_secs(2)).len(), 1);
        assert!(keyring.keys().is_empty());
        assert_eq!(keyring.next_expiry(), None);
    }

    /// SIGHUP reloads a file whose key a client added with constraints: the key is
    /// refreshed, and keeps them.
    #[test]
    fn reload_keeps_the_constraints_a_client_set() {
        let dir = TestDir::new();
        std::fs::write(dir.join("id.tpm"), FIXTURE).expect("write id.tpm");
        let keyring = Keyring::default();
        let mut added = AgentKey::from_file(&dir.join("id.tpm")).expect("loads");
        added.constrain(
            &Constraints {
                confirm: true,
                ..Constraints::default()
            },
            Instant::now(),
        );
        keyring.add(added);

        assert!(failures_by_name(&keyring, &dir).is_empty());
        let keys = keyring.keys();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].confirm, "the reload lifted -c");

        // A key added without constraints replaces one with them, as in ssh-agent.
        keyring.add(AgentKey::from_file(&dir.join("id.tpm")).expect("loads"));
        assert!(!keyring.keys()[0].is_constrained());
    }

    /// A reload drops the keys whose file went away, but not the ones clients added.
    #[test]
    fn reload_drops_keys_whose_file_was_removed() {
        let dir = TestDir::new();
        std::fs::write(dir.join("id.tpm"), FIXTURE).expect("write id.tpm");
        let keyring = Keyring::default();
        assert!(failures_by_name(&keyring, &dir).is_empty());
        assert_eq!(
            keyring.keys()[0].source.as_deref(),
            Some(&*dir.join("id.tpm"))
        );

        std::fs::rename(dir.join("id.tpm"), dir.join("moved.tpm")).expect("rename");
        assert!(failures_by_name(&keyring, &dir).is_empty());
        assert_eq!(keyring.keys().len(), 1, "the key moved files");
        std::fs::remove_file(dir.join("moved.tpm")).expect("remove");
        assert!(failures_by_name(&keyring, &dir).is_empty());
        assert!(keyring.keys().is_empty(), "the key outlived its file");

        // Added by a client, from a file that later goes: it stays.
        std::fs::write(dir.join("id.tpm"), FIXTURE).expect("write id.tpm");
        let added = AgentKey::from_file(&dir.join("id.tpm")).expect("loads");
        keyring.add(added);
        assert!(failures_by_name(&keyring, &dir).is_empty());
        std::fs::remove_file(dir.join("id.tpm")).expect("remove");
        assert!(failures_by_name(&keyring, &dir).is_empty());
        assert_eq!(keyring.keys().len(), 1);
    }

    /// The PIN cache names a key by its file's contents: the same key with another private
    /// blob (its PIN changed) is another slot; the same bytes read again, the same one.
    #[test]
    fn pin_slot_follows_the_key_file_contents() {
        let dir = TestDir::new();
        let path = dir.join("id.tpm");
        std::fs::write(&path, FIXTURE).expect("write id.tpm");
        let first = AgentKey::from_file(&path).expect("loads");
        let again = AgentKey::from_file(&path).expect("loads");
        assert_eq!(first.pin_slot, again.pin_slot);

        let mut rewritten = first.key.clone();
        if let Some(byte) = rewritten.privkey.last_mut() {
            *byte ^= 1;
        }
        let rewritten = AgentKey::new(rewritten, None).expect("still a key");
        assert_eq!(rewritten.public_blob, first.public_blob);
        assert_ne!(rewritten.pin_slot, first.pin_slot);
    }

    /// One byte changed in the ECDSA point: the file is refused, by name, saying why; the
    /// good file beside it still loads.
    #[test]
    fn a_point_off_the_curve_is_refused_by_name() {
        let dir = TestDir::new();
        let good = TpmKey::from_bytes(FIXTURE.as_bytes()).expect("fixture");
        let mut bad = good.clone();
        let last = bad.pubkey.len() - 1;
        bad.pubkey[last] ^= 0x01;
        std::fs::write(dir.join("bad.tpm"), bad.to_pem()).expect("write bad.tpm");
        std::fs::write(dir.join("good.tpm"), FIXTURE).expect("write good.tpm");

        let keyring = Keyring::default();
        let failures = failures_by_name(&keyring, &dir);
        assert_eq!(keyring.keys().len(), 1);
        assert_eq!(
            failures,
            [
                "bad.tpm: the public key is damaged: its ECDSA point is not on the NIST P-256 \
                 curve; the file cannot be used (restore it from a backup, or make a new key)"
            ]
        );
        assert!(
            AgentKey::new(bad, None).is_err(),
            "a client's key is checked too"
        );
    }

    #[test]
    fn rsa_modulus_and_exponent_are_checked() {
        let rsa = |n: Vec<u8>, e: &[u8]| {
            KeyData::Rsa(ssh_key::public::RsaPublicKey {
                e: ssh_key::Mpint::from_positive_bytes(e).expect("e"),
                n: ssh_key::Mpint::from_positive_bytes(&n).expect("n"),
            })
        };
        let mut n = vec![0xC5; 256];
        assert!(check_public(&rsa(n.clone(), &[1, 0, 1]), KeySpec::Rsa2048).is_ok());
        assert!(check_public(&rsa(n.clone(), &[1, 0, 1]), KeySpec::Rsa3072).is_err());
        assert!(check_public(&rsa(n.clone(), &[1]), KeySpec::Rsa2048).is_err());
        assert!(check_public(&rsa(n.clone(), &[1, 0, 0]), KeySpec::Rsa2048).is_err());
        n[255] = 0xC4;
        let even = check_public(&rsa(n.clone(), &[1, 0, 1]), KeySpec::Rsa2048);
        assert_eq!(
            even.err().as_deref(),
            Some("its RSA modulus is not an odd 2048-bit number (2048 bits)")
        );
        n[0] = 0x45;
        n[255] = 0xC5;
        assert!(check_public(&rsa(n, &[1, 0, 1]), KeySpec::Rsa2048).is_err());
    }

    /// A read that blocks (a stand-in for `/proc/kmsg` or a stalled NFS mount) fails after
    /// the timeout, naming why; while it stays blocked, the same file is skipped at once;
    /// once it returns, the file is read again.
    #[test]
    fn a_read_that_blocks_times_out_and_is_not_started_twice() {
        let path = Path::new("/nowhere/blocking.tpm");
        let (unblock, blocked) = mpsc::channel::<()>();
        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let stuck = read_within(path, timeout, move |_| {
            let _ = blocked.recv();
            Ok(b"late".to_vec())
        });
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        assert_eq!(
            stuck,
            Err(
                "reading it did not finish within 0.3 s (a device behind a link, or a stalled \
                 network file system?); skipped"
                    .into()
            )
        );

        let again = read_within(path, timeout, |_| panic!("read twice at once"));
        assert_eq!(
            again,
            Err("an earlier read of it has not finished; skipped".into())
        );

        unblock.send(()).expect("unblock");
        let freed = || {
            !PENDING_READS
                .lock()
                .expect("lock")
                .iter()
                .any(|p| p == path)
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !freed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let read = read_within(path, timeout, |_| Ok(b"key".to_vec()));
        assert_eq!(read, Ok(b"key".to_vec()));
    }

    #[test]
    fn key_file_just_over_the_limit_is_refused() {
        let dir = TestDir::new();
        let path = dir.join("padded.tpm");
        let mut text = FIXTURE.to_string();
        text.push_str(&"\n".repeat(MAX_KEY_FILE as usize));
        std::fs::write(&path, text).expect("write padded.tpm");
        let refused = AgentKey::from_file(&path).expect_err("a file over the limit");
        assert!(refused.to_string().contains("too large"), "{refused}");
        assert!(refused.to_string().contains("padded.tpm"), "{refused}");
    }
}
