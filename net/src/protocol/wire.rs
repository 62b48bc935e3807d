//! The primitives every message is built from, and a bounds-checked reader.
//!
//! Fixed-width integers are big-endian. Lengths and counts are unsigned LEB128
//! varints (7 bits per byte, least significant group first), at most 5 bytes
//! for a `u32`, and always in their shortest form, so that every value has
//! exactly one encoding. Strings are a varint length and UTF-8; nullable
//! strings and arrays write `len + 1`, with 0 meaning null.
//!
//! The reader owns its buffer (`BytesMut` for requests, `Bytes` for responses)
//! so that record sections come out as slices of the same allocation with no
//! copy. Every length and count is checked against `Limits` and against the
//! bytes that remain before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DecodeError, Limits};

/// Bytes at most in a `u32` varint.
const VARINT_MAX_BYTES: usize = 5;

/// A buffer the reader can split pieces off without copying.
pub(crate) trait Input: Buf + Sized {
    /// The first `n` bytes, removed from `self`; `n` is already checked.
    fn split_front(&mut self, n: usize) -> Self;
    /// The bytes as an immutable `Bytes`, without copying.
    fn into_bytes(self) -> Bytes;
}

impl Input for BytesMut {
    fn split_front(&mut self, n: usize) -> Self {
        self.split_to(n)
    }
    fn into_bytes(self) -> Bytes {
        self.freeze()
    }
}

impl Input for Bytes {
    fn split_front(&mut self, n: usize) -> Self {
        self.split_to(n)
    }
    fn into_bytes(self) -> Bytes {
        self
    }
}

/// Bytes `put_varint(v)` writes.
#[cfg(test)]
pub(crate) fn varint_len(v: u32) -> usize {
    let bits = 32 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(crate) fn put_varint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A length or count as a varint.
///
/// # Panics
/// If `len` exceeds `u32::MAX`: no frame can carry it (the frame length is a
/// `u32`), so this is a caller bug, not input.
pub(crate) fn put_len(out: &mut BytesMut, len: usize) {
    put_varint(out, u32::try_from(len).expect("length exceeds u32::MAX"));
}

pub(crate) fn put_bool(out: &mut BytesMut, v: bool) {
    out.put_u8(v as u8);
}

pub(crate) fn put_string(out: &mut BytesMut, s: &str) {
    put_len(out, s.len());
    out.put_slice(s.as_bytes());
}

pub(crate) fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_varint(out, 0),
        Some(s) => {
            put_len(out, s.len() + 1);
            out.put_slice(s.as_bytes());
        }
    }
}

/// A varint length and the bytes.
pub(crate) fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_len(out, b.len());
    out.put_slice(b);
}

/// A fixed `u32` length and the bytes (fetch records).
pub(crate) fn put_bytes32(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).expect("length exceeds u32::MAX"));
    out.put_slice(b);
}

/// Encodes a value into a message body.
pub(crate) trait Encode {
    fn encode(&self, out: &mut BytesMut);
}

/// Decodes a value from a message body.
pub(crate) trait Decode<B: Input>: Sized {
    /// The fewest bytes one value occupies on the wire, so that an array
    /// count can be checked against the bytes that remain before allocating.
    const MIN_WIRE_LEN: usize;
    fn decode(r: &mut Reader<'_, B>) -> Result<Self, DecodeError>;
}

pub(crate) fn put_array<T: Encode>(out: &mut BytesMut, items: &[T]) {
    put_len(out, items.len());
    for item in items {
        item.encode(out);
    }
}

impl Encode for String {
    fn encode(&self, out: &mut BytesMut) {
        put_string(out, self);
    }
}

impl<B: Input> Decode<B> for String {
    const MIN_WIRE_LEN: usize = 1;
    fn decode(r: &mut Reader<'_, B>) -> Result<Self, DecodeError> {
        r.string("string")
    }
}

impl Encode for i32 {
    fn encode(&self, out: &mut BytesMut) {
        out.put_i32(*self);
    }
}

impl<B: Input> Decode<B> for i32 {
    const MIN_WIRE_LEN: usize = 4;
    fn decode(r: &mut Reader<'_, B>) -> Result<Self, DecodeError> {
        r.i32()
    }
}

/// A cursor over a message whose every read is bounds-checked.
pub(crate) struct Reader<'l, B> {
    buf: B,
    limits: &'l Limits,
}

impl<'l, B: Input> Reader<'l, B> {
    pub(crate) fn new(buf: B, limits: &'l Limits) -> Self {
        Reader { buf, limits }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        let available = self.remaining();
        if n > available {
            return Err(DecodeError::Truncated { needed: n, available });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn i8(&mut self) -> Result<i8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn i16(&mut self) -> Result<i16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    /// One byte that must be 0 or 1.
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                what,
                value: v as i64,
            }),
        }
    }

    /// An unsigned LEB128 `u32` in its shortest form.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..VARINT_MAX_BYTES {
            let b = self.u8()?;
            let group = (b & 0x7f) as u32;
            // A zero final byte after the first adds nothing: a padded, non-minimal form.
            if i > 0 && b == 0 {
                return Err(DecodeError::VarintOverlong);
            }
            // The fifth byte may carry only the 4 bits that still fit, and must end.
            if i == VARINT_MAX_BYTES - 1 && (b & 0x80 != 0 || group > 0x0f) {
                return Err(DecodeError::VarintOverlong);
            }
            value |= group << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverlong)
    }

    /// A byte length: checked against `max`, then against what remains.
    fn length(&mut self, what: &'static str, len: usize, max: usize) -> Result<usize, DecodeError> {
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        self.need(len)?;
        Ok(len)
    }

    fn utf8(&mut self, len: usize) -> Result<String, DecodeError> {
        // `chunk` is the whole rest for `Bytes`/`BytesMut`; `length` checked `len`.
        let s = std::str::from_utf8(&self.buf.chunk()[..len])
            .map_err(|_| DecodeError::InvalidUtf8)?
            .to_owned();
        self.buf.advance(len);
        Ok(s)
    }

    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.varint()? as usize;
        let len = self.length(what, len, self.limits.max_string_bytes)?;
        self.utf8(len)
    }

    pub(crate) fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        match self.varint()? as usize {
            0 => Ok(None),
            n => {
                let len = self.length(what, n - 1, self.limits.max_string_bytes)?;
                self.utf8(len).map(Some)
            }
        }
    }

    /// A varint length and that many bytes, split off without copying. Only
    /// the frame bounds these (records), so there is no separate limit.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<B, DecodeError> {
        let len = self.varint()? as usize;
        let len = self.length(what, len, usize::MAX)?;
        Ok(self.buf.split_front(len))
    }

    /// A fixed `u32` length and that many bytes, split off without copying.
    pub(crate) fn bytes32(&mut self, what: &'static str) -> Result<B, DecodeError> {
        let len = self.u32()? as usize;
        let len = self.length(what, len, usize::MAX)?;
        Ok(self.buf.split_front(len))
    }

    /// Checks an array count against the limit and against the bytes left,
    /// given that each element takes at least `min_elem` bytes.
    fn check_count(&self, what: &'static str, count: usize, min_elem: usize) -> Result<usize, DecodeError> {
        let max = self.limits.max_array_len;
        if count > max {
            return Err(DecodeError::TooMany { what, count, max });
        }
        self.need(count.saturating_mul(min_elem.max(1)))?;
        Ok(count)
    }

    pub(crate) fn array<T: Decode<B>>(&mut self, what: &'static str) -> Result<Vec<T>, DecodeError> {
        let count = self.varint()? as usize;
        let count = self.check_count(what, count, T::MIN_WIRE_LEN)?;
        self.elements(count)
    }

    /// An array whose count is written `count + 1`, with 0 meaning null.
    pub(crate) fn nullable_array<T: Decode<B>>(
        &mut self,
        what: &'static str,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        match self.varint()? as usize {
            0 => Ok(None),
            n => {
                let count = self.check_count(what, n - 1, T::MIN_WIRE_LEN)?;
                self.elements(count).map(Some)
            }
        }
    }

    fn elements<T: Decode<B>>(&mut self, count: usize) -> Result<Vec<T>, DecodeError> {
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::decode(self)?);
        }
        Ok(items)
    }

    /// Ends the message: any byte left over is an error.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        b.to_vec()
    }

    fn dec(b: &[u8]) -> Result<u32, DecodeError> {
        let limits = Limits::default();
        let mut r = Reader::new(Bytes::copy_from_slice(b), &limits);
        let v = r.varint()?;
        r.finish()?;
        Ok(v)
    }

    #[test]
    fn varint_known_encodings() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u32::MAX), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn varint_round_trip_and_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            16383,
            16384,
            1 << 21,
            (1 << 28) - 1,
            1 << 28,
            u32::MAX,
        ] {
            let b = enc(v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(dec(&b), Ok(v));
        }
    }

    #[test]
    fn varint_rejects_overlong_overflowing_and_truncated() {
        assert_eq!(dec(&[0x80, 0x00]), Err(DecodeError::VarintOverlong));
        assert_eq!(dec(&[0x81, 0x80, 0x00]), Err(DecodeError::VarintOverlong));
        assert_eq!(
            dec(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::VarintOverlong)
        );
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(DecodeError::VarintOverlong)
        );
        assert!(matches!(dec(&[0x80]), Err(DecodeError::Truncated { .. })));
        assert!(matches!(dec(&[]), Err(DecodeError::Truncated { .. })));
    }
}
