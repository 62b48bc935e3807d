//! Kafka RecordBatch v2 (magic 2), byte-compatible with Apache Kafka.
//!
//! A batch is the unit the producer sends, the log stores and the consumer
//! fetches; the broker never re-encodes one, it only rewrites the two header
//! fields outside the CRC (`baseOffset`, `partitionLeaderEpoch`). The full
//! layout is in `docs/FORMAT.md`.
//!
//! Layout:
//! - `header.rs`: the 61-byte header, attributes, compression ids, in-place
//!   rewrites of the fields outside the CRC.
//! - `varint.rs`: Kafka's zigzag varints and a bounds-checked slice reader.
//! - `record.rs`: the per-record layout, record walking and decoded records.
//! - `validate.rs`: `validate_batch`, `validate_batch_deep`, `decode_records`.
//! - `compression.rs`: LZ4 frame and zstd codecs, with a decompressed-size cap.
//! - `builder.rs`: `RecordBatchBuilder`, which encodes a batch in one buffer.
//! - `iter.rs`: `BatchIter`, which splits concatenated batches (a log segment).
//!
//! Nothing here panics on input bytes: every length read from a buffer is
//! checked against the bytes that remain before it is used, so the decoders
//! are safe to run on untrusted network input and are fuzzed (`net/fuzz`).

mod builder;
mod compression;
mod header;
mod iter;
mod record;
mod validate;
mod varint;

pub use builder::RecordBatchBuilder;
pub use compression::{compress, decompress, decompress_capped};
pub use header::{
    set_base_offset, set_partition_leader_epoch, update_crc, BatchHeader, Compression, TimestampType,
};
pub use iter::BatchIter;
pub use record::{Record, RecordHeader};
pub use validate::{
    decode_records, decode_records_bytes, decode_records_capped, for_each_record, validate_batch,
    validate_batch_deep,
};

/// The only record batch format Borges accepts (Kafka 0.11+).
pub const MAGIC_V2: i8 = 2;
/// The whole fixed header, from `baseOffset` through `recordsCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` (8) + `batchLength` (4): the bytes not counted in `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LEN: usize = BATCH_HEADER_LEN - LOG_OVERHEAD;
/// Sanity cap on `batchLength`. Kafka's default `message.max.bytes` is 1 MiB;
/// this is far above any sane setting and exists so that a corrupt length can
/// never make a reader wait for, or allocate, gigabytes.
pub const MAX_BATCH_LEN: usize = 64 << 20;
/// Cap on the decompressed records section. A few kilobytes of zstd can
/// expand to gigabytes, so decompression stops with `TooLarge` past this.
pub const MAX_RECORDS_LEN: usize = 256 << 20;

/// Offset of the CRC field; the CRC covers everything from `attributes`
/// (the byte after it) to the end of the batch.
pub const CRC_OFFSET: usize = 17;
/// Offset of `attributes`, where the CRC-covered region begins.
pub const CRC_COVERED_FROM: usize = 21;

/// Why a batch was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// The buffer ends before the header or the batch does.
    #[error("buffer too short: need {needed} bytes, have {available}")]
    TooShort { needed: usize, available: usize },
    /// `magic` is not 2.
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    InvalidMagic(i8),
    /// `batchLength` is below the header size or above `MAX_BATCH_LEN`.
    #[error("invalid batch length {0}")]
    InvalidLength(i64),
    /// The buffer holds more bytes than the batch `batchLength` describes.
    #[error("batch is {expected} bytes but the buffer holds {actual}")]
    LengthMismatch { expected: usize, actual: usize },
    /// A header field other than the length is out of range.
    #[error("invalid batch header: {0}")]
    InvalidHeader(&'static str),
    /// The stored CRC-32C does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// A compression codec this build cannot decode (gzip, snappy) or an
    /// undefined codec id (5..=7).
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(u8),
    /// The compressed payload is corrupt.
    #[error("compression error: {0}")]
    Compression(String),
    /// A batch or a decompressed records section exceeds its cap.
    #[error("too large: {size} bytes, at most {max} allowed")]
    TooLarge { size: usize, max: usize },
    /// A record is malformed (bad varint, length out of bounds, ...).
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// The records section holds a different number of records than `recordsCount`.
    #[error("recordsCount is {header} but the batch holds {actual} records")]
    RecordCountMismatch { header: i32, actual: usize },
    /// `RecordBatchBuilder::build` was called with no records.
    #[error("a record batch needs at least one record")]
    Empty,
}
