//! Per-log settings.

use std::time::Duration;

use crate::error::{Result, StorageError};

/// When appended data is made durable with fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append returns only once its bytes are on disk. Appends that
    /// arrive while a sync runs share the next one (group commit).
    EveryBatch,
    /// Sync at most this often; an append that finds the last sync older
    /// than this triggers one, and the owner calls [`crate::Log::tick`]
    /// periodically so that an idle log is synced too.
    Interval(Duration),
    /// Never sync on the append path (replication provides durability);
    /// data is still synced when a segment rolls and when the log closes.
    Never,
}

/// Settings of one partition log. Sizes in bytes, durations in milliseconds.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would exceed this size.
    pub segment_bytes_max: u64,
    /// Roll to a new segment once the active one is this old (by the time of its first append).
    pub segment_ms_max: Option<i64>,
    /// Bytes of batches between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u32,
    pub flush: FlushPolicy,
    /// Delete whole segments whose newest record is older than this.
    pub retention_ms: Option<i64>,
    /// Delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Recent batches kept in memory for reads; data not yet written to the
    /// file is always kept, whatever this says.
    pub tail_cache_bytes_max: usize,
    /// Size of each aligned DMA write buffer (a multiple of 4 KiB).
    pub write_buffer_bytes: usize,
    /// Full write buffers in flight to the disk at once.
    pub writes_in_flight_max: usize,
    /// The active segment's file is fallocated this far ahead of the data.
    pub preallocate_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_ms_max: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            flush: FlushPolicy::EveryBatch,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            tail_cache_bytes_max: 16 << 20,
            write_buffer_bytes: 1 << 20,
            writes_in_flight_max: 4,
            preallocate_bytes: 32 << 20,
        }
    }
}

/// The glommio preempt timer a shard that owns logs should run with
/// (`LocalExecutorBuilder::preempt_timer`). Background writes are handed to
/// the kernel when the executor polls its reactor; glommio's default of
/// 100 ms would leave a busy appender's writes queued far too long.
pub const SHARD_PREEMPT_TIMER: Duration = Duration::from_micros(500);

/// The O_DIRECT alignment the engine writes with; a multiple of every
/// logical block size in use (512 or 4096).
pub const ALIGN: u64 = 4096;

impl LogConfig {
    /// Checks the settings are usable; every log checks them when it opens.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::InvalidConfig(m));
        if self.segment_bytes_max < 1024 || self.segment_bytes_max > i32::MAX as u64 {
            return bad(format!(
                "segment_bytes_max {} must be in [1024, {}]",
                self.segment_bytes_max,
                i32::MAX
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if self.write_buffer_bytes == 0 || self.write_buffer_bytes as u64 % ALIGN != 0 {
            return bad(format!(
                "write_buffer_bytes {} must be a positive multiple of {ALIGN}",
                self.write_buffer_bytes
            ));
        }
        if self.writes_in_flight_max == 0 {
            return bad("writes_in_flight_max must be at least 1".into());
        }
        if let Some(ms) = self.segment_ms_max {
            if ms <= 0 {
                return bad(format!("segment_ms_max {ms} must be positive"));
            }
        }
        Ok(())
    }
}
