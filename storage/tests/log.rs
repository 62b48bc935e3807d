//! Behaviour of one partition log: appends, reads from memory and from
//! files, rolls, timestamps, retention, truncation, epochs, bad input.

mod common;

use std::rc::Rc;
use std::time::Duration;

use borges_net::batch::{BatchError, Compression, RecordBatchBuilder};
use borges_net::types::{LeaderEpoch, Offset, TimestampMs};
use borges_storage::{Chunk, Clock, FlushPolicy, Log, LogConfig, ManualClock, StorageError};
use bytes::BytesMut;
use common::*;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 << 10,
        index_interval_bytes: 512,
        tail_cache_bytes_max: 8 << 10,
        write_buffer_bytes: 16 << 10,
        flush: FlushPolicy::EveryBatch,
        ..LogConfig::default()
    }
}

#[test]
fn append_and_read_back_across_segments_cache_and_files() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let mut seq = 0;
        for i in 0..200 {
            let n = 1 + i % 7;
            let info = append(&log, numbered_batch(seq, n, 40 + i % 50, 1000 + seq as i64)).await;
            assert_eq!(info.base_offset, Offset(seq));
            assert_eq!(info.last_offset, Offset(seq + n as u64 - 1));
            seq += n as u64;
        }
        assert_eq!(log.log_end_offset(), Offset(seq));
        assert_eq!(log.durable_offset(), Offset(seq));
        assert!(log.segment_count() > 2, "rolled by size: {}", log.segment_count());
        for max in [1, 700, 5000, 1 << 20] {
            let got = read_all(&log, Offset(0), max).await;
            assert_eq!(got.len() as u64, seq);
            for (i, (o, v)) in got.iter().enumerate() {
                assert_eq!(*o, i as u64);
                assert_eq!(v, &value(i as u64, v.len()));
            }
        }
        // Starting mid-batch returns the batch, and the records from there on.
        let got = read_all(&log, Offset(seq / 2), 3000).await;
        assert_eq!(got.first().unwrap().0, seq / 2);
        // Old data comes as file ranges, recent data from memory.
        let old = log.read(Offset(0), 4096, None).await.unwrap();
        assert!(matches!(old.chunks[0], Chunk::File(_)));
        let recent = log.read(Offset(seq - 1), 4096, None).await.unwrap();
        assert!(matches!(recent.chunks[0], Chunk::Memory(_)));
        log.close().await.unwrap();

        // A clean reopen keeps everything and scans nothing.
        let log = open(dir.path(), small_config()).await;
        assert!(log.recovery_report().clean_shutdown);
        assert_eq!(log.recovery_report().segments_scanned, 0);
        assert_eq!(log.log_end_offset(), Offset(seq));
        assert_eq!(read_all(&log, Offset(0), 10_000).await.len() as u64, seq);
        // And appends continue where they stopped.
        let info = append(&log, numbered_batch(seq, 3, 60, 5000)).await;
        assert_eq!(info.base_offset, Offset(seq));
        assert_eq!(read_all(&log, Offset(0), 10_000).await.len() as u64, seq + 3);
        log.close().await.unwrap();
    });
}

#[test]
fn read_bounds_and_out_of_range() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let r = log.read(Offset(0), 100, None).await.unwrap();
        assert!(r.chunks.is_empty());
        for i in 0..10 {
            append(&log, numbered_batch(i * 5, 5, 50, 0)).await;
        }
        assert!(matches!(
            log.read(Offset(51), 100, None).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // At the end: nothing, no error (a consumer waiting for data).
        assert!(log.read(Offset(50), 100, None).await.unwrap().chunks.is_empty());
        // An upper bound (a high watermark) stops before the batch that crosses it.
        let r = log.read(Offset(0), 1 << 20, Some(Offset(12))).await.unwrap();
        assert_eq!(r.next_offset, Offset(10));
        let r = log.read(Offset(10), 1 << 20, Some(Offset(12))).await.unwrap();
        assert!(r.chunks.is_empty());
        // A tiny max still returns one whole batch.
        let r = log.read(Offset(0), 1, None).await.unwrap();
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.next_offset, Offset(5));
    });
}

#[test]
fn bad_batches_are_refused_and_nothing_is_stored() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        append(&log, numbered_batch(0, 3, 30, 0)).await;
        let good = numbered_batch(3, 2, 30, 0);

        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 1] ^= 0xff;
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        let mut bad_len = good.clone();
        bad_len[8..12].copy_from_slice(&(1_000_000i32).to_be_bytes());
        let truncated = BytesMut::from(&good[..good.len() - 5]);
        // A good batch followed by a bad one: all or nothing.
        let mut good_then_bad = good.clone();
        good_then_bad.extend_from_slice(&bad_crc);

        for (name, input) in [
            ("crc", bad_crc),
            ("magic", bad_magic),
            ("length", bad_len),
            ("truncated", truncated),
            ("good then bad", good_then_bad),
            ("empty", BytesMut::new()),
            ("garbage", BytesMut::from(&[7u8; 100][..])),
        ] {
            let err = log.append(input, LeaderEpoch::NONE).await.unwrap_err();
            match (name, &err) {
                ("crc", StorageError::InvalidBatch(BatchError::CrcMismatch { .. }))
                | ("good then bad", StorageError::InvalidBatch(BatchError::CrcMismatch { .. }))
                | ("magic", StorageError::InvalidBatch(BatchError::InvalidMagic(1)))
                | ("length", StorageError::InvalidBatch(_))
                | ("truncated", StorageError::InvalidBatch(_))
                | ("garbage", StorageError::InvalidBatch(_))
                | ("empty", StorageError::EmptyAppend) => {}
                _ => panic!("{name}: unexpected {err:?}"),
            }
            assert_eq!(log.log_end_offset(), Offset(3), "{name}: nothing appended");
        }
        // The log still works, and holds exactly what was accepted.
        append(&log, good).await;
        let got = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(got.len(), 5);
        // A batch larger than a segment is refused.
        let big = numbered_batch(0, 1, 20 << 10, 0);
        assert!(matches!(
            log.append(big, LeaderEpoch::NONE).await,
            Err(StorageError::BatchTooLarge { .. })
        ));
    });
}

#[test]
fn compressed_batches_are_stored_as_sent() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        for (i, c) in [Compression::Lz4, Compression::Zstd, Compression::None]
            .into_iter()
            .enumerate()
        {
            let mut b = RecordBatchBuilder::new(c);
            for j in 0..50u64 {
                b.push(0, None, Some(&value(i as u64 * 50 + j, 80)), &[("h", Some(b"x"))]);
            }
            let sent = b.build().unwrap();
            let info = append(&log, sent.clone()).await;
            let r = log.read(info.base_offset, 1 << 20, None).await.unwrap();
            let Chunk::Memory(stored) = &r.chunks[0] else {
                panic!("recent data is in memory")
            };
            // Identical bytes apart from the base offset and epoch (outside the CRC).
            assert_eq!(&stored[12..16], &(-1i32).to_be_bytes());
            assert_eq!(&stored[16..], &sent[16..]);
        }
        let got = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(got.len(), 150);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (o, v))| *o == i as u64 && *v == value(i as u64, 80)));
    });
}

#[test]
fn roll_by_age_and_lookup_by_timestamp() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(1_000_000));
        let config = LogConfig {
            segment_ms_max: Some(60_000),
            ..small_config()
        };
        let log = Log::open(dir.path(), config, clock.clone() as Rc<dyn Clock>)
            .await
            .unwrap();
        // Ten batches of ten records, timestamps 0, 10, 20, ... (ms), one batch a minute.
        for i in 0..10u64 {
            append(&log, numbered_batch(i * 10, 10, 30, i as i64 * 100)).await;
            clock.advance(61_000);
        }
        assert_eq!(log.segment_count(), 10, "rolled by age");
        for (ts, want) in [
            (0, Some(0)),
            (5, Some(5)),
            (99, Some(10)),
            (101, Some(11)),
            (909, Some(99)),
            (910, None),
        ] {
            let got = log.offset_for_timestamp(TimestampMs(ts)).await.unwrap();
            assert_eq!(got.map(|(o, _)| o.0), want, "timestamp {ts}");
        }
        log.close().await.unwrap();
        let log = Log::open(dir.path(), small_config(), clock.clone() as Rc<dyn Clock>)
            .await
            .unwrap();
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(101)).await.unwrap(),
            Some((Offset(11), TimestampMs(101)))
        );
    });
}

#[test]
fn retention_by_time_and_size() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(10_000_000));
        let config = LogConfig {
            retention_ms: Some(3_600_000),
            retention_bytes: None,
            ..small_config()
        };
        let log = Log::open(dir.path(), config, clock.clone() as Rc<dyn Clock>)
            .await
            .unwrap();
        // Segment per batch; record timestamps an hour apart, ending now.
        let now = clock.now_ms();
        for i in 0..6u64 {
            append(
                &log,
                numbered_batch(i * 4, 4, 100, now - (5 - i as i64) * 3_600_000),
            )
            .await;
            log.roll().await.unwrap();
        }
        assert_eq!(log.segment_count(), 7);
        let out = log.apply_retention().await.unwrap();
        // Newest record of segment i is at now - (5-i)h + 3ms; older than 1h for i < 4.
        assert_eq!(out.segments_deleted, 4);
        assert_eq!(out.log_start_offset, Offset(16));
        assert_eq!(log.log_start_offset(), Offset(16));
        assert!(matches!(
            log.read(Offset(3), 100, None).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log, Offset(16), 1 << 20).await.len(), 8);
        // Nothing more to do.
        assert_eq!(log.apply_retention().await.unwrap().segments_deleted, 0);
        log.close().await.unwrap();
        let log = Log::open(dir.path(), small_config(), clock.clone() as Rc<dyn Clock>)
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), Offset(16));

        // By size: keep at most ~2 segments' worth.
        let seg_size = log.size_bytes() / 2;
        drop(log);
        let config = LogConfig {
            retention_ms: None,
            retention_bytes: Some(seg_size * 2),
            ..small_config()
        };
        let log = Log::open(dir.path(), config, clock.clone() as Rc<dyn Clock>)
            .await
            .unwrap();
        for i in 0..4u64 {
            append(&log, numbered_batch(24 + i * 4, 4, 100, now)).await;
            log.roll().await.unwrap();
        }
        let out = log.apply_retention().await.unwrap();
        assert!(out.segments_deleted >= 3, "{out:?}");
        assert!(log.size_bytes() <= seg_size * 2);
        assert_eq!(
            read_all(&log, log.log_start_offset(), 1 << 20)
                .await
                .last()
                .unwrap()
                .0,
            39
        );
    });
}

#[test]
fn truncate_to_offset_and_epoch_history() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let mut seq = 0;
        for epoch in [1, 1, 2, 2, 2, 5, 5] {
            for _ in 0..20 {
                log.append(numbered_batch(seq, 4, 60, 0), LeaderEpoch(epoch))
                    .await
                    .unwrap();
                seq += 4;
            }
        }
        assert!(log.segment_count() >= 3, "{}", log.segment_count());
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(5)));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(160)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(2), Offset(400)))
        );
        // A deposed leader's epoch is refused.
        assert!(matches!(
            log.append(numbered_batch(0, 1, 10, 0), LeaderEpoch(4)).await,
            Err(StorageError::StaleLeaderEpoch { .. })
        ));
        // Truncating inside a batch removes the whole batch.
        assert_eq!(log.truncate_to(Offset(302)).await.unwrap(), Offset(300));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
        let got = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(got.len(), 300);
        // Appends continue at the new end, under a new epoch.
        let info = log
            .append(numbered_batch(300, 4, 60, 0), LeaderEpoch(6))
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(300));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(5)),
            Some((LeaderEpoch(2), Offset(300)))
        );
        assert!(matches!(log.truncate_to(Offset(0)).await, Ok(Offset(0))));
        assert_eq!(log.log_end_offset(), Offset(0));
        assert_eq!(log.segment_count(), 1);
        log.append(numbered_batch(0, 4, 60, 0), LeaderEpoch(7))
            .await
            .unwrap();
        log.close().await.unwrap();
        // The history survives a restart.
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(7)));
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await.len(), 4);
    });
}

#[test]
fn interval_flush_and_never() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(0));
        let config = LogConfig {
            flush: FlushPolicy::Interval(Duration::from_millis(100)),
            ..small_config()
        };
        let log = Log::open(dir.path(), config, clock.clone() as Rc<dyn Clock>)
            .await
            .unwrap();
        append(&log, numbered_batch(0, 4, 60, 0)).await;
        assert_eq!(log.durable_offset(), Offset(0));
        clock.advance(150);
        log.tick().await.unwrap();
        assert_eq!(log.durable_offset(), Offset(4));
        drop(log);

        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush: FlushPolicy::Never,
            ..small_config()
        };
        let log = Log::open(dir.path(), config, clock.clone() as Rc<dyn Clock>)
            .await
            .unwrap();
        append(&log, numbered_batch(0, 4, 60, 0)).await;
        assert_eq!(log.durable_offset(), Offset(0));
        assert_eq!(log.sync().await.unwrap(), Offset(4));
    });
}

#[test]
fn concurrent_appends_share_syncs() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut offsets = Vec::new();
                for i in 0..25u64 {
                    let info = log
                        .append(numbered_batch(t * 1000 + i, 1, 50, 0), LeaderEpoch::NONE)
                        .await
                        .unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                    offsets.push(info.base_offset.0);
                }
                offsets
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let offs = t.await;
            assert!(
                offs.windows(2).all(|w| w[0] < w[1]),
                "each task's offsets increase"
            );
            all.extend(offs);
        }
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>());
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await.len(), 200);
    });
}

#[test]
fn a_relative_directory_works() {
    run(|| async {
        let dir = tempfile::tempdir_in(".").unwrap();
        let rel = dir
            .path()
            .strip_prefix(std::env::current_dir().unwrap())
            .unwrap()
            .join("p-0");
        assert!(rel.is_relative());
        let log = open(&rel, small_config()).await;
        append(&log, numbered_batch(0, 3, 10, 0)).await;
        log.close().await.unwrap();
        let log = open(&rel, small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(3));
    });
}

/// The bytes of every batch in `log` from offset 0, concatenated.
async fn stored_bytes(log: &Log) -> Vec<u8> {
    let r = log.read(Offset(0), 1 << 24, None).await.unwrap();
    let mut out = Vec::new();
    for c in r.chunks {
        match c {
            borges_storage::Chunk::Memory(b) => out.extend_from_slice(&b),
            borges_storage::Chunk::File(f) => out.extend_from_slice(&f.read_to_vec().unwrap()),
        }
    }
    out
}

#[test]
fn a_follower_appends_the_leaders_batches_byte_for_byte() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("leader")).unwrap();
        std::fs::create_dir_all(dir.path().join("follower")).unwrap();
        let leader = open(&dir.path().join("leader"), small_config()).await;
        let follower = open(&dir.path().join("follower"), small_config()).await;
        let mut seq = 0;
        for epoch in [0, 0, 3, 3, 4] {
            leader
                .append(numbered_batch(seq, 5, 40, 0), LeaderEpoch(epoch))
                .await
                .unwrap();
            seq += 5;
        }
        // The follower copies the leader's bytes in two fetches.
        let all = stored_bytes(&leader).await;
        let headers: Vec<_> = borges_net::batch::BatchIter::new(&all)
            .map(|b| b.unwrap())
            .collect();
        let cut = headers[2].1.start;
        let info = follower
            .append_replicated(BytesMut::from(&all[..cut]))
            .await
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(9)));
        follower
            .append_replicated(BytesMut::from(&all[cut..]))
            .await
            .unwrap();
        assert_eq!(
            stored_bytes(&follower).await,
            all,
            "the follower's log is the leader's"
        );
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(
            follower.epoch_history().entries(),
            leader.epoch_history().entries()
        );
        // What does not follow the log end is refused and nothing changes:
        // records the follower has, and a deposed leader's older epoch.
        assert!(matches!(
            follower.append_replicated(BytesMut::from(&all[cut..])).await,
            Err(StorageError::NonMonotonicOffset { .. })
        ));
        let mut stale = numbered_batch(25, 1, 40, 0);
        borges_net::batch::set_base_offset(&mut stale, 25);
        borges_net::batch::set_partition_leader_epoch(&mut stale, 2);
        assert!(matches!(
            follower.append_replicated(stale).await,
            Err(StorageError::StaleLeaderEpoch { .. })
        ));
        assert_eq!(stored_bytes(&follower).await, all);
        // A compacted leader's gap is kept: the next batch starts past the end.
        let mut later = numbered_batch(40, 2, 40, 0);
        borges_net::batch::set_base_offset(&mut later, 40);
        borges_net::batch::set_partition_leader_epoch(&mut later, 6);
        follower.append_replicated(later).await.unwrap();
        assert_eq!(follower.log_end_offset(), Offset(42));
        assert_eq!(
            follower.end_offset_for_epoch(LeaderEpoch(4)),
            Some((LeaderEpoch(4), Offset(40)))
        );
        // Two gaps in one fetch: both survive a crash (the cleaner
        // checkpoint covers the last).
        let mut two = BytesMut::new();
        for (base, n) in [(50, 1), (60, 2)] {
            let mut b = numbered_batch(base, n, 40, 0);
            borges_net::batch::set_base_offset(&mut b, base as i64);
            borges_net::batch::set_partition_leader_epoch(&mut b, 6);
            two.extend_from_slice(&b);
        }
        follower.append_replicated(two).await.unwrap();
        assert_eq!(follower.log_end_offset(), Offset(62));
        drop(follower);
        let follower = open(&dir.path().join("follower"), small_config()).await;
        assert_eq!(follower.latest_epoch(), Some(LeaderEpoch(6)));
        assert_eq!(follower.log_end_offset(), Offset(62), "recovery kept every gap");
        assert_eq!(read_all(&follower, Offset(0), 1 << 20).await.len(), 30);
    });
}

#[test]
fn a_leader_append_under_a_fenced_epoch_is_refused() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        log.append(numbered_batch(0, 2, 40, 0), LeaderEpoch(3))
            .await
            .unwrap();
        // The partition moved to epoch 4 (this replica follows now).
        log.fence_leader_epoch(LeaderEpoch(4));
        assert!(matches!(
            log.append(numbered_batch(2, 2, 40, 0), LeaderEpoch(3)).await,
            Err(StorageError::StaleLeaderEpoch { .. })
        ));
        assert_eq!(log.log_end_offset(), Offset(2), "nothing was stored");
        // A follower's copy of the new leader's records is not fenced.
        let mut b = numbered_batch(2, 1, 40, 0);
        borges_net::batch::set_base_offset(&mut b, 2);
        borges_net::batch::set_partition_leader_epoch(&mut b, 3);
        log.append_replicated(b).await.unwrap();
        log.append(numbered_batch(3, 1, 40, 0), LeaderEpoch(4))
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), Offset(4));
    });
}

#[test]
fn the_high_watermark_checkpoint_is_kept_within_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.checkpointed_high_watermark().unwrap(), Offset(0));
        log.append(numbered_batch(0, 10, 40, 0), LeaderEpoch(0))
            .await
            .unwrap();
        log.checkpoint_high_watermark(Offset(7)).await.unwrap();
        log.close().await.unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.checkpointed_high_watermark().unwrap(), Offset(7));
        // A checkpoint beyond what survived is cut to the log end.
        log.checkpoint_high_watermark(Offset(70)).await.unwrap();
        assert_eq!(log.checkpointed_high_watermark().unwrap(), Offset(10));
        log.truncate_to(Offset(0)).await.unwrap();
        assert_eq!(log.checkpointed_high_watermark().unwrap(), Offset(0));
    });
}
