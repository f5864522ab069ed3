//! Errors from reading a key file: what is wrong, and for malformed DER, which field and byte.
//!
//! Byte offsets count from the start of the DER encoding (the base64-decoded PEM body), as
//! `openssl asn1parse` shows them.

use crate::der::tag_name;

/// Why a key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither PEM text with a `BEGIN` line nor DER.
    #[error(
        "not a TPM key file: expected a PEM file starting with \
         `-----BEGIN TSS2 PRIVATE KEY-----`, or its DER encoding"
    )]
    UnrecognizedFormat,

    /// A "TPM PRIVATE KEY" file, written by early releases of the Go ssh-tpm-agent.
    #[error(
        "this is an old-format ssh-tpm-agent key (\"TPM PRIVATE KEY\"), which is no longer \
         supported; recreate the key with ssh-tpm-keygen"
    )]
    OldFormat,

    /// A PEM file of another kind, such as an OpenSSH private key.
    #[error(
        "this is a \"{label}\" PEM file, not a TPM key file (\"TSS2 PRIVATE KEY\"); \
         to move an existing key into the TPM, use `ssh-tpm-keygen --import`"
    )]
    NotTpmKey { label: String },

    /// The PEM armour or its base64 body is broken.
    #[error(
        "the key file's PEM encoding is broken: {}; copy the file again from where it \
         was made",
        pem_reason(.0)
    )]
    Pem(pem_rfc7468::Error),

    /// A PEM block with nothing between its BEGIN and END lines.
    #[error(
        "the key file's PEM block is empty: nothing between its BEGIN and END lines; copy \
         the file again from where it was made"
    )]
    EmptyPem,

    /// The input ends inside a field.
    #[error(
        "key file is truncated: field `{field}` at byte {offset} needs {needed} bytes, \
         {remaining} remain"
    )]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
        remaining: usize,
    },

    /// A field is longer than the structure that contains it.
    #[error(
        "malformed key file: field `{field}` at byte {offset} needs {needed} bytes, but the \
         structure around it has only {remaining} left"
    )]
    Overrun {
        field: &'static str,
        offset: usize,
        needed: usize,
        remaining: usize,
    },

    /// A structure ends before a required field.
    #[error(
        "malformed key file: field `{field}` is missing (the structure ends at byte {offset})"
    )]
    MissingField { field: &'static str, offset: usize },

    /// A field has the wrong ASN.1 type.
    #[error(
        "malformed key file: field `{field}` at byte {offset} should be {} but is {}",
        tag_name(*.expected),
        tag_name(*.found)
    )]
    UnexpectedTag {
        field: &'static str,
        offset: usize,
        expected: u8,
        found: u8,
    },

    /// An indefinite length, or one with more than 8 length bytes.
    #[error(
        "malformed key file: field `{field}` at byte {offset} has an indefinite or \
         oversized length"
    )]
    BadLength { field: &'static str, offset: usize },

    /// A field's content is not a valid value of its type.
    #[error("malformed key file: field `{field}` at byte {offset}: {reason}")]
    InvalidValue {
        field: &'static str,
        offset: usize,
        reason: &'static str,
    },

    /// Bytes follow the last element of a structure.
    #[error(
        "malformed key file: {count} unexpected bytes at byte {offset}, after the end of \
         `{field}`"
    )]
    TrailingData {
        field: &'static str,
        offset: usize,
        count: usize,
    },

    /// An optional field `[n]` that is unknown, repeated or out of order.
    #[error(
        "key file has optional field [{number}] at byte {offset}, which this version does not \
         know or which is out of order"
    )]
    UnsupportedField { number: u8, offset: usize },

    /// The key type OID is not one of the three the key-file draft defines.
    #[error(
        "unknown key type OID {oid} (expected 2.23.133.10.1.3 loadable, .4 importable \
         or .5 sealed)"
    )]
    UnknownKeyType { oid: String },
}

/// The PEM decoder's errors, in words for someone who has not read RFC 7468.
fn pem_reason(error: &pem_rfc7468::Error) -> String {
    use pem_rfc7468::Error as Pem;
    match error {
        Pem::PreEncapsulationBoundary => "its `-----BEGIN` line is damaged".into(),
        Pem::PostEncapsulationBoundary => {
            "its `-----END TSS2 PRIVATE KEY-----` line is missing or damaged".into()
        }
        Pem::Base64(_) => "its base64 text is damaged or cut short".into(),
        Pem::Length => "it is too long".into(),
        other => other.to_string(),
    }
}
