//! The tail cache: the most recent batches of a log, in memory, as the
//! `Bytes` they arrived in. Reads of recent offsets are served from here
//! without touching the disk.
//!
//! Invariant: the cache is a suffix of the log, and every batch that is not
//! yet completely written to its segment file is in it. So a read that
//! starts before the cache is served entirely from the file, and the file
//! holds every byte it is asked for.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub(crate) struct CachedBatch {
    pub base: u64,
    pub last: u64,
    pub max_timestamp: i64,
    /// Base offset of the segment that holds the batch, and its byte position there.
    pub segment: u64,
    pub position: u64,
    pub bytes: Bytes,
}

impl CachedBatch {
    fn end(&self) -> u64 {
        self.position + self.bytes.len() as u64
    }
}

#[derive(Debug, Default)]
pub(crate) struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
}

impl TailCache {
    pub fn push(&mut self, b: CachedBatch) {
        if let Some(last) = self.batches.back() {
            debug_assert!(b.base > last.last, "cache batches must be in offset order");
        }
        self.bytes += b.bytes.len();
        self.batches.push_back(b);
    }

    pub fn front(&self) -> Option<&CachedBatch> {
        self.batches.front()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Evicts the oldest batches while the cache is over `max_bytes`, but
    /// only those fully written: in a segment older than `active`, or in it
    /// below `written_end`.
    pub fn evict(&mut self, max_bytes: usize, active: u64, written_end: u64) {
        while self.bytes > max_bytes {
            match self.batches.front() {
                Some(b) if b.segment < active || b.end() <= written_end => {
                    self.bytes -= b.bytes.len();
                    self.batches.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The batches from the one holding `offset` (or the first after it) on.
    pub fn batches_from(&self, offset: u64) -> impl Iterator<Item = &CachedBatch> {
        let i = self.batches.partition_point(|b| b.last < offset);
        self.batches.range(i..)
    }

    /// Drops batches that hold offsets at or past `offset`.
    pub fn truncate_from(&mut self, offset: u64) {
        while let Some(b) = self.batches.back() {
            if b.last < offset {
                break;
            }
            self.bytes -= b.bytes.len();
            self.batches.pop_back();
        }
    }

    /// Drops batches that end before `offset` (the log start moved).
    pub fn drop_before(&mut self, offset: u64) {
        while let Some(b) = self.batches.front() {
            if b.last >= offset {
                break;
            }
            self.bytes -= b.bytes.len();
            self.batches.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }
}
