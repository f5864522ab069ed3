//! A small ASN.1 TLV codec: reads BER leniently and writes strict DER (ITU-T X.690).
//!
//! Only what the TPM key file needs: single-byte tags, definite lengths, and the BOOLEAN,
//! INTEGER, OCTET STRING, OBJECT IDENTIFIER, UTF8String and SEQUENCE types. Every read names
//! the field it is for, so errors can say which field is broken and at which byte.

use crate::Error;

pub const BOOLEAN: u8 = 0x01;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const OBJECT_IDENTIFIER: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0C;
pub const SEQUENCE: u8 = 0x30;

/// The tag of an explicitly tagged, context-specific field `[n]` (always constructed).
pub const fn context(n: u8) -> u8 {
    0xA0 | n
}

/// Is `tag` a context-specific tag (class bits `10`)?
pub const fn is_context(tag: u8) -> bool {
    tag & 0xC0 == 0x80
}

/// A readable name for a tag, for error messages.
pub fn tag_name(tag: u8) -> String {
    match tag {
        BOOLEAN => "a BOOLEAN".to_owned(),
        INTEGER => "an INTEGER".to_owned(),
        OCTET_STRING => "an OCTET STRING".to_owned(),
        OBJECT_IDENTIFIER => "an OBJECT IDENTIFIER".to_owned(),
        UTF8_STRING => "a UTF8String".to_owned(),
        SEQUENCE => "a SEQUENCE".to_owned(),
        t if is_context(t) => format!("field [{}] (tag 0x{t:02X})", t & 0x1F),
        t => format!("tag 0x{t:02X}"),
    }
}

/// Reads consecutive TLVs from a slice of the input.
///
/// Offsets in errors are absolute: `base` is where `data` starts in the whole input.
/// `cut_short` says the input ended before this slice did, so running out of bytes is
/// truncation rather than a missing field.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
    cut_short: bool,
}

/// One TLV whose header has been read. Its content may be shorter than its length says,
/// when the input is truncated; `primitive` and `reader` let callers find the innermost field
/// that is cut off.
pub struct Tlv<'a> {
    field: &'static str,
    offset: usize,
    content: &'a [u8],
    content_offset: usize,
    declared_len: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole input: running out of bytes anywhere is truncation.
    pub fn new(data: &'a [u8]) -> Self {
        Reader {
            data,
            pos: 0,
            base: 0,
            cut_short: true,
        }
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Reads the header of a TLV that must have tag `tag`.
    pub fn expect(&mut self, tag: u8, field: &'static str) -> Result<Tlv<'a>, Error> {
        let offset = self.offset();
        let rest = &self.data[self.pos..];

        // The tag byte, checked before the length so a wrong tag is reported as such.
        let Some(&found) = rest.first() else {
            return Err(self.ran_out(field, 2));
        };
        if found != tag {
            return Err(Error::UnexpectedTag {
                field,
                offset,
                expected: tag,
                found,
            });
        }

        // The length: short form, or long form with 1 to 8 length bytes (leading zero
        // bytes are accepted; BER allows them). Indefinite lengths are not supported.
        let Some(&first) = rest.get(1) else {
            return Err(self.ran_out(field, 2));
        };
        let (declared_len, header_len) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 8 {
                return Err(Error::BadLength { field, offset });
            }
            let Some(bytes) = rest.get(2..2 + count) else {
                return Err(self.ran_out(field, 2 + count));
            };
            let len = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            let len = usize::try_from(len).map_err(|_| Error::BadLength { field, offset })?;
            (len, 2 + count)
        };

        // The content. If the input ends inside it, clamp it so the caller can blame the
        // innermost field that is cut off; inside a complete structure, overrunning it is
        // an error right away.
        let content = &rest[header_len..];
        if declared_len > content.len() && !self.cut_short {
            return Err(Error::Overrun {
                field,
                offset,
                needed: declared_len.saturating_add(header_len),
                remaining: rest.len(),
            });
        }
        let content = &content[..declared_len.min(content.len())];
        self.pos += header_len + content.len();
        Ok(Tlv {
            field,
            offset,
            content,
            content_offset: offset + header_len,
            declared_len,
        })
    }

    /// Fails if bytes are left after the last element read.
    pub fn finish(&self, field: &'static str) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingData {
                field,
                offset: self.offset(),
                count: self.data.len() - self.pos,
            })
        }
    }

    /// The error for a header that does not fit in what is left.
    fn ran_out(&self, field: &'static str, needed: usize) -> Error {
        let offset = self.offset();
        let remaining = self.data.len() - self.pos;
        if self.cut_short {
            Error::Truncated {
                field,
                offset,
                needed,
                remaining,
            }
        } else if remaining == 0 {
            Error::MissingField { field, offset }
        } else {
            Error::Overrun {
                field,
                offset,
                needed,
                remaining,
            }
        }
    }
}

impl<'a> Tlv<'a> {
    /// The content of a primitive TLV; fails if the input ends inside it.
    pub fn primitive(&self) -> Result<&'a [u8], Error> {
        self.check_complete()?;
        Ok(self.content)
    }

    /// A reader over the content of a constructed TLV. Read the children first, then call
    /// [`Tlv::check_complete`], so a truncation is blamed on the innermost field it cuts.
    pub fn reader(&self) -> Reader<'a> {
        Reader {
            data: self.content,
            pos: 0,
            base: self.content_offset,
            cut_short: self.content.len() < self.declared_len,
        }
    }

    /// Fails if the input ends inside this TLV.
    pub fn check_complete(&self) -> Result<(), Error> {
        if self.content.len() < self.declared_len {
            let header_len = self.content_offset - self.offset;
            Err(Error::Truncated {
                field: self.field,
                offset: self.offset,
                needed: self.declared_len.saturating_add(header_len),
                remaining: header_len + self.content.len(),
            })
        } else {
            Ok(())
        }
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidValue {
            field: self.field,
            offset: self.offset,
            reason,
        }
    }
}

/// Reads a constructed TLV with tag `tag` and hands its content to `read`, which must
/// consume all of it.
pub fn constructed<'a, T>(
    r: &mut Reader<'a>,
    tag: u8,
    field: &'static str,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, Error>,
) -> Result<T, Error> {
    let tlv = r.expect(tag, field)?;
    let mut inner = tlv.reader();
    let value = read(&mut inner)?;
    inner.finish(field)?;
    tlv.check_complete()?;
    Ok(value)
}

/// Reads a BOOLEAN. Lenient: any non-zero content byte is TRUE (DER requires 0xFF).
pub fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, Error> {
    let tlv = r.expect(BOOLEAN, field)?;
    match tlv.primitive()? {
        [byte] => Ok(*byte != 0),
        _ => Err(tlv.invalid("a BOOLEAN must have exactly one content byte")),
    }
}

/// Reads an INTEGER holding a 32-bit handle or command code.
///
/// Lenient: accepts redundant leading 00 bytes, and a negative value of at most 32 bits,
/// taken as the two's complement bit pattern. 32-bit builds of tpm2-tss-engine and
/// tpm2-tools wrote persistent parents such as 0x81000001 as -0x7EFFFFFF
/// (tpm2-software/tpm2-tss-engine#221, tpm2-software/tpm2-tools#3118).
pub fn read_u32(r: &mut Reader<'_>, field: &'static str) -> Result<u32, Error> {
    let tlv = r.expect(INTEGER, field)?;
    let content = tlv.primitive()?;
    let Some(&first) = content.first() else {
        return Err(tlv.invalid("an INTEGER must have at least one content byte"));
    };

    if first & 0x80 != 0 {
        // Negative: sign-extended to 32 bits, it must fit in an i32.
        if content.len() > 4 {
            return Err(tlv.invalid("the INTEGER is negative and below -2^31"));
        }
        let value = content
            .iter()
            .fold(u32::MAX, |acc, &b| (acc << 8) | u32::from(b));
        return Ok(value);
    }

    let significant = match content.iter().position(|&b| b != 0) {
        Some(start) => &content[start..],
        None => &[],
    };
    if significant.len() > 4 {
        return Err(tlv.invalid("the INTEGER does not fit in 32 bits"));
    }
    Ok(significant
        .iter()
        .fold(0, |acc, &b| (acc << 8) | u32::from(b)))
}

pub fn read_octets(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u8>, Error> {
    Ok(r.expect(OCTET_STRING, field)?.primitive()?.to_vec())
}

pub fn read_utf8(r: &mut Reader<'_>, field: &'static str) -> Result<String, Error> {
    let tlv = r.expect(UTF8_STRING, field)?;
    let bytes = tlv.primitive()?;
    String::from_utf8(bytes.to_vec()).map_err(|_| tlv.invalid("the UTF8String is not valid UTF-8"))
}

/// Reads an OBJECT IDENTIFIER and returns its content bytes, checked to be well formed.
pub fn read_oid<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], Error> {
    let tlv = r.expect(OBJECT_IDENTIFIER, field)?;
    let content = tlv.primitive()?;
    if oid_to_string(content).is_none() {
        return Err(tlv.invalid("the OBJECT IDENTIFIER is malformed"));
    }
    Ok(content)
}

/// Dotted form of an OID's content bytes, or `None` if they are malformed.
pub fn oid_to_string(content: &[u8]) -> Option<String> {
    // Each arc is base-128, high bit set on all but the last byte, no leading 0x80.
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    let mut in_arc = false;
    for &byte in content {
        if !in_arc && byte == 0x80 {
            return None;
        }
        value = value.checked_mul(128)? | u64::from(byte & 0x7F);
        in_arc = byte & 0x80 != 0;
        if !in_arc {
            arcs.push(value);
            value = 0;
        }
    }
    let (&first, rest) = arcs.split_first()?;
    if in_arc {
        return None;
    }

    // The first arc packs two: 40 * X + Y, with X in 0..=2.
    let (x, y) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut dotted = format!("{x}.{y}");
    for arc in rest {
        dotted.push_str(&format!(".{arc}"));
    }
    Some(dotted)
}

/// Appends one DER TLV: `tag`, the minimal length, then `content`.
pub fn put(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// One DER TLV as a new vector.
pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    put(&mut out, tag, content);
    out
}

pub fn put_bool(out: &mut Vec<u8>, value: bool) {
    put(out, BOOLEAN, &[if value { 0xFF } else { 0x00 }]);
}

/// Appends a non-negative INTEGER in minimal two's complement form.
pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    let mut content = Vec::with_capacity(5);
    if bytes[skip] & 0x80 != 0 {
        content.push(0x00);
    }
    content.extend_from_slice(&bytes[skip..]);
    put(out, INTEGER, &content);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_of(der: &[u8]) -> Result<u32, Error> {
        read_u32(&mut Reader::new(der), "n")
    }

    #[test]
    fn integers_encode_minimally() {
        let cases: [(u32, &[u8]); 6] = [
            (0, &[0x02, 0x01, 0x00]),
            (0x7F, &[0x02, 0x01, 0x7F]),
            (0x80, &[0x02, 0x02, 0x00, 0x80]),
            (0x0100, &[0x02, 0x02, 0x01, 0x00]),
            (0x4000_0001, &[0x02, 0x04, 0x40, 0x00, 0x00, 0x01]),
            (0x8100_0001, &[0x02, 0x05, 0x00, 0x81, 0x00, 0x00, 0x01]),
        ];
        for (value, der) in cases {
            let mut out = Vec::new();
            put_u32(&mut out, value);
            assert_eq!(out, der, "encoding {value:#x}");
            assert_eq!(u32_of(der), Ok(value), "decoding {value:#x}");
        }
    }

    #[test]
    fn integers_decode_leniently() {
        // Redundant leading zeros.
        assert_eq!(u32_of(&[0x02, 0x03, 0x00, 0x00, 0x05]), Ok(5));
        // -0x7EFFFFFF, as 32-bit tpm2-tss-engine wrote parent 0x81000001.
        assert_eq!(
            u32_of(&[0x02, 0x04, 0x81, 0x00, 0x00, 0x01]),
            Ok(0x8100_0001)
        );
        // -1 in one byte sign-extends to all ones.
        assert_eq!(u32_of(&[0x02, 0x01, 0xFF]), Ok(u32::MAX));
    }

    #[test]
    fn integers_out_of_range_fail() {
        let too_big = [0x02, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00];
        let too_small = [0x02, 0x05, 0xFF, 0x00, 0x00, 0x00, 0x00];
        let empty = [0x02, 0x00];
        for der in [&too_big[..], &too_small, &empty] {
            assert!(
                matches!(
                    u32_of(der),
                    Err(Error::InvalidValue {
                        field: "n",
                        offset: 0,
                        ..
                    })
                ),
                "{der:02X?}"
            );
        }
    }

    #[test]
    fn long_lengths_encode_minimally() {
        let content = vec![0xAB; 0x1234];
        let der = encode(OCTET_STRING, &content);
        assert_eq!(der[..4], [0x04, 0x82, 0x12, 0x34]);
        assert_eq!(der.len(), 4 + 0x1234);
        assert_eq!(encode(OCTET_STRING, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(encode(OCTET_STRING, &[0; 0x7F])[..2], [0x04, 0x7F]);
    }

    #[test]
    fn non_minimal_lengths_are_read() {
        let der = [0x04, 0x83, 0x00, 0x00, 0x02, 0xAA, 0xBB];
        assert_eq!(
            read_octets(&mut Reader::new(&der), "x"),
            Ok(vec![0xAA, 0xBB])
        );
    }

    #[test]
    fn indefinite_length_is_refused() {
        let der = [0x30, 0x80, 0x00, 0x00];
        let err = Reader::new(&der).expect(SEQUENCE, "x").err();
        assert_eq!(
            err,
            Some(Error::BadLength {
                field: "x",
                offset: 0
            })
        );
    }

    #[test]
    fn oids_print_dotted() {
        let loadable = [0x67, 0x81, 0x05, 0x0A, 0x01, 0x03];
        assert_eq!(oid_to_string(&loadable).as_deref(), Some("2.23.133.10.1.3"));
        assert_eq!(oid_to_string(&[0x2A, 0x03]).as_deref(), Some("1.2.3"));
        assert_eq!(oid_to_string(&[0x88, 0x37]).as_deref(), Some("2.999"));
        assert_eq!(oid_to_string(&[]), None);
        assert_eq!(oid_to_string(&[0x2A, 0x81]), None);
        assert_eq!(oid_to_string(&[0x2A, 0x80, 0x01]), None);
    }
}
