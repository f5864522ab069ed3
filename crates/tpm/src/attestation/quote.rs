//! TPM2_Quote (TPM 2.0 Part 3, 18.4) of SHA-256 PCRs, returned with the values quoted.
//!
//! A quote carries only a digest of the PCRs; the values come from TPM2_PCR_Read, a separate
//! command. They are read before the quote and checked against its digest, so a PCR extended
//! in between is caught (and the pair made once more) instead of sent as a mismatch.

use sha2::Digest as _;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{AttestInfo, Data, PcrSelectionList, PcrSlot};

use super::certify::{attestation, qualifying_data_of};
use super::{AkTemplate, Quote};
use crate::device::Tpm;
use crate::error::{Error, Result};

/// The highest PCR index (PC Client TPMs have 24 PCRs).
const MAX_PCR: u8 = 23;

impl Tpm {
    pub(crate) fn quote_once(
        &mut self,
        ak: AkTemplate,
        qualifying_data: &[u8],
        pcrs: &[u8],
    ) -> Result<Quote> {
        let indexes = selection_indexes(pcrs)?;
        let data = qualifying_data_of(qualifying_data)?;
        let ak_handle = self.create_ak(ak)?;
        let result = self.quote_with(ak_handle, data, &indexes);
        self.flush_object(ak_handle);
        result
    }

    fn quote_with(
        &mut self,
        ak_handle: tss_esapi::handles::KeyHandle,
        data: Data,
        indexes: &[u8],
    ) -> Result<Quote> {
        let selection = selection_list(indexes).map_err(|e| Error::tss("selecting the PCRs", e))?;
        for _ in 0..2 {
            let values = self.read_pcrs(indexes)?;
            let (attest, signature) = self
                .ctx
                .execute_with_sessions((Some(AuthSession::Password), None, None), |ctx| {
                    ctx.quote(
                        ak_handle,
                        data.clone(),
                        AkTemplate::scheme(),
                        selection.clone(),
                    )
                })
                .map_err(|e| Error::tss("quoting the PCRs", e))?;
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(Error::Unsupported(
                    "the TPM answered TPM2_Quote with another kind of attestation".into(),
                ));
            };
            if info.pcr_digest().value() == pcr_digest(&values) {
                return Ok(Quote {
                    attestation: attestation(&attest, &signature)?,
                    pcrs: values,
                });
            }
            tracing::debug!("a PCR changed between TPM2_PCR_Read and TPM2_Quote; quoting again");
        }
        Err(Error::Unsupported(
            "the PCRs changed while they were being quoted, twice; try again when the \
             machine is idle"
                .into(),
        ))
    }

    /// TPM2_PCR_Read of the SHA-256 `indexes` (ascending), in as many reads as the TPM needs
    /// (one answer carries at most 8 values), all under the same pcrUpdateCounter.
    pub(crate) fn read_pcrs(&mut self, indexes: &[u8]) -> Result<Vec<(u8, Vec<u8>)>> {
        let op = "reading the PCRs";
        let mut values: Vec<(u8, Vec<u8>)> = Vec::with_capacity(indexes.len());
        let mut counter = None;
        while values.len() < indexes.len() {
            let remaining: Vec<u8> = indexes
                .iter()
                .copied()
                .filter(|i| !values.iter().any(|(done, _)| done == i))
                .collect();
            let (update_counter, selection, digests) = self
                .ctx
                .execute_without_session(|ctx| ctx.pcr_read(selection_list(&remaining)?))
                .map_err(|e| Error::tss(op, e))?;
            if *counter.get_or_insert(update_counter) != update_counter {
                // A PCR moved between two reads: start over.
                values.clear();
                counter = None;
                continue;
            }
            let returned = returned_indexes(&selection);
            if returned.is_empty() || returned.len() != digests.len() {
                return Err(Error::Unsupported(
                    "the TPM returned no SHA-256 PCR values; is the SHA-256 bank active?".into(),
                ));
            }
            for (index, digest) in returned.into_iter().zip(digests.value()) {
                values.push((index, digest.value().to_vec()));
            }
        }
        values.sort_by_key(|(index, _)| *index);
        Ok(values)
    }
}

/// The requested PCRs, ascending and without repeats, as the TPM orders a selection.
fn selection_indexes(pcrs: &[u8]) -> Result<Vec<u8>> {
    if pcrs.is_empty() {
        return Err(Error::Unsupported("a quote needs at least one PCR".into()));
    }
    if let Some(bad) = pcrs.iter().find(|&&i| i > MAX_PCR) {
        return Err(Error::Unsupported(format!(
            "PCR {bad} does not exist; PCRs are numbered 0 to 23"
        )));
    }
    let mut indexes = pcrs.to_vec();
    indexes.sort_unstable();
    indexes.dedup();
    Ok(indexes)
}

fn selection_list(indexes: &[u8]) -> tss_esapi::Result<PcrSelectionList> {
    let slots = indexes
        .iter()
        .map(|&i| PcrSlot::try_from(1u32 << i))
        .collect::<tss_esapi::Result<Vec<_>>>()?;
    PcrSelectionList::builder()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
}

/// The SHA-256 PCR indexes of a selection the TPM returned, ascending.
fn returned_indexes(selection: &PcrSelectionList) -> Vec<u8> {
    let mut indexes: Vec<u8> = selection
        .get_selections()
        .iter()
        .filter(|s| s.hashing_algorithm() == HashingAlgorithm::Sha256)
        .flat_map(|s| s.selected())
        .map(|slot| u32::from(slot).trailing_zeros() as u8)
        .collect();
    indexes.sort_unstable();
    indexes
}

/// A quote's pcrDigest for a SHA-256 AK: SHA-256 over the values in selection order.
pub(crate) fn pcr_digest(values: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut hash = sha2::Sha256::new();
    for (_, value) in values {
        hash.update(value);
    }
    hash.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_are_sorted_and_checked() {
        assert_eq!(selection_indexes(&[7, 0, 3, 3]).expect("valid"), [0, 3, 7]);
        assert!(selection_indexes(&[]).is_err());
        assert!(selection_indexes(&[24]).is_err());
        let list = selection_list(&[0, 1, 2, 3, 4, 5, 6, 7, 16]).expect("builds");
        assert_eq!(returned_indexes(&list), [0, 1, 2, 3, 4, 5, 6, 7, 16]);
    }
}
