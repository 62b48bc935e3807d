//! The records inside a batch.
//!
//! Each record is `length varint | attributes i8 | timestampDelta varlong |
//! offsetDelta varint | keyLength varint | key | valueLength varint | value |
//! headersCount varint | headers`, with `length` counting the bytes after
//! itself. Parsing borrows from the records section; `Record` owns its data
//! through `Bytes` slices of one shared buffer.

use bytes::Bytes;

use super::varint::Reader;
use super::{BatchError, BatchHeader, TimestampType};

/// A decoded record with absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// A record header: a UTF-8 key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// The smallest possible record: length, attributes, timestampDelta,
/// offsetDelta, keyLength, valueLength and headersCount, one byte each.
pub(crate) const MIN_RECORD_LEN: usize = 7;

/// One record as it lies in the records section, borrowed.
pub(crate) struct RawRecord<'a> {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    headers_count: usize,
    /// The rest of the record after `headersCount`: exactly the headers.
    headers: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// Calls `f` for each header, checking lengths, UTF-8 keys and that the
    /// headers fill the rest of the record exactly.
    pub(crate) fn for_each_header(
        &self,
        mut f: impl FnMut(&'a str, Option<&'a [u8]>),
    ) -> Result<(), BatchError> {
        let mut r = Reader::new(self.headers);
        for _ in 0..self.headers_count {
            let key_len = r.varint()?;
            if key_len < 0 {
                return Err(BatchError::InvalidRecord("negative header key length"));
            }
            let key = std::str::from_utf8(r.bytes(key_len as usize)?)
                .map_err(|_| BatchError::InvalidRecord("header key is not UTF-8"))?;
            let value = r.nullable_bytes()?;
            f(key, value);
        }
        if !r.is_empty() {
            return Err(BatchError::InvalidRecord(
                "record length does not match its contents",
            ));
        }
        Ok(())
    }
}

/// Parses one record at the reader's position, leaving the reader after it.
fn parse_record<'a>(r: &mut Reader<'a>) -> Result<RawRecord<'a>, BatchError> {
    let len = r.varint()?;
    if len < 0 {
        return Err(BatchError::InvalidRecord("negative record length"));
    }
    // Checked against the remaining bytes before anything is read from it.
    let body = r.bytes(len as usize)?;
    let mut b = Reader::new(body);
    let _attributes = b.u8()?; // unused by Kafka; any value is accepted
    let timestamp_delta = b.varlong()?;
    let offset_delta = b.varint()?;
    let key = b.nullable_bytes()?;
    let value = b.nullable_bytes()?;
    let headers_count = b.varint()?;
    if headers_count < 0 {
        return Err(BatchError::InvalidRecord("negative header count"));
    }
    // Each header is at least two bytes (key length, value length).
    if headers_count as usize > b.remaining() / 2 {
        return Err(BatchError::InvalidRecord("header count exceeds the record"));
    }
    let headers = b.bytes(b.remaining())?;
    Ok(RawRecord {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_count: headers_count as usize,
        headers,
    })
}

/// Walks the (decompressed) records section of a batch, checking that it
/// holds exactly `records_count` records, that offset deltas strictly increase
/// from >= 0 up to at most `last_offset_delta`, and that every record's length
/// matches its fields. `visit` sees each record in order.
///
/// Kafka allows the last delta to be below `last_offset_delta` (compaction
/// removes records but keeps the batch's offset range), so equality is not
/// required.
pub(crate) fn walk_records<'a>(
    h: &BatchHeader,
    data: &'a [u8],
    mut visit: impl FnMut(&RawRecord<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut r = Reader::new(data);
    let expected = h.records_count.max(0) as usize;
    let mut count = 0usize;
    let mut prev_delta: i64 = -1;
    while count < expected {
        if r.is_empty() {
            return Err(BatchError::RecordCountMismatch {
                header: h.records_count,
                actual: count,
            });
        }
        let rec = parse_record(&mut r)?;
        if rec.offset_delta as i64 <= prev_delta {
            return Err(BatchError::InvalidRecord(
                "offset deltas do not strictly increase",
            ));
        }
        if rec.offset_delta > h.last_offset_delta {
            return Err(BatchError::InvalidRecord("offset delta exceeds lastOffsetDelta"));
        }
        prev_delta = rec.offset_delta as i64;
        visit(&rec)?;
        count += 1;
    }
    if !r.is_empty() {
        // More bytes than recordsCount records: report how many records
        // there really are if the tail parses as records.
        while !r.is_empty() {
            if parse_record(&mut r).is_err() {
                return Err(BatchError::InvalidRecord("trailing bytes after the last record"));
            }
            count += 1;
        }
        return Err(BatchError::RecordCountMismatch {
            header: h.records_count,
            actual: count,
        });
    }
    Ok(())
}

/// Decodes the records section held in `data` (uncompressed), slicing keys
/// and values out of it without copying.
pub(crate) fn decode_section(h: &BatchHeader, data: &Bytes) -> Result<Vec<Record>, BatchError> {
    // Bound the allocation by what the bytes can hold, not by recordsCount.
    let cap = (h.records_count.max(0) as usize).min(data.len() / MIN_RECORD_LEN);
    let mut out = Vec::with_capacity(cap);
    visit_section(h, data, |r| out.push(r))?;
    Ok(out)
}

/// Hands each record of a (decompressed) records section to `f`, in order.
pub(crate) fn visit_section(
    h: &BatchHeader,
    data: &Bytes,
    mut f: impl FnMut(Record),
) -> Result<(), BatchError> {
    // As in Kafka, a LogAppendTime batch stamps every record with the time
    // the broker appended it, which it stores as maxTimestamp.
    let log_append_time = match h.timestamp_type() {
        TimestampType::LogAppendTime => Some(h.max_timestamp),
        TimestampType::CreateTime => None,
    };
    walk_records(h, data, |rec| {
        let mut headers = Vec::with_capacity(rec.headers_count);
        rec.for_each_header(|k, v| {
            headers.push(RecordHeader {
                key: k.to_owned(),
                value: v.map(|v| data.slice_ref(v)),
            })
        })?;
        f(Record {
            offset: h.base_offset.wrapping_add(rec.offset_delta as i64),
            timestamp: log_append_time.unwrap_or_else(|| h.base_timestamp.wrapping_add(rec.timestamp_delta)),
            key: rec.key.map(|k| data.slice_ref(k)),
            value: rec.value.map(|v| data.slice_ref(v)),
            headers,
        });
        Ok(())
    })
}
