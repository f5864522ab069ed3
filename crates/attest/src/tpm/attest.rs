//! `TPMS_ATTEST` (TPM 2.0 Part 2, 10.12.12) for the two attestations the CA reads:
//! TPM2_Certify (`TPMS_CERTIFY_INFO`) and TPM2_Quote (`TPMS_QUOTE_INFO`). The checks compare
//! the magic, the type (the [`Attested`] variant) and `extraData`; this only decodes.

use super::reader::Reader;
use super::{ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE};
use crate::error::{Error, Result};

const WHAT: &str = "TPMS_ATTEST";
/// `sizeof(TPMU_NAME)`: a `TPMT_HA` of SHA-512.
const MAX_NAME: usize = 66;
/// `sizeof(TPMT_HA)`, the size of a `TPM2B_DATA`.
const MAX_DATA: usize = 66;
/// `sizeof(TPMU_HA)`.
const MAX_DIGEST: usize = 64;
/// More banks than any TPM implements (`HASH_COUNT`).
const MAX_BANKS: u32 = 16;
/// `PCR_SELECT_MAX` for up to 256 PCRs.
const MAX_SELECT: usize = 32;

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was made.
    pub clock: u64,
    /// TPM resets since the last TPM2_Clear.
    pub reset_count: u32,
    /// TPM restarts since the last reset.
    pub restart_count: u32,
    /// Whether `clock` is known not to have gone back.
    pub safe: bool,
}

/// `TPMS_PCR_SELECTION`: one bank and a bitmap of its PCRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm id.
    pub hash: u16,
    /// `pcrSelect`: bit `i % 8` of byte `i / 8` selects PCR `i`.
    pub select: Vec<u8>,
}

impl PcrSelection {
    /// The selected PCR indices, ascending (the order of the quote's digest).
    pub fn indices(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for (byte_index, byte) in (0u16..).zip(&self.select) {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    out.push(byte_index * 8 + bit);
                }
            }
        }
        out
    }
}

/// The type-specific part of an attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// `TPM_ST_ATTEST_CERTIFY`: `TPMS_CERTIFY_INFO`.
    Certify {
        /// The certified object's name.
        name: Vec<u8>,
        /// Its qualified name.
        qualified_name: Vec<u8>,
    },
    /// `TPM_ST_ATTEST_QUOTE`: `TPMS_QUOTE_INFO`.
    Quote {
        /// `TPML_PCR_SELECTION`.
        pcr_selections: Vec<PcrSelection>,
        /// Digest of the selected PCR values.
        pcr_digest: Vec<u8>,
    },
}

/// A decoded `TPMS_ATTEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// `TPM_GENERATED_VALUE` when the TPM made it.
    pub magic: u32,
    /// `qualifiedSigner`.
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the caller's qualifying data.
    pub extra_data: Vec<u8>,
    /// `clockInfo`.
    pub clock_info: ClockInfo,
    /// `firmwareVersion`.
    pub firmware_version: u64,
    /// The attested information; its variant is the structure's `type`.
    pub attested: Attested,
}

impl Attest {
    /// Decodes a `TPMS_ATTEST` (the contents of a `TPM2B_ATTEST`), refusing trailing bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for truncated, oversized or invalid fields;
    /// [`Error::Unsupported`] for attestation types other than certify and quote.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, WHAT);
        let magic = r.u32("magic")?;
        let attest_type = r.u16("type")?;
        let qualified_signer = r.tpm2b(MAX_NAME, "qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b(MAX_DATA, "extraData")?.to_vec();
        let clock_info = ClockInfo {
            clock: r.u64("clockInfo.clock")?,
            reset_count: r.u32("clockInfo.resetCount")?,
            restart_count: r.u32("clockInfo.restartCount")?,
            safe: match r.u8("clockInfo.safe")? {
                0 => false,
                1 => true,
                other => return Err(r.error(format!("clockInfo.safe is {other}, not 0 or 1"))),
            },
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let attested = match attest_type {
            ST_ATTEST_CERTIFY => Attested::Certify {
                name: r.tpm2b(MAX_NAME, "certify.name")?.to_vec(),
                qualified_name: r.tpm2b(MAX_NAME, "certify.qualifiedName")?.to_vec(),
            },
            ST_ATTEST_QUOTE => {
                let pcr_selections = decode_selections(&mut r)?;
                let pcr_digest = r.tpm2b(MAX_DIGEST, "quote.pcrDigest")?.to_vec();
                Attested::Quote {
                    pcr_selections,
                    pcr_digest,
                }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "attestation type 0x{other:04x} (only certify and quote)"
                )))
            }
        };
        r.finish()?;
        Ok(Self {
            magic,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            attested,
        })
    }

    /// The `TPM_ST` of the structure.
    pub fn attest_type(&self) -> u16 {
        match self.attested {
            Attested::Certify { .. } => ST_ATTEST_CERTIFY,
            Attested::Quote { .. } => ST_ATTEST_QUOTE,
        }
    }
}

fn decode_selections(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>> {
    let count = r.u32("quote.pcrSelect.count")?;
    if count > MAX_BANKS {
        return Err(r.error(format!("{count} PCR banks, at most {MAX_BANKS} allowed")));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let hash = r.u16("pcrSelection.hash")?;
        let size = usize::from(r.u8("pcrSelection.sizeofSelect")?);
        if size > MAX_SELECT {
            return Err(r.error(format!("sizeofSelect {size}, at most {MAX_SELECT} allowed")));
        }
        let select = r.bytes(size, "pcrSelection.pcrSelect")?.to_vec();
        out.push(PcrSelection { hash, select });
    }
    Ok(out)
}
