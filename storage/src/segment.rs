//! One segment: a `.log` file of record batches named by its base offset,
//! with its sparse indexes, and the scanner that reads batch headers back
//! from the file (for lookups, recovery and index rebuilds).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use borges_net::batch::{validate_batch, BatchError, BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD};
use glommio::io::{BufferedFile, DmaFile};

use borges_net::types::Offset;

use crate::epoch::LeaderEpochCache;
use crate::error::{Result, StorageError};
use crate::index::{OffsetIndex, TimeIndex};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

pub(crate) fn segment_path(dir: &Path, base: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}.{suffix}"))
}

/// The gap rule of recovery. A batch starting at `base` may follow a batch
/// that ended just before `expected` when it starts exactly there, or when
/// it starts after a gap that lies entirely below `cleaned_to` (the cleaner
/// checkpoint): compaction drops batches whose records are all superseded,
/// so a cleaned segment legitimately skips offsets, but nothing else does.
pub(crate) fn follows(expected: u64, base: u64, cleaned_to: u64) -> bool {
    base == expected || (base > expected && base <= cleaned_to)
}

/// Parses `00000000000000001234.log` into 1234.
pub(crate) fn parse_segment_name(name: &str, suffix: &str) -> Option<u64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A segment of a partition log; owned by the log's state, on the log's shard.
pub(crate) struct Segment {
    pub base: u64,
    /// The file for direct-I/O writes (while active), truncation and sync.
    pub dma: Rc<DmaFile>,
    /// The same file for io_uring reads through the page cache. (glommio
    /// 0.9's direct reads use READ_FIXED, which Linux 6.x refuses with
    /// EOPNOTSUPP here; buffered reads also serve re-reads from the cache.)
    pub reader: Rc<BufferedFile>,
    /// A plain descriptor of the same file, for zero-copy sends from the page cache.
    pub read_file: Rc<std::fs::File>,
    /// Logical size in bytes.
    pub size: u64,
    /// One past the last offset stored here (== `base` when empty).
    pub next_offset: u64,
    pub max_timestamp: i64,
    /// Relative offset of the batch that carried `max_timestamp`.
    pub max_timestamp_rel: u32,
    /// Wall-clock time of the first append, for roll by age.
    pub first_append_ms: Option<i64>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    pub bytes_since_index: u64,
}

impl Segment {
    pub fn new(
        base: u64,
        dma: Rc<DmaFile>,
        reader: Rc<BufferedFile>,
        read_file: Rc<std::fs::File>,
    ) -> Segment {
        Segment {
            base,
            dma,
            reader,
            read_file,
            size: 0,
            next_offset: base,
            max_timestamp: i64::MIN,
            max_timestamp_rel: 0,
            first_append_ms: None,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
        }
    }

    pub fn rel(&self, offset: u64) -> u32 {
        debug_assert!(offset >= self.base && offset - self.base <= u32::MAX as u64);
        (offset - self.base) as u32
    }

    /// Accounts for a batch stored at `position`: indexes, size, offsets and
    /// timestamps. Used both by appends and by scans that rebuild a segment.
    pub fn track_batch(&mut self, h: &BatchHeader, position: u64, interval: u32) {
        let len = h.total_len() as u64;
        let base = h.base_offset as u64;
        assert!(position == self.size, "batches are tracked in file order");
        assert!(
            base >= self.next_offset,
            "offsets only grow: {base} after {}",
            self.next_offset
        );
        if self.bytes_since_index >= interval as u64 && position > 0 {
            self.index.push(self.rel(base), position as u32);
            self.time_index
                .maybe_push(self.max_timestamp, self.max_timestamp_rel);
            self.bytes_since_index = 0;
        }
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.max_timestamp_rel = self.rel(base);
        }
        self.bytes_since_index += len;
        self.size += len;
        self.next_offset = h.last_offset() as u64 + 1;
    }

    /// Makes the time index cover the whole segment (its last entry is the
    /// segment's largest timestamp); done when the segment is sealed.
    pub fn finish_time_index(&mut self) {
        if self.size > 0 {
            self.time_index
                .maybe_push(self.max_timestamp, self.max_timestamp_rel);
        }
    }
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// Every byte of the file is a valid batch.
    End,
    /// A batch starts but the file ends before it does.
    TornBatch,
    /// Zeros where a batch should start: direct-I/O padding or preallocated space.
    Zeros,
    /// A batch that fails validation.
    Corrupt(BatchError),
    /// A batch whose base offset does not follow the previous batch (or
    /// the segment's base offset, for the first). Below the cleaner
    /// checkpoint a batch may also start after a gap (see docs/FORMAT.md).
    OffsetMismatch { expected: u64, found: i64 },
    /// A batch whose partition leader epoch disagrees with the epoch
    /// history (a field outside the CRC, so checked against the checkpoint).
    EpochMismatch { expected: i32, found: i32 },
}

impl ScanStop {
    pub fn is_clean(&self) -> bool {
        matches!(self, ScanStop::End)
    }
}

const SCAN_WINDOW: usize = 1 << 20;

/// Reads batch headers sequentially from a segment file through a window of
/// direct reads. Positions are absolute file positions.
pub(crate) struct HeaderScanner {
    file: Rc<BufferedFile>,
    path: PathBuf,
    limit: u64,
    window_start: u64,
    window: Vec<u8>,
    window_size: usize,
}

impl HeaderScanner {
    /// Scans up to `limit` bytes of the file, reading `window_size` at a time.
    pub fn new(file: Rc<BufferedFile>, path: PathBuf, limit: u64, window_size: usize) -> Self {
        HeaderScanner {
            file,
            path,
            limit,
            window_start: 0,
            window: Vec::new(),
            window_size,
        }
    }

    async fn ensure(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        let in_window =
            pos >= self.window_start && pos + len as u64 <= self.window_start + self.window.len() as u64;
        if !in_window {
            let size = (self.limit - pos).min(self.window_size.max(len) as u64) as usize;
            crate::seam::step(crate::seam::Op::Read, &self.path, pos, size as u64)
                .map_err(|e| StorageError::io("read", &self.path, e))?;
            let r = self
                .file
                .read_at(pos, size)
                .await
                .map_err(|e| StorageError::io("read", &self.path, e))?;
            self.window.clear();
            self.window.extend_from_slice(&r);
            self.window_start = pos;
            if self.window.len() < len {
                return Err(StorageError::io(
                    "read",
                    &self.path,
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
                ));
            }
        }
        let off = (pos - self.window_start) as usize;
        Ok(&self.window[off..off + len])
    }

    /// The `len` bytes at `pos` (within the limit), read through the window.
    pub async fn bytes_at(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        if pos + len as u64 > self.limit {
            return Err(StorageError::io(
                "read",
                &self.path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the scan limit"),
            ));
        }
        self.ensure(pos, len).await
    }

    /// The header of the batch at `pos`, or why there is no valid batch there.
    /// With `verify`, the whole batch is read and its CRC checked.
    pub async fn batch_at(&mut self, pos: u64, verify: bool) -> Result<Result<BatchHeader, ScanStop>> {
        if pos >= self.limit {
            return Ok(Err(ScanStop::End));
        }
        let avail = self.limit - pos;
        if avail < BATCH_HEADER_LEN as u64 {
            let bytes = self.ensure(pos, avail as usize).await?;
            return Ok(Err(if bytes.iter().all(|&b| b == 0) {
                ScanStop::Zeros
            } else {
                ScanStop::TornBatch
            }));
        }
        let head = self.ensure(pos, BATCH_HEADER_LEN).await?;
        let header = match BatchHeader::parse(head) {
            Ok(h) => h,
            Err(_) if head[..LOG_OVERHEAD].iter().all(|&b| b == 0) => return Ok(Err(ScanStop::Zeros)),
            Err(e) => return Ok(Err(ScanStop::Corrupt(e))),
        };
        let total = header.total_len();
        if total as u64 > avail {
            return Ok(Err(ScanStop::TornBatch));
        }
        if verify {
            let bytes = self.ensure(pos, total).await?;
            if let Err(e) = validate_batch(bytes) {
                return Ok(Err(ScanStop::Corrupt(e)));
            }
        }
        Ok(Ok(header))
    }
}

/// The result of scanning a segment from its start.
pub(crate) struct ScanOutcome {
    pub valid_size: u64,
    pub stop: ScanStop,
}

/// Rebuilds `seg`'s size, offsets, timestamps and indexes by reading every
/// batch header from position 0 to `file_size`. With `verify` (recovery),
/// each batch's CRC is checked, and so is one field the CRC does not
/// cover: the base offset must follow the previous batch exactly, or after
/// a gap below `cleaned_to` ([`follows`]); with `epochs`, another: the
/// leader epoch must be the one the history gives for that offset. Stops at
/// the first invalid batch; `seg` then describes the valid prefix.
pub(crate) async fn rebuild_segment(
    seg: &mut Segment,
    path: &Path,
    file_size: u64,
    interval: u32,
    verify: bool,
    epochs: Option<&LeaderEpochCache>,
    cleaned_to: u64,
) -> Result<ScanOutcome> {
    let mut scanner = HeaderScanner::new(seg.reader.clone(), path.to_path_buf(), file_size, SCAN_WINDOW);
    seg.size = 0;
    seg.next_offset = seg.base;
    seg.max_timestamp = i64::MIN;
    seg.max_timestamp_rel = 0;
    seg.index = OffsetIndex::default();
    seg.time_index = TimeIndex::default();
    seg.bytes_since_index = 0;
    let mut pos = 0u64;
    loop {
        let stop = |stop| {
            Ok(ScanOutcome {
                valid_size: pos,
                stop,
            })
        };
        let h = match scanner.batch_at(pos, verify).await? {
            Ok(h) => h,
            Err(s) => return stop(s),
        };
        let rel_ok = (h.last_offset() as u64).saturating_sub(seg.base) <= u32::MAX as u64;
        let in_order = h.base_offset >= seg.next_offset as i64;
        if !rel_ok || !in_order || (verify && !follows(seg.next_offset, h.base_offset as u64, cleaned_to)) {
            return stop(ScanStop::OffsetMismatch {
                expected: seg.next_offset,
                found: h.base_offset,
            });
        }
        if let Some(epochs) = epochs {
            let expected = epochs.epoch_for(Offset(h.base_offset as u64)).map_or(-1, |e| e.0);
            if h.partition_leader_epoch != expected {
                return stop(ScanStop::EpochMismatch {
                    expected,
                    found: h.partition_leader_epoch,
                });
            }
        }
        seg.track_batch(&h, pos, interval);
        pos += h.total_len() as u64;
    }
}

/// Restores a sealed, trusted segment from its index files: positions and
/// offsets come from the index, and only the batches after its last entry
/// are read (and CRC-checked) to find where the segment ends. The batch at
/// the last entry must start exactly at the entry's offset; the ones after
/// it follow the gap rule ([`follows`]). Returns `false` when that tail does
/// not end cleanly at `file_size`; the caller then rebuilds the segment
/// from scratch.
pub(crate) async fn resume_segment(
    seg: &mut Segment,
    path: &Path,
    file_size: u64,
    epochs: Option<&LeaderEpochCache>,
    cleaned_to: u64,
) -> Result<bool> {
    let last_entry = seg.index.last();
    let (rel, pos) = last_entry.unwrap_or((0, 0));
    let mut scanner = HeaderScanner::new(seg.reader.clone(), path.to_path_buf(), file_size, 64 << 10);
    let mut next = seg.base + rel as u64;
    let mut exact = last_entry.is_some();
    let mut p = pos as u64;
    loop {
        match scanner.batch_at(p, true).await? {
            Ok(h) => {
                let epoch_ok = epochs.is_none_or(|e| {
                    e.epoch_for(Offset(h.base_offset as u64)).map_or(-1, |e| e.0) == h.partition_leader_epoch
                });
                let placed = if exact {
                    h.base_offset == next as i64
                } else {
                    h.base_offset >= 0 && follows(next, h.base_offset as u64, cleaned_to)
                };
                exact = false;
                if !placed || (h.last_offset() as u64) - seg.base > u32::MAX as u64 || !epoch_ok {
                    return Ok(false);
                }
                next = h.last_offset() as u64 + 1;
                if h.max_timestamp > seg.max_timestamp {
                    seg.max_timestamp = h.max_timestamp;
                    seg.max_timestamp_rel = (h.base_offset as u64 - seg.base) as u32;
                }
                p += h.total_len() as u64;
            }
            Err(ScanStop::End) => break,
            Err(_) => return Ok(false),
        }
    }
    seg.size = file_size;
    seg.next_offset = next;
    seg.bytes_since_index = file_size - pos as u64;
    Ok(true)
}
