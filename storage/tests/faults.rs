//! Crash consistency and error paths (issue 18): retention whose unlinks a
//! crash undid, write errors seen first by a read, a sync racing a
//! truncation, reads and file ranges across a truncation, a truncation
//! interrupted before its segments went, and directory syncs around
//! partition directories, a failed compaction swap before a truncation.
//! Faults come from the storage seam (`borges_storage::seam`), which is per
//! thread, so these tests run in parallel without seeing each other's
//! faults.

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use borges_net::batch::Compression;
use borges_net::types::{LeaderEpoch, Offset, PartitionId, TimestampMs};
use borges_storage::seam::{self, Op};
use borges_storage::simdisk::{DirOrder, SimDisk, SimRng};
use borges_storage::{
    Chunk, Clock, CompactionConfig, DataDirs, FlushPolicy, Log, LogConfig, ManualClock, StorageError,
};
use common::*;

fn small() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4 << 10,
        segment_ms_max: None,
        index_interval_bytes: 256,
        write_buffer_bytes: 8 << 10,
        flush: FlushPolicy::EveryBatch,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

/// Appends `batches` batches of three records under epochs 0 then 1;
/// returns every record as (offset, value).
async fn fill(log: &Log, batches: u64) -> Vec<(u64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut seq = 0;
    for i in 0..batches {
        let len = 40 + (i as usize * 13) % 80;
        let epoch = LeaderEpoch(if i < batches / 2 { 0 } else { 1 });
        let info = log
            .append(numbered_batch(seq, 3, len, 1000 + i as i64), epoch)
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(seq));
        all.extend((0..3).map(|j| (seq + j, value(seq + j, len))));
        seq += 3;
    }
    all
}

fn segment_files(dir: &Path, base: Offset) -> Vec<PathBuf> {
    ["log", "index", "timeindex"]
        .iter()
        .map(|s| dir.join(format!("{:020}.{s}", base.0)))
        .collect()
}

fn bases_on_disk(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// Issue 18, item 1, as reproduced: retention advanced the log start and
/// the old first segment came back (a crash between the checkpoint writes
/// and the unlinks). Reopening keeps every record at or above the log
/// start and deletes the segment the checkpoint excludes.
#[test]
fn an_old_segment_put_back_after_retention_is_deleted_on_open() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small()).await;
        let all = fill(&log, 80).await;
        let first = log.segment_bases()[0];
        let saved: Vec<(PathBuf, Vec<u8>)> = segment_files(dir.path(), first)
            .into_iter()
            .filter_map(|p| Some((p.clone(), std::fs::read(&p).ok()?)))
            .collect();
        assert!(!saved.is_empty());
        let total = log.size_bytes();
        log.set_config(LogConfig {
            retention_bytes: Some(total / 2),
            ..small()
        })
        .unwrap();
        let out = log.apply_retention().await.unwrap();
        assert!(out.segments_deleted >= 2, "{out:?}");
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let kept: Vec<_> = all.iter().filter(|(o, _)| *o >= start.0).cloned().collect();
        assert_eq!(read_all(&log, start, 1 << 20).await, kept);
        drop(log);
        for (p, bytes) in &saved {
            std::fs::write(p, bytes).unwrap();
        }
        let log = open(dir.path(), small()).await;
        assert_eq!(log.log_end_offset(), end, "{:?}", log.recovery_report());
        assert_eq!(log.log_start_offset(), start);
        assert!(
            log.recovery_report().truncated.is_none(),
            "{:?}",
            log.recovery_report()
        );
        assert_eq!(read_all(&log, start, 1 << 20).await, kept);
        assert!(
            !segment_files(dir.path(), first)[0].exists(),
            "the excluded segment is gone"
        );
        // And again, after a clean close.
        log.close().await.unwrap();
        let log = open(dir.path(), small()).await;
        assert_eq!(read_all(&log, start, 1 << 20).await, kept);
    });
}

/// Issue 18, item 1, the ordering: retention unlinks its segments before
/// the log-start checkpoint says they are gone, so a failed unlink (or a
/// crash before the unlinks) never leaves a checkpoint above a segment on
/// disk.
#[test]
fn retention_unlinks_before_it_moves_the_log_start_checkpoint() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small()).await;
        let all = fill(&log, 80).await;
        log.set_config(LogConfig {
            retention_bytes: Some(log.size_bytes() / 2),
            ..small()
        })
        .unwrap();
        seam::fail(Op::Unlink, 0, 1, libc::EIO, Some(".log"));
        let r = log.apply_retention().await;
        seam::reset();
        assert!(r.is_err(), "{r:?}");
        let first_on_disk = bases_on_disk(dir.path())[0];
        let checkpoint = std::fs::read_to_string(dir.path().join("log-start-offset"))
            .ok()
            .map(|t| t.trim().parse::<u64>().unwrap());
        assert!(
            checkpoint.is_none_or(|c| c <= first_on_disk),
            "checkpoint {checkpoint:?} above the first segment on disk {first_on_disk}"
        );
        drop(log);
        let log = open(dir.path(), small()).await;
        let start = log.log_start_offset();
        let kept: Vec<_> = all.iter().filter(|(o, _)| *o >= start.0).cloned().collect();
        assert_eq!(read_all(&log, start, 1 << 20).await, kept);
        assert_eq!(log.log_end_offset().0, all.len() as u64);
    });
}

/// Issue 18, item 2: a background write fails and a read is the first to
/// see it. The log is failed from then on (appends and syncs refuse with
/// `LogFailed`), nothing is acknowledged over the hole, and reads go on
/// from memory: the unwritten batches stay in the tail cache.
#[test]
fn a_write_error_seen_by_a_read_poisons_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            write_buffer_bytes: 4 << 10,
            tail_cache_bytes_max: 0,
            preallocate_bytes: 0,
            flush: FlushPolicy::Never,
            ..small()
        };
        let log = open(dir.path(), config).await;
        seam::fail(Op::Write, 0, 1, libc::EIO, Some(".log"));
        // The write fails once the append has returned, as a real one would.
        let gate = seam::hold(Op::Write);
        // More than one write buffer: the full ones go to the disk at once.
        let info = append(&log, numbered_batch(0, 40, 200, 1000)).await;
        gate.open();
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let r = log.read(Offset(0), 1 << 20, None).await.unwrap();
        assert!(
            matches!(r.chunks[0], Chunk::Memory(_)),
            "unwritten data is served from memory"
        );
        assert_eq!(r.next_offset.0, info.last_offset.0 + 1);
        let again = log
            .append(numbered_batch(40, 1, 10, 2000), LeaderEpoch::NONE)
            .await;
        assert!(matches!(again, Err(StorageError::LogFailed(..))), "{again:?}");
        let sync = log.sync().await;
        assert!(matches!(sync, Err(StorageError::LogFailed(..))), "{sync:?}");
        assert_eq!(log.durable_offset(), Offset(0));
        let got = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(got.len(), 40);
        seam::reset();
    });
}

/// Issue 18, item 3: a sync that started before a truncation finishes
/// after it. The durable offset never ends above the log end.
#[test]
fn a_sync_racing_a_truncation_never_leaves_durable_above_the_log_end() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush: FlushPolicy::Never,
            segment_bytes_max: 1 << 20,
            ..small()
        };
        let log = open(dir.path(), config).await;
        fill(&log, 20).await;
        let gate = seam::hold(Op::Fdatasync);
        let l = log.clone();
        let sync = glommio::spawn_local(async move { l.sync().await });
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let l = log.clone();
        let truncate = glommio::spawn_local(async move { l.truncate_to(Offset(10)).await });
        glommio::timer::sleep(Duration::from_millis(50)).await;
        gate.open();
        sync.await.unwrap();
        let leo = truncate.await.unwrap();
        seam::reset();
        assert_eq!(leo, Offset(9));
        assert_eq!(log.log_end_offset(), Offset(9));
        assert!(
            log.durable_offset() <= log.log_end_offset(),
            "durable {:?} above the log end {:?}",
            log.durable_offset(),
            log.log_end_offset()
        );
        // An append past the stale mark is synced, not acknowledged at once.
        let before = log.log_end_offset();
        append(&log, numbered_batch(9, 1, 10, 0)).await;
        log.sync().await.unwrap();
        assert!(log.durable_offset() > before);
    });
}

/// Issue 18, item 4: reads and syncs go on while a truncation cuts the only
/// segment, and never find the log without a segment.
#[test]
fn reads_during_a_truncation_of_the_only_segment_do_not_panic() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            tail_cache_bytes_max: 0,
            ..small()
        };
        let log = open(dir.path(), config).await;
        let all = fill(&log, 300).await;
        assert_eq!(log.segment_count(), 1);
        let done = Rc::new(std::cell::Cell::new(false));
        let mut readers = Vec::new();
        for k in 0..4u64 {
            let (l, done) = (log.clone(), done.clone());
            readers.push(glommio::spawn_local(async move {
                let mut reads = 0;
                while !done.get() {
                    let from = Offset((k * 97 + reads * 31) % 150);
                    if let Ok(r) = l.read(from, 4096, None).await {
                        assert!(r.next_offset >= from);
                    }
                    let _ = l.sync().await;
                    reads += 1;
                    glommio::yield_if_needed().await;
                }
                reads
            }));
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
        let leo = log.truncate_to(Offset(450)).await.unwrap();
        done.set(true);
        for r in readers {
            r.await;
        }
        assert_eq!(leo, Offset(450));
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await, all[..450].to_vec());
    });
}

/// Issue 18, item 4: a truncation that cannot read its segment back fails
/// with a typed error and fails the log; nothing panics, and reads of what
/// is in memory go on.
#[test]
fn a_truncation_that_cannot_read_its_segment_fails_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            ..small()
        };
        let log = open(dir.path(), config).await;
        fill(&log, 100).await;
        seam::fail(Op::Read, 0, 1000, libc::EIO, Some(".log"));
        let r = log.truncate_to(Offset(150)).await;
        seam::reset();
        assert!(matches!(r, Err(StorageError::Io { op: "read", .. })), "{r:?}");
        let again = log.append(numbered_batch(0, 1, 10, 0), LeaderEpoch::NONE).await;
        assert!(matches!(again, Err(StorageError::LogFailed(..))), "{again:?}");
        assert_eq!(log.log_end_offset(), Offset(300), "nothing was cut");
        log.read(Offset(299), 1 << 10, None).await.unwrap();
        drop(log);
        let log = open(dir.path(), small()).await;
        assert_eq!(log.log_end_offset(), Offset(300));
    });
}

/// Issue 18, item 4: a truncation whose scan of the cut segment meets a
/// damaged batch below the target fails with a typed error and fails the
/// log, instead of cutting the log at the damage, further than it was
/// asked to, without a word.
#[test]
fn a_truncation_that_meets_damage_below_its_target_fails_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        // One segment with one index entry, so that the scan starts at 0.
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            index_interval_bytes: 1 << 20,
            ..small()
        };
        let log = open(dir.path(), config).await;
        fill(&log, 20).await;
        assert_eq!(log.segment_count(), 1);
        // The magic byte of the header of the batch at offset 15.
        let (mut position, mut next) = (0, Offset(0));
        while next < Offset(15) {
            let r = log.read(next, 1, None).await.unwrap();
            position += r.bytes;
            next = r.next_offset;
        }
        assert_eq!(next, Offset(15));
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[position + 16], 2, "magic v2 at {position}");
        bytes[position + 16] = 7;
        std::fs::write(&path, &bytes).unwrap();
        let t = log.truncate_to(Offset(45)).await;
        assert!(matches!(t, Err(StorageError::Corrupt { .. })), "{t:?}");
        assert_eq!(log.log_end_offset(), Offset(60), "nothing was cut");
        let again = log.append(numbered_batch(0, 1, 10, 0), LeaderEpoch::NONE).await;
        assert!(matches!(again, Err(StorageError::LogFailed(..))), "{again:?}");
    });
}

/// A timestamp lookup that meets a damaged batch fails with a typed error
/// instead of answering as if every later record were older.
#[test]
fn a_timestamp_lookup_that_meets_damage_fails() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            index_interval_bytes: 1 << 20,
            tail_cache_bytes_max: 0,
            ..small()
        };
        let log = open(dir.path(), config).await;
        fill(&log, 20).await;
        log.roll().await.unwrap();
        let found = log.offset_for_timestamp(TimestampMs(1015)).await.unwrap();
        assert!(found.is_some_and(|f| f.0 > Offset(15)), "{found:?}");
        let (mut position, mut next) = (0, Offset(0));
        while next < Offset(15) {
            let r = log.read(next, 1, None).await.unwrap();
            position += r.bytes;
            next = r.next_offset;
        }
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[position + 16], 2, "magic v2 at {position}");
        bytes[position + 16] = 7;
        std::fs::write(&path, &bytes).unwrap();
        let found = log.offset_for_timestamp(TimestampMs(1015)).await;
        assert!(matches!(found, Err(StorageError::Corrupt { .. })), "{found:?}");
    });
}

/// Issue 18, item 4: a file range handed out before a truncation never
/// sends bytes appended after it: it sends what it was handed out with, or
/// comes up short.
#[test]
fn file_ranges_from_before_a_truncation_never_carry_later_appends() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            tail_cache_bytes_max: 0,
            ..small()
        };
        let log = open(dir.path(), config).await;
        fill(&log, 50).await;
        let r = log.read(Offset(90), 1 << 20, None).await.unwrap();
        let Chunk::File(slice) = r.chunks[0].clone() else {
            panic!("expected a file range")
        };
        let before = slice.read_to_vec().unwrap();
        log.truncate_to(Offset(60)).await.unwrap();
        let mut seq = 60;
        for i in 0..60 {
            append(&log, numbered_batch(1000 + seq, 3, 50 + i % 20, 5000)).await;
            seq += 3;
        }
        log.sync().await.unwrap();
        match slice.read_to_vec() {
            Ok(after) => assert_eq!(after, before, "an old range sent new bytes"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        }
    });
}

/// Issue 18, item 5: a truncation into the cleaned region fails before its
/// later segments are gone (as a crash would leave it). Reopened, the log
/// is a prefix of what it was: never the cut segment followed, across a
/// gap the cleaner checkpoint still allows, by the segments that were to go.
#[test]
fn an_interrupted_truncation_never_leaves_a_hole() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let now = 10_000_000;
        let clock = Rc::new(ManualClock::new(now));
        let open_at = || Log::open(dir.path(), small(), clock.clone() as Rc<dyn Clock>);
        let log = open_at().await.unwrap();
        let mut all = Vec::new();
        for i in 0..150u64 {
            let k = format!("k{i}");
            let v = format!("value-{i:04}-{}", "y".repeat(40));
            let mut b = borges_net::batch::RecordBatchBuilder::new(Compression::None);
            b.push(now - 1000, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
            let info = append(&log, b.build().unwrap()).await;
            all.push((info.base_offset.0, v.into_bytes()));
        }
        log.roll().await.unwrap();
        let cfg = CompactionConfig {
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
            max_bytes_per_sec: None,
        };
        log.compact(&cfg, None).await.unwrap();
        let bases = log.segment_bases();
        let cleaned_to = log.cleaner_checkpoint().0;
        assert!(
            bases.len() >= 4 && bases[2].0 <= cleaned_to,
            "{bases:?} {cleaned_to}"
        );
        let target = (bases[1].0 + bases[2].0) / 2;
        seam::fail(Op::Unlink, 0, 1, libc::EIO, Some(".log"));
        let r = log.truncate_to(Offset(target)).await;
        seam::reset();
        assert!(r.is_err(), "{r:?}");
        drop(log);
        let log = open_at().await.unwrap();
        let got: Vec<(u64, Vec<u8>)> = read_all(&log, Offset(0), 1 << 20).await;
        let offsets: Vec<u64> = got.iter().map(|r| r.0).collect();
        let prefix: Vec<u64> = all[..got.len()].iter().map(|r| r.0).collect();
        assert_eq!(offsets, prefix, "the log is a prefix of what it was");
        assert!(got.len() as u64 >= target, "{} records", got.len());
        assert!(got == all[..got.len()], "the records are the ones appended");
    });
}

/// Issue 18, item 7: a partition directory is synced into its data
/// directory when it is created and when it is removed.
#[test]
fn partition_directories_are_synced_into_their_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let data = std::path::absolute(root.path().join("data")).unwrap();
    let dirs = DataDirs::new(vec![data.clone()]).unwrap();
    seam::record();
    let p = dirs.place("orders", PartitionId(3)).unwrap();
    let ev = seam::events();
    let created = ev.iter().position(|e| e.op == Op::CreateDir && e.path == p);
    let synced = ev.iter().rposition(|e| e.op == Op::SyncDir && e.path == data);
    assert!(created.is_some() && synced > created, "{ev:?}");
    std::fs::write(p.join("00000000000000000000.log"), b"x").unwrap();
    seam::record();
    assert!(dirs.remove("orders", PartitionId(3)).unwrap());
    let ev = seam::events();
    // Renamed out of the way durably first, then removed durably.
    let renamed = ev.iter().position(|e| e.op == Op::Rename && e.path == p);
    let removed = ev.iter().position(|e| e.op == Op::RemoveDir);
    let synced = ev.iter().rposition(|e| e.op == Op::SyncDir && e.path == data);
    let synced_first = ev.iter().position(|e| e.op == Op::SyncDir && e.path == data);
    assert!(
        renamed.is_some() && synced_first > renamed && removed > synced_first && synced > removed,
        "{ev:?}"
    );
    assert!(!p.exists() && std::fs::read_dir(&data).unwrap().next().is_none());
    seam::reset();
    // A removal a crash interrupted is finished when the directories are opened.
    let left = data.join("orders-4.deleted");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("00000000000000000000.log"), b"x").unwrap();
    assert!(
        dirs.list().unwrap().is_empty(),
        "a removed partition is never listed"
    );
    DataDirs::new(vec![data.clone()]).unwrap();
    assert!(!left.exists());
}

/// Issue 18, item 7: a partition directory that already exists may exist
/// only un-synced (a crash after its mkdir, before its parent's fsync), so
/// placing it again syncs it into its data directory all the same, and its
/// caller never writes into a directory a power loss could take away.
#[test]
fn placing_an_existing_partition_directory_syncs_it_into_its_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let data = std::path::absolute(root.path().join("data")).unwrap();
    let dirs = DataDirs::new(vec![data.clone()]).unwrap();
    let p = dirs.place("orders", PartitionId(1)).unwrap();
    seam::record();
    assert_eq!(dirs.place("orders", PartitionId(1)).unwrap(), p);
    let ev = seam::take_events();
    seam::reset();
    assert!(ev.iter().any(|e| e.op == Op::SyncDir && e.path == data), "{ev:?}");
}

/// Issue 18, item 7, through the disk model: a new topic's data directory
/// and partition directory, created while the steps are recorded, survive
/// the worst crash after acks=all appends to it, with every record.
#[test]
fn a_new_partition_and_its_acknowledged_records_survive_the_worst_crash() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::path::absolute(tmp.path()).unwrap();
        seam::reset();
        seam::record();
        let dirs = DataDirs::new(vec![root.join("data")]).unwrap();
        let dir = dirs.place("orders", PartitionId(0)).unwrap();
        let log = open(&dir, small()).await;
        let all = fill(&log, 20).await;
        let events = seam::take_events();
        seam::reset();
        let mut disk = SimDisk::new(&root, &[]);
        for e in &events {
            disk.apply(e);
        }
        assert!(disk.untracked.is_empty(), "{:?}", disk.untracked);
        let copy = tempfile::tempdir().unwrap();
        let copy_root = std::path::absolute(copy.path()).unwrap();
        SimDisk::materialize(&disk.durable(), &copy_root).unwrap();
        let copy_dir = copy_root.join("data").join("orders-0");
        assert!(copy_dir.is_dir(), "the partition directory was lost");
        let log = open(&copy_dir, small()).await;
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await, all);
    });
}

/// Issue 18, item 7: a log opened in a new directory syncs it into its parent.
#[test]
fn a_new_log_directory_is_synced_into_its_parent() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let parent = std::path::absolute(root.path()).unwrap();
        let dir = parent.join("t-0");
        seam::record();
        let log = open(&dir, small()).await;
        let ev = seam::events();
        seam::reset();
        // Synced after it was made (an existing directory is synced too).
        let created = ev.iter().position(|e| e.op == Op::CreateDir && e.path == dir);
        let synced = ev.iter().rposition(|e| e.op == Op::SyncDir && e.path == parent);
        assert!(created.is_some() && synced > created, "{ev:?}");
        drop(log);
    });
}

/// The disk under `root` after the worst crash now (nothing un-synced
/// survives), from the steps recorded since `seam::record`, written to a
/// fresh directory; returns it and the partition directory in it.
fn durable_copy(root: &Path, dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let mut disk = SimDisk::new(root, &[dir.to_path_buf()]);
    for e in &seam::events() {
        disk.apply(e);
    }
    assert!(disk.untracked.is_empty(), "{:?}", disk.untracked);
    let copy = tempfile::tempdir().unwrap();
    let copy_root = std::path::absolute(copy.path()).unwrap();
    SimDisk::materialize(&disk.durable(), &copy_root).unwrap();
    let copy_dir = copy_root.join(dir.strip_prefix(root).unwrap());
    std::fs::create_dir_all(&copy_dir).unwrap();
    (copy, copy_dir)
}

/// A fresh partition directory under an absolute root.
fn fresh_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::path::absolute(tmp.path()).unwrap();
    let dir = root.join("p-0");
    std::fs::create_dir_all(&dir).unwrap();
    (tmp, root, dir)
}

/// Review finding 1: an append under a new leader epoch must not let a
/// concurrent sync make its batch durable before the epoch checkpoint
/// says the epoch exists; otherwise a crash leaves a durable batch whose
/// epoch recovery does not know, and recovery cuts the log there.
#[test]
fn a_sync_racing_a_new_epoch_never_makes_its_batch_durable_before_the_checkpoint() {
    run(|| async {
        let (_tmp, root, dir) = fresh_dir();
        let config = LogConfig {
            flush: FlushPolicy::Never,
            ..small()
        };
        seam::reset();
        seam::record();
        let log = open(&dir, config.clone()).await;
        log.append(numbered_batch(0, 3, 50, 1000), LeaderEpoch(0))
            .await
            .unwrap();
        log.sync().await.unwrap();
        // The new epoch's checkpoint write is held before its rename.
        let gate = seam::hold(Op::Rename);
        let l = log.clone();
        let appending =
            glommio::spawn_local(
                async move { l.append(numbered_batch(3, 3, 50, 1001), LeaderEpoch(1)).await },
            );
        glommio::timer::sleep(Duration::from_millis(20)).await;
        log.sync().await.unwrap();
        let durable = log.durable_offset();
        let (_copy, copy_dir) = durable_copy(&root, &dir);
        gate.open();
        appending.await.unwrap();
        seam::reset();
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
        let reopened = open(&copy_dir, config).await;
        assert!(
            reopened.log_end_offset() >= durable,
            "durable {durable:?} before the crash, but recovery kept the log up to {:?}: {:?}",
            reopened.log_end_offset(),
            reopened.recovery_report()
        );
    });
}

/// Review finding 2: retention deletes several old segments. Whatever
/// subset of its un-synced unlinks a crash keeps, the log reopens as a
/// contiguous suffix of what it was that holds every record retention
/// kept: never an older segment back in front of a hole where a later one
/// went (recovery would cut everything after the older one).
#[test]
fn retention_never_leaves_a_hole_at_the_start_whatever_unlinks_survive() {
    run(|| async {
        let (_tmp, root, dir) = fresh_dir();
        seam::reset();
        seam::record();
        let log = open(&dir, small()).await;
        let all = fill(&log, 80).await;
        log.set_config(LogConfig {
            retention_bytes: Some(log.size_bytes() / 2),
            ..small()
        })
        .unwrap();
        let start = seam::event_count();
        let out = log.apply_retention().await.unwrap();
        assert!(out.segments_deleted >= 3, "{out:?}");
        drop(log);
        let events = seam::take_events();
        seam::reset();
        let kept = all.iter().filter(|(o, _)| *o >= out.log_start_offset.0).count();
        let mut disk = SimDisk::new(&root, std::slice::from_ref(&dir));
        disk.dir_order = DirOrder::AnySubset;
        let mut rng = SimRng::new(11);
        for (c, e) in events.iter().enumerate() {
            disk.apply(e);
            if c + 1 < start {
                continue;
            }
            for _ in 0..8 {
                let copy = tempfile::tempdir().unwrap();
                let copy_root = std::path::absolute(copy.path()).unwrap();
                SimDisk::materialize(&disk.crash(&mut rng), &copy_root).unwrap();
                let copy_dir = copy_root.join("p-0");
                let log = open(&copy_dir, small()).await;
                let got = read_all(&log, log.log_start_offset(), 1 << 20).await;
                assert!(
                    got.len() >= kept && got[..] == all[all.len() - got.len()..],
                    "crash after step {c} ({:?} {:?}): the log reopened with {} records from offset {:?}, \
                     not a suffix of the {} appended holding the {kept} retention kept: {:?}",
                    e.op,
                    e.path.file_name().unwrap_or_default(),
                    got.len(),
                    got.first().map(|r| r.0),
                    all.len(),
                    log.recovery_report()
                );
            }
        }
    });
}

/// Review finding 4: recovery cuts a segment in the cleaned region (a
/// damaged batch) and deletes the segments after it. A crash during that
/// recovery, whatever of its un-synced steps survive, must leave a disk
/// that the next recovery reads as the same prefix: never the cut segment
/// followed, across a gap the old cleaner checkpoint still allows, by the
/// segments that were to go.
#[test]
fn a_crash_during_recovery_never_leaves_a_hole() {
    run(|| async {
        let (_tmp, root, dir) = fresh_dir();
        let now = 10_000_000;
        let clock = Rc::new(ManualClock::new(now));
        let open_at = |d: PathBuf| Log::open(d, small(), clock.clone() as Rc<dyn Clock>);
        let log = open_at(dir.clone()).await.unwrap();
        let mut all = Vec::new();
        for i in 0..150u64 {
            let k = format!("k{i}");
            let v = format!("value-{i:04}-{}", "y".repeat(40));
            let mut b = borges_net::batch::RecordBatchBuilder::new(Compression::None);
            b.push(now - 1000, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
            let info = append(&log, b.build().unwrap()).await;
            all.push((info.base_offset.0, v.into_bytes()));
        }
        log.roll().await.unwrap();
        let cfg = CompactionConfig {
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
            max_bytes_per_sec: None,
        };
        log.compact(&cfg, None).await.unwrap();
        let bases = log.segment_bases();
        let cleaned_to = log.cleaner_checkpoint().0;
        assert!(
            bases.len() >= 4 && bases[3].0 <= cleaned_to,
            "{bases:?} {cleaned_to}"
        );
        drop(log);
        // A damaged byte in the middle of the second segment, whose indexes
        // are gone, so that recovery scans it.
        let [seg, index, time_index] = &segment_files(&dir, bases[1])[..] else {
            unreachable!()
        };
        std::fs::remove_file(index).unwrap();
        std::fs::remove_file(time_index).unwrap();
        let mut bytes = std::fs::read(seg).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(seg, &bytes).unwrap();

        let before = SimDisk::from_dir(&root, std::slice::from_ref(&dir)).unwrap();
        seam::reset();
        seam::record();
        let log = open_at(dir.clone()).await.unwrap();
        let events = seam::take_events();
        seam::reset();
        let expected = read_all(&log, Offset(0), 1 << 20).await;
        let report = log.recovery_report().clone();
        drop(log);
        assert!(
            expected[..] == all[..expected.len()] && (expected.len() as u64) < bases[2].0,
            "recovery cut in the damaged segment: {report:?}"
        );
        assert!(report.segments_deleted.len() >= 2, "{report:?}");

        let mut rng = SimRng::new(5);
        let mut disk = before;
        for c in 0..=events.len() {
            if c > 0 {
                disk.apply(&events[c - 1]);
            }
            for draw in 0..8 {
                disk.dir_order = if draw % 2 == 0 {
                    DirOrder::Prefix
                } else {
                    DirOrder::AnySubset
                };
                let copy = tempfile::tempdir().unwrap();
                let copy_root = std::path::absolute(copy.path()).unwrap();
                SimDisk::materialize(&disk.crash(&mut rng), &copy_root).unwrap();
                let log = open_at(copy_root.join("p-0")).await.unwrap();
                let got = read_all(&log, Offset(0), 1 << 20).await;
                assert!(
                    got == expected,
                    "crash after recovery step {c} of {} ({:?}): reopened with {} records (offsets {:?}..={:?}), \
                     not the {} the recovery kept: {:?}",
                    events.len(),
                    c.checked_sub(1)
                        .map(|i| (events[i].op, events[i].path.file_name().unwrap_or_default())),
                    got.len(),
                    got.first().map(|r| r.0),
                    got.last().map(|r| r.0),
                    expected.len(),
                    log.recovery_report()
                );
            }
        }
    });
}

/// Review finding 5: a directory that already exists may exist only
/// un-synced (a crash after its mkdir, before its parent's fsync), so a
/// log opened in it, and a data directory, are synced into their parent
/// all the same.
#[test]
fn an_existing_log_directory_is_synced_into_its_parent_all_the_same() {
    run(|| async {
        let (_tmp, root, dir) = fresh_dir();
        seam::reset();
        seam::record();
        let log = open(&dir, small()).await;
        let ev = seam::events();
        assert!(ev.iter().any(|e| e.op == Op::SyncDir && e.path == root), "{ev:?}");
        drop(log);
        seam::record();
        DataDirs::new(vec![dir.clone()]).unwrap();
        let ev = seam::take_events();
        seam::reset();
        assert!(ev.iter().any(|e| e.op == Op::SyncDir && e.path == root), "{ev:?}");
    });
}

/// Review finding 6: a close whose clean-shutdown marker cannot be
/// written fails the log, like every other failed write path: nothing
/// more is appended to it, a second close does not mark it clean, and
/// the next open recovers it.
#[test]
fn a_close_that_cannot_write_its_clean_shutdown_marker_fails_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small()).await;
        let all = fill(&log, 4).await;
        seam::fail(Op::Rename, 0, 1, libc::EIO, Some("clean-shutdown"));
        let r = log.close().await;
        seam::reset();
        assert!(matches!(r, Err(StorageError::Io { op: "rename", .. })), "{r:?}");
        let again = log.append(numbered_batch(12, 1, 10, 0), LeaderEpoch::NONE).await;
        assert!(matches!(again, Err(StorageError::LogFailed(..))), "{again:?}");
        let r = log.close().await;
        assert!(matches!(r, Err(StorageError::LogFailed(..))), "{r:?}");
        assert!(!dir.path().join("clean-shutdown").exists());
        drop(log);
        let log = open(dir.path(), small()).await;
        assert!(!log.recovery_report().clean_shutdown);
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await, all);
    });
}

/// Review finding 7: the seam records a segment write when it completes,
/// not when it is issued, so every write the recording holds is in the
/// file (a crash model built from it never has a write land that had not).
#[test]
fn a_segment_write_is_recorded_once_it_is_in_the_file() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            write_buffer_bytes: 4 << 10,
            preallocate_bytes: 0,
            flush: FlushPolicy::Never,
            ..small()
        };
        let log = open(dir.path(), config).await;
        let seg = std::path::absolute(dir.path().join(format!("{:020}.log", 0))).unwrap();
        seam::record();
        // More than a write buffer: a full one goes to the disk in the background.
        append(&log, numbered_batch(0, 40, 200, 1000)).await;
        let mut checked = 0;
        for round in 0..200 {
            let writes: Vec<_> = seam::events()
                .into_iter()
                .filter(|e| e.op == Op::Write && e.path == seg)
                .collect();
            for e in &writes {
                let file = std::fs::read(&seg).unwrap();
                let (pos, end) = (e.pos as usize, e.pos as usize + e.data.len());
                assert!(
                    file.len() >= end && file[pos..end] == e.data[..],
                    "a write of {} bytes at {pos} is recorded but not in the file ({} bytes)",
                    e.data.len(),
                    file.len()
                );
                checked += 1;
            }
            if checked > 0 {
                break;
            }
            // A few turns of the task queue first (the write task runs and
            // issues its write), then waits that let the reactor complete it.
            if round < 4 {
                glommio::executor().yield_now().await;
            } else {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
        seam::reset();
        assert!(checked > 0, "no write was recorded");
        log.sync().await.unwrap();
    });
}

/// Cold-review gap: a compaction swap whose cleaner checkpoint write
/// fails after its rename (the directory sync fails) must not leave the
/// log believing in a lower checkpoint than the disk holds. If it goes on,
/// a later truncation does not lower the disk's checkpoint, and a crash
/// after that truncation cut its segment, before its unlinks are durable,
/// lets the segments it removed come back across a gap the checkpoint
/// allows. At every crash point from the compaction on, the reopened log
/// is a prefix of what was appended that holds every record below the
/// truncation point.
#[test]
fn a_failed_compaction_swap_never_lets_a_later_truncation_leave_a_hole() {
    run(|| async {
        let (_tmp, root, dir) = fresh_dir();
        let now = 10_000_000;
        let clock = Rc::new(ManualClock::new(now));
        let open_at = |d: PathBuf| Log::open(d, small(), clock.clone() as Rc<dyn Clock>);
        seam::reset();
        seam::record();
        let log = open_at(dir.clone()).await.unwrap();
        let mut all = Vec::new();
        for i in 0..150u64 {
            // Ten keys, so that compaction has old values to remove.
            let k = format!("k{}", i % 10);
            let v = format!("value-{i:04}-{}", "y".repeat(40));
            let mut b = borges_net::batch::RecordBatchBuilder::new(Compression::None);
            b.push(now - 1000, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
            let info = append(&log, b.build().unwrap()).await;
            all.push((info.base_offset.0, v.into_bytes()));
        }
        log.roll().await.unwrap();
        let bases = log.segment_bases();
        assert!(bases.len() >= 4, "{bases:?}");
        let from = seam::event_count();
        // The run's first directory sync is the one of its cleaner
        // checkpoint, after the checkpoint's rename.
        seam::fail(Op::SyncDir, 0, 1, libc::EIO, None);
        let cfg = CompactionConfig {
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
            max_bytes_per_sec: None,
        };
        let compacted = log.compact(&cfg, None).await;
        assert_eq!(seam::faults_left(), 0, "the fault fired");
        assert!(compacted.is_err(), "{compacted:?}");
        seam::reset_faults();
        let target = (bases[0].0 + bases[1].0) / 2;
        let truncated = log.truncate_to(Offset(target)).await;
        let events = seam::take_events();
        seam::reset();
        drop(log);

        let mut disk = SimDisk::new(&root, std::slice::from_ref(&dir));
        for e in &events[..from] {
            disk.apply(e);
        }
        assert!(disk.untracked.is_empty(), "{:?}", disk.untracked);
        for c in from..=events.len() {
            if c > from {
                disk.apply(&events[c - 1]);
            }
            let copy = tempfile::tempdir().unwrap();
            let copy_root = std::path::absolute(copy.path()).unwrap();
            SimDisk::materialize(&disk.durable(), &copy_root).unwrap();
            let log = open_at(copy_root.join("p-0")).await.unwrap();
            let got = read_all(&log, Offset(0), 1 << 20).await;
            let offsets: Vec<u64> = got.iter().map(|r| r.0).collect();
            assert!(
                got.len() as u64 >= target && got[..] == all[..got.len()],
                "crash after step {c} of {} ({:?}), truncation {truncated:?}: reopened with offsets \
                 {:?}..={:?} ({} records), not a prefix of the {} appended holding the {target} \
                 below the truncation: {:?}",
                events.len(),
                c.checked_sub(1)
                    .map(|i| (events[i].op, events[i].path.file_name().unwrap_or_default())),
                offsets.first(),
                offsets.last(),
                got.len(),
                all.len(),
                log.recovery_report()
            );
        }
    });
}
