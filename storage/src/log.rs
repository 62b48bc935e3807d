//! The partition log: appends, reads, durability, roll, retention and
//! truncation over a directory of segments. Opening and crash recovery are
//! in `recovery.rs`.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use borges_net::batch::{
    decode_records, set_base_offset, set_partition_leader_epoch, validate_batch, BatchError, BatchHeader,
    BATCH_HEADER_LEN,
};
use borges_net::types::{LeaderEpoch, Offset, TimestampMs};
use bytes::{Bytes, BytesMut};
use glommio::io::{BufferedFile, DmaFile, OpenOptions};
use glommio::sync::Semaphore;

use crate::cache::{CachedBatch, TailCache};
use crate::clock::Clock;
use crate::config::{FlushPolicy, LogConfig};
use crate::epoch::LeaderEpochCache;
use crate::error::{Result, StorageError};
use crate::fsutil::{remove_if_exists, sync_dir, write_file_atomic};
use crate::recovery::RecoveryReport;
use crate::seam::{self, Op};
use crate::segment::{
    segment_path, HeaderScanner, ScanStop, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::writer::{Submit, Writer};

pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
pub(crate) const LOG_START_FILE: &str = "log-start-offset";
pub(crate) const EPOCH_FILE: &str = "leader-epoch-checkpoint";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// The replicated high watermark, checkpointed by the broker.
pub(crate) const HIGH_WATERMARK_FILE: &str = "high-watermark";

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub batches: usize,
    pub bytes: usize,
    pub max_timestamp: TimestampMs,
}

/// A byte range of a segment file, for a socket layer to send with
/// sendfile or splice; the bytes never pass through user space. The range
/// always starts and ends on batch boundaries, and every byte in it was
/// completely written before the range was handed out. No byte of a
/// segment file is ever overwritten with other data: after a truncation
/// ([`Log::truncate_to`]) a range sends what it was handed out with, or
/// comes up short where the truncation cut its segment, and the sender
/// must treat a short file as the end of the response.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Rc<std::fs::File>,
    pub position: u64,
    pub len: u64,
}

impl FileSlice {
    /// Copies the range into memory with blocking preads. For tests and
    /// tools; the broker sends slices without reading them.
    pub fn read_to_vec(&self) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut v = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut v, self.position)?;
        Ok(v)
    }
}

/// A piece of a read: recent batches from memory, or older ones as a file range.
#[derive(Debug, Clone)]
pub enum Chunk {
    Memory(Bytes),
    File(FileSlice),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Memory(b) => b.len(),
            Chunk::File(f) => f.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of a read: whole batches, in order, starting with the one
/// that holds the requested offset.
#[derive(Debug, Clone)]
pub struct LogRead {
    pub chunks: Vec<Chunk>,
    pub bytes: usize,
    /// Where the next read should start.
    pub next_offset: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: Offset,
}

pub(crate) struct State {
    pub segments: BTreeMap<u64, Segment>,
    pub writer: Writer,
    pub cache: TailCache,
    pub log_start: u64,
    pub leo: u64,
    /// Everything below this offset has been fdatasynced.
    pub durable: u64,
    pub epochs: LeaderEpochCache,
    pub failed: Option<String>,
    pub closed: bool,
    pub last_sync_ms: i64,
    /// The cleaner checkpoint: compaction has cleaned the log below this
    /// offset, and recovery accepts gaps only there. Never above `leo`.
    pub cleaned_to: u64,
    /// Truncations since the log opened; a compaction that sees this change
    /// under it stops, because the records it counted on may be gone.
    pub truncations: u64,
    /// Leader appends under an older epoch are refused
    /// ([`Log::fence_leader_epoch`]).
    pub min_leader_epoch: i32,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn evict(&mut self, max: usize) {
        let active = self.active().base;
        let written = self.writer.written_end;
        self.cache.evict(max, active, written);
    }
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub config: RefCell<LogConfig>,
    pub clock: Rc<dyn Clock>,
    pub state: RefCell<State>,
    /// Serialises appends, rolls, truncations, retention and close.
    pub append_lock: Semaphore,
    /// Serialises issuing and awaiting writes to the active segment.
    pub io_lock: Semaphore,
    /// One fdatasync at a time; appends that queue behind it share the next (group commit).
    pub sync_lock: Semaphore,
    /// Serialises changes to sealed segments: compaction swapping in a
    /// cleaned segment against truncation, retention and close (which take
    /// it after `append_lock`; compaction never takes `append_lock`, so
    /// appends go on while it works).
    pub segments_lock: Semaphore,
    /// One compaction at a time.
    pub clean_lock: Semaphore,
    pub recovery: RecoveryReport,
}

/// A partition log: one directory of segments, owned outright by the shard
/// (glommio executor) that opened it. Cloning gives another handle to the
/// same log on the same shard; it is `!Send` and never leaves it.
///
/// Many tasks of the shard may use it at once: appends are serialised,
/// reads run beside them, and concurrent durable appends share fdatasyncs.
/// No `RefCell` borrow is ever held across an `.await`.
#[derive(Clone)]
pub struct Log {
    pub(crate) inner: Rc<Inner>,
}

enum Step {
    Wait(Rc<crate::writer::Slot>),
    Preallocate(Rc<DmaFile>, u64),
    Again,
    Done(Rc<DmaFile>, Rc<PathBuf>, u64),
}

pub(crate) fn lock_closed(dir: &Path) -> impl Fn(glommio::GlommioError<()>) -> StorageError + '_ {
    move |_| StorageError::Closed(dir.to_path_buf())
}

/// Checks that `records` is one or more complete, valid batches and returns
/// their headers. Nothing is stored unless all of them pass.
fn validate_records(records: &[u8], batch_max: u64) -> Result<Vec<BatchHeader>> {
    if records.is_empty() {
        return Err(StorageError::EmptyAppend);
    }
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort {
                needed: BATCH_HEADER_LEN,
                available: rest.len(),
            }
            .into());
        }
        let h = BatchHeader::parse(rest)?;
        let total = h.total_len();
        if total > rest.len() {
            return Err(BatchError::TooShort {
                needed: total,
                available: rest.len(),
            }
            .into());
        }
        if total as u64 > batch_max {
            return Err(StorageError::BatchTooLarge {
                size: total,
                max: batch_max as usize,
            });
        }
        validate_batch(&rest[..total])?;
        headers.push(h);
        pos += total;
    }
    Ok(headers)
}

/// How an append sets the offsets and epochs of its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// A leader's append: offsets from the log end, this epoch stamped.
    Leader(LeaderEpoch),
    /// A follower's: the leader's offsets and epochs, as they are.
    AsGiven,
}

/// Checks a follower's batches against the log end and the latest epoch;
/// returns the offsets they move the log end by, and the base offset of the
/// last batch that follows a gap (a compacted leader's), if any.
fn check_replicated(
    headers: &[BatchHeader],
    leo: u64,
    latest: Option<LeaderEpoch>,
) -> Result<(u64, Option<u64>)> {
    let mut next = leo;
    let mut epoch = latest.map_or(-1, |e| e.0);
    let mut last_gap = None;
    for h in headers {
        if h.base_offset < 0 || (h.base_offset as u64) < next {
            return Err(StorageError::NonMonotonicOffset {
                base: h.base_offset,
                expected_at_least: Offset(next),
            });
        }
        if h.partition_leader_epoch >= 0 && h.partition_leader_epoch < epoch {
            return Err(StorageError::StaleLeaderEpoch {
                epoch: LeaderEpoch(h.partition_leader_epoch),
                latest: LeaderEpoch(epoch),
            });
        }
        if h.base_offset as u64 > next {
            last_gap = Some(h.base_offset as u64);
        }
        epoch = epoch.max(h.partition_leader_epoch);
        next = h.last_offset() as u64 + 1;
    }
    Ok((next - leo, last_gap))
}

impl Log {
    pub(crate) fn st(&self) -> RefMut<'_, State> {
        self.inner.state.borrow_mut()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log's current settings.
    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// Changes the settings of an open log (a topic's configuration was
    /// altered). Sizes and policies apply from the next append, roll or
    /// retention pass; nothing already written changes.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        *self.inner.config.borrow_mut() = config;
        Ok(())
    }

    /// What recovery found and cut when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.st().log_start)
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> Offset {
        Offset(self.st().leo)
    }

    /// Every record below this offset is on disk (fdatasynced).
    pub fn durable_offset(&self) -> Offset {
        let st = self.st();
        debug_assert!(
            st.durable <= st.leo,
            "durable {} above the log end {}",
            st.durable,
            st.leo
        );
        Offset(st.durable)
    }

    pub fn size_bytes(&self) -> u64 {
        self.st().segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.st().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.st().segments.keys().map(|&b| Offset(b)).collect()
    }

    /// Bytes of batches held in the tail cache.
    pub fn cached_bytes(&self) -> usize {
        self.st().cache.bytes()
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.st().epochs.latest().map(|e| e.epoch)
    }

    /// Kafka's OffsetsForLeaderEpoch answered from the epoch checkpoint.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let st = self.st();
        st.epochs.end_offset_for(epoch, Offset(st.leo))
    }

    pub fn epoch_history(&self) -> LeaderEpochCache {
        self.st().epochs.clone()
    }

    pub(crate) fn check_writable(&self, st: &State) -> Result<()> {
        if st.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        if let Some(reason) = &st.failed {
            return Err(StorageError::LogFailed(self.inner.dir.clone(), reason.clone()));
        }
        Ok(())
    }

    /// Marks the log failed: after an I/O error the file's state is unknown.
    pub(crate) fn fail(&self, e: StorageError) -> StorageError {
        self.poison(&mut self.st(), &e);
        e
    }

    fn poison(&self, st: &mut State, e: &StorageError) {
        if st.failed.is_none() {
            tracing::error!(dir = %self.inner.dir.display(), error = %e, "log failed");
            st.failed = Some(e.to_string());
        }
    }

    /// Collects finished background writes. A failed one fails the log
    /// (whoever sees it first: an append, a sync or a read), and the writer
    /// keeps reporting it, so `written_end` never passes it and the batches
    /// it carried stay in the tail cache.
    fn reap(&self, st: &mut State) -> Result<()> {
        if let Err(e) = st.writer.reap() {
            let err = StorageError::io("write", st.writer.path.as_path(), e);
            self.poison(st, &err);
            return Err(err);
        }
        self.check_writable(st)
    }

    /// Refuses from now on every leader append under an epoch older than
    /// `epoch` (the partition's current one): an append that read its
    /// epoch before the partition moved on cannot land after the move. Kept
    /// in memory; the metadata image sets it again after a restart.
    pub fn fence_leader_epoch(&self, epoch: LeaderEpoch) {
        let mut st = self.st();
        st.min_leader_epoch = st.min_leader_epoch.max(epoch.0);
    }

    /// Why the log failed, if it did (it takes no more writes).
    pub fn failure(&self) -> Option<String> {
        self.st().failed.clone()
    }

    /// The high watermark last checkpointed (0 when none was), never above
    /// the log end or below the log start: a restarted replica exposes
    /// nothing beyond it until replication moves it on.
    pub fn checkpointed_high_watermark(&self) -> Result<Offset> {
        let hw = crate::fsutil::read_u64_checkpoint(&self.inner.dir.join(HIGH_WATERMARK_FILE))?.unwrap_or(0);
        let st = self.st();
        Ok(Offset(hw.clamp(st.log_start, st.leo)))
    }

    /// Checkpoints the high watermark (written, synced, renamed into place).
    /// A failure here leaves the log usable: the checkpoint is only ever a
    /// lower bound, and the next one may succeed.
    pub async fn checkpoint_high_watermark(&self, hw: Offset) -> Result<()> {
        write_file_atomic(
            &self.inner.dir.join(HIGH_WATERMARK_FILE),
            hw.0.to_string().as_bytes(),
        )
        .await
    }

    /// Appends one or more record batches (concatenated, as a producer sends
    /// them). Each is validated first, and nothing is stored unless all
    /// pass. Offsets are assigned from the log end by rewriting each batch's
    /// base offset; a non-negative `epoch` is stamped into each batch's
    /// partition leader epoch. Both fields are outside the CRC, so the stored
    /// bytes are otherwise the producer's.
    ///
    /// Returns once the batches are readable and, under
    /// [`FlushPolicy::EveryBatch`], on disk.
    pub async fn append(&self, records: BytesMut, epoch: LeaderEpoch) -> Result<AppendInfo> {
        self.append_as(records, Stamp::Leader(epoch)).await
    }

    /// Appends a leader's batches on a follower, at the offsets and under
    /// the epochs they carry, byte for byte. They must start at or past the
    /// log end (a compacted leader's log has gaps), each past the one
    /// before, with epochs that never go down and none older than the
    /// log's latest; nothing is stored unless all of them pass. Each new
    /// epoch enters the history at its first batch's base offset.
    pub async fn append_replicated(&self, records: BytesMut) -> Result<AppendInfo> {
        self.append_as(records, Stamp::AsGiven).await
    }

    async fn append_as(&self, mut records: BytesMut, stamp: Stamp) -> Result<AppendInfo> {
        let config = &self.config();
        let headers = validate_records(&records, config.segment_bytes_max)?;
        let mut span: u64 = headers.iter().map(|h| h.last_offset_delta as u64 + 1).sum();
        let permit = self
            .inner
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        let now = self.inner.clock.now_ms();
        if stamp == Stamp::AsGiven {
            let gap = {
                let st = self.st();
                self.check_writable(&st)?;
                let (s, gap) = check_replicated(&headers, st.leo, st.epochs.latest().map(|e| e.epoch))?;
                span = s;
                gap
            };
            if let Some(last_gap) = gap {
                // The leader compacted offsets away. Recovery accepts a gap
                // only below the cleaner checkpoint, so the checkpoint covers
                // every gap of these batches before they can be on disk.
                let _segments = self
                    .inner
                    .segments_lock
                    .acquire_permit(1)
                    .await
                    .map_err(lock_closed(&self.inner.dir))?;
                self.write_checkpoint(last_gap).await.map_err(|e| self.fail(e))?;
            }
        }
        let roll = {
            let st = self.st();
            self.check_writable(&st)?;
            let seg = st.active();
            seg.size > 0
                && (seg.size + records.len() as u64 > config.segment_bytes_max
                    || st.leo + span - seg.base > u32::MAX as u64
                    || config
                        .segment_ms_max
                        .zip(seg.first_append_ms)
                        .is_some_and(|(max, first)| now - first >= max))
        };
        if roll {
            self.roll_locked().await?;
        }
        // Every stored batch carries the epoch the history gives for its
        // offset (-1 before any), which recovery checks; a caller without an
        // epoch appends under the latest one, and an older epoch than the
        // latest is a deposed leader's write.
        let (epoch, new_history) = {
            let st = self.st();
            self.check_writable(&st)?;
            let latest = st.epochs.latest().map(|e| e.epoch);
            match stamp {
                Stamp::Leader(epoch) => {
                    if epoch.0 >= 0 && epoch.0 < st.min_leader_epoch {
                        // The partition moved to a newer epoch while this
                        // append waited: its leader is another now.
                        return Err(StorageError::StaleLeaderEpoch {
                            epoch,
                            latest: LeaderEpoch(st.min_leader_epoch),
                        });
                    }
                    let epoch = match latest {
                        Some(l) if epoch.0 >= 0 && epoch < l => {
                            return Err(StorageError::StaleLeaderEpoch { epoch, latest: l })
                        }
                        Some(l) if epoch.0 < 0 => l,
                        _ => epoch,
                    };
                    let mut history = None;
                    if epoch.0 >= 0 && latest.is_none_or(|l| epoch > l) {
                        let mut epochs = st.epochs.clone();
                        epochs.assign(epoch, Offset(st.leo));
                        history = Some(epochs);
                    }
                    (Some(epoch), history)
                }
                Stamp::AsGiven => {
                    let mut epochs = st.epochs.clone();
                    let mut changed = false;
                    for h in &headers {
                        let e = LeaderEpoch(h.partition_leader_epoch);
                        if e.0 >= 0 && epochs.latest().is_none_or(|l| e > l.epoch) {
                            changed |= epochs.assign(e, Offset(h.base_offset as u64));
                        }
                    }
                    (None, changed.then_some(epochs))
                }
            }
        };
        // A new epoch is checkpointed before its first batch is copied in:
        // from then on a concurrent `sync_to` may make the batch durable,
        // and recovery cuts a batch whose epoch the checkpoint does not
        // know. (The append lock keeps the log end and the history still
        // meanwhile; a crash before the batch is durable leaves an epoch
        // that starts at the log end, which the next open forgets.)
        if let Some(history) = &new_history {
            write_file_atomic(&self.inner.dir.join(EPOCH_FILE), history.encode().as_bytes())
                .await
                .map_err(|e| self.fail(e))?;
        }
        let info = {
            let mut st = self.st();
            if let Some(history) = new_history {
                st.epochs = history;
            }
            self.check_writable(&st)?;
            let st = &mut *st;
            let base = match epoch {
                Some(_) => st.leo,
                None => headers[0].base_offset as u64,
            };
            let mut next = base;
            let mut pos = 0;
            let mut stamped = Vec::with_capacity(headers.len());
            for h in &headers {
                let mut h = *h;
                let len = h.total_len();
                if let Some(epoch) = epoch {
                    h.base_offset = next as i64;
                    set_base_offset(&mut records[pos..pos + len], h.base_offset);
                    h.partition_leader_epoch = epoch.0.max(-1);
                    set_partition_leader_epoch(&mut records[pos..pos + len], h.partition_leader_epoch);
                }
                next = h.last_offset() as u64 + 1;
                stamped.push((h, pos));
                pos += len;
            }
            let bytes = records.freeze();
            let interval = config.index_interval_bytes;
            let seg = st.active_mut();
            seg.first_append_ms.get_or_insert(now);
            let seg_base = seg.base;
            let mut max_timestamp = i64::MIN;
            let mut cached = Vec::with_capacity(stamped.len());
            for (h, at) in &stamped {
                let position = seg.size;
                seg.track_batch(h, position, interval);
                max_timestamp = max_timestamp.max(h.max_timestamp);
                cached.push(CachedBatch {
                    base: h.base_offset as u64,
                    last: h.last_offset() as u64,
                    max_timestamp: h.max_timestamp,
                    segment: seg_base,
                    position,
                    bytes: bytes.slice(*at..*at + h.total_len()),
                });
            }
            let seg_size = seg.size;
            for c in cached {
                st.cache.push(c);
            }
            st.writer.copy_in(&bytes);
            debug_assert_eq!(st.writer.end, seg_size);
            st.leo = next;
            st.evict(config.tail_cache_bytes_max);
            debug_assert!(
                stamped.iter().all(|(h, _)| h.partition_leader_epoch < 0
                    || st.epochs.epoch_for(Offset(h.base_offset as u64))
                        == Some(LeaderEpoch(h.partition_leader_epoch))),
                "the history covers every batch"
            );
            AppendInfo {
                base_offset: Offset(base),
                last_offset: Offset(next - 1),
                batches: headers.len(),
                bytes: bytes.len(),
                max_timestamp: TimestampMs(max_timestamp),
            }
        };
        self.submit_sealed().await?;
        drop(permit);
        match config.flush {
            FlushPolicy::EveryBatch => self.sync_to(info.last_offset.0 + 1).await?,
            FlushPolicy::Interval(d) => {
                let due = now - self.st().last_sync_ms >= d.as_millis() as i64;
                if due {
                    self.sync_to(info.last_offset.0 + 1).await?;
                }
            }
            FlushPolicy::Never => {}
        }
        Ok(info)
    }

    /// Moves full write buffers to the disk, waiting when too many are in flight.
    async fn submit_sealed(&self) -> Result<()> {
        if !self.st().writer.has_sealed() {
            return Ok(());
        }
        let _io = self
            .inner
            .io_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        let max = self.config().writes_in_flight_max;
        loop {
            let step = {
                let mut st = self.st();
                self.reap(&mut st)?;
                match st.writer.submit_one(max) {
                    Submit::Idle => break,
                    Submit::Wait(s) => Step::Wait(s),
                    Submit::Preallocate(f, n) => Step::Preallocate(f, n),
                    Submit::Issued => Step::Again,
                }
            };
            self.run_step(step).await;
        }
        // The writes just issued sit in the ring until the executor polls
        // its reactor, which it does only between task queues, when its
        // preempt timer fires, or when every task waits. A busy appender
        // would hold them back until it blocks on the in-flight bound; so it
        // yields when the timer says so, and shards run with a short timer
        // ([`crate::SHARD_PREEMPT_TIMER`]), so that the writes reach the disk
        // while the next batches are validated and copied.
        glommio::yield_if_needed().await;
        Ok(())
    }

    async fn run_step(&self, step: Step) {
        match step {
            Step::Wait(slot) => slot.wait().await,
            Step::Preallocate(file, size) => {
                // Preallocation only spares the filesystem work on the write
                // path; where fallocate is unsupported, writes still work.
                if let Err(e) = file.pre_allocate(size, true).await {
                    tracing::debug!(error = %e, "fallocate failed; continuing without");
                }
            }
            Step::Again | Step::Done(..) => {}
        }
    }

    /// Writes everything appended so far to the active segment file and
    /// waits for it. Returns the file, its path, and the log end offset it
    /// now covers.
    async fn flush_writes(&self) -> Result<(Rc<DmaFile>, Rc<PathBuf>, u64)> {
        let _io = self
            .inner
            .io_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        let max = self.config().writes_in_flight_max;
        let mut covered = None;
        loop {
            let step = {
                let mut st = self.st();
                self.reap(&mut st)?;
                if covered.is_none() && st.writer.has_sealed() {
                    match st.writer.submit_one(max) {
                        Submit::Wait(s) => Step::Wait(s),
                        Submit::Preallocate(f, n) => Step::Preallocate(f, n),
                        Submit::Issued | Submit::Idle => Step::Again,
                    }
                } else if covered.is_none() {
                    match st.writer.submit_partial() {
                        Submit::Preallocate(f, n) => Step::Preallocate(f, n),
                        _ => {
                            // Buffers sealed after this point start at the
                            // block the partial write covers; they wait for
                            // the next flush or submission.
                            covered = Some(st.leo);
                            Step::Again
                        }
                    }
                } else if let Some(front) = st.writer.inflight.front() {
                    Step::Wait(front.slot.clone())
                } else {
                    Step::Done(
                        st.writer.file.clone(),
                        st.writer.path.clone(),
                        covered.unwrap_or(st.leo),
                    )
                }
            };
            if let Step::Done(file, path, covered) = step {
                return Ok((file, path, covered));
            }
            self.run_step(step).await;
        }
    }

    /// Writes everything appended so far to the segment file, without
    /// fdatasync: safe against a crash of the process (the bytes are in the
    /// kernel), not against a power loss. Returns the offset it covers.
    pub async fn flush(&self) -> Result<Offset> {
        let (_, _, covered) = self.flush_writes().await?;
        Ok(Offset(covered))
    }

    /// Makes everything appended so far durable; returns the durable offset.
    pub async fn sync(&self) -> Result<Offset> {
        let leo = self.st().leo;
        self.sync_to(leo).await?;
        Ok(self.durable_offset())
    }

    /// The sync lock: one fdatasync of the active segment at a time, and
    /// none while a truncation moves the log end.
    async fn sync_lock(&self) -> Result<glommio::sync::Permit<'_>> {
        self.inner
            .sync_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))
    }

    /// Waits until every offset below `target` is on disk. Callers queue on
    /// one lock; whoever gets it syncs everything appended so far, so the
    /// callers behind it usually find their offsets already durable (group
    /// commit).
    pub async fn sync_to(&self, target: u64) -> Result<()> {
        if self.st().durable >= target {
            return Ok(());
        }
        let _sync = self.sync_lock().await?;
        {
            let st = self.st();
            if st.durable >= target {
                return Ok(());
            }
            self.check_writable(&st)?;
        }
        // The file the writes went to, and its name: a roll may change the
        // active segment while this waits at the gate or in the fdatasync.
        let (file, path, covered) = self.flush_writes().await?;
        seam::gate(Op::Fdatasync).await;
        seam::step(Op::Fdatasync, &path, 0, 0)
            .map_err(|e| self.fail(StorageError::io("fdatasync", path.as_path(), e)))?;
        file.fdatasync()
            .await
            .map_err(|e| self.fail(StorageError::io("fdatasync", path.as_path(), e)))?;
        let now = self.inner.clock.now_ms();
        let mut st = self.st();
        st.durable = st.durable.max(covered);
        // Truncation takes the sync lock, so the log end has not moved
        // below what this sync covered.
        debug_assert!(
            st.durable <= st.leo,
            "durable {} above the log end {}",
            st.durable,
            st.leo
        );
        st.last_sync_ms = now;
        Ok(())
    }

    /// Periodic work the owning shard calls (every few milliseconds): the
    /// interval flush of an idle log.
    pub async fn tick(&self) -> Result<()> {
        if let FlushPolicy::Interval(d) = self.config().flush {
            let (due, leo) = {
                let st = self.st();
                let due = st.durable < st.leo
                    && self.inner.clock.now_ms() - st.last_sync_ms >= d.as_millis() as i64;
                (due && !st.closed && st.failed.is_none(), st.leo)
            };
            if due {
                self.sync_to(leo).await?;
            }
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end (a
    /// no-op while the active segment is empty).
    pub async fn roll(&self) -> Result<()> {
        let _permit = self
            .inner
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        {
            let st = self.st();
            self.check_writable(&st)?;
            if st.active().size == 0 {
                return Ok(());
            }
        }
        self.roll_locked().await
    }

    /// Seals the active segment and starts a new one at the log end.
    /// Caller holds the append lock.
    async fn roll_locked(&self) -> Result<()> {
        let (file, _, _) = self.flush_writes().await?;
        let (base, size, index, time_index, new_base) = {
            let mut st = self.st();
            let new_base = st.leo;
            let seg = st.active_mut();
            seg.finish_time_index();
            (
                seg.base,
                seg.size,
                seg.index.encode(),
                seg.time_index.encode(),
                new_base,
            )
        };
        self.seal_files(&file, base, size, &index, &time_index)
            .await
            .map_err(|e| self.fail(e))?;
        let (seg, writer) = create_segment(&self.inner.dir, new_base, &self.config())
            .await
            .map_err(|e| self.fail(e))?;
        {
            let mut st = self.st();
            st.segments.insert(new_base, seg);
            st.writer = writer;
            st.durable = st.durable.max(new_base);
            debug_assert!(st.durable <= st.leo);
        }
        write_file_atomic(
            &self.inner.dir.join(RECOVERY_POINT_FILE),
            new_base.to_string().as_bytes(),
        )
        .await
        .map_err(|e| self.fail(e))
    }

    /// Cuts the direct-I/O padding, syncs, and writes the segment's indexes.
    async fn seal_files(
        &self,
        file: &DmaFile,
        base: u64,
        size: u64,
        index: &[u8],
        time_index: &[u8],
    ) -> Result<()> {
        let dir = &self.inner.dir;
        let path = segment_path(dir, base, LOG_SUFFIX);
        seam::step(Op::Truncate, &path, 0, size).map_err(|e| StorageError::io("truncate", &path, e))?;
        file.truncate(size)
            .await
            .map_err(|e| StorageError::io("truncate", &path, e))?;
        seam::step(Op::Fdatasync, &path, 0, 0).map_err(|e| StorageError::io("fdatasync", &path, e))?;
        file.fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync", &path, e))?;
        write_file_atomic(&segment_path(dir, base, INDEX_SUFFIX), index).await?;
        write_file_atomic(&segment_path(dir, base, TIME_INDEX_SUFFIX), time_index).await
    }

    /// Reads whole batches starting with the one that holds `from`, about
    /// `max_bytes` of them (always at least one), and none with an offset at
    /// or past `upto` (the high watermark, for a replicated log) or the log
    /// end. Recent batches come from memory; older ones as a file range.
    pub async fn read(&self, from: Offset, max_bytes: usize, upto: Option<Offset>) -> Result<LogRead> {
        let mut from = from.0;
        // A start offset in a gap (compaction, a truncation point) moves to
        // the next batch; a few rounds always suffice.
        for _ in 0..8 {
            let plan = self.plan_read(from, max_bytes, upto)?;
            let plan = match plan {
                ReadPlan::Ready(r) => return Ok(r),
                ReadPlan::File(p) => p,
            };
            let mut scanner = HeaderScanner::new(
                plan.reader.clone(),
                segment_path(&self.inner.dir, plan.seg_base, LOG_SUFFIX),
                plan.limit_pos,
                16 << 10,
            );
            let mut pos = plan.start_pos;
            let found = loop {
                match scanner.batch_at(pos, false).await? {
                    Ok(h) if (h.last_offset() as u64) < from => pos += h.total_len() as u64,
                    Ok(h) => break Some(h),
                    Err(ScanStop::End) => break None,
                    Err(stop) => {
                        return Err(StorageError::io(
                            "read",
                            segment_path(&self.inner.dir, plan.seg_base, LOG_SUFFIX),
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("corrupt batch at position {pos}: {stop:?}"),
                            ),
                        ))
                    }
                }
            };
            let Some(h) = found else {
                from = plan.limit_offset.max(from + 1);
                continue;
            };
            if let Some(r) = self.finish_file_read(&plan, pos, &h, max_bytes, upto) {
                return Ok(r);
            }
        }
        let st = self.st();
        Ok(LogRead {
            chunks: Vec::new(),
            bytes: 0,
            next_offset: Offset(from),
            log_start_offset: Offset(st.log_start),
            log_end_offset: Offset(st.leo),
        })
    }

    fn plan_read(&self, from: u64, max_bytes: usize, upto: Option<Offset>) -> Result<ReadPlan> {
        let mut st = self.st();
        if st.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        let (start, leo) = (st.log_start, st.leo);
        if from < start || from > leo {
            return Err(StorageError::OffsetOutOfRange {
                requested: Offset(from),
                log_start: Offset(start),
                log_end: Offset(leo),
            });
        }
        let bound = upto.map_or(leo, |u| u.0.min(leo));
        let mut read = LogRead {
            chunks: Vec::new(),
            bytes: 0,
            next_offset: Offset(from),
            log_start_offset: Offset(start),
            log_end_offset: Offset(leo),
        };
        if from >= bound {
            return Ok(ReadPlan::Ready(read));
        }
        // A failed write fails the log here too; reads go on, the batches
        // it carried from memory.
        if let Err(e) = self.reap(&mut st) {
            debug_assert!(st.failed.is_some());
            tracing::debug!(error = %e, "read found the log failed");
        }
        st.evict(self.config().tail_cache_bytes_max);
        let cache_front = st.cache.front().map(|f| (f.base, f.segment, f.position));
        if let Some((front_base, _, _)) = cache_front {
            if front_base <= from {
                for b in st.cache.batches_from(from) {
                    if b.last >= bound || (!read.chunks.is_empty() && read.bytes + b.bytes.len() > max_bytes)
                    {
                        break;
                    }
                    read.bytes += b.bytes.len();
                    read.next_offset = Offset(b.last + 1);
                    read.chunks.push(Chunk::Memory(b.bytes.clone()));
                }
                return Ok(ReadPlan::Ready(read));
            }
        }
        // `from` may lie in a gap left by compaction: between batches, after
        // a segment's last batch, or in a segment compaction emptied. The
        // read then starts at the next batch.
        let seg = match st.segments.range(..=from).next_back() {
            Some((_, s)) if from < s.next_offset => s,
            _ => match st
                .segments
                .range(from + 1..)
                .map(|(_, s)| s)
                .find(|s| s.next_offset > s.base)
            {
                Some(s) => s,
                None => return Ok(ReadPlan::Ready(read)),
            },
        };
        let (limit_pos, limit_offset) = match cache_front {
            Some((base, segment, position)) if segment == seg.base => (position, base),
            _ => (seg.size, seg.next_offset),
        };
        let start_pos = if from >= seg.base {
            seg.index.floor(seg.rel(from)).1 as u64
        } else {
            0
        };
        Ok(ReadPlan::File(FilePlan {
            seg_base: seg.base,
            reader: seg.reader.clone(),
            start_pos,
            limit_pos,
            limit_offset,
        }))
    }

    /// Chooses where a file read ends: the furthest batch boundary within
    /// `max_bytes` that is fully written and below the bound. `None` when
    /// the log changed under the scan and the read must start over.
    fn finish_file_read(
        &self,
        plan: &FilePlan,
        pos: u64,
        first: &BatchHeader,
        max_bytes: usize,
        upto: Option<Offset>,
    ) -> Option<LogRead> {
        let st = self.st();
        let seg = st.segments.get(&plan.seg_base)?;
        // Compaction replaced the segment while the scan read the old file.
        if !Rc::ptr_eq(&seg.reader, &plan.reader) {
            return None;
        }
        let (start, leo) = (st.log_start, st.leo);
        let bound = upto.map_or(leo, |u| u.0.min(leo));
        let mut read = LogRead {
            chunks: Vec::new(),
            bytes: 0,
            next_offset: Offset(first.base_offset as u64),
            log_start_offset: Offset(start),
            log_end_offset: Offset(leo),
        };
        let first_end = pos + first.total_len() as u64;
        if first_end > seg.size || (first.base_offset as u64) < start {
            return None;
        }
        if first.last_offset() as u64 >= bound {
            return Some(read);
        }
        let (limit_pos, limit_offset) = match st.cache.front() {
            Some(f) if f.segment == seg.base => (f.position, f.base),
            _ => (seg.size, seg.next_offset),
        };
        let target = pos + max_bytes as u64;
        let mut end = first_end;
        let mut next = first.last_offset() as u64 + 1;
        for &(rel, p) in seg.index.entries_after(pos as u32) {
            let (p, o) = (p as u64, seg.base + rel as u64);
            if p > target || p > limit_pos || o > bound {
                break;
            }
            if p > end {
                end = p;
                next = o;
            }
        }
        if limit_pos <= target && limit_offset <= bound && limit_pos > end {
            end = limit_pos;
            next = limit_offset;
        }
        read.chunks.push(Chunk::File(FileSlice {
            file: seg.read_file.clone(),
            position: pos,
            len: end - pos,
        }));
        read.bytes = (end - pos) as usize;
        read.next_offset = Offset(next);
        Some(read)
    }

    /// The earliest offset whose record timestamp is at or after `ts`, with
    /// that record's timestamp; `None` when every record is older.
    pub async fn offset_for_timestamp(&self, ts: TimestampMs) -> Result<Option<(Offset, TimestampMs)>> {
        let plan = {
            let st = self.st();
            let seg = st
                .segments
                .values()
                .find(|s| s.size > 0 && s.max_timestamp >= ts.0);
            seg.map(|seg| {
                let rel = seg.time_index.floor(ts.0);
                let start_pos = seg.index.floor(rel).1 as u64;
                let limit_pos = match st.cache.front() {
                    Some(f) if f.segment == seg.base => f.position,
                    Some(f) if f.segment < seg.base => 0,
                    _ => seg.size,
                };
                (seg.base, seg.reader.clone(), start_pos.min(limit_pos), limit_pos)
            })
        };
        let Some((seg_base, reader, start_pos, limit_pos)) = plan else {
            return Ok(None);
        };
        let path = segment_path(&self.inner.dir, seg_base, LOG_SUFFIX);
        let mut scanner = HeaderScanner::new(reader.clone(), path.clone(), limit_pos, 64 << 10);
        let mut pos = start_pos;
        loop {
            let h = match scanner.batch_at(pos, false).await? {
                Ok(h) => h,
                Err(ScanStop::End) => break,
                // Damage: the records after it are not known to be older.
                Err(stop) => {
                    return Err(StorageError::Corrupt {
                        path,
                        position: pos,
                        detail: format!("{stop:?} in a timestamp lookup"),
                    })
                }
            };
            if h.max_timestamp >= ts.0 {
                let bytes = reader
                    .read_at(pos, h.total_len())
                    .await
                    .map_err(|e| StorageError::io("read", &path, e))?;
                return Ok(Some(first_at_or_after(&bytes, &h, ts)));
            }
            pos += h.total_len() as u64;
        }
        // Not in the file part: the rest of the log is in the tail cache.
        let st = self.st();
        let hit = st
            .cache
            .batches_from(st.log_start)
            .find(|b| b.max_timestamp >= ts.0)
            .map(|b| (b.bytes.clone(), b.base));
        drop(st);
        Ok(hit.and_then(|(bytes, _)| {
            let h = BatchHeader::parse(&bytes).ok()?;
            Some(first_at_or_after(&bytes, &h, ts))
        }))
    }

    /// Deletes whole old segments past `retention_ms` (by their newest
    /// timestamp) or beyond `retention_bytes`, never the active one, and
    /// moves the log start to the first remaining segment.
    pub async fn apply_retention(&self) -> Result<RetentionOutcome> {
        let _permit = self
            .inner
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        let _segments = self
            .inner
            .segments_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        let config = &self.config();
        let now = self.inner.clock.now_ms();
        let (victims, outcome, epoch_text) = {
            let mut st = self.st();
            self.check_writable(&st)?;
            let mut total: u64 = st.segments.values().map(|s| s.size).sum();
            let active = st.active().base;
            let mut victims = Vec::new();
            for seg in st.segments.values() {
                if seg.base == active {
                    break;
                }
                let expired = config
                    .retention_ms
                    .is_some_and(|ms| seg.max_timestamp < now.saturating_sub(ms));
                let oversize = config
                    .retention_bytes
                    .is_some_and(|max| total.saturating_sub(seg.size) >= max && total > max);
                if !(expired || oversize) {
                    break;
                }
                total -= seg.size;
                victims.push(seg.base);
            }
            let mut outcome = RetentionOutcome {
                log_start_offset: Offset(st.log_start),
                ..Default::default()
            };
            let mut removed = Vec::new();
            for base in &victims {
                let seg = st.segments.remove(base).expect("victim exists");
                outcome.segments_deleted += 1;
                outcome.bytes_deleted += seg.size;
                removed.push(seg);
            }
            if !victims.is_empty() {
                let new_start = *st.segments.keys().next().expect("active remains");
                st.log_start = st.log_start.max(new_start);
                let start = st.log_start;
                st.cache.drop_before(start);
                outcome.log_start_offset = Offset(start);
            }
            let start = st.log_start;
            let epoch_text = st
                .epochs
                .truncate_from_start(Offset(start))
                .then(|| st.epochs.encode());
            (removed, outcome, epoch_text)
        };
        if victims.is_empty() {
            return Ok(outcome);
        }
        // The segments go first, oldest first, each one's unlinks made
        // durable before the next one's begin (un-synced unlinks may survive
        // a crash in any order: a later segment gone and an earlier one back
        // is a hole, and recovery cuts the log after the earlier one), and
        // all of them before any checkpoint says the log starts after them:
        // a crash in between leaves a contiguous suffix of the segments under
        // the old checkpoints, which recovery reads as it is. (The other
        // order left old batches below the checkpointed epoch history, which
        // recovery cut as an epoch mismatch, erasing the partition.) An I/O
        // error fails the log; the next open deletes what the checkpoint
        // excludes.
        let dir = &self.inner.dir;
        let fail = |e| self.fail(e);
        for seg in &victims {
            delete_segment_files(dir, seg.base).map_err(fail)?;
            sync_dir(dir).await.map_err(fail)?;
        }
        write_file_atomic(
            &dir.join(LOG_START_FILE),
            outcome.log_start_offset.0.to_string().as_bytes(),
        )
        .await
        .map_err(fail)?;
        if let Some(text) = epoch_text {
            write_file_atomic(&dir.join(EPOCH_FILE), text.as_bytes())
                .await
                .map_err(fail)?;
        }
        Ok(outcome)
    }

    /// Removes every record at or after `target` (a follower discarding a
    /// divergent tail). Batches are atomic: if `target` falls inside one,
    /// the whole batch goes and the new log end is its base offset.
    /// Returns the new log end offset.
    ///
    /// The kept part of the cut segment is sealed and appends go on in a
    /// new segment at the new end, so no file ever gets new bytes where
    /// old ones were: a [`FileSlice`] handed out before the truncation
    /// sends what it was handed out with, or comes up short (the sender
    /// sees an early end of file) where the truncation cut its segment;
    /// it never sends bytes appended afterwards.
    ///
    /// Durable steps, in this order, so that a crash at any point leaves a
    /// prefix of the old log: the recovery point moves down to the cut
    /// segment; the cleaner checkpoint is lowered to the new end (from
    /// then on recovery accepts no gap above it, so a later segment that
    /// survives the crash cannot follow the cut across a "compacted" gap);
    /// the epoch history is cut; the later segments are unlinked, newest
    /// first; the cut segment is truncated and fdatasynced (or unlinked
    /// when nothing of it stays); the directory is synced; the kept part's
    /// indexes are written; the new active segment is created. An I/O
    /// error on the way fails the log, and so does a damaged batch met
    /// below the target (`StorageError::Corrupt`): nothing is cut then.
    pub async fn truncate_to(&self, target: Offset) -> Result<Offset> {
        let _permit = self
            .inner
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        let _segments = self
            .inner
            .segments_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        // A sync in flight covers offsets this may remove: it finishes
        // first, and none starts until the new end is in place, so
        // `durable` never ends above the log end.
        let _sync = self.sync_lock().await?;
        {
            let mut st = self.st();
            self.check_writable(&st)?;
            if target.0 >= st.leo {
                return Ok(Offset(st.leo));
            }
            if target.0 < st.log_start {
                return Err(StorageError::InvalidTruncation {
                    requested: target,
                    log_start: Offset(st.log_start),
                });
            }
            st.truncations += 1;
        }
        // Everything on disk first, so the file is the whole truth.
        self.flush_writes().await?;
        let (seg_base, dma, reader, read_file, start_pos, size) = {
            let st = self.st();
            let seg = st
                .segments
                .range(..=target.0)
                .next_back()
                .map(|(_, s)| s)
                .expect("a segment starts at or below the log start");
            let start_pos = seg.index.floor(seg.rel(target.0)).1 as u64;
            (
                seg.base,
                seg.dma.clone(),
                seg.reader.clone(),
                seg.read_file.clone(),
                start_pos,
                seg.size,
            )
        };
        let dir = self.inner.dir.clone();
        let path = segment_path(&dir, seg_base, LOG_SUFFIX);
        let fail = |e| self.fail(e);
        let mut scanner = HeaderScanner::new(reader.clone(), path.clone(), size, 64 << 10);
        // The end of the file before the batch holding the target is a
        // gap (compaction); anything else that stops the scan there is
        // damage, which must not turn into a deeper cut than was asked.
        let mut pos = start_pos;
        loop {
            match scanner.batch_at(pos, false).await.map_err(fail)? {
                Ok(h) if (h.last_offset() as u64) < target.0 => pos += h.total_len() as u64,
                Ok(_) | Err(ScanStop::End) => break,
                Err(stop) => {
                    return Err(fail(StorageError::Corrupt {
                        path,
                        position: pos,
                        detail: format!("{stop:?} below the truncation point {}", target.0),
                    }))
                }
            }
        }
        // The kept part, described afresh from the file (not cut yet); the
        // map keeps the old description meanwhile, so concurrent reads and
        // syncs always find the segment.
        let mut kept = Segment::new(seg_base, dma.clone(), reader, read_file);
        if pos > 0 {
            let interval = self.config().index_interval_bytes;
            let outcome = crate::segment::rebuild_segment(&mut kept, &path, pos, interval, false, None, 0)
                .await
                .map_err(fail)?;
            if outcome.valid_size != pos {
                return Err(fail(StorageError::Corrupt {
                    path,
                    position: outcome.valid_size,
                    detail: format!(
                        "batches end at {} where a scan found one ending at {pos}",
                        outcome.valid_size
                    ),
                }));
            }
            kept.finish_time_index();
        }
        let (index, time_index) = (kept.index.encode(), kept.time_index.encode());
        // One synchronous step: from here on readers see the truncated log.
        let (doomed, leo, epoch_text, cleaned_text) = {
            let mut st = self.st();
            let doomed: Vec<u64> = st.segments.range(seg_base + 1..).map(|(&b, _)| b).collect();
            for b in &doomed {
                st.segments.remove(b);
            }
            // Batches are whole, so the new end is the end of the last batch
            // kept: at or below the target (below it when the target was in
            // a gap left by compaction).
            let leo = kept.next_offset;
            debug_assert!(leo <= target.0 && leo >= st.log_start.min(seg_base));
            st.segments.insert(seg_base, kept);
            st.cache.truncate_from(leo);
            st.leo = leo;
            st.durable = st.durable.min(leo);
            // Appends restart at the new end and must follow exactly: the
            // region where recovery accepts gaps ends there at the latest.
            let cleaned_text = (st.cleaned_to > leo).then(|| {
                st.cleaned_to = leo;
                leo.to_string()
            });
            let epoch_text = st
                .epochs
                .truncate_from_end(Offset(leo))
                .then(|| st.epochs.encode());
            (doomed, leo, epoch_text, cleaned_text)
        };
        write_file_atomic(&dir.join(RECOVERY_POINT_FILE), seg_base.to_string().as_bytes())
            .await
            .map_err(fail)?;
        if let Some(text) = cleaned_text {
            write_file_atomic(
                &dir.join(crate::compact::CLEANER_CHECKPOINT_FILE),
                text.as_bytes(),
            )
            .await
            .map_err(fail)?;
        }
        if let Some(text) = epoch_text {
            write_file_atomic(&dir.join(EPOCH_FILE), text.as_bytes())
                .await
                .map_err(fail)?;
        }
        for &b in doomed.iter().rev() {
            delete_segment_files(&dir, b).map_err(fail)?;
        }
        remove_if_exists(&segment_path(&dir, seg_base, INDEX_SUFFIX)).map_err(fail)?;
        remove_if_exists(&segment_path(&dir, seg_base, TIME_INDEX_SUFFIX)).map_err(fail)?;
        if pos == 0 {
            // Nothing of it stays: the file goes, and the new active
            // segment below takes its name with a new file.
            remove_if_exists(&path).map_err(fail)?;
        } else {
            seam::step(Op::Truncate, &path, 0, pos)
                .map_err(|e| fail(StorageError::io("truncate", &path, e)))?;
            dma.truncate(pos)
                .await
                .map_err(|e| fail(StorageError::io("truncate", &path, e)))?;
            seam::step(Op::Fdatasync, &path, 0, 0)
                .map_err(|e| fail(StorageError::io("fdatasync", &path, e)))?;
            dma.fdatasync()
                .await
                .map_err(|e| fail(StorageError::io("fdatasync", &path, e)))?;
        }
        sync_dir(&dir).await.map_err(fail)?;
        if pos > 0 {
            write_file_atomic(&segment_path(&dir, seg_base, INDEX_SUFFIX), &index)
                .await
                .map_err(fail)?;
            write_file_atomic(&segment_path(&dir, seg_base, TIME_INDEX_SUFFIX), &time_index)
                .await
                .map_err(fail)?;
        }
        let (seg, writer) = create_segment(&dir, leo, &self.config()).await.map_err(fail)?;
        {
            let mut st = self.st();
            st.segments.insert(leo, seg);
            st.writer = writer;
            debug_assert!(st.durable <= st.leo && st.active().base == st.leo);
        }
        write_file_atomic(&dir.join(RECOVERY_POINT_FILE), leo.to_string().as_bytes())
            .await
            .map_err(fail)?;
        Ok(Offset(leo))
    }

    /// Flushes and syncs everything, seals the active segment's files and
    /// marks the shutdown clean, so the next open skips recovery. Further
    /// calls on this log fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        let _permit = self
            .inner
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        // A compaction swapping a segment in finishes first; one still
        // preparing stops at its next step.
        let _segments = self
            .inner
            .segments_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        {
            let st = self.st();
            if st.closed {
                return Ok(());
            }
            self.check_writable(&st)?;
        }
        let (file, _, _) = self.flush_writes().await?;
        let (base, size, index, time_index) = {
            let mut st = self.st();
            let seg = st.active_mut();
            seg.finish_time_index();
            (seg.base, seg.size, seg.index.encode(), seg.time_index.encode())
        };
        self.seal_files(&file, base, size, &index, &time_index)
            .await
            .map_err(|e| self.fail(e))?;
        let dir = &self.inner.dir;
        // A marker that may or may not be on disk leaves the log's state
        // unknown, as any failed write does: the log fails.
        write_file_atomic(&dir.join(CLEAN_SHUTDOWN_FILE), b"")
            .await
            .map_err(|e| self.fail(e))?;
        let mut st = self.st();
        st.durable = st.leo;
        st.closed = true;
        st.cache.clear();
        Ok(())
    }
}

enum ReadPlan {
    Ready(LogRead),
    File(FilePlan),
}

struct FilePlan {
    seg_base: u64,
    reader: Rc<BufferedFile>,
    start_pos: u64,
    limit_pos: u64,
    limit_offset: u64,
}

/// The first record of a batch at or after `ts`; the batch base when its
/// records cannot be decoded (its header already promised such a record).
fn first_at_or_after(batch: &[u8], h: &BatchHeader, ts: TimestampMs) -> (Offset, TimestampMs) {
    if let Ok(records) = decode_records(batch) {
        if let Some(r) = records.iter().find(|r| r.timestamp >= ts.0) {
            return (Offset(r.offset as u64), TimestampMs(r.timestamp));
        }
    }
    (Offset(h.base_offset as u64), TimestampMs(h.max_timestamp))
}

fn delete_segment_files(dir: &Path, base: u64) -> Result<()> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        remove_if_exists(&segment_path(dir, base, suffix))?;
    }
    Ok(())
}

/// Opens (creating) the segment file for `base` and a writer at its start.
pub(crate) async fn create_segment(dir: &Path, base: u64, config: &LogConfig) -> Result<(Segment, Writer)> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    remove_if_exists(&segment_path(dir, base, INDEX_SUFFIX))?;
    remove_if_exists(&segment_path(dir, base, TIME_INDEX_SUFFIX))?;
    seam::step(Op::Create, &path, 0, 0).map_err(|e| StorageError::io("create", &path, e))?;
    let dma = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await
        .map_err(|e| StorageError::io("create", &path, e))?;
    let reader = BufferedFile::open(&path)
        .await
        .map_err(|e| StorageError::io("open", &path, e))?;
    let read_file = std::fs::File::open(&path).map_err(|e| StorageError::io("open", &path, e))?;
    sync_dir(dir).await?;
    let dma = Rc::new(dma);
    let writer = Writer::new(
        dma.clone(),
        path.clone(),
        0,
        &[],
        config.write_buffer_bytes,
        config.preallocate_bytes,
    );
    Ok((
        Segment::new(base, dma, Rc::new(reader), Rc::new(read_file)),
        writer,
    ))
}

/// The bytes of the partial last block of a file of logical size `size`.
pub(crate) async fn read_tail_block(reader: &BufferedFile, path: &Path, size: u64) -> Result<Vec<u8>> {
    let start = crate::fsutil::align_down(size);
    if start == size {
        return Ok(Vec::new());
    }
    let r = reader
        .read_at(start, (size - start) as usize)
        .await
        .map_err(|e| StorageError::io("read", path, e))?;
    if r.len() as u64 != size - start {
        return Err(StorageError::io(
            "read",
            path,
            io::Error::new(io::ErrorKind::UnexpectedEof, "short read of the last block"),
        ));
    }
    Ok(r.to_vec())
}
