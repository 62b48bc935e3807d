//! Log compaction (Kafka's `cleanup.policy=compact`): sealed segments are
//! rewritten keeping, for every key, only its latest record.
//!
//! A run ([`Log::compact`]) has three phases.
//!
//! 1. **Plan.** Everything appended so far is synced first: only a durable
//!    record may supersede older ones, or a crash could take the new value
//!    away after the old one was deleted. The *horizon* is the durable log
//!    end (or the caller's high watermark, if lower). The run cleans the
//!    longest prefix of sealed segments that end at or below the horizon and
//!    whose records are all at least `min_compaction_lag_ms` old; it stops
//!    at the first that is not, because a tombstone may only go once every
//!    older record of its key is gone, and those are all in earlier segments.
//! 2. **Map.** Every batch below the horizon, the active segment's
//!    included, is read once to map each key to its latest offset. Keys are
//!    kept as bytes, so memory grows with the distinct keys and their size;
//!    there are no hash collisions to reason about.
//! 3. **Rewrite.** Each segment of the prefix, oldest first, is filtered:
//!    a record stays if its key is null, or if it is its key's latest and
//!    not a tombstone (null value) at least `delete_retention_ms` old. A
//!    batch keeps its base offset, `lastOffsetDelta`, epoch, producer
//!    fields, attributes and `baseTimestamp`; the kept records are copied
//!    byte for byte (recompressed with the batch's codec when it has one),
//!    and only `recordsCount`, `batchLength`, `maxTimestamp` (recomputed for
//!    CreateTime batches) and the CRC change. An emptied batch is dropped,
//!    leaving a gap in the offsets. Control and transactional batches, and
//!    batches whose records cannot be parsed, are kept as they are. A
//!    segment where nothing goes is not rewritten.
//!
//! **Swap, and crash safety.** A rewritten segment is written to
//! `<base>.log.cleaned` and synced. Then, under the log's segments lock:
//! the cleaner checkpoint (`cleaner-offset-checkpoint`) is raised to the
//! segment's end, so recovery accepts the gaps before any exist; the old
//! index files are deleted; the cleaned file is renamed over the segment;
//! the new index files are written. A crash leaves the old segment (and a
//! `.cleaned` file that the next open deletes) or the new one, whose indexes
//! recovery rebuilds if they are missing. An I/O error in any of these
//! steps (or in the checkpoint write that ends a run) fails the log: a
//! checkpoint whose rename happened but whose directory sync failed may be
//! on disk above the one the log holds, and a later truncation, lowering
//! only what it knows of, would leave a gap the reappearing segments of a
//! crash could cross. Reads in progress keep the old
//! file open through their descriptors and stay valid; a read that planned
//! on the old file and finishes after the swap starts over.
//!
//! Appends, reads and syncs go on during a run: it never takes the append
//! lock. Truncation, retention and close wait for a swap in progress; a
//! run that finds the log truncated or closed under it stops, and one whose
//! segment was replaced or deleted stops before that segment.

use std::borrow::Cow;
use std::collections::HashMap;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use borges_net::batch::{
    update_crc, validate_batch, BatchHeader, Compression, TimestampType, BATCH_HEADER_LEN, LOG_OVERHEAD,
    MAX_BATCH_LEN,
};
use borges_net::types::Offset;
use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};

use crate::config::ALIGN;
use crate::error::{Result, StorageError};
use crate::fsutil::{align_up, remove_if_exists, sync_dir, write_file_atomic};
use crate::log::{lock_closed, Log};
use crate::seam::{self, Op};
use crate::segment::{
    segment_path, HeaderScanner, ScanStop, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};

/// The cleaner checkpoint: one decimal offset, below which the log has been
/// compacted (and recovery accepts gaps between batches).
pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Suffix of a segment being rewritten: `<base>.log.cleaned`.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// Reads of segment files go through a window of this size.
const SCAN_WINDOW: usize = 1 << 20;
/// The throttle sleeps only once the cleaner is this far ahead of its rate,
/// so that it does not arm a timer for every batch.
const THROTTLE_SLACK: Duration = Duration::from_millis(2);

/// Settings of a compaction run (Kafka's topic settings of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionConfig {
    /// A tombstone (null value) that is the latest record of its key is
    /// removed once its timestamp is at least this old; until then it
    /// stays, so that consumers reading the log see the deletion.
    pub delete_retention_ms: i64,
    /// A segment is cleaned only when every record in it is at least this
    /// old (by the batches' max timestamps against the log's clock).
    pub min_compaction_lag_ms: i64,
    /// Caps the cleaner's file I/O (bytes read plus bytes written) per
    /// second; `None` for no cap.
    pub max_bytes_per_sec: Option<u64>,
}

impl Default for CompactionConfig {
    /// Kafka's defaults: one day of tombstones, no lag, no throttle.
    fn default() -> Self {
        CompactionConfig {
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_bytes_per_sec: None,
        }
    }
}

impl CompactionConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::InvalidConfig(m));
        if self.delete_retention_ms < 0 {
            return bad(format!(
                "delete_retention_ms {} must not be negative",
                self.delete_retention_ms
            ));
        }
        if self.min_compaction_lag_ms < 0 {
            return bad(format!(
                "min_compaction_lag_ms {} must not be negative",
                self.min_compaction_lag_ms
            ));
        }
        if self.max_bytes_per_sec == Some(0) {
            return bad("max_bytes_per_sec must be positive".into());
        }
        Ok(())
    }
}

/// What a compaction run did; counters for a metrics probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionOutcome {
    /// Segments of the cleanable prefix that were filtered (rewritten or
    /// found to have nothing to remove).
    pub segments_cleaned: usize,
    /// Segments replaced by a rewritten file.
    pub segments_rewritten: usize,
    /// Bytes read from segment files (building the key map and filtering).
    pub bytes_read: u64,
    /// Bytes written to rewritten segment files.
    pub bytes_written: u64,
    /// Records removed, tombstones included.
    pub records_removed: u64,
    /// Tombstones removed (also counted in `records_removed`).
    pub tombstones_removed: u64,
    /// Batches dropped because none of their records remained.
    pub batches_removed: u64,
    /// Distinct keys in the map.
    pub keys: usize,
    /// The end of the range this run cleaned: every segment below it was
    /// filtered. The first segment's base when nothing was eligible.
    pub cleaned_up_to: Offset,
    /// The run stopped before the end of its range: the log was
    /// truncated, closed, or lost a segment to retention under it.
    pub stopped_early: bool,
}

/// A segment as the run found it when it planned.
struct Source {
    base: u64,
    /// Where the segment's offsets end: the next segment's base (the
    /// horizon for the active segment).
    end: u64,
    dma: Rc<DmaFile>,
    reader: Rc<BufferedFile>,
    read_file: Rc<std::fs::File>,
    size: u64,
    /// Bytes that may be read: the size of a sealed segment, the written
    /// part of the active one.
    limit: u64,
    sealed: bool,
}

struct Plan {
    horizon: u64,
    truncations: u64,
    /// Every segment holding offsets below the horizon, oldest first.
    sources: Vec<Source>,
    /// How many of `sources`, from the first, are to be cleaned.
    cleanable: usize,
    /// The end of the cleanable range.
    clean_end: u64,
}

/// A cleaned segment waiting to be swapped in.
struct Cleaned {
    seg: Segment,
    tmp: PathBuf,
    file: Rc<DmaFile>,
    removed: Removed,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Removed {
    records: u64,
    tombstones: u64,
    batches: u64,
}

impl Removed {
    fn add(&mut self, o: Removed) {
        self.records += o.records;
        self.tombstones += o.tombstones;
        self.batches += o.batches;
    }
}

/// Keeps the cleaner's I/O under its rate, and yields to the shard's other
/// tasks between batches. Pacing uses the monotonic wall clock: it
/// schedules I/O and decides nothing about the data, which uses the log's
/// [`crate::Clock`].
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    async fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed + THROTTLE_SLACK {
                glommio::timer::sleep(due - elapsed).await;
            }
        }
        glommio::yield_if_needed().await;
    }
}

fn cleaned_path(dir: &Path, base: u64) -> PathBuf {
    let mut name = segment_path(dir, base, LOG_SUFFIX).into_os_string();
    name.push(CLEANED_SUFFIX);
    PathBuf::from(name)
}

fn corrupt(path: &Path, pos: u64, what: impl std::fmt::Display) -> StorageError {
    StorageError::io(
        "read",
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("corrupt batch at position {pos}: {what}"),
        ),
    )
}

impl Log {
    /// The cleaner checkpoint: the log has been compacted below this offset.
    pub fn cleaner_checkpoint(&self) -> Offset {
        Offset(self.st().cleaned_to)
    }

    /// Compacts the log's sealed segments: for every key, only its latest
    /// record stays (see the module docs for the rules). Offsets never
    /// change; removed records leave gaps. `upto` is the high watermark of
    /// a replicated log: records at or past it may still be truncated away,
    /// so they never supersede older ones (`None`: the log end).
    ///
    /// Runs beside appends and reads on the owning shard; one run at a
    /// time. Returns what it did. An error while reading the log or
    /// writing a cleaned file ends the run and leaves the log as it was,
    /// except for the segments already swapped in; an error in a swap or in
    /// a cleaner checkpoint write fails the log (`LogFailed`), because what
    /// reached the disk is then unknown.
    pub async fn compact(&self, cfg: &CompactionConfig, upto: Option<Offset>) -> Result<CompactionOutcome> {
        cfg.validate()?;
        let dir = self.inner.dir.clone();
        let _clean = self
            .inner
            .clean_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&dir))?;
        let leo = {
            let st = self.st();
            self.check_writable(&st)?;
            st.leo
        };
        self.sync_to(leo).await?;
        let now = self.inner.clock.now_ms();
        let plan = self.plan_compaction(cfg, upto, now)?;
        let mut throttle = Throttle::new(cfg.max_bytes_per_sec);
        let mut outcome = CompactionOutcome {
            cleaned_up_to: Offset(plan.sources.first().map_or(plan.horizon, |s| s.base)),
            ..Default::default()
        };
        if plan.cleanable == 0 {
            tracing::debug!(dir = %dir.display(), "compaction: no segment is eligible");
            return Ok(outcome);
        }

        let mut map: HashMap<Box<[u8]>, u64> = HashMap::new();
        for src in &plan.sources {
            match self
                .map_segment(src, plan.horizon, &mut map, &mut throttle, &mut outcome)
                .await
            {
                Ok(()) => {}
                Err(_) if self.interrupted(plan.truncations) => {
                    outcome.keys = map.len();
                    outcome.stopped_early = true;
                    return Ok(outcome);
                }
                Err(e) => return Err(e),
            }
        }
        outcome.keys = map.len();
        if self.interrupted(plan.truncations) {
            outcome.stopped_early = true;
            return Ok(outcome);
        }

        let tombstone_cutoff = now.saturating_sub(cfg.delete_retention_ms);
        for src in &plan.sources[..plan.cleanable] {
            if self.interrupted(plan.truncations) {
                outcome.stopped_early = true;
                break;
            }
            let cleaned = self
                .clean_segment(src, &map, tombstone_cutoff, &mut throttle, &mut outcome)
                .await;
            let cleaned = match cleaned {
                Ok(c) => c,
                Err(e) => {
                    remove_if_exists(&cleaned_path(&dir, src.base))?;
                    if self.interrupted(plan.truncations) {
                        outcome.stopped_early = true;
                        break;
                    }
                    return Err(e);
                }
            };
            let Some(cleaned) = cleaned else {
                outcome.segments_cleaned += 1;
                outcome.cleaned_up_to = Offset(src.end);
                continue;
            };
            let removed = cleaned.removed;
            let tmp = cleaned.tmp.clone();
            match self.swap_in(src, cleaned, plan.truncations).await {
                Ok(true) => {
                    outcome.segments_cleaned += 1;
                    outcome.segments_rewritten += 1;
                    outcome.records_removed += removed.records;
                    outcome.tombstones_removed += removed.tombstones;
                    outcome.batches_removed += removed.batches;
                    outcome.cleaned_up_to = Offset(src.end);
                }
                Ok(false) => {
                    remove_if_exists(&tmp)?;
                    outcome.stopped_early = true;
                    break;
                }
                Err(e) => {
                    remove_if_exists(&tmp)?;
                    return Err(e);
                }
            }
        }
        if !outcome.stopped_early {
            // Segments that needed no rewrite are clean too.
            self.raise_checkpoint(plan.clean_end, plan.truncations).await?;
        }
        if outcome.segments_rewritten > 0 {
            tracing::info!(
                dir = %dir.display(),
                cleaned_up_to = outcome.cleaned_up_to.0,
                segments = outcome.segments_rewritten,
                records_removed = outcome.records_removed,
                tombstones_removed = outcome.tombstones_removed,
                bytes_read = outcome.bytes_read,
                bytes_written = outcome.bytes_written,
                keys = outcome.keys,
                stopped_early = outcome.stopped_early,
                "log compacted"
            );
        } else {
            tracing::debug!(
                dir = %dir.display(),
                cleaned_up_to = outcome.cleaned_up_to.0,
                keys = outcome.keys,
                stopped_early = outcome.stopped_early,
                "compaction found nothing to remove"
            );
        }
        Ok(outcome)
    }

    /// Whether the log changed under a run in a way that ends it.
    fn interrupted(&self, truncations: u64) -> bool {
        let st = self.st();
        st.closed || st.failed.is_some() || st.truncations != truncations
    }

    fn plan_compaction(&self, cfg: &CompactionConfig, upto: Option<Offset>, now: i64) -> Result<Plan> {
        let st = self.st();
        self.check_writable(&st)?;
        let horizon = st.durable.min(st.leo).min(upto.map_or(u64::MAX, |u| u.0));
        let lag_cutoff = now.saturating_sub(cfg.min_compaction_lag_ms);
        let segs: Vec<(u64, &Segment)> = st.segments.iter().map(|(&b, s)| (b, s)).collect();
        let mut plan = Plan {
            horizon,
            truncations: st.truncations,
            sources: Vec::new(),
            cleanable: 0,
            clean_end: 0,
        };
        let mut prefix = true;
        for (i, &(base, seg)) in segs.iter().enumerate() {
            if base >= horizon {
                break;
            }
            let next_base = segs.get(i + 1).map(|&(b, _)| b);
            let sealed = next_base.is_some();
            let end = next_base.unwrap_or(horizon);
            let eligible = sealed && end <= horizon && seg.max_timestamp <= lag_cutoff;
            prefix &= eligible;
            if prefix {
                plan.cleanable += 1;
                plan.clean_end = end;
            }
            plan.sources.push(Source {
                base,
                end,
                dma: seg.dma.clone(),
                reader: seg.reader.clone(),
                read_file: seg.read_file.clone(),
                size: seg.size,
                limit: if sealed {
                    seg.size
                } else {
                    st.writer.written_end.min(seg.size)
                },
                sealed,
            });
        }
        Ok(plan)
    }

    /// Adds the keys of one segment's records below the horizon to `map`.
    async fn map_segment(
        &self,
        src: &Source,
        horizon: u64,
        map: &mut HashMap<Box<[u8]>, u64>,
        throttle: &mut Throttle,
        outcome: &mut CompactionOutcome,
    ) -> Result<()> {
        let path = segment_path(&self.inner.dir, src.base, LOG_SUFFIX);
        let mut scanner = HeaderScanner::new(src.reader.clone(), path.clone(), src.limit, SCAN_WINDOW);
        let mut pos = 0u64;
        loop {
            let h = match scanner.batch_at(pos, false).await? {
                Ok(h) => h,
                Err(ScanStop::End) => break,
                // The active segment's written part may end inside a batch
                // past the horizon.
                Err(_) if !src.sealed => break,
                Err(stop) => return Err(corrupt(&path, pos, format!("{stop:?}"))),
            };
            if h.base_offset as u64 >= horizon {
                break;
            }
            let len = h.total_len();
            let bytes = scanner.bytes_at(pos, len).await?;
            validate_batch(bytes).map_err(|e| corrupt(&path, pos, e))?;
            map_batch(bytes, &h, horizon, map);
            pos += len as u64;
            outcome.bytes_read += len as u64;
            throttle.account(len as u64).await;
        }
        Ok(())
    }

    /// Filters one sealed segment into `<base>.log.cleaned`; `None` when
    /// nothing in it goes (and no file was written).
    async fn clean_segment(
        &self,
        src: &Source,
        map: &HashMap<Box<[u8]>, u64>,
        tombstone_cutoff: i64,
        throttle: &mut Throttle,
        outcome: &mut CompactionOutcome,
    ) -> Result<Option<Cleaned>> {
        let dir = &self.inner.dir;
        let config = self.config();
        let path = segment_path(dir, src.base, LOG_SUFFIX);
        let tmp = cleaned_path(dir, src.base);
        let mut scanner = HeaderScanner::new(src.reader.clone(), path.clone(), src.size, SCAN_WINDOW);
        // Tracks the kept batches at their new positions; its files are
        // replaced by the cleaned file's once there is one.
        let mut seg = Segment::new(
            src.base,
            src.dma.clone(),
            src.reader.clone(),
            src.read_file.clone(),
        );
        let mut out: Option<CleanedFile> = None;
        let mut removed = Removed::default();
        let keep = |offset: u64, key: Option<&[u8]>, tombstone: bool, timestamp: i64| {
            let Some(key) = key else { return true };
            let latest = map.get(key).is_none_or(|&l| l <= offset);
            latest && !(tombstone && timestamp <= tombstone_cutoff)
        };
        let interval = config.index_interval_bytes;
        let mut pos = 0u64;
        loop {
            let h = match scanner.batch_at(pos, false).await? {
                Ok(h) => h,
                Err(ScanStop::End) => break,
                Err(stop) => return Err(corrupt(&path, pos, format!("{stop:?}"))),
            };
            let len = h.total_len();
            let verdict = {
                let bytes = scanner.bytes_at(pos, len).await?;
                validate_batch(bytes).map_err(|e| corrupt(&path, pos, e))?;
                let (verdict, gone) = filter_batch(bytes, &h, keep).map_err(|e| corrupt(&path, pos, e))?;
                removed.add(gone);
                // An unchanged batch after the first change is copied while
                // its bytes are at hand.
                if let (Verdict::Keep, Some(file)) = (&verdict, out.as_mut()) {
                    file.copy_in(bytes);
                }
                verdict
            };
            if !matches!(verdict, Verdict::Keep) && out.is_none() {
                // The first change: the batches before it are copied as they are.
                let mut file = CleanedFile::create(&tmp, config.write_buffer_bytes).await?;
                let mut at = 0u64;
                while at < pos {
                    let n = (pos - at).min(SCAN_WINDOW as u64) as usize;
                    file.copy_in(scanner.bytes_at(at, n).await?);
                    file.write_pending().await?;
                    outcome.bytes_read += n as u64;
                    outcome.bytes_written += n as u64;
                    throttle.account(2 * n as u64).await;
                    at += n as u64;
                }
                out = Some(file);
            }
            let new_pos = seg.size;
            match verdict {
                Verdict::Keep => {
                    seg.track_batch(&h, new_pos, interval);
                    if let Some(file) = out.as_mut() {
                        file.write_pending().await?;
                        outcome.bytes_written += len as u64;
                        throttle.account(len as u64).await;
                    }
                }
                Verdict::Drop => {}
                Verdict::Rewrite(b) => {
                    let nh = BatchHeader::parse(&b).map_err(|e| corrupt(&path, pos, e))?;
                    let file = out.as_mut().expect("created at the first change");
                    file.copy_in(&b);
                    file.write_pending().await?;
                    seg.track_batch(&nh, new_pos, interval);
                    outcome.bytes_written += b.len() as u64;
                    throttle.account(b.len() as u64).await;
                }
            }
            pos += len as u64;
            outcome.bytes_read += len as u64;
            throttle.account(len as u64).await;
        }
        let Some(file) = out else {
            return Ok(None);
        };
        debug_assert_eq!(file.size, seg.size);
        let dma = file.finish().await?;
        let reader = BufferedFile::open(&tmp)
            .await
            .map_err(|e| StorageError::io("open", &tmp, e))?;
        let read_file = std::fs::File::open(&tmp).map_err(|e| StorageError::io("open", &tmp, e))?;
        seg.dma = dma.clone();
        seg.reader = Rc::new(reader);
        seg.read_file = Rc::new(read_file);
        seg.finish_time_index();
        tracing::debug!(
            segment = src.base,
            old_bytes = src.size,
            new_bytes = seg.size,
            records_removed = removed.records,
            "segment cleaned"
        );
        Ok(Some(Cleaned {
            seg,
            tmp,
            file: dma,
            removed,
        }))
    }

    /// Replaces `src` by its cleaned version. `false` when the log changed
    /// under the run (the segment is gone or different, or the log was
    /// truncated or closed): nothing was replaced.
    async fn swap_in(&self, src: &Source, cleaned: Cleaned, truncations: u64) -> Result<bool> {
        let dir = self.inner.dir.clone();
        let _segments = self
            .inner
            .segments_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&dir))?;
        {
            let st = self.st();
            if st.closed || st.failed.is_some() || st.truncations != truncations {
                return Ok(false);
            }
            let same = st
                .segments
                .get(&src.base)
                .is_some_and(|s| Rc::ptr_eq(&s.reader, &src.reader) && s.size == src.size);
            if !same {
                return Ok(false);
            }
        }
        // From here on every step changes the live segment's files or the
        // checkpoint recovery reads, and a failed step leaves unknown which
        // of them reached the disk (a rename that failed may have happened;
        // a checkpoint whose directory sync failed may be on disk above
        // what the log holds in memory, and a later truncation would not
        // lower it). As with every other write path, an error fails the log,
        // and the next open reads the disk as it is.
        self.swap_files(src, cleaned).await.map_err(|e| self.fail(e))?;
        Ok(true)
    }

    /// The durable steps of a swap, in order. Caller holds the segments lock.
    async fn swap_files(&self, src: &Source, cleaned: Cleaned) -> Result<()> {
        let dir = &self.inner.dir;
        // Recovery must accept the gaps before there are any on disk.
        self.write_checkpoint(src.end).await?;
        // The old indexes describe the old file: they go before it does, so
        // that no crash leaves them beside the new one (recovery rebuilds
        // missing indexes).
        remove_if_exists(&segment_path(dir, src.base, INDEX_SUFFIX))?;
        remove_if_exists(&segment_path(dir, src.base, TIME_INDEX_SUFFIX))?;
        sync_dir(dir).await?;
        let path = segment_path(dir, src.base, LOG_SUFFIX);
        seam::rename(&cleaned.tmp, &path).map_err(|e| StorageError::io("rename", &cleaned.tmp, e))?;
        cleaned
            .file
            .rename(&path)
            .await
            .map_err(|e| StorageError::io("rename", &cleaned.tmp, e))?;
        let (index, time_index) = (cleaned.seg.index.encode(), cleaned.seg.time_index.encode());
        {
            let mut st = self.st();
            st.segments.insert(src.base, cleaned.seg);
            // Cached batches of the segment point into the old file.
            st.cache.drop_before(src.end);
        }
        sync_dir(dir).await?;
        write_file_atomic(&segment_path(dir, src.base, INDEX_SUFFIX), &index).await?;
        write_file_atomic(&segment_path(dir, src.base, TIME_INDEX_SUFFIX), &time_index).await
    }

    /// Raises the cleaner checkpoint to `to` (never lowers it), unless the
    /// log changed under the run.
    async fn raise_checkpoint(&self, to: u64, truncations: u64) -> Result<()> {
        let _segments = self
            .inner
            .segments_lock
            .acquire_permit(1)
            .await
            .map_err(lock_closed(&self.inner.dir))?;
        if self.interrupted(truncations) {
            return Ok(());
        }
        // A checkpoint write that failed may still be on disk (see swap_in).
        self.write_checkpoint(to).await.map_err(|e| self.fail(e))
    }

    /// Persists a higher cleaner checkpoint. Caller holds the segments lock.
    pub(crate) async fn write_checkpoint(&self, to: u64) -> Result<()> {
        if self.st().cleaned_to >= to {
            return Ok(());
        }
        write_file_atomic(
            &self.inner.dir.join(CLEANER_CHECKPOINT_FILE),
            to.to_string().as_bytes(),
        )
        .await?;
        let mut st = self.st();
        st.cleaned_to = st.cleaned_to.max(to);
        Ok(())
    }
}

/// The output of a segment rewrite: a new file written with direct I/O in
/// aligned buffers, padded at the end and then cut to its logical size.
struct CleanedFile {
    file: Rc<DmaFile>,
    path: PathBuf,
    cap: usize,
    buf: Option<DmaBuffer>,
    /// File position of `buf[0]`, block aligned.
    buf_start: u64,
    buf_len: usize,
    /// Full buffers waiting to be written, with their positions.
    pending: Vec<(DmaBuffer, u64)>,
    /// Logical size.
    size: u64,
}

impl CleanedFile {
    async fn create(path: &Path, cap: usize) -> Result<CleanedFile> {
        seam::step(Op::Create, path, 0, 0).map_err(|e| StorageError::io("create", path, e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await
            .map_err(|e| StorageError::io("create", path, e))?;
        Ok(CleanedFile {
            file: Rc::new(file),
            path: path.to_path_buf(),
            cap,
            buf: None,
            buf_start: 0,
            buf_len: 0,
            pending: Vec::new(),
            size: 0,
        })
    }

    fn copy_in(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let cap = self.cap;
            let file = &self.file;
            let buf = self.buf.get_or_insert_with(|| file.alloc_dma_buffer(cap));
            let n = (cap - self.buf_len).min(data.len());
            buf.as_bytes_mut()[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len == cap {
                let full = self.buf.take().expect("filled above");
                self.pending.push((full, self.buf_start));
                self.buf_start += cap as u64;
                self.buf_len = 0;
            }
        }
    }

    async fn write(&self, buf: DmaBuffer, pos: u64) -> Result<()> {
        let len = buf.len();
        let written = seam::write(&self.path, pos, buf.as_bytes())
            .map_err(|e| StorageError::io("write", &self.path, e))?;
        let n = self
            .file
            .write_at(buf, pos)
            .await
            .map_err(|e| StorageError::io("write", &self.path, e))?;
        if n != len {
            return Err(StorageError::io(
                "write",
                &self.path,
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
            ));
        }
        written.done();
        Ok(())
    }

    async fn write_pending(&mut self) -> Result<()> {
        for (buf, pos) in std::mem::take(&mut self.pending) {
            self.write(buf, pos).await?;
        }
        Ok(())
    }

    /// Writes the rest, cuts the padding and syncs. Returns the file.
    async fn finish(mut self) -> Result<Rc<DmaFile>> {
        self.write_pending().await?;
        if let Some(mut buf) = self.buf.take() {
            if self.buf_len > 0 {
                let padded = align_up(self.buf_len as u64) as usize;
                buf.as_bytes_mut()[self.buf_len..padded].fill(0);
                buf.trim_to_size(padded);
                self.write(buf, self.buf_start).await?;
            }
        }
        debug_assert_eq!(self.buf_start % ALIGN, 0);
        let io = |op, e: std::io::Error| StorageError::io(op, &self.path, e);
        seam::step(Op::Truncate, &self.path, 0, self.size).map_err(|e| io("truncate", e))?;
        self.file
            .truncate(self.size)
            .await
            .map_err(|e| io("truncate", e.into()))?;
        seam::step(Op::Fdatasync, &self.path, 0, 0).map_err(|e| io("fdatasync", e))?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| io("fdatasync", e.into()))?;
        Ok(self.file)
    }
}

/// What happens to one batch.
#[derive(Debug)]
enum Verdict {
    /// Stays as it is.
    Keep,
    /// Every record goes.
    Drop,
    /// Some records go: the batch as rebuilt.
    Rewrite(Vec<u8>),
}

/// One record of a (decompressed) records section, as far as the cleaner
/// needs it. The record's bytes are `section[start..end]`, length prefix
/// included, and are copied unchanged when it is kept.
#[derive(Debug)]
struct RawRecord<'a> {
    start: usize,
    end: usize,
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&'a [u8]>,
    tombstone: bool,
}

/// A bounds-checked reader of Kafka's zigzag varints; every read past the
/// end or malformed encoding is `None`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn unsigned(&mut self, max_bytes: u32) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            // The tenth byte of a varlong may only carry the 64th bit.
            if i == 9 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn varint(&mut self) -> Option<i32> {
        let v = u32::try_from(self.unsigned(5)?).ok()?;
        Some((v >> 1) as i32 ^ -((v & 1) as i32))
    }

    fn varlong(&mut self) -> Option<i64> {
        let v = self.unsigned(10)?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    fn nullable(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            n if n >= 0 => Some(Some(self.bytes(n as usize)?)),
            _ => None,
        }
    }
}

/// Splits a records section into its `recordsCount` records; `None` if it
/// does not hold exactly that many well-formed ones with strictly growing
/// offset deltas up to `lastOffsetDelta`. Headers are not parsed: they stay
/// inside the record's bytes.
fn parse_records<'a>(section: &'a [u8], h: &BatchHeader) -> Option<Vec<RawRecord<'a>>> {
    let mut r = Reader::new(section);
    let count = h.records_count.max(0) as usize;
    // Each record is at least 7 bytes; never trust the count for the allocation.
    let mut out = Vec::with_capacity(count.min(section.len() / 7));
    let mut prev = -1i64;
    for _ in 0..count {
        let start = r.pos;
        let len = r.varint()?;
        if len < 0 {
            return None;
        }
        let mut body = Reader::new(r.bytes(len as usize)?);
        body.byte()?;
        let timestamp_delta = body.varlong()?;
        let offset_delta = body.varint()?;
        if i64::from(offset_delta) <= prev || offset_delta > h.last_offset_delta {
            return None;
        }
        prev = i64::from(offset_delta);
        let key = body.nullable()?;
        let value = body.nullable()?;
        out.push(RawRecord {
            start,
            end: r.pos,
            offset_delta,
            timestamp_delta,
            key,
            tombstone: value.is_none(),
        });
    }
    (r.pos == section.len()).then_some(out)
}

/// The records section of a batch, decompressed; `None` for a codec that
/// is not built in or a stream that does not decode (decompression is
/// capped at `MAX_RECORDS_LEN`: a batch that passed the append checks could
/// still be a decompression bomb).
fn records_section<'a>(batch: &'a [u8], h: &BatchHeader) -> Option<Cow<'a, [u8]>> {
    let raw = batch.get(BATCH_HEADER_LEN..)?;
    match h.compression().ok()? {
        Compression::None => Some(Cow::Borrowed(raw)),
        codec => borges_net::batch::decompress(codec, raw).ok().map(Cow::Owned),
    }
}

/// The timestamp of a record: for LogAppendTime batches the batch's max
/// timestamp, as Kafka reads them.
fn record_timestamp(h: &BatchHeader, r: &RawRecord<'_>) -> i64 {
    match h.timestamp_type() {
        TimestampType::LogAppendTime => h.max_timestamp,
        TimestampType::CreateTime => h.base_timestamp.wrapping_add(r.timestamp_delta),
    }
}

/// Whether the cleaner leaves a batch alone: control and transactional
/// batches are not compacted.
fn untouchable(h: &BatchHeader) -> bool {
    h.is_control() || h.is_transactional()
}

/// Records the latest offset of each key of a batch.
fn map_batch(batch: &[u8], h: &BatchHeader, horizon: u64, map: &mut HashMap<Box<[u8]>, u64>) {
    if untouchable(h) {
        return;
    }
    let Some(section) = records_section(batch, h) else {
        return;
    };
    let Some(records) = parse_records(&section, h) else {
        return;
    };
    for r in &records {
        let Some(key) = r.key else { continue };
        let offset = h.base_offset as u64 + r.offset_delta as u64;
        if offset >= horizon {
            continue;
        }
        match map.get_mut(key) {
            Some(latest) => *latest = (*latest).max(offset),
            None => {
                map.insert(key.into(), offset);
            }
        }
    }
}

/// Decides one batch: `keep(offset, key, is_tombstone, timestamp)` says
/// whether a record stays. Returns the verdict and what went. Fails only
/// when a rebuilt batch cannot be encoded.
fn filter_batch(
    batch: &[u8],
    h: &BatchHeader,
    keep: impl Fn(u64, Option<&[u8]>, bool, i64) -> bool,
) -> std::result::Result<(Verdict, Removed), String> {
    let unchanged = Ok((Verdict::Keep, Removed::default()));
    if untouchable(h) {
        return unchanged;
    }
    let codec = match h.compression() {
        Ok(c) => c,
        Err(_) => return unchanged,
    };
    let Some(section) = records_section(batch, h) else {
        return unchanged;
    };
    let Some(records) = parse_records(&section, h) else {
        return unchanged;
    };
    let mut removed = Removed::default();
    let kept: Vec<&RawRecord<'_>> = records
        .iter()
        .filter(|r| {
            let offset = h.base_offset as u64 + r.offset_delta as u64;
            let stays = keep(offset, r.key, r.tombstone, record_timestamp(h, r));
            if !stays {
                removed.records += 1;
                removed.tombstones += u64::from(r.tombstone);
            }
            stays
        })
        .collect();
    if removed.records == 0 {
        return unchanged;
    }
    if kept.is_empty() {
        removed.batches = 1;
        return Ok((Verdict::Drop, removed));
    }
    let rebuilt = rebuild_batch(h, codec, &section, &kept)?;
    Ok((Verdict::Rewrite(rebuilt), removed))
}

/// A batch with `h`'s header fields and only the `kept` records, copied
/// from `section`: recordsCount, batchLength, maxTimestamp (CreateTime)
/// and the CRC are recomputed; nothing else changes.
fn rebuild_batch(
    h: &BatchHeader,
    codec: Compression,
    section: &[u8],
    kept: &[&RawRecord<'_>],
) -> std::result::Result<Vec<u8>, String> {
    let records_len: usize = kept.iter().map(|r| r.end - r.start).sum();
    let mut records = Vec::with_capacity(records_len);
    for r in kept {
        records.extend_from_slice(&section[r.start..r.end]);
    }
    let mut out = bytes::BytesMut::with_capacity(BATCH_HEADER_LEN + records_len);
    out.resize(BATCH_HEADER_LEN, 0);
    borges_net::batch::compress(codec, &records, &mut out).map_err(|e| format!("recompressing: {e}"))?;
    let batch_length = out.len() - LOG_OVERHEAD;
    if batch_length > MAX_BATCH_LEN {
        return Err(format!(
            "rebuilt batch of {batch_length} bytes exceeds {MAX_BATCH_LEN}"
        ));
    }
    let mut nh = *h;
    nh.batch_length = batch_length as i32;
    nh.records_count = kept.len() as i32;
    if h.timestamp_type() == TimestampType::CreateTime {
        nh.max_timestamp = kept
            .iter()
            .map(|r| record_timestamp(h, r))
            .max()
            .expect("a rebuilt batch keeps a record");
    }
    out[..BATCH_HEADER_LEN].copy_from_slice(&nh.to_bytes());
    update_crc(&mut out);
    Ok(out.to_vec())
}

#[cfg(test)]
mod tests {
    use borges_net::batch::{decode_records, validate_batch_deep, RecordBatchBuilder};

    use super::*;

    fn batch(codec: Compression, records: &[(Option<&str>, Option<&str>, i64)]) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new(codec)
            .producer(77, 3, 1000)
            .base_offset(500)
            .partition_leader_epoch(4);
        for (k, v, ts) in records {
            b.push(
                *ts,
                k.map(str::as_bytes),
                v.map(str::as_bytes),
                &[("h", Some(b"x".as_slice()))],
            );
        }
        b.build().unwrap().to_vec()
    }

    #[test]
    fn varints_round_trip_and_refuse_overlong() {
        let cases: [(&[u8], i64); 4] = [(&[0], 0), (&[1], -1), (&[2], 1), (&[0x80, 1], 64)];
        for (bytes, v) in cases {
            assert_eq!(Reader::new(bytes).varlong(), Some(v));
            assert_eq!(Reader::new(bytes).varint(), Some(v as i32));
        }
        assert_eq!(
            Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).varint(),
            Some(i32::MAX)
        );
        assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]).varint(), None);
        assert_eq!(Reader::new(&[0x80; 6]).varint(), None);
        assert_eq!(Reader::new(&[0x80]).varint(), None);
        let mut max = [0xffu8; 10];
        max[9] = 0x01;
        assert_eq!(Reader::new(&max).varlong(), Some(i64::MIN));
        max[9] = 0x02;
        assert_eq!(Reader::new(&max).varlong(), None);
    }

    #[test]
    fn filtering_keeps_offsets_fields_and_codec() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let b = batch(
                codec,
                &[
                    (Some("a"), Some("1"), 1000),
                    (Some("b"), Some("2"), 1005),
                    (None, Some("3"), 990),
                    (Some("a"), None, 1002),
                ],
            );
            let h = validate_batch(&b).unwrap();
            // Drop offset 500 and 501: the rest keeps its offsets.
            let (verdict, removed) = filter_batch(&b, &h, |o, _, _, _| o >= 502).unwrap();
            assert_eq!(removed.records, 2);
            let Verdict::Rewrite(nb) = verdict else {
                panic!("expected a rewrite, got {verdict:?}")
            };
            let nh = validate_batch_deep(&nb).unwrap();
            assert_eq!(nh.base_offset, 500);
            assert_eq!(nh.last_offset_delta, 3);
            assert_eq!(nh.records_count, 2);
            assert_eq!(nh.partition_leader_epoch, 4);
            assert_eq!(
                (nh.producer_id, nh.producer_epoch, nh.base_sequence),
                (77, 3, 1000)
            );
            assert_eq!(nh.attributes, h.attributes);
            assert_eq!(nh.compression().unwrap(), codec);
            assert_eq!(nh.base_timestamp, 1000);
            assert_eq!(nh.max_timestamp, 1002, "max of the records kept");
            let recs = decode_records(&nb).unwrap();
            assert_eq!(recs.len(), 2);
            assert_eq!((recs[0].offset, recs[0].timestamp), (502, 990));
            assert!(recs[0].key.is_none());
            assert_eq!((recs[1].offset, recs[1].timestamp), (503, 1002));
            assert!(recs[1].value.is_none());
            assert_eq!(recs[1].headers[0].key, "h");

            let (verdict, _) = filter_batch(&b, &h, |_, _, _, _| true).unwrap();
            assert!(matches!(verdict, Verdict::Keep));
            let (verdict, removed) = filter_batch(&b, &h, |_, _, _, _| false).unwrap();
            assert!(matches!(verdict, Verdict::Drop));
            assert_eq!((removed.records, removed.tombstones, removed.batches), (4, 1, 1));
        }
    }

    #[test]
    fn map_takes_the_latest_offset_below_the_horizon() {
        let b = batch(
            Compression::Lz4,
            &[
                (Some("a"), Some("1"), 1),
                (Some("b"), Some("2"), 2),
                (Some("a"), Some("3"), 3),
            ],
        );
        let h = validate_batch(&b).unwrap();
        let mut map = HashMap::new();
        map_batch(&b, &h, 502, &mut map);
        assert_eq!(map.get(b"a".as_slice()), Some(&500));
        assert_eq!(map.get(b"b".as_slice()), Some(&501));
        map_batch(&b, &h, u64::MAX, &mut map);
        assert_eq!(map.get(b"a".as_slice()), Some(&502));
    }

    #[test]
    fn malformed_records_leave_the_batch_alone() {
        let mut b = batch(Compression::None, &[(Some("a"), Some("1"), 1)]);
        // A record length beyond the section, under a valid CRC.
        b[BATCH_HEADER_LEN] = 0x7e;
        update_crc(&mut b);
        let h = validate_batch(&b).unwrap();
        let (verdict, removed) = filter_batch(&b, &h, |_, _, _, _| false).unwrap();
        assert!(matches!(verdict, Verdict::Keep));
        assert_eq!(removed, Removed::default());
        let mut map = HashMap::new();
        map_batch(&b, &h, u64::MAX, &mut map);
        assert!(map.is_empty());
    }
}
