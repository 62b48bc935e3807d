//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::future::Future;
use std::rc::Rc;

use borges_net::batch::{decode_records, BatchHeader, BatchIter, Compression, Record, RecordBatchBuilder};
use borges_net::types::{LeaderEpoch, Offset};
use borges_storage::{Chunk, Clock, Log, LogConfig, SystemClock};
use bytes::BytesMut;

/// Runs a future on a fresh glommio executor on this thread.
pub fn run<F, T>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor")
        .join()
        .expect("executor ran")
}

/// A batch of `values`, with timestamps `ts0`, `ts0 + 1`, ...
pub fn batch(values: &[Vec<u8>], ts0: i64) -> BytesMut {
    let mut b = RecordBatchBuilder::new(Compression::None);
    for (i, v) in values.iter().enumerate() {
        b.push(ts0 + i as i64, Some(format!("k{i}").as_bytes()), Some(v), &[]);
    }
    b.build().expect("batch")
}

/// A batch of `n` records whose values name their global sequence number.
pub fn numbered_batch(first: u64, n: usize, value_len: usize, ts0: i64) -> BytesMut {
    let values: Vec<Vec<u8>> = (0..n as u64).map(|i| value(first + i, value_len)).collect();
    batch(&values, ts0)
}

pub fn value(seq: u64, len: usize) -> Vec<u8> {
    let mut v = format!("v{seq:012}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (seq % 26) as u8);
    }
    v
}

pub async fn open(dir: &std::path::Path, config: LogConfig) -> Log {
    Log::open(dir, config, Rc::new(SystemClock) as Rc<dyn Clock>)
        .await
        .expect("open log")
}

pub async fn append(log: &Log, b: BytesMut) -> borges_storage::AppendInfo {
    log.append(b, LeaderEpoch::NONE).await.expect("append")
}

/// Every record from `from` to the log end, as (offset, value), read with
/// reads of at most `max_bytes`, checking each chunk is whole valid batches.
pub async fn read_all(log: &Log, from: Offset, max_bytes: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = log.read(next, max_bytes, None).await.expect("read");
        if r.chunks.is_empty() {
            assert_eq!(next, r.log_end_offset, "an empty read only at the log end");
            break;
        }
        assert!(r.next_offset > next, "reads advance");
        for c in &r.chunks {
            let bytes = match c {
                Chunk::Memory(b) => b.to_vec(),
                Chunk::File(f) => f.read_to_vec().expect("pread"),
            };
            let mut it = BatchIter::new(&bytes);
            for item in &mut it {
                let (_, range) = item.expect("whole batches");
                for rec in decode_records(&bytes[range]).expect("valid batch") {
                    if rec.offset as u64 >= from.0 {
                        out.push((rec.offset as u64, rec.value.expect("value").to_vec()));
                    }
                }
            }
            assert_eq!(it.position(), bytes.len(), "chunks end on batch boundaries");
        }
        next = r.next_offset;
    }
    out
}

/// The bytes of a read chunk.
pub fn chunk_bytes(c: &Chunk) -> Vec<u8> {
    match c {
        Chunk::Memory(b) => b.to_vec(),
        Chunk::File(f) => f.read_to_vec().expect("pread"),
    }
}

/// Every batch from the one holding `from` on, with its decoded records,
/// read with reads of at most `max_bytes`. Stops at the first empty read:
/// the log end, or a gap left by compaction that nothing follows yet.
pub async fn read_batches(log: &Log, from: Offset, max_bytes: usize) -> Vec<(BatchHeader, Vec<Record>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = log.read(next, max_bytes, None).await.expect("read");
        if r.chunks.is_empty() {
            break;
        }
        assert!(r.next_offset > next, "reads advance");
        for c in &r.chunks {
            let bytes = chunk_bytes(c);
            let mut it = BatchIter::new(&bytes);
            for item in &mut it {
                let (h, range) = item.expect("whole batches");
                out.push((h, decode_records(&bytes[range]).expect("valid batch")));
            }
            assert_eq!(it.position(), bytes.len(), "chunks end on batch boundaries");
        }
        next = r.next_offset;
    }
    out
}
