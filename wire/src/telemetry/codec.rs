//! Byte-level primitives: LEB128 varints (as postcard writes them), zigzag, and a bounds-checked
//! reader that reports the offset and field of every failure.
//!
//! Invariant: `Reader` never indexes out of bounds and never returns a varint that was not in
//! its shortest form, so every accepted body has exactly one byte representation.

use super::{DecodeError, Section};

/// Zigzag-maps a signed integer so that small magnitudes become small unsigned numbers.
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(super) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Bytes the varint of `v` takes (1..=10).
pub(super) fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` as a varint: 7 bits per byte, least significant group first, high bit set on
/// every byte but the last.
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `zigzag(v)` as a varint.
pub(super) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// A cursor over a header or body that fails with the field name and offset.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    section: Section,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], section: Section) -> Self {
        Reader {
            buf,
            pos: 0,
            section,
        }
    }

    /// Current offset.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The rest of the input, consuming it.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }

    pub(super) fn truncated(&self, offset: usize, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            section: self.section,
            offset,
            field,
        }
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated(self.pos, field)),
        }
    }

    pub(super) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated(self.pos, field));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A canonical varint of at most 10 bytes.
    pub(super) fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        // Fast path: one byte.
        if let Some(&b) = self.buf.get(start)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.truncated(start, field));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.bad_varint(start, field));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    // A trailing zero group: not the shortest form.
                    return Err(self.bad_varint(start, field));
                }
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// A varint that must not exceed `max`.
    pub(super) fn varint_max(&mut self, field: &'static str, max: u64) -> Result<u64, DecodeError> {
        let start = self.pos;
        let v = self.varint(field)?;
        if v > max {
            return Err(DecodeError::Limit {
                section: self.section,
                offset: start,
                field,
                value: v,
                max,
            });
        }
        Ok(v)
    }

    /// A zigzag varint.
    pub(super) fn zigzag(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(unzigzag(self.varint(field)?))
    }

    fn bad_varint(&self, offset: usize, field: &'static str) -> DecodeError {
        DecodeError::Varint {
            section: self.section,
            offset,
            field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 2, -2, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    #[test]
    fn varints_round_trip_and_have_predicted_length() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            1 << 21,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = Reader::new(&out, Section::Body);
            assert_eq!(r.varint("v").unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn rejects_overlong_overflowing_and_truncated_varints() {
        let bad = |bytes: &[u8]| Reader::new(bytes, Section::Body).varint("v").unwrap_err();
        assert!(matches!(
            bad(&[0x80, 0x00]),
            DecodeError::Varint { offset: 0, .. }
        ));
        assert!(matches!(
            bad(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            DecodeError::Varint { .. }
        ));
        assert!(matches!(bad(&[0xff; 11]), DecodeError::Varint { .. }));
        assert!(matches!(
            bad(&[0x80]),
            DecodeError::Truncated { offset: 0, .. }
        ));
        assert!(matches!(bad(&[]), DecodeError::Truncated { .. }));
    }
}
