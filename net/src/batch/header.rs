//! The fixed 61-byte batch header and the attribute bits.

use super::{
    BatchError, BATCH_HEADER_LEN, CRC_COVERED_FROM, CRC_OFFSET, LOG_OVERHEAD, MAGIC_V2, MAX_BATCH_LEN,
    MIN_BATCH_LEN,
};

/// Bits 0-2 of `attributes`: the compression codec of the records section.
pub(crate) const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Bit 3: 0 = CreateTime, 1 = LogAppendTime.
pub(crate) const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
/// Bit 4: the batch belongs to a transaction.
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Bit 5: the batch holds control records (transaction markers).
pub(crate) const ATTR_CONTROL: i16 = 0x20;
/// Bit 6: `baseTimestamp` holds the delete horizon set by compaction.
pub(crate) const ATTR_DELETE_HORIZON: i16 = 0x40;

/// The compression codec of a batch's records section (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec named by a batch's attributes; ids 5..=7 are undefined in Kafka.
    pub fn from_attributes(attributes: i16) -> Result<Compression, BatchError> {
        Compression::from_id((attributes & ATTR_COMPRESSION_MASK) as u8)
    }

    /// The codec with Kafka's numeric id.
    pub fn from_id(id: u8) -> Result<Compression, BatchError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnsupportedCompression(other)),
        }
    }

    /// Kafka's numeric id, as stored in attribute bits 0-2.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer when it created the record.
    CreateTime,
    /// Set by the broker when it appended the batch.
    LogAppendTime,
}

/// The fixed header of a v2 record batch. All fields are as stored, big-endian
/// on the wire; see `docs/FORMAT.md` for their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

// The header offsets below are checked against BATCH_HEADER_LEN at compile time.
const _: () = assert!(8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4 == BATCH_HEADER_LEN);
const _: () = assert!(CRC_OFFSET == 8 + 4 + 4 + 1 && CRC_COVERED_FROM == CRC_OFFSET + 4);

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `buf` (`buf` may hold more).
    ///
    /// Checks, in order: `buf` holds 61 bytes (`TooShort`), magic is 2
    /// (`InvalidMagic`), `batchLength` is in `[49, MAX_BATCH_LEN]`
    /// (`InvalidLength`), `lastOffsetDelta >= 0` and `recordsCount >= 0`
    /// (`InvalidHeader`). Does not check the CRC, the compression codec or
    /// that `buf` holds the whole batch.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let b = &buf[..BATCH_HEADER_LEN];
        let h = BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic: b[16] as i8,
            crc: be_i32(b, CRC_OFFSET) as u32,
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            records_count: be_i32(b, 57),
        };
        // Magic first: a v0/v1 message set has a different layout, so its
        // other fields would only produce a misleading error.
        if h.magic != MAGIC_V2 {
            return Err(BatchError::InvalidMagic(h.magic));
        }
        if h.batch_length < MIN_BATCH_LEN as i32 || h.batch_length as i64 > MAX_BATCH_LEN as i64 {
            return Err(BatchError::InvalidLength(h.batch_length as i64));
        }
        if h.last_offset_delta < 0 {
            return Err(BatchError::InvalidHeader("negative lastOffsetDelta"));
        }
        if h.records_count < 0 {
            return Err(BatchError::InvalidHeader("negative recordsCount"));
        }
        Ok(h)
    }

    /// The header as its 61 wire bytes.
    pub fn to_bytes(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut b = [0u8; BATCH_HEADER_LEN];
        b[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        b[8..12].copy_from_slice(&self.batch_length.to_be_bytes());
        b[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        b[16] = self.magic as u8;
        b[17..21].copy_from_slice(&self.crc.to_be_bytes());
        b[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        b[23..27].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        b[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        b[57..61].copy_from_slice(&self.records_count.to_be_bytes());
        b
    }

    /// The whole batch on the wire: `LOG_OVERHEAD + batch_length`.
    pub fn total_len(&self) -> usize {
        // A parsed header has batch_length >= 49; clamp so a hand-made
        // negative one cannot wrap to a huge usize.
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// The offset of the last record: `base_offset + last_offset_delta`.
    /// Wraps rather than panics on a corrupt `base_offset`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta as i64)
    }

    /// The codec of the records section; ids 5..=7 are `UnsupportedCompression`.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether compaction stored a delete horizon in `base_timestamp`.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & ATTR_DELETE_HORIZON != 0
    }

    /// What the timestamps mean.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Overwrites `baseOffset` of the batch at the start of `buf`. The field is
/// outside the CRC, so the broker assigns offsets without re-checksumming.
///
/// # Panics
/// If `buf.len() < BATCH_HEADER_LEN`.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    assert!(
        buf.len() >= BATCH_HEADER_LEN,
        "buffer shorter than a batch header"
    );
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites `partitionLeaderEpoch` of the batch at the start of `buf`;
/// outside the CRC like `baseOffset`.
///
/// # Panics
/// If `buf.len() < BATCH_HEADER_LEN`.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    assert!(
        buf.len() >= BATCH_HEADER_LEN,
        "buffer shorter than a batch header"
    );
    buf[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Recomputes the CRC-32C over `buf[21..]` and stores it, for callers that
/// changed a CRC-covered field (tests, fuzzing, LogAppendTime rewrites).
/// `buf` must span exactly one batch.
///
/// # Panics
/// If `buf.len() < BATCH_HEADER_LEN`.
pub fn update_crc(buf: &mut [u8]) {
    assert!(
        buf.len() >= BATCH_HEADER_LEN,
        "buffer shorter than a batch header"
    );
    let crc = crc32c::crc32c(&buf[CRC_COVERED_FROM..]);
    buf[CRC_OFFSET..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
}
