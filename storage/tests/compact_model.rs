//! Model-based test of compaction: random sequences of keyed appends
//! (updates, tombstones, null keys, three codecs, old and new timestamps),
//! rolls, clock moves, compaction runs, truncations, retention, clean
//! reopens and crashes, checked after every step against an in-memory model.
//!
//! After each compaction the model applies the cleaner's rule itself to the
//! range the run reports, and checks that range: below it every record was
//! at least `min_compaction_lag_ms` old, and the segment at its end (if not
//! the active one) holds a younger record. After every step the whole log is
//! read back and compared batch by batch (base and last offset, codec,
//! producer fields) and record by record (offset, timestamp, key, value,
//! headers); point reads, reads from inside gaps and timestamp lookups are
//! checked against the model too.

mod common;

use std::collections::HashMap;
use std::rc::Rc;

use borges_net::batch::{Compression, RecordBatchBuilder};
use borges_net::types::{LeaderEpoch, Offset, TimestampMs};
use borges_storage::{Clock, CompactionConfig, FlushPolicy, Log, LogConfig, ManualClock};
use common::*;
use proptest::prelude::*;

const DELETE_RETENTION_MS: i64 = 5_000;
const RETENTION_MS: i64 = 120_000;
const KEYS: u8 = 6;

#[derive(Debug, Clone)]
struct RecSpec {
    /// `None`: a null key.
    key: Option<u8>,
    /// Value length; `None`: a tombstone.
    value: Option<usize>,
    /// How long before the clock's now the record was created (ms).
    age_ms: i64,
    header: bool,
}

#[derive(Debug, Clone)]
enum Op {
    /// Batches of (codec id 0/3/4, records).
    Append(Vec<(u8, Vec<RecSpec>)>),
    Roll,
    Advance(i64),
    /// Compact with this min compaction lag.
    Compact(i64),
    /// Truncate to a point chosen in [log start, log end] by this fraction.
    Truncate(f64),
    /// Move the clock forward (ms), then apply retention.
    Retention(i64),
    Reopen,
    Crash,
    /// Read from a point chosen by this fraction with this byte limit.
    Read(f64, usize),
    /// Look up the first record at or after `now - this` (ms).
    Timestamp(i64),
}

fn rec() -> impl Strategy<Value = RecSpec> {
    (
        prop_oneof![1 => Just(None), 5 => (0..KEYS).prop_map(Some)],
        prop_oneof![1 => Just(None), 4 => (1usize..120).prop_map(Some)],
        // Whole seconds, so that ages often meet the lag and retention limits exactly.
        prop_oneof![3 => Just(0i64), 2 => (0i64..10).prop_map(|s| s * 1_000)],
        any::<bool>(),
    )
        .prop_map(|(key, value, age_ms, header)| RecSpec {
            key,
            value,
            age_ms,
            header,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let batch = (
        prop_oneof![3 => Just(0u8), 1 => Just(3u8), 1 => Just(4u8)],
        prop::collection::vec(rec(), 1..6),
    );
    prop_oneof![
        10 => prop::collection::vec(batch, 1..4).prop_map(Op::Append),
        2 => Just(Op::Roll),
        2 => (0i64..15).prop_map(|h| Op::Advance(h * 500)),
        3 => prop_oneof![Just(0i64), Just(2_000), Just(8_000)].prop_map(Op::Compact),
        1 => (0.0f64..1.0).prop_map(Op::Truncate),
        1 => (0i64..40).prop_map(|s| Op::Retention(s * 1_000)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        2 => ((0.0f64..1.0), 1usize..4_000).prop_map(|(f, m)| Op::Read(f, m)),
        1 => (-2i64..50).prop_map(|h| Op::Timestamp(h * 500)),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MRec {
    offset: u64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone)]
struct MBatch {
    base: u64,
    last: u64,
    codec: Compression,
    producer: (i64, i16, i32),
    records: Vec<MRec>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    batches: Vec<MBatch>,
    start: u64,
    end: u64,
}

impl Model {
    fn records(&self) -> impl Iterator<Item = &MRec> {
        self.batches.iter().flat_map(|b| b.records.iter())
    }

    /// Applies the cleaner's rule below `upto`; returns (records, tombstones) removed.
    fn compact(&mut self, upto: u64, now: i64) -> (u64, u64) {
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for r in self.records() {
            if let Some(k) = &r.key {
                latest.insert(k.clone(), r.offset);
            }
        }
        let cutoff = now - DELETE_RETENTION_MS;
        let (mut removed, mut tombstones) = (0, 0);
        for b in self.batches.iter_mut().filter(|b| b.base < upto) {
            b.records.retain(|r| {
                let stays = match &r.key {
                    None => true,
                    Some(k) => latest[k] == r.offset && !(r.value.is_none() && r.timestamp <= cutoff),
                };
                if !stays {
                    removed += 1;
                    tombstones += u64::from(r.value.is_none());
                }
                stays
            });
        }
        self.batches.retain(|b| !b.records.is_empty());
        (removed, tombstones)
    }
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes_max: 4 << 10,
        index_interval_bytes: 200,
        tail_cache_bytes_max: 2 << 10,
        write_buffer_bytes: 8 << 10,
        writes_in_flight_max: 2,
        retention_ms: Some(RETENTION_MS),
        segment_ms_max: None,
        flush,
        ..LogConfig::default()
    }
}

fn codec(id: u8) -> Compression {
    match id {
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Reads the whole log and compares it with the model, batch by batch.
async fn check(log: &Log, m: &Model) {
    assert_eq!(log.log_start_offset(), Offset(m.start), "log start");
    assert_eq!(log.log_end_offset(), Offset(m.end), "log end");
    assert!(
        log.cleaner_checkpoint() <= log.log_end_offset(),
        "checkpoint within the log"
    );
    let got = read_batches(log, Offset(m.start), 3_000).await;
    let mut prev_last: Option<i64> = None;
    for (h, _) in &got {
        if let Some(p) = prev_last {
            assert!(
                h.base_offset > p,
                "offsets strictly increase: {} after {p}",
                h.base_offset
            );
        }
        prev_last = Some(h.last_offset());
    }
    assert_eq!(got.len(), m.batches.len(), "batch count");
    for ((h, recs), mb) in got.iter().zip(&m.batches) {
        assert_eq!(h.base_offset as u64, mb.base, "base offset");
        assert_eq!(
            h.last_offset() as u64,
            mb.last,
            "last offset of batch {}",
            mb.base
        );
        assert_eq!(h.compression().unwrap(), mb.codec, "codec of batch {}", mb.base);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            mb.producer,
            "producer fields of batch {}",
            mb.base
        );
        let recs: Vec<MRec> = recs
            .iter()
            .map(|r| MRec {
                offset: r.offset as u64,
                timestamp: r.timestamp,
                key: r.key.as_ref().map(|k| k.to_vec()),
                value: r.value.as_ref().map(|v| v.to_vec()),
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                    .collect(),
            })
            .collect();
        assert_eq!(recs, mb.records, "records of batch {}", mb.base);
    }
}

fn run_ops(ops: Vec<Op>, every_batch: bool) {
    run(move || async move {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(10_000_000));
        let flush = if every_batch {
            FlushPolicy::EveryBatch
        } else {
            FlushPolicy::Never
        };
        let reopen = |clock: Rc<ManualClock>| {
            let path = dir.path().to_path_buf();
            async move {
                Log::open(path, config(flush), clock as Rc<dyn Clock>)
                    .await
                    .unwrap()
            }
        };
        let mut log = reopen(clock.clone()).await;
        let mut m = Model::default();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Append(batches) => {
                    for (codec_id, specs) in batches {
                        let now = clock.now_ms();
                        let producer = (seq as i64 % 5, 1, seq as i32);
                        let mut b = RecordBatchBuilder::new(codec(codec_id))
                            .producer(producer.0, producer.1, producer.2);
                        let mut records = Vec::new();
                        for (i, s) in specs.iter().enumerate() {
                            let key = s.key.map(|k| format!("key{k}").into_bytes());
                            let val = s.value.map(|len| value(seq, len));
                            let headers: Vec<(String, Option<Vec<u8>>)> = if s.header {
                                vec![("seq".to_string(), Some(seq.to_string().into_bytes()))]
                            } else {
                                Vec::new()
                            };
                            let hdr_refs: Vec<(&str, Option<&[u8]>)> =
                                headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                            let ts = now - s.age_ms;
                            b.push(ts, key.as_deref(), val.as_deref(), &hdr_refs);
                            records.push(MRec {
                                offset: m.end + i as u64,
                                timestamp: ts,
                                key,
                                value: val,
                                headers,
                            });
                            seq += 1;
                        }
                        let info = log.append(b.build().unwrap(), LeaderEpoch::NONE).await.unwrap();
                        assert_eq!(info.base_offset, Offset(m.end));
                        let n = records.len() as u64;
                        m.batches.push(MBatch {
                            base: m.end,
                            last: m.end + n - 1,
                            codec: codec(codec_id),
                            producer,
                            records,
                        });
                        m.end += n;
                    }
                }
                Op::Roll => log.roll().await.unwrap(),
                Op::Advance(ms) => clock.advance(ms),
                Op::Compact(lag) => {
                    let now = clock.now_ms();
                    let cfg = CompactionConfig {
                        delete_retention_ms: DELETE_RETENTION_MS,
                        min_compaction_lag_ms: lag,
                        max_bytes_per_sec: None,
                    };
                    let out = log.compact(&cfg, None).await.unwrap();
                    assert!(!out.stopped_early);
                    let upto = out.cleaned_up_to.0;
                    let bases: Vec<u64> = log.segment_bases().iter().map(|o| o.0).collect();
                    let active = *bases.last().unwrap();
                    assert!(
                        bases.contains(&upto),
                        "the range ends at a segment: {upto} {bases:?}"
                    );
                    assert!(upto <= active, "the active segment is never cleaned");
                    // Eligibility: everything below the range end is old enough.
                    let lag_cutoff = now - lag;
                    for r in m.records().filter(|r| r.offset < upto) {
                        assert!(
                            r.timestamp <= lag_cutoff,
                            "a record younger than the lag was cleaned: {r:?}"
                        );
                    }
                    // Maximality: the segment at the range end (if sealed) holds a younger record.
                    if upto < active {
                        let next = *bases.iter().find(|&&b| b > upto).unwrap();
                        assert!(
                            m.records()
                                .any(|r| r.offset >= upto && r.offset < next && r.timestamp > lag_cutoff),
                            "segment {upto} was eligible but not cleaned"
                        );
                    }
                    let (removed, tombstones) = m.compact(upto, now);
                    assert_eq!(out.records_removed, removed, "records removed");
                    assert_eq!(out.tombstones_removed, tombstones, "tombstones removed");
                    if out.segments_cleaned > 0 {
                        assert!(log.cleaner_checkpoint().0 >= upto, "checkpoint covers the run");
                    }
                }
                Op::Truncate(f) => {
                    let target = m.start + ((m.end - m.start) as f64 * f) as u64;
                    if target >= m.end {
                        continue;
                    }
                    let seg_base = log
                        .segment_bases()
                        .iter()
                        .rev()
                        .find(|b| b.0 <= target)
                        .unwrap()
                        .0;
                    let kept_end = m
                        .batches
                        .iter()
                        .filter(|b| b.last < target)
                        .map(|b| b.last + 1)
                        .max()
                        .unwrap_or(0);
                    let expected = seg_base.max(kept_end);
                    let leo = log.truncate_to(Offset(target)).await.unwrap();
                    assert_eq!(leo, Offset(expected), "truncate to {target}");
                    assert!(m.batches.iter().all(|b| b.last < expected || b.base >= expected));
                    m.batches.retain(|b| b.last < expected);
                    m.end = expected;
                    assert!(log.cleaner_checkpoint() <= leo, "checkpoint clamped");
                }
                Op::Retention(ms) => {
                    clock.advance(ms);
                    let out = log.apply_retention().await.unwrap();
                    let cutoff = clock.now_ms() - RETENTION_MS;
                    let new_start = out.log_start_offset.0;
                    assert!(new_start >= m.start && new_start <= m.end);
                    for r in m.records().filter(|r| r.offset < new_start) {
                        assert!(r.timestamp < cutoff, "only expired data is deleted: {r:?}");
                    }
                    assert!(m
                        .batches
                        .iter()
                        .all(|b| b.last < new_start || b.base >= new_start));
                    m.batches.retain(|b| b.base >= new_start);
                    m.start = new_start;
                }
                Op::Reopen => {
                    log.close().await.unwrap();
                    log = reopen(clock.clone()).await;
                    assert!(log.recovery_report().clean_shutdown);
                    assert_eq!(log.recovery_report().truncated, None);
                }
                Op::Crash => {
                    let durable = log.durable_offset().0;
                    drop(log);
                    log = reopen(clock.clone()).await;
                    let leo = log.log_end_offset().0;
                    assert!(leo >= durable && leo <= m.end, "{durable} <= {leo} <= {}", m.end);
                    if every_batch {
                        assert_eq!(leo, m.end);
                        assert_eq!(log.recovery_report().truncated, None, "gaps are not damage");
                    }
                    assert!(m.batches.iter().all(|b| b.last < leo || b.base >= leo));
                    m.batches.retain(|b| b.last < leo);
                    m.end = leo;
                }
                Op::Read(f, max) => {
                    let from = m.start + ((m.end - m.start) as f64 * f) as u64;
                    let r = log.read(Offset(from), max, None).await.unwrap();
                    // A read from inside a gap starts at the next batch.
                    match m.batches.iter().find(|b| b.last >= from) {
                        Some(b) => {
                            let bytes = chunk_bytes(&r.chunks[0]);
                            let h = borges_net::batch::BatchHeader::parse(&bytes).unwrap();
                            assert_eq!(h.base_offset as u64, b.base, "read from {from}");
                            assert!(r.next_offset.0 > from);
                        }
                        None => assert!(r.chunks.is_empty(), "nothing at or after {from}"),
                    }
                }
                Op::Timestamp(back) => {
                    let ts = clock.now_ms() - back;
                    let expected = m
                        .records()
                        .find(|r| r.timestamp >= ts)
                        .map(|r| (Offset(r.offset), TimestampMs(r.timestamp)));
                    let got = log.offset_for_timestamp(TimestampMs(ts)).await.unwrap();
                    assert_eq!(got, expected, "offset for timestamp {ts}");
                }
            }
            check(&log, &m).await;
        }
        log.close().await.unwrap();
        log = reopen(clock.clone()).await;
        check(&log, &m).await;
        // A full scan of every segment (as after a crash that left no
        // trusted checkpoint) accepts the gaps and cuts nothing.
        log.close().await.unwrap();
        std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
        std::fs::write(dir.path().join("recovery-point"), b"0").unwrap();
        log = reopen(clock.clone()).await;
        assert_eq!(log.recovery_report().truncated, None);
        check(&log, &m).await;
        // glommio closes a dropped file on its next I/O cycle: give it one
        // before the executor ends, or long runs exhaust descriptors.
        drop(log);
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn compaction_matches_model_with_fsync_per_batch(ops in prop::collection::vec(op(), 10..80)) {
        run_ops(ops, true);
    }

    #[test]
    fn compaction_matches_model_without_fsync(ops in prop::collection::vec(op(), 10..80)) {
        run_ops(ops, false);
    }
}
