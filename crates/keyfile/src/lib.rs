//! Reads and writes TPM 2.0 key files: the `TSS2 PRIVATE KEY` PEM format of J. Bottomley,
//! "ASN.1 Specification for TPM 2.0 Key Files" (draft-bottomley-tpm2-keys), section
//! "TPMkey Syntax".
//!
//! ```text
//! TPMKey ::= SEQUENCE {
//!   type        OBJECT IDENTIFIER,
//!   emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
//!   policy      [1] EXPLICIT SEQUENCE OF TPMPolicy OPTIONAL,
//!   secret      [2] EXPLICIT OCTET STRING OPTIONAL,
//!   authPolicy  [3] EXPLICIT SEQUENCE OF TPMAuthPolicy OPTIONAL,
//!   description [4] EXPLICIT UTF8String OPTIONAL,
//!   rsaParent   [5] EXPLICIT BOOLEAN OPTIONAL,
//!   parent      INTEGER,
//!   pubkey      OCTET STRING,     -- TPM2B_PUBLIC
//!   privkey     OCTET STRING }    -- TPM2B_PRIVATE
//! ```
//!
//! Reading is lenient, because real writers are: tpm2-openssl writes TRUE as `01` and an
//! explicit FALSE, and 32-bit builds of some tools wrote persistent parents as negative
//! INTEGERs. Writing is strict DER. The key blobs are kept as raw bytes; they are encrypted
//! by the TPM and mean something only to it.
//!
//! ```
//! use ssh_tpm_keyfile::{handle, KeyType, TpmKey};
//!
//! let key = TpmKey::new_loadable(handle::OWNER, vec![0, 2, 1, 2], vec![0, 1, 9], true);
//! let pem = key.to_pem();
//! assert!(pem.starts_with("-----BEGIN TSS2 PRIVATE KEY-----\n"));
//!
//! let read = TpmKey::from_bytes(pem.as_bytes())?;
//! assert_eq!(read.key_type, KeyType::Loadable);
//! assert_eq!(read, key);
//! # Ok::<(), ssh_tpm_keyfile::Error>(())
//! ```

pub mod atomic;
mod der;
mod error;
pub mod handle;
mod pem;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use der::Reader;
pub use error::Error;

/// The PEM label of a TPM 2.0 key file.
pub const PEM_LABEL: &str = "TSS2 PRIVATE KEY";

/// What the TPM must do to use the key, from the `type` OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// id-loadablekey, 2.23.133.10.1.3: load with TPM2_Load under `parent`.
    Loadable,
    /// id-importablekey, 2.23.133.10.1.4: import with TPM2_Import (using `secret`) first.
    Importable,
    /// id-sealedkey, 2.23.133.10.1.5: a sealed data object, not a signing key.
    Sealed,
}

/// DER content of the OID arc 2.23.133.10.1, which the three key-type OIDs share.
const KEY_TYPE_OID_PREFIX: [u8; 5] = [0x67, 0x81, 0x05, 0x0A, 0x01];

impl KeyType {
    /// The type's OID in dotted form.
    pub fn oid(self) -> &'static str {
        match self {
            KeyType::Loadable => "2.23.133.10.1.3",
            KeyType::Importable => "2.23.133.10.1.4",
            KeyType::Sealed => "2.23.133.10.1.5",
        }
    }

    fn last_arc(self) -> u8 {
        match self {
            KeyType::Loadable => 3,
            KeyType::Importable => 4,
            KeyType::Sealed => 5,
        }
    }

    fn from_oid_content(content: &[u8]) -> Option<Self> {
        match content.strip_prefix(&KEY_TYPE_OID_PREFIX)? {
            [3] => Some(KeyType::Loadable),
            [4] => Some(KeyType::Importable),
            [5] => Some(KeyType::Sealed),
            _ => None,
        }
    }
}

/// One policy command the TPM must run to authorize use of the key (TPMPolicy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPolicy {
    /// The TPM_CC of the policy command, e.g. 0x0000016B for TPM2_PolicyAuthValue.
    pub command_code: u32,
    /// The command's parameters, marshalled as the draft describes for that command.
    pub command_policy: Vec<u8>,
}

/// A named policy, one of several that may satisfy a signed policy (TPMAuthPolicy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmAuthPolicy {
    pub name: Option<String>,
    pub policy: Vec<TpmPolicy>,
}

/// A TPM 2.0 key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKey {
    pub key_type: KeyType,
    /// The key's userAuth is empty: no PIN is needed.
    pub empty_auth: bool,
    pub policy: Vec<TpmPolicy>,
    /// For importable keys: the seed, encrypted to the parent.
    pub secret: Option<Vec<u8>>,
    pub auth_policy: Vec<TpmAuthPolicy>,
    pub description: Option<String>,
    /// The parent is a hierarchy's RSA-2048 primary instead of the P-256 one.
    pub rsa_parent: bool,
    /// The parent's handle: a hierarchy (see [`handle`]) or a persistent key.
    pub parent: u32,
    /// TPM2B_PUBLIC, as the TPM marshals it.
    pub pubkey: Vec<u8>,
    /// TPM2B_PRIVATE, as the TPM marshals it.
    pub privkey: Vec<u8>,
}

impl TpmKey {
    /// A loadable key with no policies, secret, description or RSA parent.
    pub fn new_loadable(parent: u32, pubkey: Vec<u8>, privkey: Vec<u8>, empty_auth: bool) -> Self {
        TpmKey {
            key_type: KeyType::Loadable,
            empty_auth,
            policy: Vec::new(),
            secret: None,
            auth_policy: Vec::new(),
            description: None,
            rsa_parent: false,
            parent,
            pubkey,
            privkey,
        }
    }

    /// Reads a key from its DER (or BER) encoding.
    ///
    /// # Errors
    ///
    /// Malformed input, naming the field and byte offset, or an unknown key type OID.
    /// Sealed keys are read like any other; refusing them is up to the caller.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let mut reader = Reader::new(der);
        let key = der::constructed(&mut reader, der::SEQUENCE, "TPMKey", read_key)?;
        reader.finish("TPMKey")?;
        Ok(key)
    }

    /// Encodes the key as DER, leaving out optional fields that are empty; `emptyAuth` is
    /// always written.
    pub fn to_der(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let oid = [&KEY_TYPE_OID_PREFIX[..], &[self.key_type.last_arc()]].concat();
        der::put(&mut body, der::OBJECT_IDENTIFIER, &oid);
        // The draft lets a key that needs a password leave emptyAuth out. But tpm2-openssl
        // 1.1.1 and tpm2-tss-engine read an absent emptyAuth as TRUE (OpenSSL's "absent"
        // BOOLEAN is -1), send an empty password, and burn a dictionary-attack try. So
        // FALSE is written explicitly; the field has no DEFAULT, so this is still DER.
        put_explicit(&mut body, 0, |out| der::put_bool(out, self.empty_auth));
        if !self.policy.is_empty() {
            put_explicit(&mut body, 1, |out| put_policies(out, &self.policy));
        }
        if let Some(secret) = &self.secret {
            put_explicit(&mut body, 2, |out| der::put(out, der::OCTET_STRING, secret));
        }
        if !self.auth_policy.is_empty() {
            put_explicit(&mut body, 3, |out| {
                put_auth_policies(out, &self.auth_policy)
            });
        }
        if let Some(description) = &self.description {
            let text = description.as_bytes();
            put_explicit(&mut body, 4, |out| der::put(out, der::UTF8_STRING, text));
        }
        if self.rsa_parent {
            put_explicit(&mut body, 5, |out| der::put_bool(out, true));
        }
        der::put_u32(&mut body, self.parent);
        der::put(&mut body, der::OCTET_STRING, &self.pubkey);
        der::put(&mut body, der::OCTET_STRING, &self.privkey);
        der::encode(der::SEQUENCE, &body)
    }

    /// Reads a key from PEM text; text around the PEM block is ignored.
    ///
    /// # Errors
    ///
    /// As [`TpmKey::from_der`]; and for PEM with another label, a message saying what the
    /// file is instead: an old-format ssh-tpm-agent key, or some other key to import.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        Self::from_der(&pem::decode(text)?)
    }

    /// Encodes the key as PEM: LF line endings, base64 wrapped at 64 columns.
    pub fn to_pem(&self) -> String {
        pem::encode(&self.to_der())
    }

    /// Reads a key file's contents, PEM or DER.
    ///
    /// # Errors
    ///
    /// As [`TpmKey::from_pem`] and [`TpmKey::from_der`], or
    /// [`Error::UnrecognizedFormat`] when `data` is neither.
    pub fn from_bytes(data: &[u8]) -> Result<Self, Error> {
        if data.first() == Some(&der::SEQUENCE) {
            return Self::from_der(data);
        }
        match std::str::from_utf8(data) {
            Ok(text) if text.contains("-----BEGIN ") => Self::from_pem(text),
            _ => Err(Error::UnrecognizedFormat),
        }
    }
}

/// Reads the fields of TPMKey, in order.
fn read_key(r: &mut Reader<'_>) -> Result<TpmKey, Error> {
    let oid = der::read_oid(r, "type")?;
    let key_type = KeyType::from_oid_content(oid).ok_or_else(|| Error::UnknownKeyType {
        oid: der::oid_to_string(oid).unwrap_or_default(),
    })?;

    let empty_auth = optional(r, 0, "emptyAuth", der::read_bool)?.unwrap_or(false);
    let policy = optional(r, 1, "policy", read_policies)?.unwrap_or_default();
    let secret = optional(r, 2, "secret", der::read_octets)?;
    let auth_policy = optional(r, 3, "authPolicy", read_auth_policies)?.unwrap_or_default();
    let description = optional(r, 4, "description", der::read_utf8)?;
    let rsa_parent = optional(r, 5, "rsaParent", der::read_bool)?.unwrap_or(false);

    // A tagged field here is from a later revision of the draft, repeated, or out of order.
    if let Some(tag) = r.peek_tag().filter(|&tag| der::is_context(tag)) {
        return Err(Error::UnsupportedField {
            number: tag & 0x1F,
            offset: r.offset(),
        });
    }

    Ok(TpmKey {
        key_type,
        empty_auth,
        policy,
        secret,
        auth_policy,
        description,
        rsa_parent,
        parent: der::read_u32(r, "parent")?,
        pubkey: der::read_octets(r, "pubkey")?,
        privkey: der::read_octets(r, "privkey")?,
    })
}

/// Reads `[n] EXPLICIT` around a value that `read` reads.
fn explicit<'a, T>(
    r: &mut Reader<'a>,
    n: u8,
    field: &'static str,
    read: impl FnOnce(&mut Reader<'a>, &'static str) -> Result<T, Error>,
) -> Result<T, Error> {
    der::constructed(r, der::context(n), field, |inner| read(inner, field))
}

/// Like [`explicit`], for an OPTIONAL field: `None` when the next tag is not `[n]`.
fn optional<'a, T>(
    r: &mut Reader<'a>,
    n: u8,
    field: &'static str,
    read: impl FnOnce(&mut Reader<'a>, &'static str) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    if r.peek_tag() == Some(der::context(n)) {
        explicit(r, n, field, read).map(Some)
    } else {
        Ok(None)
    }
}

/// Reads `SEQUENCE OF TPMPolicy`.
fn read_policies(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<TpmPolicy>, Error> {
    der::constructed(r, der::SEQUENCE, field, |list| {
        let mut policies = Vec::new();
        while !list.is_empty() {
            policies.push(der::constructed(list, der::SEQUENCE, "TPMPolicy", |p| {
                Ok(TpmPolicy {
                    command_code: explicit(p, 0, "commandCode", der::read_u32)?,
                    command_policy: explicit(p, 1, "commandPolicy", der::read_octets)?,
                })
            })?);
        }
        Ok(policies)
    })
}

/// Reads `SEQUENCE OF TPMAuthPolicy`.
fn read_auth_policies(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<TpmAuthPolicy>, Error> {
    der::constructed(r, der::SEQUENCE, field, |list| {
        let mut auth_policies = Vec::new();
        while !list.is_empty() {
            auth_policies.push(der::constructed(
                list,
                der::SEQUENCE,
                "TPMAuthPolicy",
                |a| {
                    Ok(TpmAuthPolicy {
                        name: optional(a, 0, "name", der::read_utf8)?,
                        policy: explicit(a, 1, "policy", read_policies)?,
                    })
                },
            )?);
        }
        Ok(auth_policies)
    })
}

/// Appends `[n] EXPLICIT` around what `write` appends.
fn put_explicit(out: &mut Vec<u8>, n: u8, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    der::put(out, der::context(n), &inner);
}

fn put_policies(out: &mut Vec<u8>, policies: &[TpmPolicy]) {
    let mut list = Vec::new();
    for policy in policies {
        let mut fields = Vec::new();
        put_explicit(&mut fields, 0, |o| der::put_u32(o, policy.command_code));
        put_explicit(&mut fields, 1, |o| {
            der::put(o, der::OCTET_STRING, &policy.command_policy)
        });
        der::put(&mut list, der::SEQUENCE, &fields);
    }
    der::put(out, der::SEQUENCE, &list);
}

fn put_auth_policies(out: &mut Vec<u8>, auth_policies: &[TpmAuthPolicy]) {
    let mut list = Vec::new();
    for auth_policy in auth_policies {
        let mut fields = Vec::new();
        if let Some(name) = &auth_policy.name {
            put_explicit(&mut fields, 0, |o| {
                der::put(o, der::UTF8_STRING, name.as_bytes())
            });
        }
        put_explicit(&mut fields, 1, |o| put_policies(o, &auth_policy.policy));
        der::put(&mut list, der::SEQUENCE, &fields);
    }
    der::put(out, der::SEQUENCE, &list);
}
