//! Whole-batch checks and record decoding.

use std::borrow::Cow;

use bytes::Bytes;

use super::compression::{decompress, decompress_capped};
use super::record::{decode_section, visit_section, walk_records};
use super::{BatchError, BatchHeader, Compression, Record, BATCH_HEADER_LEN, CRC_COVERED_FROM};

/// Validates one complete batch that spans exactly `buf`: the header checks
/// of `BatchHeader::parse`, `buf.len() == total_len` (`TooShort` if shorter,
/// `LengthMismatch` if longer), a defined compression codec
/// (`UnsupportedCompression` for ids 5..=7) and the CRC-32C (`CrcMismatch`).
/// Cheap: does not decode or decompress records.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    let total = h.total_len();
    if buf.len() < total {
        return Err(BatchError::TooShort {
            needed: total,
            available: buf.len(),
        });
    }
    if buf.len() > total {
        return Err(BatchError::LengthMismatch {
            expected: total,
            actual: buf.len(),
        });
    }
    h.compression()?;
    let computed = crc32c::crc32c(&buf[CRC_COVERED_FROM..]);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

/// The records section of a validated batch, decompressed if needed.
fn records_section<'a>(h: &BatchHeader, buf: &'a [u8]) -> Result<Cow<'a, [u8]>, BatchError> {
    let raw = &buf[BATCH_HEADER_LEN..];
    match h.compression()? {
        Compression::None => Ok(Cow::Borrowed(raw)),
        codec => decompress(codec, raw).map(Cow::Owned),
    }
}

/// `validate_batch`, then decodes every record (decompressing if needed)
/// without keeping them: exactly `records_count` records
/// (`RecordCountMismatch`), offset deltas strictly increasing from 0 up to at
/// most `last_offset_delta`, every length within its record and the batch,
/// UTF-8 header keys (`InvalidRecord`). A batch that passes decodes with
/// `decode_records` without error.
pub fn validate_batch_deep(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = validate_batch(buf)?;
    let section = records_section(&h, buf)?;
    walk_records(&h, &section, |rec| rec.for_each_header(|_, _| ()))?;
    Ok(h)
}

/// Decodes all records of one batch spanning exactly `buf`, with absolute
/// offsets and timestamps. Performs every check of `validate_batch_deep`
/// (CRC included, so a corrupt batch is never half-decoded). Copies the
/// records section once; use `decode_records_bytes` to avoid that copy.
pub fn decode_records(buf: &[u8]) -> Result<Vec<Record>, BatchError> {
    let h = validate_batch(buf)?;
    let section = match records_section(&h, buf)? {
        Cow::Borrowed(raw) => Bytes::copy_from_slice(raw),
        Cow::Owned(v) => Bytes::from(v),
    };
    decode_section(&h, &section)
}

/// `decode_records`, refusing (`TooLarge`) a batch whose records section
/// decompresses to more than `max_section` bytes; decompression stops there.
/// Returns the records and the size of the decompressed section.
pub fn decode_records_capped(buf: &[u8], max_section: usize) -> Result<(Vec<Record>, usize), BatchError> {
    let h = validate_batch(buf)?;
    let raw = &buf[BATCH_HEADER_LEN..];
    let section = Bytes::from(decompress_capped(h.compression()?, raw, max_section)?);
    Ok((decode_section(&h, &section)?, section.len()))
}

/// `decode_records` for a batch already held in `Bytes`: keys and values of
/// an uncompressed batch are slices of `buf`, with no copy.
pub fn decode_records_bytes(buf: &Bytes) -> Result<Vec<Record>, BatchError> {
    let h = validate_batch(buf)?;
    let section = match h.compression()? {
        Compression::None => buf.slice(BATCH_HEADER_LEN..),
        codec => Bytes::from(decompress(codec, &buf[BATCH_HEADER_LEN..])?),
    };
    decode_section(&h, &section)
}

/// `decode_records_bytes` without the vector: hands each record to `f` as
/// it is decoded (for consumers that store records their own way). The CRC
/// is checked before the first record; a record found malformed after it
/// (a producer that wrote bad records under a good CRC) ends the walk with
/// an error after the records before it were handed over.
pub fn for_each_record(buf: &Bytes, f: impl FnMut(Record)) -> Result<BatchHeader, BatchError> {
    let h = validate_batch(buf)?;
    let section = match h.compression()? {
        Compression::None => buf.slice(BATCH_HEADER_LEN..),
        codec => Bytes::from(decompress(codec, &buf[BATCH_HEADER_LEN..])?),
    };
    visit_section(&h, &section, f)?;
    Ok(h)
}
