//! Kafka's variable-length integers and a bounds-checked reader.
//!
//! Kafka writes signed integers zigzag-encoded (so small negative numbers are
//! short) and then as unsigned LEB128: 7 bits per byte, least significant
//! group first, high bit set on every byte but the last. An `int` takes at
//! most 5 bytes and a `long` at most 10; longer encodings, and final bytes
//! carrying bits beyond 32/64, are rejected so that a corrupt record cannot
//! make the decoder spin or silently truncate.

use bytes::BufMut;

use super::BatchError;

const VARINT_MAX_BYTES: usize = 5;
const VARLONG_MAX_BYTES: usize = 10;

/// Zigzag-maps an `i32` onto a `u32` (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).
pub(crate) fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

pub(crate) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

pub(crate) fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes `put_varint(v)` writes.
pub(crate) fn varint_len(v: i32) -> usize {
    unsigned_len(zigzag32(v) as u64)
}

/// Bytes `put_varlong(v)` writes.
pub(crate) fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag64(v))
}

fn unsigned_len(u: u64) -> usize {
    // 1 byte per started group of 7 significant bits, at least 1.
    let bits = 64 - (u | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_unsigned(buf: &mut impl BufMut, mut u: u64) {
    while u >= 0x80 {
        buf.put_u8((u as u8) | 0x80);
        u >>= 7;
    }
    buf.put_u8(u as u8);
}

pub(crate) fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_unsigned(buf, zigzag32(v) as u64);
}

pub(crate) fn put_varlong(buf: &mut impl BufMut, v: i64) {
    put_unsigned(buf, zigzag64(v));
}

/// A cursor over a byte slice whose every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn u8(&mut self) -> Result<u8, BatchError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(BatchError::InvalidRecord("record truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes; `n` must already be known not to exceed what remains,
    /// otherwise this is an error rather than a panic.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if n > self.remaining() {
            return Err(BatchError::InvalidRecord("length exceeds the remaining bytes"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn unsigned(&mut self, max_bytes: usize, bits: u32) -> Result<u64, BatchError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.u8()?;
            let shift = 7 * i as u32;
            let group = (b & 0x7f) as u64;
            // The last allowed byte may only carry the bits that still fit.
            if i == max_bytes - 1 && (b & 0x80 != 0 || group >> (bits - shift) != 0) {
                return Err(BatchError::InvalidRecord("varint too long"));
            }
            value |= group << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BatchError::InvalidRecord("varint too long"))
    }

    pub(crate) fn varint(&mut self) -> Result<i32, BatchError> {
        let u = self.unsigned(VARINT_MAX_BYTES, 32)?;
        Ok(unzigzag32(u as u32))
    }

    pub(crate) fn varlong(&mut self) -> Result<i64, BatchError> {
        let u = self.unsigned(VARLONG_MAX_BYTES, 64)?;
        Ok(unzigzag64(u))
    }

    /// A `varint` length followed by that many bytes; -1 means null. Lengths
    /// below -1, or beyond the remaining bytes, are errors.
    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(BatchError::InvalidRecord("negative length")),
            n => self.bytes(n as usize).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc32(v: i32) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    fn enc64(v: i64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varlong(&mut b, v);
        b
    }

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest.
        assert_eq!(enc32(0), [0x00]);
        assert_eq!(enc32(-1), [0x01]);
        assert_eq!(enc32(1), [0x02]);
        assert_eq!(enc32(63), [0x7e]);
        assert_eq!(enc32(-64), [0x7f]);
        assert_eq!(enc32(64), [0x80, 0x01]);
        assert_eq!(enc32(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(enc32(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(enc64(i64::MIN).len(), 10);
        assert_eq!(
            enc64(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn round_trip_and_lengths() {
        for v in [0, 1, -1, 63, -64, 64, 8191, -8192, 8192, i32::MAX, i32::MIN] {
            let b = enc32(v);
            assert_eq!(b.len(), varint_len(v));
            let mut r = Reader::new(&b);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.is_empty());
        }
        for v in [0, 1, -1, i32::MAX as i64 + 1, i64::MAX, i64::MIN, -5_000_000_000] {
            let b = enc64(v);
            assert_eq!(b.len(), varlong_len(v));
            let mut r = Reader::new(&b);
            assert_eq!(r.varlong(), Ok(v));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_overlong_and_overflowing() {
        let too_long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert!(Reader::new(&too_long).varint().is_err());
        // Fifth byte with bits beyond 32.
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]).varint().is_err());
        let mut long = vec![0x80u8; 10];
        long.push(0x00);
        assert!(Reader::new(&long).varlong().is_err());
        // Tenth byte with bits beyond 64.
        let mut over = vec![0xffu8; 9];
        over.push(0x02);
        assert!(Reader::new(&over).varlong().is_err());
        // Truncated.
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[]).varint().is_err());
        // Non-minimal but within 5 bytes is legal LEB128; Kafka accepts it too.
        assert_eq!(Reader::new(&[0x80, 0x00]).varint(), Ok(0));
    }

    #[test]
    fn huge_length_is_an_error_not_an_allocation() {
        // Length 2^30 (zigzag 2^31) followed by nothing.
        let mut b = Vec::new();
        put_varint(&mut b, 1 << 30);
        assert!(Reader::new(&b).nullable_bytes().is_err());
        assert_eq!(Reader::new(&[0x01]).nullable_bytes(), Ok(None));
        assert!(Reader::new(&[0x03]).nullable_bytes().is_err()); // -2
    }
}
