//! A bounds-checked big-endian reader over untrusted bytes (TPM 2.0 Part 1, 9.4: all
//! integers are big-endian, `TPM2B` buffers carry a 16-bit size).

use crate::error::{Error, Result};

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn error(&self, detail: impl Into<String>) -> Error {
        Error::malformed(self.what, format!("{} at byte {}", detail.into(), self.pos))
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        if rest.len() < n {
            return Err(self.error(format!(
                "truncated {field}: need {n} bytes, {} left",
                rest.len()
            )));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let b = self.bytes(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A `TPM2B_*`: a 16-bit size no larger than `max`, then that many bytes.
    pub(crate) fn tpm2b(&mut self, max: usize, field: &str) -> Result<&'a [u8]> {
        let size = usize::from(self.u16(field)?);
        if size > max {
            return Err(self.error(format!("{field} is {size} bytes, at most {max} allowed")));
        }
        self.bytes(size, field)
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(self) -> Result<()> {
        let left = self.buf.len() - self.pos;
        if left == 0 {
            Ok(())
        } else {
            Err(self.error(format!("{left} trailing bytes")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_refuses_overruns() {
        let mut r = Reader::new(&[0, 2, 0xaa, 0xbb, 1], "test");
        assert_eq!(r.tpm2b(2, "buf").unwrap(), &[0xaa, 0xbb]);
        assert!(r.u16("x").is_err());
        let mut r = Reader::new(&[0, 3, 1, 2, 3], "test");
        assert!(r.tpm2b(2, "buf").is_err(), "over the maximum");
        let mut r = Reader::new(&[0, 9, 1], "test");
        assert!(r.tpm2b(64, "buf").is_err(), "over the input");
        let r = Reader::new(&[1], "test");
        assert!(r.finish().is_err());
    }
}
