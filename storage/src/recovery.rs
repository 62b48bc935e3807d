//! Opening a log: find its segments, trust what a clean shutdown or a
//! durable checkpoint vouches for, and scan the rest batch by batch,
//! checking every CRC. The first invalid batch ends the log: the file is
//! cut there, later segments are deleted, and the report says what went
//! (zeros that run to the end of the active segment are direct-I/O padding,
//! cut without a report; zeros with bytes after them are a lost write).
//!
//! Base offsets are outside the CRC, so recovery checks that each batch
//! follows the previous one exactly; below the cleaner checkpoint
//! (`cleaner-offset-checkpoint`, written by compaction) a batch may also
//! follow a gap ([`crate::segment::follows`]). Leftovers of an interrupted
//! compaction (`.log.cleaned` files) are deleted: the segment they were to
//! replace is still in place. So are segments wholly below the
//! checkpointed log start, which retention had removed before a crash.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use borges_net::types::Offset;
use glommio::io::{BufferedFile, OpenOptions};
use glommio::sync::Semaphore;

use crate::cache::TailCache;
use crate::clock::Clock;
use crate::compact::{CLEANED_SUFFIX, CLEANER_CHECKPOINT_FILE};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{Result, StorageError};
use crate::fsutil::{read_optional, read_u64_checkpoint, remove_if_exists, sync_dir, write_file_atomic};
use crate::index::{OffsetIndex, TimeIndex};
use crate::log::{
    create_segment, read_tail_block, Inner, Log, State, CLEAN_SHUTDOWN_FILE, EPOCH_FILE, LOG_START_FILE,
    RECOVERY_POINT_FILE,
};
use crate::seam::{self, Op};
use crate::segment::{
    follows, parse_segment_name, rebuild_segment, resume_segment, segment_path, ScanStop, Segment,
    INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::writer::Writer;

/// What opening a log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous close was clean: no segment needed a full scan.
    pub clean_shutdown: bool,
    /// Segments read batch by batch with CRC checks.
    pub segments_scanned: usize,
    /// Segments whose index files were missing or invalid and were rebuilt.
    pub indexes_rebuilt: usize,
    /// Where the log was cut, if it was: the segment, the byte position and why.
    pub truncated: Option<Truncation>,
    /// Bytes removed from the end of the log, including whole segments.
    pub bytes_truncated: u64,
    /// Base offsets of segments deleted because they followed the cut.
    pub segments_deleted: Vec<Offset>,
    /// Base offsets of segments deleted because they lay wholly below the
    /// checkpointed log start (retention's unlinks had not reached the disk).
    pub segments_below_log_start: Vec<Offset>,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment: Offset,
    pub position: u64,
    pub reason: ScanStop,
}

struct Found {
    base: u64,
    seg: Segment,
    file_size: u64,
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            // An interrupted atomic write; the old file (if any) is intact.
            remove_if_exists(&entry.path())?;
        } else if name.ends_with(CLEANED_SUFFIX) {
            // An interrupted compaction: the segment it was rewriting was
            // not replaced yet and is intact.
            tracing::info!(dir = %dir.display(), file = name, "removing an unfinished compaction output");
            remove_if_exists(&entry.path())?;
        } else if let Some(base) = parse_segment_name(name, LOG_SUFFIX) {
            bases.push(base);
        }
    }
    // Index files without their segment are leftovers of a deletion.
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let base =
            parse_segment_name(name, INDEX_SUFFIX).or_else(|| parse_segment_name(name, TIME_INDEX_SUFFIX));
        if let Some(base) = base {
            if !bases.contains(&base) {
                remove_if_exists(&entry.path())?;
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

async fn open_segment(dir: &Path, base: u64) -> Result<(Segment, u64)> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let dma = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .map_err(|e| StorageError::io("open", &path, e))?;
    let size = dma
        .file_size()
        .await
        .map_err(|e| StorageError::io("stat", &path, e))?;
    let reader = BufferedFile::open(&path)
        .await
        .map_err(|e| StorageError::io("open", &path, e))?;
    let read_file = std::fs::File::open(&path).map_err(|e| StorageError::io("open", &path, e))?;
    Ok((
        Segment::new(base, Rc::new(dma), Rc::new(reader), Rc::new(read_file)),
        size,
    ))
}

/// Loads a segment's index files; `false` when they are missing or do not
/// fit the segment.
fn load_indexes(dir: &Path, seg: &mut Segment, file_size: u64) -> Result<bool> {
    let Some(ix) = read_optional(&segment_path(dir, seg.base, INDEX_SUFFIX))? else {
        return Ok(false);
    };
    let Some(tix) = read_optional(&segment_path(dir, seg.base, TIME_INDEX_SUFFIX))? else {
        return Ok(false);
    };
    let Some(index) = OffsetIndex::decode(&ix, file_size) else {
        return Ok(false);
    };
    let Some(time_index) = TimeIndex::decode(&tix, u32::MAX as u64 + 1) else {
        return Ok(false);
    };
    if file_size > 0 && time_index.last().is_none() {
        return Ok(false);
    }
    if let Some((t, o)) = time_index.last() {
        seg.max_timestamp = t;
        seg.max_timestamp_rel = o;
    }
    seg.index = index;
    seg.time_index = time_index;
    Ok(true)
}

/// Reads the cleaner checkpoint: `None` when the log was never compacted.
/// An unreadable one cannot say where compaction left gaps, so every gap
/// is accepted (batches must still be in order) rather than have cleaned
/// data cut; it is rewritten once the log end is known.
fn read_cleaner_checkpoint(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    match std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        Some(c) => Ok(Some(c)),
        None => {
            tracing::warn!(path = %path.display(), "cleaner checkpoint unreadable; gaps accepted everywhere");
            Ok(Some(u64::MAX))
        }
    }
}

/// Whether every byte of the segment file from `from` to `size` is zero.
async fn zeros_to_end(seg: &Segment, path: &Path, from: u64, size: u64) -> Result<bool> {
    const CHUNK: u64 = 1 << 20;
    let mut pos = from;
    while pos < size {
        let len = (size - pos).min(CHUNK);
        seam::step(Op::Read, path, pos, len).map_err(|e| StorageError::io("read", path, e))?;
        let bytes = seg
            .reader
            .read_at(pos, len as usize)
            .await
            .map_err(|e| StorageError::io("read", path, e))?;
        if bytes.is_empty() {
            // The file is shorter than its size said: nothing more to see.
            break;
        }
        if bytes.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += bytes.len() as u64;
    }
    Ok(true)
}

impl Log {
    /// Opens the log in `dir` (creating it when empty), recovering from a
    /// crash if the last close was not clean. Must run inside the glommio
    /// executor that will own the log.
    pub async fn open(dir: impl Into<PathBuf>, config: LogConfig, clock: Rc<dyn Clock>) -> Result<Log> {
        config.validate()?;
        let dir: PathBuf = dir.into();
        // glommio opens directories with openat(-1, ..), which refuses a
        // relative path: keep every path absolute.
        let dir = std::path::absolute(&dir).map_err(|e| StorageError::io("resolve directory", &dir, e))?;
        // A new partition directory is synced into its parent, or a power
        // loss could take it, and every acknowledged record in it, away.
        crate::dirs::create_dir_durably(&dir)?;
        let interval = config.index_interval_bytes;
        let clean_marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = read_optional(&clean_marker)?.is_some();
        let recovery_point = read_u64_checkpoint(&dir.join(RECOVERY_POINT_FILE))?.unwrap_or(0);
        let start_checkpoint = read_u64_checkpoint(&dir.join(LOG_START_FILE))?;
        let cleaned_checkpoint = read_cleaner_checkpoint(&dir)?;
        let cleaned_to = cleaned_checkpoint.unwrap_or(0);
        let mut report = RecoveryReport {
            clean_shutdown: clean,
            ..Default::default()
        };

        // A missing checkpoint means no epoch was ever assigned; an
        // unreadable one cannot vouch for the batches' epochs, so they go
        // unchecked rather than have good data cut.
        let (mut epochs, epochs_trusted) = match read_optional(&dir.join(EPOCH_FILE))? {
            Some(bytes) => match LeaderEpochCache::decode(&String::from_utf8_lossy(&bytes)) {
                Ok(c) => (c, true),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "leader epoch checkpoint unreadable; epochs unchecked");
                    (LeaderEpochCache::default(), false)
                }
            },
            None => (LeaderEpochCache::default(), true),
        };
        let check_epochs = epochs_trusted.then_some(&epochs);
        let mut bases = list_segments(&dir)?;
        // Segments wholly below the checkpointed log start are deleted
        // unread: retention removed them from the log (a crash, or a failed
        // unlink, kept their files), and their batches' epochs are no longer
        // in the history, so a scan would cut the whole log at them.
        if let Some(start) = start_checkpoint {
            let holding_start = bases.iter().rposition(|&b| b <= start).unwrap_or(0);
            for base in bases.drain(..holding_start) {
                tracing::info!(dir = %dir.display(), segment = base, log_start = start, "removing a segment below the log start");
                for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    remove_if_exists(&segment_path(&dir, base, suffix))?;
                }
                report.segments_below_log_start.push(Offset(base));
            }
        }
        // Segments from the one holding the recovery point on were written
        // after the last durable checkpoint: they get a full CRC scan.
        let first_unsafe = bases
            .iter()
            .rev()
            .find(|&&b| b <= recovery_point)
            .copied()
            .unwrap_or(0);
        let mut found: Vec<Found> = Vec::new();
        let mut cut = false;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(&dir, base, LOG_SUFFIX);
            if cut {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                report.bytes_truncated += size;
                report.segments_deleted.push(Offset(base));
                for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    remove_if_exists(&segment_path(&dir, base, suffix))?;
                }
                continue;
            }
            let (mut seg, file_size) = open_segment(&dir, base).await?;
            let is_last = i + 1 == bases.len();
            let trusted = clean || base < first_unsafe;
            let mut resumed = false;
            if trusted && load_indexes(&dir, &mut seg, file_size)? {
                resumed = resume_segment(&mut seg, &path, file_size, check_epochs, cleaned_to).await?;
            }
            let mut stop = ScanStop::End;
            let mut valid = file_size;
            if !resumed {
                if trusted {
                    report.indexes_rebuilt += 1;
                }
                report.segments_scanned += 1;
                let outcome = rebuild_segment(
                    &mut seg,
                    &path,
                    file_size,
                    interval,
                    true,
                    check_epochs,
                    cleaned_to,
                )
                .await?;
                stop = outcome.stop;
                valid = outcome.valid_size;
            }
            // The segment's last batch must end where the next segment
            // begins (or before it, after a gap in the cleaned region).
            if let Some(&next_base) = bases.get(i + 1) {
                if stop.is_clean() && !follows(seg.next_offset, next_base, cleaned_to) {
                    stop = ScanStop::OffsetMismatch {
                        expected: seg.next_offset,
                        found: next_base as i64,
                    };
                }
            }
            // A previous segment must end before this one begins.
            if let Some(prev) = found.last() {
                if !follows(prev.seg.next_offset, base, cleaned_to) {
                    stop = ScanStop::OffsetMismatch {
                        expected: prev.seg.next_offset,
                        found: base as i64,
                    };
                    valid = 0;
                }
            }
            // Zeros that run to the end of the active segment are direct-I/O
            // padding (or preallocated space). Zeros with bytes after them
            // are a write that never reached the disk before later ones did:
            // what follows is cut, and the report says so.
            let zero_tail_of_last =
                is_last && stop == ScanStop::Zeros && zeros_to_end(&seg, &path, valid, file_size).await?;
            if !stop.is_clean() {
                if !zero_tail_of_last {
                    tracing::warn!(segment = base, position = valid, reason = ?stop, "log truncated by recovery");
                    report.truncated = Some(Truncation {
                        segment: Offset(base),
                        position: valid,
                        reason: stop.clone(),
                    });
                }
                report.bytes_truncated += file_size - valid;
                cut = !is_last;
                if valid == 0 && !found.is_empty() {
                    // Nothing valid here: the segment goes, the previous one becomes active.
                    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                        remove_if_exists(&segment_path(&dir, base, suffix))?;
                    }
                    report.segments_deleted.push(Offset(base));
                    cut = true;
                    continue;
                }
                // The cut itself waits until the segments after it are gone
                // for good (below): this one is the last kept, whose file is
                // cut to its valid size there.
            }
            found.push(Found {
                base,
                seg,
                file_size: valid,
            });
        }

        // Durable steps from here on, in the order truncate_to uses, so that
        // a crash at any point leaves a disk the next open reads as the same
        // prefix: the segments after the cut are unlinked (above) and the
        // directory synced, so none of them comes back behind a cut segment;
        // the checkpoints are cut down to the new log end (the cleaner's, so
        // that no gap is accepted above it); and only then is the last kept
        // segment cut to its valid size. (Cut first, a crash could keep the
        // cut and undo the unlinks, and a gap the old cleaner checkpoint
        // allows would join the cut segment to the ones that were to go.)
        let log_start_floor = start_checkpoint.unwrap_or(0);
        let last_found = found.last().map(|f| (f.base, f.seg.next_offset));
        if let Some((base, _)) = last_found {
            // The segment that will take new appends loses its index files:
            // they are rewritten when it is sealed.
            remove_if_exists(&segment_path(&dir, base, INDEX_SUFFIX))?;
            remove_if_exists(&segment_path(&dir, base, TIME_INDEX_SUFFIX))?;
        }
        sync_dir(&dir).await?;
        let leo = last_found.map_or(log_start_floor, |(_, next)| next);
        let first_base = found.first().map_or(log_start_floor, |f| f.base);
        let log_start = log_start_floor.max(first_base).min(leo);
        let epochs_changed = !epochs_trusted
            | epochs.truncate_from_end(Offset(leo))
            | epochs.truncate_from_start(Offset(log_start));
        if epochs_changed {
            write_file_atomic(&dir.join(EPOCH_FILE), epochs.encode().as_bytes()).await?;
        }
        // Gaps are allowed only where compaction made them, below the log
        // end: batches appended from here on must follow exactly.
        let cleaned_to = cleaned_to.min(leo);
        if cleaned_checkpoint.is_some_and(|c| c != cleaned_to) {
            write_file_atomic(
                &dir.join(CLEANER_CHECKPOINT_FILE),
                cleaned_to.to_string().as_bytes(),
            )
            .await?;
        }

        let mut segments = BTreeMap::new();
        let writer;
        if found.is_empty() {
            let (seg, w) = create_segment(&dir, log_start_floor, &config).await?;
            segments.insert(log_start_floor, seg);
            writer = w;
        } else {
            let last = found.last().expect("non-empty");
            let path = segment_path(&dir, last.base, LOG_SUFFIX);
            // The active segment continues where its valid data ends; the
            // damaged tail (or the padding) past it goes.
            seam::step(Op::Truncate, &path, 0, last.file_size)
                .map_err(|e| StorageError::io("truncate", &path, e))?;
            last.seg
                .dma
                .truncate(last.file_size)
                .await
                .map_err(|e| StorageError::io("truncate", &path, e))?;
            // Whatever reached the file before a crash may sit only in the
            // page cache; it is durable from here on.
            seam::step(Op::Fdatasync, &path, 0, 0).map_err(|e| StorageError::io("fdatasync", &path, e))?;
            last.seg
                .dma
                .fdatasync()
                .await
                .map_err(|e| StorageError::io("fdatasync", &path, e))?;
            let tail = read_tail_block(&last.seg.reader, &path, last.file_size).await?;
            writer = Writer::new(
                last.seg.dma.clone(),
                path.clone(),
                last.file_size,
                &tail,
                config.write_buffer_bytes,
                config.preallocate_bytes,
            );
            for f in found {
                segments.insert(f.base, f.seg);
            }
        }
        let active_base = *segments.keys().next_back().expect("a segment");
        debug_assert_eq!(leo, segments.values().next_back().expect("a segment").next_offset);
        // From here on the active segment changes: the next open must not
        // trust it, whatever the previous close was.
        write_file_atomic(&dir.join(RECOVERY_POINT_FILE), active_base.to_string().as_bytes()).await?;
        remove_if_exists(&clean_marker)?;
        sync_dir(&dir).await?;

        report.log_start_offset = Offset(log_start);
        report.log_end_offset = Offset(leo);
        let now = clock.now_ms();
        let state = State {
            segments,
            writer,
            cache: TailCache::default(),
            log_start,
            leo,
            durable: leo,
            epochs,
            failed: None,
            closed: false,
            last_sync_ms: now,
            cleaned_to,
            truncations: 0,
            min_leader_epoch: -1,
        };
        Ok(Log {
            inner: Rc::new(Inner {
                dir,
                config: RefCell::new(config),
                clock,
                state: RefCell::new(state),
                append_lock: Semaphore::new(1),
                io_lock: Semaphore::new(1),
                sync_lock: Semaphore::new(1),
                segments_lock: Semaphore::new(1),
                clean_lock: Semaphore::new(1),
                recovery: report,
            }),
        })
    }
}
