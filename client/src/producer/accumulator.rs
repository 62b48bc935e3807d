//! The record accumulator: per-partition queues of batches waiting to be sent.
//!
//! Pure bookkeeping, no I/O and no clock: every method that depends on time
//! takes `now`, so the size and linger triggers are tested without sleeping.
//! The producer keeps one behind a mutex; its sender task asks `ready` which
//! partitions may send and `take`s their front batch.
//!
//! Ordering: a partition has at most one batch in flight. A batch that fails
//! with a retriable error goes back to the FRONT of its queue (`requeue`), so
//! the records of a partition reach the log in the order they were sent, even
//! across retries. The cost is one round trip per batch per partition; many
//! partitions, or larger batches, recover the throughput.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use ahash::AHashMap as HashMap;

use borges_net::batch::{Compression, RecordBatchBuilder};
use bytes::BytesMut;

/// A topic name and a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicPartition {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
}

/// Bytes a record adds to a batch beyond its key, value and headers (the
/// varint lengths, attributes and deltas), as an upper estimate.
const RECORD_OVERHEAD_BYTES: usize = 21;

/// A record's estimated size in a batch, uncompressed.
pub(crate) fn record_size(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    let mut n = RECORD_OVERHEAD_BYTES + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    for (k, v) in headers {
        n += 10 + k.len() + v.map_or(0, <[u8]>::len);
    }
    n
}

/// How a batch ended: the base offset the broker gave it (-1 when acks=0
/// learns none), or the error that failed it. Every record's delivery
/// future reads it, so completing a batch costs the same for one record or
/// ten thousand.
#[derive(Debug)]
pub(crate) struct BatchSignal {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    outcome: OnceLock<Result<i64, crate::ClientError>>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchSignal {
    fn new(tp: &TopicPartition) -> BatchSignal {
        BatchSignal {
            topic: tp.topic.clone(),
            partition: tp.partition,
            outcome: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Settles the batch and wakes every waiting delivery future.
    pub(crate) fn complete(&self, outcome: Result<i64, crate::ClientError>) {
        let _ = self.outcome.set(outcome);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }

    /// The outcome, or `None` after registering `waker` to be woken by it.
    pub(crate) fn poll_outcome(&self, waker: &Waker) -> Option<&Result<i64, crate::ClientError>> {
        if let Some(o) = self.outcome.get() {
            return Some(o);
        }
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: `complete` sets the outcome before it
        // takes the wakers, so either it is visible here or this waker is.
        if let Some(o) = self.outcome.get() {
            return Some(o);
        }
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        None
    }
}

/// A batch of one partition, open (still taking records) or closed.
pub(crate) struct ProducerBatch {
    /// Settled when the batch is acknowledged or fails.
    pub(crate) signal: Arc<BatchSignal>,
    pub(crate) tp: TopicPartition,
    /// `Some` until the batch is encoded (on its first send).
    pub(crate) builder: Option<RecordBatchBuilder>,
    /// The encoded batch, kept for retries.
    pub(crate) encoded: Option<BytesMut>,
    /// Records in the batch; each one's delivery future knows its index.
    pub(crate) record_count: usize,
    pub(crate) created: Instant,
    /// Estimated uncompressed bytes, the measure `batch_size_bytes` caps.
    pub(crate) size_bytes: usize,
    /// Record bytes allocated for the batch when it opened (charged to the
    /// buffer): the batch size, or one larger record's size.
    pub(crate) capacity_bytes: usize,
    /// Buffer bytes charged for the batch, released when it completes.
    pub(crate) reserved_bytes: usize,
    /// Sends tried so far.
    pub(crate) attempts: u32,
}

#[derive(Default)]
struct PartitionQueue {
    batches: VecDeque<ProducerBatch>,
    /// The signal of the batch in flight, if one is.
    in_flight: Option<Arc<BatchSignal>>,
    /// A retried batch waits until then.
    backoff_until: Option<Instant>,
}

/// What an append did, so the producer knows whether to wake its sender,
/// and where the record sits (its batch's signal and its index there).
#[derive(Debug, Clone)]
pub(crate) struct Appended {
    /// A new batch was opened (the sender must learn its linger deadline).
    pub(crate) new_batch: bool,
    /// A batch reached `batch_size_bytes` and is ready now.
    pub(crate) batch_full: bool,
    pub(crate) signal: Arc<BatchSignal>,
    pub(crate) index: u32,
}

/// Per-partition queues of batches.
pub(crate) struct Accumulator {
    batch_size_bytes: usize,
    linger: Duration,
    compression: Compression,
    queues: HashMap<TopicPartition, PartitionQueue>,
}

impl Accumulator {
    pub(crate) fn new(batch_size_bytes: usize, linger: Duration, compression: Compression) -> Self {
        Accumulator {
            batch_size_bytes: batch_size_bytes.max(1),
            linger,
            compression,
            queues: HashMap::new(),
        }
    }

    /// Whether a record of `size` bytes would not fit in the open batch of
    /// `tp` (so appending it would close that batch).
    pub(crate) fn would_overflow(&self, tp: &TopicPartition, size: usize) -> bool {
        self.queues
            .get(tp)
            .and_then(|q| q.batches.back())
            .is_some_and(|b| b.builder.is_some() && b.size_bytes + size > b.capacity_bytes)
    }

    /// The buffer bytes appending a record of `size` bytes to `tp` costs:
    /// none if it fits the open batch (whose allocation is already
    /// charged), else the allocation of the batch it opens.
    pub(crate) fn charge_for(&self, tp: &TopicPartition, size: usize) -> usize {
        let fits = self
            .queues
            .get(tp)
            .and_then(|q| q.batches.back())
            .is_some_and(|b| b.builder.is_some() && b.size_bytes + size <= b.capacity_bytes);
        if fits {
            0
        } else {
            self.batch_capacity(size)
        }
    }

    /// The allocation of a batch opened by a record of `size` bytes: the
    /// batch size, or the record's size if it is larger (it then fills the
    /// batch alone).
    fn batch_capacity(&self, size: usize) -> usize {
        self.batch_size_bytes.max(size)
    }

    /// Appends one record to the open batch of `tp`, opening a new batch if
    /// there is none or the record would not fit. A record larger than
    /// `batch_size_bytes` gets a batch of its own.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &mut self,
        tp: &TopicPartition,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        reserved_bytes: usize,
        now: impl FnOnce() -> Instant,
    ) -> Appended {
        let size = record_size(key, value, headers);
        let batch_size = self.batch_size_bytes;
        let compression = self.compression;
        // One lookup, and no key clone, on the common path: the partition
        // already has a queue.
        if !self.queues.contains_key(tp) {
            self.queues.insert(tp.clone(), PartitionQueue::default());
        }
        let capacity = self.batch_capacity(size);
        let q = self.queues.get_mut(tp).expect("queue ensured above");
        let open = q.batches.back().is_some_and(|b| b.builder.is_some());
        // Past the allocation, not only past the batch size: a batch never
        // grows beyond the bytes charged for it.
        let overflow = q
            .batches
            .back()
            .is_some_and(|b| b.builder.is_some() && b.size_bytes + size > b.capacity_bytes);
        let mut new_batch = false;
        if !open || overflow {
            // Close the current open batch: encoding happens at send time,
            // but it takes no more records.
            q.batches.push_back(ProducerBatch {
                signal: Arc::new(BatchSignal::new(tp)),
                tp: tp.clone(),
                // Full size up front: growing a 1 MiB batch by doubling
                // copies it several times over. `record_size` is an upper
                // estimate, so the records never outgrow this.
                builder: Some(RecordBatchBuilder::with_capacity(compression, capacity)),
                capacity_bytes: capacity,
                encoded: None,
                record_count: 0,
                created: now(),
                size_bytes: 0,
                reserved_bytes: 0,
                attempts: 0,
            });
            new_batch = true;
        }
        let batch = q.batches.back_mut().expect("a batch was just ensured");
        let builder = batch.builder.as_mut().expect("the back batch is open");
        builder.push(timestamp, key, value, headers);
        batch.size_bytes += size;
        batch.reserved_bytes += reserved_bytes;
        batch.record_count += 1;
        Appended {
            new_batch,
            batch_full: overflow || batch.size_bytes >= batch_size,
            signal: batch.signal.clone(),
            index: (batch.record_count - 1) as u32,
        }
    }

    /// The partitions whose front batch may be sent now, and the earliest
    /// time another may become ready (a linger or backoff deadline). A
    /// partition is ready when nothing of it is in flight, its backoff has
    /// passed, and its front batch is full, is followed by another, is a
    /// retry, has waited `linger`, or `force` is set (flush, close).
    pub(crate) fn ready(&self, now: Instant, force: bool) -> (Vec<TopicPartition>, Option<Instant>) {
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        let mut wake_at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for (tp, q) in &self.queues {
            if q.in_flight.is_some() {
                continue;
            }
            let Some(front) = q.batches.front() else { continue };
            if let Some(until) = q.backoff_until {
                if until > now {
                    wake_at(until);
                    continue;
                }
            }
            let linger_at = front.created + self.linger;
            let is_ready = force
                || front.attempts > 0
                || q.batches.len() > 1
                || front.builder.is_none()
                || front.size_bytes >= self.batch_size_bytes
                || linger_at <= now;
            if is_ready {
                ready.push(tp.clone());
            } else {
                wake_at(linger_at);
            }
        }
        ready.sort();
        (ready, next)
    }

    /// Takes the front batch of `tp` to send, marking the partition in flight.
    pub(crate) fn take(&mut self, tp: &TopicPartition) -> Option<ProducerBatch> {
        let q = self.queues.get_mut(tp)?;
        if q.in_flight.is_some() {
            return None;
        }
        let b = q.batches.pop_front()?;
        q.in_flight = Some(b.signal.clone());
        q.backoff_until = None;
        Some(b)
    }

    /// Puts a batch that must be retried back at the front of its queue; the
    /// partition sends nothing before `backoff_until`.
    pub(crate) fn requeue(&mut self, batch: ProducerBatch, backoff_until: Instant) {
        let q = self.queues.entry(batch.tp.clone()).or_default();
        q.in_flight = None;
        q.backoff_until = Some(backoff_until);
        q.batches.push_front(batch);
    }

    /// Marks the in-flight batch of `tp` done (delivered or failed for good).
    pub(crate) fn complete(&mut self, tp: &TopicPartition) {
        if let Some(q) = self.queues.get_mut(tp) {
            q.in_flight = None;
            if q.batches.is_empty() {
                self.queues.remove(tp);
            }
        }
    }

    /// The signals of every batch not yet settled: waiting, open, or in
    /// flight. What a flush waits for.
    pub(crate) fn unsettled_signals(&self) -> Vec<Arc<BatchSignal>> {
        self.queues
            .values()
            .flat_map(|q| q.in_flight.iter().chain(q.batches.iter().map(|b| &b.signal)))
            .cloned()
            .collect()
    }

    /// Whether no batch is waiting (some may still be in flight).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.values().all(|q| q.batches.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: u32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from("t"),
            partition: p,
        }
    }

    fn acc(batch: usize, linger_ms: u64) -> Accumulator {
        Accumulator::new(batch, Duration::from_millis(linger_ms), Compression::None)
    }

    fn push(a: &mut Accumulator, p: u32, value: &[u8], _id: u32, now: Instant) -> Appended {
        a.append(&tp(p), 0, None, Some(value), &[], value.len(), || now)
    }

    #[test]
    fn size_trigger() {
        let now = Instant::now();
        let mut a = acc(1000, 10_000);
        let v = [0u8; 100];
        let first = push(&mut a, 0, &v, 0, now);
        assert!(first.new_batch && !first.batch_full);
        assert_eq!(a.ready(now, false).0, vec![]);
        // 121 bytes per record: the 9th record would pass 1000 bytes.
        for i in 1..8 {
            let r = push(&mut a, 0, &v, i, now);
            assert!(!r.new_batch && !r.batch_full, "record {i}");
        }
        assert_eq!(a.ready(now, false).0, vec![]);
        let r = push(&mut a, 0, &v, 8, now);
        assert!(r.new_batch && r.batch_full, "the 9th record opens a second batch");
        assert_eq!(a.ready(now, false).0, vec![tp(0)]);
        let b = a.take(&tp(0)).unwrap();
        assert_eq!(b.record_count, 8);
        assert!(b.size_bytes <= 1000);
        // One batch in flight per partition: the second waits.
        assert_eq!(a.ready(now, true).0, vec![]);
        a.complete(&tp(0));
        assert_eq!(a.ready(now, true).0, vec![tp(0)]);
        assert_eq!(a.take(&tp(0)).unwrap().record_count, 1);
    }

    #[test]
    fn oversized_record_gets_its_own_batch() {
        let now = Instant::now();
        let mut a = acc(100, 10_000);
        let r = push(&mut a, 0, &[0u8; 500], 0, now);
        assert!(r.new_batch && r.batch_full);
        let r = push(&mut a, 0, &[0u8; 10], 1, now);
        assert!(r.new_batch, "nothing more goes into a full batch");
        assert_eq!(a.take(&tp(0)).unwrap().record_count, 1);
    }

    #[test]
    fn linger_trigger() {
        let t0 = Instant::now();
        let mut a = acc(1 << 20, 5);
        push(&mut a, 0, b"x", 0, t0);
        push(&mut a, 1, b"y", 1, t0 + Duration::from_millis(3));
        let (ready, next) = a.ready(t0 + Duration::from_millis(1), false);
        assert!(ready.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_millis(5)));
        let (ready, next) = a.ready(t0 + Duration::from_millis(5), false);
        assert_eq!(ready, vec![tp(0)]);
        assert_eq!(next, Some(t0 + Duration::from_millis(8)));
        let (ready, _) = a.ready(t0 + Duration::from_millis(8), false);
        assert_eq!(ready, vec![tp(0), tp(1)]);
        // `force` (flush) ignores linger.
        let mut a = acc(1 << 20, 60_000);
        push(&mut a, 2, b"z", 0, t0);
        assert_eq!(a.ready(t0, true).0, vec![tp(2)]);
    }

    #[test]
    fn requeue_keeps_order_and_backs_off() {
        let t0 = Instant::now();
        let mut a = acc(150, 0);
        let one = push(&mut a, 0, &[1u8; 100], 0, t0).signal;
        let two = push(&mut a, 0, &[2u8; 100], 1, t0).signal;
        let mut first = a.take(&tp(0)).unwrap();
        assert!(Arc::ptr_eq(&first.signal, &one));
        first.attempts += 1;
        a.requeue(first, t0 + Duration::from_millis(100));
        let (ready, next) = a.ready(t0 + Duration::from_millis(50), false);
        assert!(ready.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_millis(100)));
        let (ready, _) = a.ready(t0 + Duration::from_millis(100), false);
        assert_eq!(ready, vec![tp(0)]);
        assert!(
            Arc::ptr_eq(&a.take(&tp(0)).unwrap().signal, &one),
            "the retried batch goes first"
        );
        a.complete(&tp(0));
        assert!(Arc::ptr_eq(&a.take(&tp(0)).unwrap().signal, &two));
        a.complete(&tp(0));
        assert!(a.is_empty());
    }

    #[test]
    fn would_overflow_reports_a_full_open_batch() {
        let now = Instant::now();
        let mut a = acc(200, 0);
        assert!(!a.would_overflow(&tp(0), 1000), "no batch yet");
        push(&mut a, 0, &[0u8; 100], 0, now);
        assert!(!a.would_overflow(&tp(0), 50));
        assert!(a.would_overflow(&tp(0), 100));
    }
}
