//! Model-based test: random sequences of appends, rolls, truncations,
//! retention, clean reopens and crashes, checked after every step against
//! a plain in-memory model of the log.

mod common;

use std::rc::Rc;

use borges_net::types::{LeaderEpoch, Offset};
use borges_storage::{Clock, FlushPolicy, Log, LogConfig, ManualClock};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Batches of (record count, value length).
    Append(Vec<(usize, usize)>),
    Roll,
    /// Truncate to a point chosen in [log start, log end] by this fraction.
    Truncate(f64),
    /// Move the clock forward (ms), then apply retention.
    Retention(i64),
    Reopen,
    Crash,
    /// Read from a point chosen by this fraction with this byte limit.
    Read(f64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((1usize..6, 1usize..300), 1..4).prop_map(Op::Append),
        1 => Just(Op::Roll),
        1 => (0.0f64..1.0).prop_map(Op::Truncate),
        1 => (0i64..30_000).prop_map(Op::Retention),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        2 => ((0.0f64..1.0), 1usize..20_000).prop_map(|(f, m)| Op::Read(f, m)),
    ]
}

#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    values: Vec<Vec<u8>>,
    timestamp: i64,
}

impl ModelBatch {
    fn end(&self) -> u64 {
        self.base + self.values.len() as u64
    }
}

#[derive(Default)]
struct Model {
    batches: Vec<ModelBatch>,
    start: u64,
    end: u64,
}

impl Model {
    fn records_from(&self, from: u64) -> Vec<(u64, Vec<u8>)> {
        self.batches
            .iter()
            .flat_map(|b| {
                b.values
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (b.base + i as u64, v.clone()))
            })
            .filter(|(o, _)| *o >= from)
            .collect()
    }
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes_max: 8 << 10,
        index_interval_bytes: 300,
        tail_cache_bytes_max: 4 << 10,
        write_buffer_bytes: 8 << 10,
        writes_in_flight_max: 2,
        retention_ms: Some(10_000),
        flush,
        ..LogConfig::default()
    }
}

async fn check(log: &Log, m: &Model) {
    assert_eq!(log.log_start_offset(), Offset(m.start), "log start");
    assert_eq!(log.log_end_offset(), Offset(m.end), "log end");
    assert_eq!(
        read_all(log, Offset(m.start), 3000).await,
        m.records_from(m.start)
    );
}

fn run_ops(ops: Vec<Op>, every_batch: bool) {
    run(move || async move {
        let dir = tempfile::tempdir().unwrap();
        let clock = Rc::new(ManualClock::new(1_000_000));
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
                    for (n, len) in batches {
                        let values: Vec<Vec<u8>> = (0..n).map(|i| value(seq + i as u64, len)).collect();
                        seq += n as u64;
                        let ts = clock.now_ms();
                        let info = log.append(batch(&values, ts), LeaderEpoch::NONE).await.unwrap();
                        assert_eq!(info.base_offset, Offset(m.end));
                        m.batches.push(ModelBatch {
                            base: m.end,
                            values,
                            timestamp: ts + n as i64 - 1,
                        });
                        m.end += n as u64;
                    }
                }
                Op::Roll => log.roll().await.unwrap(),
                Op::Truncate(f) => {
                    let target = m.start + ((m.end - m.start) as f64 * f) as u64;
                    let leo = log.truncate_to(Offset(target)).await.unwrap();
                    // Batches are atomic: the one holding the target goes whole.
                    let expected = m
                        .batches
                        .iter()
                        .find(|b| b.end() > target)
                        .map_or(m.end, |b| b.base);
                    assert_eq!(leo, Offset(expected), "truncate to {target}");
                    m.batches.retain(|b| b.base < expected);
                    m.end = expected;
                }
                Op::Retention(ms) => {
                    clock.advance(ms);
                    let out = log.apply_retention().await.unwrap();
                    let cutoff = clock.now_ms() - 10_000;
                    let new_start = out.log_start_offset.0;
                    assert!(new_start >= m.start && new_start <= m.end);
                    for b in m.batches.iter().filter(|b| b.end() <= new_start) {
                        assert!(b.timestamp < cutoff, "only expired data is deleted");
                    }
                    assert!(m.batches.iter().any(|b| b.base == new_start) || new_start == m.end);
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
                    // What was synced survives; what was not may be lost, at a batch boundary.
                    assert!(leo >= durable && leo <= m.end, "{durable} <= {leo} <= {}", m.end);
                    if every_batch {
                        assert_eq!(leo, m.end);
                    }
                    assert!(m.batches.iter().any(|b| b.end() == leo) || leo == m.start);
                    m.batches.retain(|b| b.end() <= leo);
                    m.end = leo;
                }
                Op::Read(f, max) => {
                    let from = m.start + ((m.end - m.start) as f64 * f) as u64;
                    let r = log.read(Offset(from), max, None).await.unwrap();
                    if from < m.end {
                        assert!(!r.chunks.is_empty());
                        assert!(r.next_offset.0 > from);
                    }
                    assert_eq!(read_all(&log, Offset(from), max).await, m.records_from(from));
                }
            }
            check(&log, &m).await;
        }
        log.close().await.unwrap();
        let log = reopen(clock.clone()).await;
        check(&log, &m).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_with_fsync_per_batch(ops in prop::collection::vec(op(), 1..40)) {
        run_ops(ops, true);
    }

    #[test]
    fn log_matches_model_without_fsync(ops in prop::collection::vec(op(), 1..40)) {
        run_ops(ops, false);
    }
}
