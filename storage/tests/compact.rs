//! Compaction: which records stay, what a rewritten batch keeps, the gaps
//! it leaves (reads, timestamps, retention, truncation across them), the
//! throttle, concurrent appends, and crash safety: leftovers of an
//! interrupted run, recovery of a compacted log, and damage detection on
//! both sides of the cleaner checkpoint.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use borges_net::batch::{BatchHeader, Compression, RecordBatchBuilder};
use borges_net::types::{Offset, TimestampMs};
use borges_storage::{
    Chunk, Clock, CompactionConfig, FlushPolicy, Log, LogConfig, ManualClock, ScanStop, StorageError,
};
use bytes::BytesMut;
use common::*;

const NOW: i64 = 10_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4 << 10,
        index_interval_bytes: 256,
        tail_cache_bytes_max: 4 << 10,
        write_buffer_bytes: 8 << 10,
        flush: FlushPolicy::EveryBatch,
        segment_ms_max: None,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn cfg(delete_retention_ms: i64, min_compaction_lag_ms: i64) -> CompactionConfig {
    CompactionConfig {
        delete_retention_ms,
        min_compaction_lag_ms,
        max_bytes_per_sec: None,
    }
}

/// A batch of (key, value) records, all with timestamp `ts`.
fn kv(codec: Compression, records: &[(Option<&str>, Option<&str>)], ts: i64) -> BytesMut {
    let mut b = RecordBatchBuilder::new(codec).producer(42, 2, 7);
    for (k, v) in records {
        b.push(
            ts,
            k.map(str::as_bytes),
            v.map(str::as_bytes),
            &[("h", Some(b"hv".as_slice()))],
        );
    }
    b.build().unwrap()
}

async fn open_at(dir: &Path, clock: &Rc<ManualClock>) -> Log {
    Log::open(dir, config(), clock.clone() as Rc<dyn Clock>)
        .await
        .unwrap()
}

type Rec = (u64, Option<String>, Option<String>);

fn text(b: &Option<bytes::Bytes>) -> Option<String> {
    b.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap())
}

/// Every record of the log as (offset, key, value).
async fn contents(log: &Log) -> Vec<Rec> {
    read_batches(log, log.log_start_offset(), 1 << 20)
        .await
        .into_iter()
        .flat_map(|(_, recs)| recs)
        .map(|r| (r.offset as u64, text(&r.key), text(&r.value)))
        .collect()
}

/// What compaction of everything below `upto` should leave of `all`:
/// null keys, and each key's latest record (tombstones included).
fn latest_only(all: &[Rec], upto: u64) -> Vec<Rec> {
    let mut latest = HashMap::new();
    for (o, k, _) in all {
        if let Some(k) = k {
            latest.insert(k.clone(), *o);
        }
    }
    all.iter()
        .filter(|(o, k, _)| *o >= upto || k.as_ref().is_none_or(|k| latest[k] == *o))
        .cloned()
        .collect()
}

/// Appends `n` batches of three records over seven keys (every tenth
/// record without a key), rolls, and appends two more batches into the
/// active segment. Returns every record appended.
async fn fill(log: &Log, n: usize, ts: i64) -> Vec<Rec> {
    let mut all = Vec::new();
    let mut seq = 0;
    for i in 0..n + 2 {
        if i == n {
            log.roll().await.unwrap();
        }
        let recs: Vec<(Option<String>, Option<String>)> = (0..3)
            .map(|_| {
                seq += 1;
                let key = (seq % 10 != 0).then(|| format!("k{}", seq % 7));
                (
                    key,
                    Some(format!("value-{seq:05}-{}", "x".repeat(seq as usize % 40))),
                )
            })
            .collect();
        let refs: Vec<(Option<&str>, Option<&str>)> =
            recs.iter().map(|(k, v)| (k.as_deref(), v.as_deref())).collect();
        let info = append(log, kv(Compression::None, &refs, ts)).await;
        for (j, (k, v)) in recs.into_iter().enumerate() {
            all.push((info.base_offset.0 + j as u64, k, v));
        }
    }
    all
}

fn segment_file(dir: &Path, base: Offset) -> std::path::PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

/// The segment base and file position of the batch holding `offset`.
async fn position_of(log: &Log, offset: u64) -> (Offset, u64) {
    let r = log.read(Offset(offset), 1, None).await.unwrap();
    let Chunk::File(f) = &r.chunks[0] else {
        panic!("offset {offset} is not in a file")
    };
    let seg = *log.segment_bases().iter().rev().find(|b| b.0 <= offset).unwrap();
    (seg, f.position)
}

/// Leaves the log as a crash would, with every segment to be scanned in full.
fn crash_untrusted(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("clean-shutdown"));
    std::fs::write(dir.join("recovery-point"), b"0").unwrap();
}

#[test]
fn keeps_the_latest_value_of_each_key_at_its_offset() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let all = fill(&log, 60, NOW - 1000).await;
        assert!(log.segment_count() >= 4, "{}", log.segment_count());
        let active = *log.segment_bases().last().unwrap();
        let (start, end, size) = (log.log_start_offset(), log.log_end_offset(), log.size_bytes());

        let out = log.compact(&cfg(3_600_000, 0), None).await.unwrap();
        let expected = latest_only(&all, active.0);
        assert_eq!(contents(&log).await, expected);
        assert_eq!(out.records_removed as usize, all.len() - expected.len());
        assert_eq!(out.segments_cleaned, log.segment_count() - 1);
        assert!(out.segments_rewritten >= 1 && out.batches_removed >= 1, "{out:?}");
        assert_eq!(out.cleaned_up_to, active);
        assert_eq!(out.keys, 7);
        assert!(out.bytes_read > 0 && out.bytes_written > 0);
        assert!(!out.stopped_early);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
        assert!(log.size_bytes() < size);
        assert_eq!(log.cleaner_checkpoint(), active);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cleaner-offset-checkpoint")).unwrap(),
            active.0.to_string()
        );
        // Keys updated in the active segment lost their sealed values too.
        let in_active: Vec<&Rec> = all.iter().filter(|r| r.0 >= active.0).collect();
        for (_, k, _) in in_active.iter().filter(|r| r.1.is_some()) {
            let left: Vec<&Rec> = expected.iter().filter(|r| &r.1 == k).collect();
            assert!(left.iter().all(|r| r.0 >= active.0), "{k:?}: {left:?}");
        }

        // A read returns the batch whose range holds `from` (a rewritten
        // batch keeps its range), or from inside a gap the next batch.
        let batches: Vec<BatchHeader> = read_batches(&log, start, 1 << 20)
            .await
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        for from in start.0..end.0 {
            let r = log.read(Offset(from), 1, None).await.unwrap();
            let first = BatchHeader::parse(&chunk_bytes(&r.chunks[0])).unwrap();
            let expected = batches.iter().find(|h| h.last_offset() as u64 >= from).unwrap();
            assert_eq!(first.base_offset, expected.base_offset, "read from {from}");
        }
        // Nothing more to remove.
        let again = log.compact(&cfg(3_600_000, 0), None).await.unwrap();
        assert_eq!((again.records_removed, again.segments_rewritten), (0, 0));

        // A clean reopen, then a crash with every segment scanned and no
        // index files: the gaps are not damage.
        log.close().await.unwrap();
        let log = open_at(dir.path(), &clock).await;
        assert_eq!(log.recovery_report().truncated, None);
        assert_eq!(contents(&log).await, expected);
        drop(log);
        crash_untrusted(dir.path());
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "index" || x == "timeindex") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let log = open_at(dir.path(), &clock).await;
        let report = log.recovery_report().clone();
        assert_eq!(report.truncated, None, "{report:?}");
        assert_eq!(report.segments_scanned, log.segment_count());
        assert_eq!(contents(&log).await, expected);
        assert_eq!(log.log_end_offset(), end);
        // And it takes appends right after its end.
        let info = append(&log, kv(Compression::None, &[(Some("k1"), Some("new"))], NOW)).await;
        assert_eq!(info.base_offset, end);
    });
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let none = Compression::None;
        append(
            &log,
            kv(none, &[(Some("a"), Some("1")), (Some("b"), Some("1"))], NOW),
        )
        .await;
        append(&log, kv(none, &[(Some("a"), None), (Some("b"), None)], NOW)).await; // 2, 3
        append(&log, kv(none, &[(Some("b"), Some("2"))], NOW)).await; // 4
        log.roll().await.unwrap();
        let out = log.compact(&cfg(10_000, 0), None).await.unwrap();
        // a's value goes, its tombstone stays while young; b's tombstone is not its latest.
        assert_eq!(
            contents(&log).await,
            vec![
                (2, Some("a".into()), None),
                (4, Some("b".into()), Some("2".into()))
            ]
        );
        assert_eq!((out.records_removed, out.tombstones_removed), (3, 1));
        clock.advance(9_999);
        let out = log.compact(&cfg(10_000, 0), None).await.unwrap();
        assert_eq!(out.records_removed, 0);
        clock.advance(1);
        let out = log.compact(&cfg(10_000, 0), None).await.unwrap();
        assert_eq!((out.records_removed, out.tombstones_removed), (1, 1));
        assert_eq!(
            contents(&log).await,
            vec![(4, Some("b".into()), Some("2".into()))]
        );
        assert_eq!(log.log_start_offset(), Offset(0));
        // Reads from the start skip the gap.
        let r = log.read(Offset(0), 1 << 20, None).await.unwrap();
        assert_eq!(r.next_offset, Offset(5));
    });
}

#[test]
fn the_lag_protects_recent_segments_and_everything_after_them() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let none = Compression::None;
        // Three sealed segments: old, young, old (by record timestamps).
        for ts in [NOW - 100_000, NOW, NOW - 100_000] {
            for v in ["1", "2"] {
                append(&log, kv(none, &[(Some("a"), Some(v)), (Some("b"), Some(v))], ts)).await;
            }
            log.roll().await.unwrap();
        }
        let bases = log.segment_bases();
        let all = contents(&log).await;
        let out = log.compact(&cfg(1000, 60_000), None).await.unwrap();
        assert_eq!(out.cleaned_up_to, bases[1], "stops at the young segment");
        assert_eq!(out.segments_cleaned, 1);
        assert_eq!(
            contents(&log).await,
            all[4..].to_vec(),
            "only the first segment lost records"
        );
        clock.advance(60_000);
        let out = log.compact(&cfg(1000, 60_000), None).await.unwrap();
        assert_eq!(out.cleaned_up_to, bases[3]);
        assert_eq!(contents(&log).await, latest_only(&all, u64::MAX));
    });
}

#[test]
fn compressed_batches_keep_their_codec_and_fields() {
    run(|| async {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let clock = Rc::new(ManualClock::new(NOW));
            let log = open_at(dir.path(), &clock).await;
            let long = "y".repeat(300);
            let mut all = Vec::new();
            for i in 0..12 {
                let recs = [
                    (Some("a"), Some(long.as_str())),
                    (None, Some("nokey")),
                    (Some(if i % 2 == 0 { "b" } else { "c" }), Some("v")),
                    (Some("untouched"), if i == 11 { Some("last") } else { None }),
                ];
                let info = append(&log, kv(codec, &recs, NOW - 10 * i)).await;
                for (j, (k, v)) in recs.iter().enumerate() {
                    all.push((
                        info.base_offset.0 + j as u64,
                        k.map(String::from),
                        v.map(String::from),
                    ));
                }
            }
            log.roll().await.unwrap();
            let before: Vec<BatchHeader> = read_batches(&log, Offset(0), 1 << 20)
                .await
                .into_iter()
                .map(|(h, _)| h)
                .collect();
            let out = log.compact(&cfg(3_600_000, 0), None).await.unwrap();
            assert!(out.segments_rewritten >= 1);
            assert_eq!(contents(&log).await, latest_only(&all, u64::MAX), "{codec:?}");
            for (h, recs) in read_batches(&log, Offset(0), 1 << 20).await {
                let old = before.iter().find(|o| o.base_offset == h.base_offset).unwrap();
                assert_eq!(h.compression().unwrap(), codec);
                assert_eq!(h.last_offset_delta, old.last_offset_delta);
                assert_eq!(h.partition_leader_epoch, old.partition_leader_epoch);
                assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (42, 2, 7));
                assert_eq!(
                    (h.attributes, h.base_timestamp),
                    (old.attributes, old.base_timestamp)
                );
                assert_eq!(h.records_count as usize, recs.len());
                assert!(recs.iter().all(|r| r.headers[0].key == "h"));
            }
            // Reopened with a full scan, the rewritten batches pass every check.
            log.close().await.unwrap();
            crash_untrusted(dir.path());
            let log = open_at(dir.path(), &clock).await;
            assert_eq!(log.recovery_report().truncated, None);
            assert_eq!(contents(&log).await, latest_only(&all, u64::MAX));
        }
    });
}

#[test]
fn an_unfinished_compaction_leaves_the_old_segment() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let all = fill(&log, 30, NOW).await;
        let bases = log.segment_bases();
        drop(log);
        // A crash after the checkpoint went up and the old indexes went,
        // while the cleaned file was being written.
        let first = bases[0];
        std::fs::write(
            dir.path().join("cleaner-offset-checkpoint"),
            bases[1].0.to_string(),
        )
        .unwrap();
        std::fs::remove_file(dir.path().join(format!("{:020}.index", first.0))).unwrap();
        std::fs::remove_file(dir.path().join(format!("{:020}.timeindex", first.0))).unwrap();
        let leftover = dir.path().join(format!("{:020}.log.cleaned", first.0));
        std::fs::write(&leftover, vec![0xab; 5000]).unwrap();
        let log = open_at(dir.path(), &clock).await;
        assert!(!leftover.exists(), "the unfinished output is deleted");
        assert_eq!(log.recovery_report().truncated, None);
        assert_eq!(contents(&log).await, all);
        // The next run does the work.
        let out = log.compact(&cfg(3_600_000, 0), None).await.unwrap();
        assert!(out.segments_rewritten >= 1);
        let active = *log.segment_bases().last().unwrap();
        assert_eq!(contents(&log).await, latest_only(&all, active.0));
        log.close().await.unwrap();
        let log = open_at(dir.path(), &clock).await;
        assert_eq!(contents(&log).await, latest_only(&all, active.0));
    });
}

#[test]
fn damage_is_still_detected_outside_and_inside_the_cleaned_region() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let all = fill(&log, 30, NOW).await;
        log.compact(&cfg(3_600_000, 0), None).await.unwrap();
        let cleaned_to = log.cleaner_checkpoint();
        // More sealed segments after the cleaned region.
        let mut more = all.clone();
        more.extend(fill(&log, 80, NOW).await);
        assert!(log.segment_bases().iter().filter(|b| **b > cleaned_to).count() >= 3);
        let expected = contents(&log).await;
        // The second batch of the second segment after the checkpoint.
        let seg = *log.segment_bases().iter().find(|b| **b > cleaned_to).unwrap();
        let (_, pos) = position_of(&log, seg.0 + 3).await;
        drop(log);

        let work = tempfile::tempdir().unwrap();
        let copy = |name: &str| {
            let to = work.path().join(name);
            std::fs::create_dir_all(&to).unwrap();
            for e in std::fs::read_dir(dir.path()).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
            crash_untrusted(&to);
            to
        };
        let set_base = |dir: &Path, seg: Offset, pos: u64, base: u64| {
            let path = segment_file(dir, seg);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[pos as usize..pos as usize + 8].copy_from_slice(&base.to_be_bytes());
            std::fs::write(&path, bytes).unwrap();
        };

        // Undamaged: nothing cut.
        let d = copy("intact");
        let log = open_at(&d, &clock).await;
        assert_eq!(log.recovery_report().truncated, None);
        assert_eq!(contents(&log).await, expected);
        drop(log);

        // Past the checkpoint, a base offset moved forward (a gap) is damage.
        let d = copy("gap-past-checkpoint");
        set_base(&d, seg, pos, seg.0 + 4);
        let log = open_at(&d, &clock).await;
        let t = log.recovery_report().truncated.clone().expect("detected");
        assert_eq!((t.segment, t.position), (seg, pos));
        assert_eq!(
            t.reason,
            ScanStop::OffsetMismatch {
                expected: seg.0 + 3,
                found: seg.0 as i64 + 4
            }
        );
        assert_eq!(log.log_end_offset(), Offset(seg.0 + 3));
        drop(log);

        // Inside the cleaned region, batches must still go forward.
        let d = copy("backwards-in-cleaned-region");
        let (first_seg, second_pos) = {
            let log = open_at(&d, &clock).await;
            let batches = read_batches(&log, Offset(0), 1 << 20).await;
            let second = batches[1].0.base_offset as u64;
            assert!(second < cleaned_to.0);
            let p = position_of(&log, second).await;
            drop(log);
            crash_untrusted(&d);
            p
        };
        set_base(&d, first_seg, second_pos, 0);
        let log = open_at(&d, &clock).await;
        let t = log.recovery_report().truncated.clone().expect("detected");
        assert_eq!((t.segment, t.position), (first_seg, second_pos));
        assert!(matches!(t.reason, ScanStop::OffsetMismatch { found: 0, .. }));
        drop(log);

        // Without its checkpoint, a compacted log's gaps are damage: the
        // checkpoint is what allows them.
        let d = copy("no-checkpoint");
        std::fs::remove_file(d.join("cleaner-offset-checkpoint")).unwrap();
        let log = open_at(&d, &clock).await;
        let t = log.recovery_report().truncated.clone().expect("gaps refused");
        assert!(matches!(t.reason, ScanStop::OffsetMismatch { .. }));
    });
}

#[test]
fn reads_in_progress_survive_the_swap() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let all = fill(&log, 30, NOW).await;
        let old = log.read(Offset(0), 1 << 20, None).await.unwrap();
        let Chunk::File(slice) = &old.chunks[0] else {
            panic!("old data comes from a file")
        };
        let old_bytes = slice.read_to_vec().unwrap();
        let out = log.compact(&cfg(3_600_000, 0), None).await.unwrap();
        assert!(out.segments_rewritten >= 1);
        // The slice still reads the old file, whole and valid.
        assert_eq!(slice.read_to_vec().unwrap(), old_bytes);
        let mut n = 0;
        for item in borges_net::batch::BatchIter::new(&old_bytes) {
            let (_, range) = item.unwrap();
            n += borges_net::batch::decode_records(&old_bytes[range])
                .unwrap()
                .len();
        }
        assert_eq!(n as u64, old.next_offset.0);
        // New reads see the new file.
        let active = *log.segment_bases().last().unwrap();
        assert_eq!(contents(&log).await, latest_only(&all, active.0));
    });
}

#[test]
fn the_throttle_holds_the_rate() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        fill(&log, 150, NOW).await;
        let rate = 100_000;
        let started = Instant::now();
        let out = log
            .compact(
                &CompactionConfig {
                    max_bytes_per_sec: Some(rate),
                    ..cfg(3_600_000, 0)
                },
                None,
            )
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let io = out.bytes_read + out.bytes_written;
        let floor = Duration::from_secs_f64(io as f64 / rate as f64) - Duration::from_millis(5);
        assert!(io > 30_000, "{out:?}");
        assert!(elapsed >= floor, "{io} bytes in {elapsed:?} at {rate} B/s");
    });
}

#[test]
fn appends_and_reads_go_on_during_a_run() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let mut all = fill(&log, 100, NOW).await;
        let done = Rc::new(std::cell::Cell::new(false));
        let cleaner = {
            let (log, done) = (log.clone(), done.clone());
            glommio::spawn_local(async move {
                let slow = CompactionConfig {
                    max_bytes_per_sec: Some(300_000),
                    ..cfg(3_600_000, 0)
                };
                let out = log.compact(&slow, None).await.unwrap();
                done.set(true);
                out
            })
        };
        let mut during = 0;
        while !done.get() {
            let info = append(&log, kv(Compression::None, &[(Some("k3"), Some("late"))], NOW)).await;
            all.push((info.base_offset.0, Some("k3".into()), Some("late".into())));
            if during % 20 == 0 {
                log.roll().await.unwrap();
            }
            // Whole, valid batches throughout.
            read_batches(&log, Offset(0), 5000).await;
            during += 1;
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        let out = cleaner.await;
        assert!(during > 5, "the run took long enough to overlap: {during}");
        assert!(out.segments_rewritten >= 1);
        let got = contents(&log).await;
        // Everything appended is there, and of every key its latest value.
        for (o, k, v) in latest_only(&all, u64::MAX) {
            assert!(got.contains(&(o, k.clone(), v)), "offset {o} {k:?} lost");
        }
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(got.iter().all(|r| all.contains(r)));
        log.close().await.unwrap();
        let log = open_at(dir.path(), &clock).await;
        assert_eq!(log.recovery_report().truncated, None);
        assert_eq!(contents(&log).await, got);
    });
}

#[test]
fn reads_racing_swaps_return_whole_batches() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let all = Rc::new(std::cell::RefCell::new(fill(&log, 120, NOW).await));
        // Records below this offset are in `all`; readers check only those.
        let published = Rc::new(std::cell::Cell::new(log.log_end_offset().0));
        let stop = Rc::new(std::cell::Cell::new(false));
        let mut readers = Vec::new();
        for r in 0..4u64 {
            let (log, all, stop, published) = (log.clone(), all.clone(), stop.clone(), published.clone());
            readers.push(glommio::spawn_local(async move {
                let mut reads = 0u64;
                let mut from = r;
                while !stop.get() {
                    let end = log.log_end_offset().0;
                    from = (from + 7) % end.max(1);
                    let got = log
                        .read(Offset(from), 700 + 300 * r as usize, None)
                        .await
                        .unwrap();
                    for c in &got.chunks {
                        let bytes = chunk_bytes(c);
                        let mut it = borges_net::batch::BatchIter::new(&bytes);
                        for item in &mut it {
                            let (_, range) = item.expect("whole batches");
                            for rec in borges_net::batch::decode_records(&bytes[range]).expect("valid batch")
                            {
                                let rec = (rec.offset as u64, text(&rec.key), text(&rec.value));
                                if rec.0 < published.get() {
                                    assert!(all.borrow().contains(&rec), "{rec:?} was never appended");
                                }
                            }
                        }
                        assert_eq!(it.position(), bytes.len());
                    }
                    reads += 1;
                }
                reads
            }));
        }
        for round in 0..10 {
            glommio::timer::sleep(Duration::from_millis(3)).await;
            let more = fill(&log, 20, NOW).await;
            all.borrow_mut().extend(more);
            published.set(log.log_end_offset().0);
            let out = log.compact(&cfg(3_600_000, 0), None).await.unwrap();
            assert!(out.segments_rewritten >= 1, "round {round}: {out:?}");
        }
        stop.set(true);
        for r in readers {
            assert!(r.await > 10);
        }
        let active = *log.segment_bases().last().unwrap();
        assert_eq!(contents(&log).await, latest_only(&all.borrow(), active.0));
    });
}

#[test]
fn a_run_stops_when_the_log_is_truncated_or_closed_under_it() {
    run(|| async {
        // Early stops in the key-map phase, later ones while segments are rewritten.
        for (close, delay_ms) in [(false, 100), (false, 500), (true, 100), (true, 500)] {
            let dir = tempfile::tempdir().unwrap();
            let clock = Rc::new(ManualClock::new(NOW));
            let log = open_at(dir.path(), &clock).await;
            let all = fill(&log, 150, NOW).await;
            let cleaner = {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let slow = CompactionConfig {
                        max_bytes_per_sec: Some(100_000),
                        ..cfg(3_600_000, 0)
                    };
                    log.compact(&slow, None).await
                })
            };
            glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
            let expected = if close {
                log.close().await.unwrap();
                all.clone()
            } else {
                let target = log.log_end_offset().0 - 10;
                let leo = log.truncate_to(Offset(target)).await.unwrap();
                all.iter().filter(|r| r.0 < leo.0).cloned().collect()
            };
            let out = cleaner.await.unwrap();
            assert!(out.stopped_early, "{out:?}");
            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".cleaned"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            drop(log);
            crash_untrusted(dir.path());
            let log = open_at(dir.path(), &clock).await;
            assert_eq!(log.recovery_report().truncated, None);
            // Whatever was swapped in before the stop is compacted; the rest is whole.
            let got = contents(&log).await;
            for (o, k, v) in latest_only(&expected, u64::MAX) {
                assert!(got.contains(&(o, k.clone(), v)), "offset {o} {k:?} lost");
            }
            assert!(got.iter().all(|r| expected.contains(r)));
        }
    });
}

#[test]
fn records_at_the_high_watermark_supersede_nothing() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let none = Compression::None;
        append(&log, kv(none, &[(Some("a"), Some("1"))], NOW)).await;
        log.roll().await.unwrap();
        append(&log, kv(none, &[(Some("a"), Some("2"))], NOW)).await;
        // Offset 1 may still be truncated away: offset 0 stays.
        let out = log.compact(&cfg(0, 0), Some(Offset(1))).await.unwrap();
        assert_eq!((out.records_removed, out.cleaned_up_to), (0, Offset(1)));
        log.truncate_to(Offset(1)).await.unwrap();
        assert_eq!(
            contents(&log).await,
            vec![(0, Some("a".into()), Some("1".into()))]
        );
        append(&log, kv(none, &[(Some("a"), Some("3"))], NOW)).await;
        log.roll().await.unwrap();
        let out = log.compact(&cfg(0, 0), None).await.unwrap();
        assert_eq!(out.records_removed, 1);
        assert_eq!(
            contents(&log).await,
            vec![(1, Some("a".into()), Some("3".into()))]
        );
    });
}

#[test]
fn truncation_into_the_cleaned_region_clamps_the_checkpoint() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        fill(&log, 40, NOW).await;
        log.compact(&cfg(3_600_000, 0), None).await.unwrap();
        let kept = contents(&log).await;
        // A removed offset in the middle of the cleaned region.
        let cleaned_to = log.cleaner_checkpoint().0;
        let target = (cleaned_to / 2..cleaned_to)
            .find(|o| !kept.iter().any(|r| r.0 == *o))
            .expect("a gap");
        let leo = log.truncate_to(Offset(target)).await.unwrap();
        assert!(leo.0 <= target);
        assert_eq!(log.cleaner_checkpoint(), leo);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cleaner-offset-checkpoint")).unwrap(),
            leo.0.to_string()
        );
        let mut expected: Vec<Rec> = kept.into_iter().filter(|r| r.0 < leo.0).collect();
        assert_eq!(contents(&log).await, expected);
        // Appends continue at the new end, exactly.
        for i in 0..5 {
            let v = format!("after-{i}");
            let info = append(
                &log,
                kv(Compression::None, &[(Some("k1"), Some(v.as_str()))], NOW),
            )
            .await;
            expected.push((info.base_offset.0, Some("k1".into()), Some(v)));
        }
        assert_eq!(expected[expected.len() - 5].0, leo.0);
        drop(log);
        crash_untrusted(dir.path());
        let log = open_at(dir.path(), &clock).await;
        assert_eq!(log.recovery_report().truncated, None);
        assert_eq!(contents(&log).await, expected);
        assert!(log.cleaner_checkpoint() <= leo);
    });
}

#[test]
fn emptied_segments_are_skipped_by_reads_lookups_and_retention() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        let none = Compression::None;
        // Segments 0 and 2 hold only values that segment 4 overwrites.
        for seg in 0..5 {
            let ts = NOW - 1000 + seg * 100;
            let recs: &[(Option<&str>, Option<&str>)] = match seg {
                1 => &[(Some("keep1"), Some("x"))],
                3 => &[(Some("keep3"), Some("y"))],
                _ => &[(Some("a"), Some("v")), (Some("b"), Some("v"))],
            };
            append(&log, kv(none, recs, ts)).await;
            log.roll().await.unwrap();
        }
        let bases = log.segment_bases();
        let out = log.compact(&cfg(3_600_000, 0), None).await.unwrap();
        assert_eq!(out.batches_removed, 2);
        assert_eq!(log.segment_count(), 6, "emptied segments stay");
        assert_eq!(
            contents(&log).await,
            vec![
                (2, Some("keep1".into()), Some("x".into())),
                (5, Some("keep3".into()), Some("y".into())),
                (6, Some("a".into()), Some("v".into())),
                (7, Some("b".into()), Some("v".into())),
            ]
        );
        for (from, first) in [(0, 2), (1, 2), (3, 5), (4, 5), (5, 5)] {
            let r = log.read(Offset(from), 1, None).await.unwrap();
            let h = BatchHeader::parse(&chunk_bytes(&r.chunks[0])).unwrap();
            assert_eq!(h.base_offset, first, "read from {from}");
        }
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(NOW - 1000)).await.unwrap(),
            Some((Offset(2), TimestampMs(NOW - 900)))
        );
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(NOW - 850)).await.unwrap(),
            Some((Offset(5), TimestampMs(NOW - 700)))
        );
        // Retention judges what is left: an emptied segment holds nothing
        // to keep, so it goes as soon as it is at the front.
        let retain = |ms| {
            log.set_config(LogConfig {
                retention_ms: Some(ms),
                ..config()
            })
            .unwrap()
        };
        retain(950);
        let out = log.apply_retention().await.unwrap();
        assert_eq!((out.segments_deleted, out.log_start_offset), (1, bases[1]));
        retain(850);
        let out = log.apply_retention().await.unwrap();
        assert_eq!((out.segments_deleted, out.log_start_offset), (2, bases[3]));
        assert_eq!(log.log_start_offset(), Offset(5));
        assert_eq!(contents(&log).await.len(), 3);
        log.close().await.unwrap();
        let log = open_at(dir.path(), &clock).await;
        assert_eq!(log.log_start_offset(), Offset(5));
        assert_eq!(contents(&log).await.len(), 3);
    });
}

#[test]
fn bad_settings_and_closed_logs_are_refused() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(NOW));
        let log = open_at(dir.path(), &clock).await;
        for bad in [
            cfg(-1, 0),
            cfg(0, -1),
            CompactionConfig {
                max_bytes_per_sec: Some(0),
                ..cfg(0, 0)
            },
        ] {
            assert!(matches!(
                log.compact(&bad, None).await,
                Err(StorageError::InvalidConfig(_))
            ));
        }
        // Nothing to clean in an empty log.
        let out = log.compact(&cfg(0, 0), None).await.unwrap();
        assert_eq!(out.segments_cleaned, 0);
        assert!(!dir.path().join("cleaner-offset-checkpoint").exists());
        log.close().await.unwrap();
        assert!(matches!(
            log.compact(&cfg(0, 0), None).await,
            Err(StorageError::Closed(_))
        ));
    });
}
