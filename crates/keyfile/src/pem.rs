//! The PEM armour around a key file (RFC 7468), and the label checks that turn the usual
//! mix-ups (an old-format key, an OpenSSH key) into errors that say what to do.

use crate::{Error, PEM_LABEL};

/// The label of the key files written by early releases of the Go ssh-tpm-agent.
const OLD_PEM_LABEL: &str = "TPM PRIVATE KEY";

const BEGIN: &str = "-----BEGIN ";
const DASHES: &str = "-----";

/// Returns the DER inside the first PEM block of `text`, which must be a TSS2 PRIVATE KEY.
///
/// Lenient where real files differ: text before the `BEGIN` line and after the `END` line
/// is ignored, and the base64 may be wrapped at any width, not only 64 columns.
pub fn decode(text: &str) -> Result<Vec<u8>, Error> {
    let start = text.find(BEGIN).ok_or(Error::UnrecognizedFormat)?;
    let document = &text[start..];

    // The label decides which error a file that is not ours gets.
    let label = document[BEGIN.len()..]
        .split_once(DASHES)
        .map(|(label, _)| label)
        .filter(|label| !label.contains(['\r', '\n']))
        .ok_or(Error::Pem(pem_rfc7468::Error::PreEncapsulationBoundary))?;
    match label {
        PEM_LABEL => {}
        OLD_PEM_LABEL => return Err(Error::OldFormat),
        other => {
            return Err(Error::NotTpmKey {
                label: other.to_owned(),
            })
        }
    }

    // Cut the block out of the text around it; the decoder wants nothing after `END`.
    let end_line = format!("-----END {PEM_LABEL}-----");
    // Without its END line the file was cut short, whatever the decoder would say.
    let block = match document.find(&end_line) {
        Some(at) => &document[..at + end_line.len()],
        None => return Err(Error::Pem(pem_rfc7468::Error::PostEncapsulationBoundary)),
    };
    if block
        .lines()
        .skip(1)
        .all(|line| line.trim().is_empty() || line.starts_with("-----END"))
    {
        return Err(Error::EmptyPem);
    }
    let block = format!("{block}\n");

    // The decoder needs the line width: take it from the first line of base64.
    let width = block
        .lines()
        .nth(1)
        .map(|line| line.trim_end_matches('\r').len())
        .filter(|&width| width >= 4)
        .unwrap_or(64);

    let mut decoder =
        pem_rfc7468::Decoder::new_wrapped(block.as_bytes(), width).map_err(Error::Pem)?;
    let mut der = Vec::new();
    decoder.decode_to_end(&mut der).map_err(Error::Pem)?;
    Ok(der)
}

/// Wraps `der` in PEM with the TSS2 PRIVATE KEY label: LF line endings, 64 columns.
pub fn encode(der: &[u8]) -> String {
    pem_rfc7468::encode_string(PEM_LABEL, pem_rfc7468::LineEnding::LF, der)
        .expect("encoding fails only for an invalid label or a length near usize::MAX")
}
