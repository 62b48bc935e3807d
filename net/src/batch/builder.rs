//! Encoding a batch.
//!
//! Records are written straight into one `BytesMut` behind a 61-byte
//! placeholder for the header, so pushing a record allocates nothing beyond
//! the buffer's amortised growth. `build` compresses the section if asked,
//! then fills in the header and the CRC.

use bytes::{BufMut, BytesMut};

use super::compression::compress;
use super::header::ATTR_TRANSACTIONAL;
use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use super::{
    BatchError, BatchHeader, Compression, BATCH_HEADER_LEN, CRC_COVERED_FROM, CRC_OFFSET, LOG_OVERHEAD,
    MAGIC_V2, MAX_BATCH_LEN, MAX_RECORDS_LEN,
};

/// Builds one v2 record batch, as Kafka's `MemoryRecordsBuilder` would:
/// offset deltas 0..n, `baseTimestamp` = the first record's timestamp,
/// `maxTimestamp` = the largest, CreateTime.
pub struct RecordBatchBuilder {
    compression: Compression,
    /// Header placeholder followed by the uncompressed records section.
    buf: BytesMut,
    count: usize,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl RecordBatchBuilder {
    /// An empty builder: base offset 0, leader epoch -1, no producer id
    /// (-1), producer epoch -1, base sequence -1.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 4096)
    }

    /// `new`, with room for about `bytes` of records before the buffer grows.
    pub fn with_capacity(compression: Compression, bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + bytes);
        buf.put_bytes(0, BATCH_HEADER_LEN);
        RecordBatchBuilder {
            compression,
            buf,
            count: 0,
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Sets the idempotent-producer fields.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets `baseOffset` (the broker usually assigns it with `set_base_offset`).
    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    /// Sets `partitionLeaderEpoch`.
    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Marks the batch as part of a transaction (attribute bit 4).
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Appends a record with absolute `timestamp` (ms). If the batch grows
    /// past `MAX_RECORDS_LEN`/`MAX_BATCH_LEN`, `build` fails with `TooLarge`.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        // Wrapping keeps extreme timestamps round-tripping exactly: decoding
        // adds the delta back with wrapping arithmetic.
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        // Deltas beyond i32 would need > 2^31 records, impossible under MAX_BATCH_LEN.
        let offset_delta = self.count as i32;

        let mut body = 1 + varlong_len(ts_delta) + varint_len(offset_delta);
        body += nullable_len(key) + nullable_len(value);
        body += varint_len(headers.len() as i32);
        for (k, v) in headers {
            body += varint_len(k.len() as i32) + k.len() + nullable_len(*v);
        }

        let buf = &mut self.buf;
        buf.reserve(varint_len(body as i32) + body);
        put_varint(buf, body as i32);
        buf.put_u8(0); // record attributes: unused, always 0
        put_varlong(buf, ts_delta);
        put_varint(buf, offset_delta);
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varint(buf, headers.len() as i32);
        for (k, v) in headers {
            put_varint(buf, k.len() as i32);
            buf.put_slice(k.as_bytes());
            put_nullable(buf, *v);
        }
        self.count += 1;
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the batch so far if it were built uncompressed.
    pub fn estimated_size(&self) -> usize {
        self.buf.len()
    }

    /// The complete batch, CRC included. `Err(Empty)` with no records,
    /// `TooLarge` past the size caps, `UnsupportedCompression` for gzip/snappy.
    pub fn build(self) -> Result<BytesMut, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let records_len = self.buf.len() - BATCH_HEADER_LEN;
        if records_len > MAX_RECORDS_LEN {
            return Err(BatchError::TooLarge {
                size: records_len,
                max: MAX_RECORDS_LEN,
            });
        }
        let mut out = match self.compression {
            Compression::None => self.buf,
            codec => {
                let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + records_len / 2 + 64);
                out.put_bytes(0, BATCH_HEADER_LEN);
                compress(codec, &self.buf[BATCH_HEADER_LEN..], &mut out)?;
                out
            }
        };
        let batch_len = out.len() - LOG_OVERHEAD;
        if batch_len > MAX_BATCH_LEN {
            return Err(BatchError::TooLarge {
                size: batch_len,
                max: MAX_BATCH_LEN,
            });
        }
        let mut attributes = self.compression.id() as i16;
        if self.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        let header = BatchHeader {
            base_offset: self.base_offset,
            batch_length: batch_len as i32,
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC_V2,
            crc: 0,
            attributes,
            last_offset_delta: (self.count - 1) as i32,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count: self.count as i32,
        };
        out[..BATCH_HEADER_LEN].copy_from_slice(&header.to_bytes());
        let crc = crc32c::crc32c(&out[CRC_COVERED_FROM..]);
        out[CRC_OFFSET..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}

fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}
