//! The producer: partitioning, batching, compression, retries, delivery futures.
//!
//! Layout:
//! - `mod.rs`: `Producer`, its config, records, delivery futures, and the
//!   sender task that turns ready batches into Produce requests.
//! - `partitioner.rs`: explicit, keyed (xxh3) and sticky partitioning.
//! - `accumulator.rs`: per-partition batch queues with the size and linger
//!   triggers (pure, time passed in).
//!
//! Flow: `send` picks the partition, reserves buffer bytes (waiting when the
//! buffer is full: that is the back-pressure), and appends the record to its
//! partition's open batch. The sender task wakes when a batch is full, when
//! a linger deadline passes, or on flush/close; it takes every ready batch,
//! encodes it (`RecordBatchBuilder`, with the configured compression),
//! groups the batches by leader, and sends one Produce request per leader,
//! at most `max_in_flight_requests` at a time. Each response completes the
//! records' futures with `base_offset + index`, or sends the batch back to
//! the front of its queue to retry after a metadata refresh and a backoff.

mod accumulator;
mod partitioner;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use borges_net::batch::Compression as WireCompression;
use borges_net::protocol::{
    ErrorCode, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic, Request, Response,
};
use borges_net::types::TopicId;
use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::admin::duration_ms;
use crate::client::unexpected;
use crate::{Client, ClientError};
use accumulator::{record_size, Accumulator, BatchSignal, ProducerBatch, TopicPartition};
use partitioner::Partitioner;

/// When the broker acknowledges a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Never: the broker sends no response; a record counts as delivered
    /// once its request is written to the socket, with offset -1.
    None,
    /// Once the leader has appended the records.
    Leader,
    /// Once every in-sync replica has them (and, with the broker's default
    /// flush policy, they are on disk).
    All,
}

impl Acks {
    /// The value carried on the wire: 0, 1 or -1.
    pub fn wire(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// The codec the producer compresses batches with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4 frame format, as Kafka writes it.
    Lz4,
    /// Zstandard, level 3.
    Zstd,
}

impl Compression {
    fn wire(self) -> WireCompression {
        match self {
            Compression::None => WireCompression::None,
            Compression::Lz4 => WireCompression::Lz4,
            Compression::Zstd => WireCompression::Zstd,
        }
    }
}

/// Producer settings. `ProducerConfig::default()` gives Kafka-like defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When the broker answers.
    pub acks: Acks,
    /// A batch is sent once its records reach this many bytes (uncompressed).
    pub batch_size_bytes: usize,
    /// Or once its first record has waited this long.
    pub linger: Duration,
    /// Codec for every batch.
    pub compression: Compression,
    /// Produce requests in flight at once (across all brokers).
    pub max_in_flight_requests: usize,
    /// Times a batch is retried after a retriable error before its records
    /// fail (Kafka's `retries`; by default unbounded, so that
    /// `delivery_timeout` is what ends the retries).
    pub retries: u32,
    /// First wait before a retry; doubles on each retry of the same batch.
    pub retry_backoff: Duration,
    /// Cap on the wait before a retry.
    pub retry_backoff_max: Duration,
    /// How long the broker and the client wait for one produce response
    /// (Kafka's `request.timeout.ms`).
    pub request_timeout: Duration,
    /// Upper bound on the time from `send` returning to a record's delivery
    /// future settling, retries and waits in the buffer included (Kafka's
    /// `delivery.timeout.ms`): a batch whose time is up is failed instead of
    /// retried or sent. Raised to `linger + request_timeout` if shorter; a
    /// request in flight is not cut short, so a batch may settle up to one
    /// request timeout late.
    pub delivery_timeout: Duration,
    /// Longest `send` waits for metadata or buffer space before it fails
    /// with `Timeout` (Kafka's `max.block.ms`).
    pub max_block: Duration,
    /// Bytes of records buffered and not yet acknowledged; `send` waits when full.
    pub buffer_memory_bytes: usize,
    /// Cap on the records in one Produce request (several batches, one broker).
    pub max_request_bytes: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_size_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            max_in_flight_requests: 5,
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            max_block: Duration::from_secs(60),
            buffer_memory_bytes: 64 << 20,
            max_request_bytes: 16 << 20,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic. Shared, so that an application sending many records to
    /// one topic can hand the same name to each without allocating.
    pub topic: Arc<str>,
    /// The partition; `None` lets the partitioner choose (by key, or sticky).
    pub partition: Option<u32>,
    /// The key; records with one key go to one partition.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone for compacted topics.
    pub value: Option<Bytes>,
    /// Headers: UTF-8 keys, optional values.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the Unix epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with no key, value or headers yet.
    pub fn new(topic: impl Into<Arc<str>>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets the partition explicitly.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((key.into(), value));
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset; -1 with `Acks::None`, which learns nothing back.
    pub offset: i64,
    /// The record's timestamp (the one it was sent with).
    pub timestamp: i64,
}

type Delivery = Result<RecordMetadata, ClientError>;

/// Resolves when the broker has acknowledged the record (or it failed for
/// good). Dropping it does not cancel the send.
///
/// It shares its batch's outcome with the batch's other records (one
/// allocation per batch, not per record): the record's offset is the
/// batch's base offset plus its index.
#[derive(Debug)]
pub struct DeliveryFuture {
    signal: Arc<BatchSignal>,
    index: u32,
    timestamp: i64,
}

impl Future for DeliveryFuture {
    type Output = Delivery;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivery> {
        match self.signal.poll_outcome(cx.waker()) {
            None => Poll::Pending,
            Some(Err(e)) => Poll::Ready(Err(e.clone())),
            Some(Ok(base)) => Poll::Ready(Ok(RecordMetadata {
                topic: self.signal.topic.to_string(),
                partition: self.signal.partition,
                offset: if *base < 0 { -1 } else { base + self.index as i64 },
                timestamp: self.timestamp,
            })),
        }
    }
}

type Batch = ProducerBatch;

struct State {
    acc: Accumulator,
    partitioner: Partitioner,
    /// Records enqueued and not yet completed.
    pending_records: usize,
    /// `flush` calls waiting: while any is, every batch is ready at once.
    flushes_in_progress: usize,
    /// No more sends; the sender task drains and exits.
    closing: bool,
    /// The last topic sent to, the client metadata generation it was looked
    /// up in, and its partition count.
    topic_cache: Option<(Arc<str>, u64, u32)>,
    /// Buffer bytes taken from `Inner::buffer` and not yet given to records.
    credit: usize,
}

/// Why a send must leave the lock and wait.
enum Slow {
    Metadata,
    /// For this many bytes of buffer.
    Buffer(usize),
}

/// Longer `delivery_timeout` and `max_block` settings are taken as this
/// (about 30 years): "forever" in practice, and a deadline an `Instant` can
/// hold, which `Duration::MAX` from now is not.
const TIMEOUT_MAX: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Buffer space is drawn from the shared budget this much at a time.
const BUFFER_CREDIT_CHUNK: usize = 256 << 10;

struct Inner {
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Wakes the sender task: a batch is ready, a linger deadline is new, a
    /// request finished, or flush/close was asked.
    wake: Notify,
    /// Buffered record bytes, the back-pressure bound.
    buffer: Semaphore,
    /// Produce requests in flight.
    in_flight: Arc<Semaphore>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can
        // panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the producer when the last handle is dropped, so the sender task
/// sends what is buffered and exits instead of living forever.
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.lock().closing = true;
        self.0.wake.notify_one();
    }
}

/// Sends records to topics, batching them per partition. Cheap to clone;
/// every clone feeds the same buffers and background sender task.
///
/// Must be created inside a tokio runtime.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    _close: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer on `client`; starts its sender task.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer, ClientError> {
        if config.buffer_memory_bytes == 0 || config.buffer_memory_bytes > u32::MAX as usize {
            return Err(ClientError::Config(
                "buffer_memory_bytes must be in 1..=u32::MAX".into(),
            ));
        }
        // As Kafka does for its default: a batch gets at least its linger
        // and one request's time, so a long linger is not an error.
        let mut config = config;
        config.delivery_timeout = config
            .delivery_timeout
            .max(config.linger.saturating_add(config.request_timeout))
            .min(TIMEOUT_MAX);
        config.max_block = config.max_block.min(TIMEOUT_MAX);
        if config.max_in_flight_requests == 0 {
            return Err(ClientError::Config(
                "max_in_flight_requests must be at least 1".into(),
            ));
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                // A batch is allocated whole when it opens and charged to
                // the buffer as such, so it can be no larger than the
                // buffer, nor than a request.
                acc: Accumulator::new(
                    config
                        .batch_size_bytes
                        .min(config.buffer_memory_bytes)
                        .min(config.max_request_bytes),
                    config.linger,
                    config.compression.wire(),
                ),
                partitioner: Partitioner::default(),
                pending_records: 0,
                flushes_in_progress: 0,
                closing: false,
                topic_cache: None,
                credit: 0,
            }),
            wake: Notify::new(),
            buffer: Semaphore::new(config.buffer_memory_bytes),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight_requests)),
            client,
            config,
        });
        tokio::spawn(run_sender(inner.clone()));
        Ok(Producer {
            _close: Arc::new(CloseOnDrop(inner.clone())),
            inner,
        })
    }

    /// Enqueues a record and returns a future for its delivery.
    ///
    /// Returns as soon as the record is in its partition's batch; waits only
    /// when the buffer (`buffer_memory_bytes`) is full, until acknowledged
    /// records free room, or while the topic's metadata cannot be had (a
    /// broker restarting): at most `max_block` in all, then `Timeout`. Fails
    /// at once for an unknown topic or partition, or once the producer is
    /// closed.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let ProducerRecord {
            topic,
            partition: chosen,
            key,
            value,
            headers: owned_headers,
            timestamp,
        } = record;
        let headers: Vec<(&str, Option<&[u8]>)> = owned_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let size = record_size(key.as_deref(), value.as_deref(), &headers);
        // As Kafka: a record that could never be buffered or sent is refused
        // here, instead of waiting for buffer space that cannot come.
        let buffer_max = self.inner.config.buffer_memory_bytes;
        let max = buffer_max.min(self.inner.config.max_request_bytes);
        if size > max {
            return Err(ClientError::RecordTooLarge { size, max });
        }
        let timestamp = timestamp.unwrap_or_else(now_ms);
        let block_until = Instant::now() + self.inner.config.max_block;
        // Tokio's cooperative budget: a task that sends in a tight loop
        // yields now and then, so that the sender task (on a single-threaded
        // runtime, the same thread) ships batches while the buffer fills.
        tokio::task::consume_budget().await;
        // The common case takes one lock and touches no other shared state:
        // the topic's partition count comes from a one-topic cache valid for
        // a metadata generation, and buffer space from a credit drawn from
        // the shared budget in chunks.
        let mut tp = TopicPartition { topic, partition: 0 };
        loop {
            let generation = self.inner.client.metadata_generation();
            let slow = {
                let mut st = self.inner.lock();
                if st.closing {
                    return Err(ClientError::Closed);
                }
                let partitions = match &st.topic_cache {
                    Some((t, g, n))
                        if *g == generation && (Arc::ptr_eq(t, &tp.topic) || **t == *tp.topic) =>
                    {
                        Some(*n)
                    }
                    _ => None,
                };
                match partitions {
                    None => Slow::Metadata,
                    Some(partitions) => {
                        if partitions == 0 || chosen.is_some_and(|p| p >= partitions) {
                            return Err(ClientError::UnknownPartition {
                                topic: tp.topic.to_string(),
                                partition: chosen.unwrap_or(0),
                            });
                        }
                        tp.partition = match (chosen, key.as_deref()) {
                            (Some(p), _) => p,
                            (None, Some(k)) => partitioner::key_partition(k, partitions),
                            (None, None) => {
                                let p = st.partitioner.sticky(&tp.topic, partitions);
                                tp.partition = p;
                                if st.acc.would_overflow(&tp, size) {
                                    // Its batch is full: keyless records move on.
                                    st.partitioner.batch_closed(&tp.topic, p);
                                    st.partitioner.sticky(&tp.topic, partitions)
                                } else {
                                    p
                                }
                            }
                        };
                        // What the record costs the buffer: nothing if it
                        // fits the open batch's allocation, else the new
                        // batch's whole allocation (as Kafka's BufferPool
                        // charges `batch.size` per batch).
                        let charge = st.acc.charge_for(&tp, size).min(buffer_max);
                        if st.credit < charge {
                            let chunk = charge.max(BUFFER_CREDIT_CHUNK).min(buffer_max);
                            match self.inner.buffer.try_acquire_many(chunk as u32) {
                                Ok(permit) => {
                                    permit.forget();
                                    st.credit += chunk;
                                }
                                Err(tokio::sync::TryAcquireError::Closed) => return Err(ClientError::Closed),
                                Err(tokio::sync::TryAcquireError::NoPermits) => {}
                            }
                        }
                        if st.credit < charge {
                            // The credit parked here goes back to the shared
                            // budget before waiting: kept, it could be just
                            // what this record (or another sender) needs.
                            let parked = std::mem::take(&mut st.credit);
                            self.inner.buffer.add_permits(parked);
                            Slow::Buffer(charge)
                        } else {
                            st.credit -= charge;
                            st.pending_records += 1;
                            let appended = st.acc.append(
                                &tp,
                                timestamp,
                                key.as_deref(),
                                value.as_deref(),
                                &headers,
                                charge,
                                || Instant::now().into_std(),
                            );
                            drop(st);
                            if appended.new_batch || appended.batch_full {
                                self.inner.wake.notify_one();
                            }
                            return Ok(DeliveryFuture {
                                signal: appended.signal,
                                index: appended.index,
                                timestamp,
                            });
                        }
                    }
                }
            };
            match slow {
                Slow::Metadata => {
                    let n = self.wait_for_metadata(&tp.topic, block_until).await?;
                    self.inner.lock().topic_cache = Some((tp.topic.clone(), generation, n));
                }
                Slow::Buffer(charge) => {
                    // Full: wait for acknowledged batches to return space,
                    // at most `max_block` from the start of this send.
                    tokio::time::timeout_at(block_until, self.inner.buffer.acquire_many(charge as u32))
                        .await
                        .map_err(|_| ClientError::Timeout)?
                        .map_err(|_| ClientError::Closed)?
                        .forget();
                    self.inner.lock().credit += charge;
                }
            }
        }
    }

    /// The partition count of `topic`, retrying retriable errors (a broker
    /// restarting, a leader being elected) with the retry backoff until
    /// `until` (then `Timeout`, as Kafka's `max.block.ms`). An unknown topic
    /// fails at once: the broker answered, and waiting would not change it.
    async fn wait_for_metadata(&self, topic: &str, until: Instant) -> Result<u32, ClientError> {
        let cfg = &self.inner.config;
        let mut attempt = 0u32;
        loop {
            let error = match tokio::time::timeout_at(until, self.inner.client.topic_metadata(topic)).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(Ok(meta)) => return Ok(meta.partition_count()),
                Ok(Err(e)) if e.is_retriable() => e,
                Ok(Err(e)) => return Err(e),
            };
            let backoff = cfg
                .retry_backoff
                .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
                .min(cfg.retry_backoff_max);
            attempt = attempt.saturating_add(1);
            if Instant::now() + backoff >= until {
                tracing::debug!(topic, %error, "no metadata within max_block");
                return Err(ClientError::Timeout);
            }
            tracing::debug!(topic, %error, ?backoff, "metadata not available; retrying");
            tokio::time::sleep(backoff).await;
        }
    }

    /// Sends everything buffered now (ignoring `linger`) and waits until
    /// every record sent before the call is acknowledged or failed. Records
    /// sent meanwhile are not waited for (as Kafka's `flush`), so a flush
    /// returns even while other tasks keep sending.
    pub async fn flush(&self) {
        let signals = {
            let mut st = self.inner.lock();
            let signals = st.acc.unsettled_signals();
            if signals.is_empty() {
                return;
            }
            st.flushes_in_progress += 1;
            signals
        };
        // Counted down even if this future is dropped mid-wait.
        struct Done<'a>(&'a Inner);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.lock().flushes_in_progress -= 1;
            }
        }
        let _done = Done(&self.inner);
        self.inner.wake.notify_one();
        for signal in signals {
            Settled(signal).await;
        }
    }

    /// Stops taking records (later sends, from any clone, fail with
    /// `Closed`), then waits until every record already sent is
    /// acknowledged or failed; the sender task exits.
    pub async fn close(&self) {
        self.inner.lock().closing = true;
        self.inner.wake.notify_one();
        self.flush().await;
    }

    /// Records enqueued and not yet acknowledged or failed.
    pub fn pending_records(&self) -> usize {
        self.inner.lock().pending_records
    }
}

/// Resolves once a batch is settled (delivered or failed), whatever the outcome.
struct Settled(Arc<BatchSignal>);

impl Future for Settled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.poll_outcome(cx.waker()) {
            Some(_) => Poll::Ready(()),
            None => Poll::Pending,
        }
    }
}

/// Milliseconds since the Unix epoch for record timestamps, from the
/// coarse clock: millisecond timestamps need no finer source, and at
/// millions of records a second the precise clock is a visible cost.
fn now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // CLOCK_REALTIME_COARSE cannot fail on Linux; fall back to the precise
    // clock if it ever does.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The sender task: drains ready batches into Produce requests until the
/// producer is closed and nothing is left.
async fn run_sender(inner: Arc<Inner>) {
    loop {
        let now = Instant::now();
        let (batches, next_wake, done) = {
            let mut st = inner.lock();
            let force = st.closing || st.flushes_in_progress > 0;
            let (ready, next) = st.acc.ready(now.into_std(), force);
            let mut batches = Vec::with_capacity(ready.len());
            for tp in ready {
                if let Some(b) = st.acc.take(&tp) {
                    batches.push(b);
                }
            }
            let done = st.closing && st.pending_records == 0;
            (batches, next, done)
        };
        if done {
            tracing::debug!("producer closed; sender task exits");
            return;
        }
        if !batches.is_empty() {
            // Keyless records leave a partition once its batch is on its way.
            {
                let mut st = inner.lock();
                for b in &batches {
                    st.partitioner.batch_closed(&b.tp.topic, b.tp.partition);
                }
            }
            dispatch(&inner, batches).await;
            continue;
        }
        let notified = inner.wake.notified();
        match next_wake {
            Some(at) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(Instant::from_std(at)) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// A batch ready to go to one leader, with its topic id.
struct Outgoing {
    topic_id: TopicId,
    batch: Batch,
}

/// Encodes the batches, groups them by leader, and starts one request per
/// group (per `max_request_bytes` of a group), waiting for in-flight room.
async fn dispatch(inner: &Arc<Inner>, batches: Vec<Batch>) {
    let mut by_leader: BTreeMap<i32, Vec<Outgoing>> = BTreeMap::new();
    let now = Instant::now().into_std();
    for mut batch in batches {
        if now >= batch.created + inner.config.delivery_timeout {
            // Waited in the buffer (behind a slow request, or for a
            // backoff) until its time ran out: not sent at all.
            let e = delivery_timed_out(&batch, inner.config.delivery_timeout, None);
            finish_failed(inner, batch, e);
            continue;
        }
        if batch.encoded.is_none() {
            let builder = batch.builder.take().expect("an unencoded batch has its builder");
            match builder.build() {
                Ok(bytes) => batch.encoded = Some(bytes),
                Err(e) => {
                    finish_failed(inner, batch, ClientError::InvalidRecord(e.to_string()));
                    continue;
                }
            }
        }
        let meta = match inner.client.topic_metadata(&batch.tp.topic).await {
            Ok(m) => m,
            Err(e) => {
                retry_or_fail(inner, batch, e);
                continue;
            }
        };
        match meta.leader(batch.tp.partition) {
            Ok(leader) => by_leader.entry(leader).or_default().push(Outgoing {
                topic_id: meta.id,
                batch,
            }),
            Err(e) => {
                inner.client.invalidate_topic(&batch.tp.topic);
                retry_or_fail(inner, batch, e);
            }
        }
    }
    for (leader, group) in by_leader {
        let mut request: Vec<Outgoing> = Vec::new();
        let mut bytes = 0usize;
        for o in group {
            let len = o.batch.encoded.as_ref().map_or(0, BytesMut::len);
            if !request.is_empty() && bytes + len > inner.config.max_request_bytes {
                start_request(inner, leader, std::mem::take(&mut request)).await;
                bytes = 0;
            }
            bytes += len;
            request.push(o);
        }
        if !request.is_empty() {
            start_request(inner, leader, request).await;
        }
    }
}

async fn start_request(inner: &Arc<Inner>, leader: i32, batches: Vec<Outgoing>) {
    let Ok(permit) = inner.in_flight.clone().acquire_owned().await else {
        return;
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        send_request(&inner, leader, batches).await;
        drop(permit);
        inner.wake.notify_one();
    });
}

/// Sends one Produce request and settles every batch in it.
async fn send_request(inner: &Arc<Inner>, leader: i32, mut batches: Vec<Outgoing>) {
    let cfg = &inner.config;
    // Topics in the request, each with its partitions; the records are moved
    // into the request and back out after encoding, so retries reuse them.
    let mut topics: Vec<ProduceTopic> = Vec::new();
    for o in &mut batches {
        let records = o.batch.encoded.take().unwrap_or_default();
        let part = ProducePartition {
            partition: o.batch.tp.partition,
            records,
        };
        match topics.iter_mut().find(|t| t.topic_id == o.topic_id) {
            Some(t) => t.partitions.push(part),
            None => topics.push(ProduceTopic {
                topic_id: o.topic_id,
                partitions: vec![part],
            }),
        }
    }
    let request = Request::Produce(ProduceRequest {
        acks: cfg.acks.wire(),
        timeout_ms: duration_ms(cfg.request_timeout),
        topics,
    });
    let result = if cfg.acks == Acks::None {
        inner
            .client
            .send_oneway_to(leader, &request, cfg.request_timeout)
            .await
            .map(|()| None)
    } else {
        // A little longer than the broker's own wait, so that its timeout
        // answer arrives before ours fires.
        match inner
            .client
            .send_to(leader, &request, cfg.request_timeout + Duration::from_secs(1))
            .await
        {
            Ok(Response::Produce(r)) => Ok(Some(r)),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        }
    };
    // Give every batch its encoded bytes back.
    let Request::Produce(req) = request else {
        unreachable!("built as a produce request")
    };
    for t in req.topics {
        for p in t.partitions {
            if let Some(o) = batches.iter_mut().find(|o| {
                o.topic_id == t.topic_id && o.batch.tp.partition == p.partition && o.batch.encoded.is_none()
            }) {
                o.batch.encoded = Some(p.records);
            }
        }
    }
    match result {
        Ok(None) => {
            for o in batches {
                finish_delivered(inner, o.batch, -1);
            }
        }
        Ok(Some(resp)) => settle(inner, batches, resp),
        Err(e) => {
            if let Some(code) = e.code() {
                for o in &batches {
                    inner.client.on_error_code(&o.batch.tp.topic, code);
                }
            }
            for o in batches {
                retry_or_fail(inner, o.batch, e.clone());
            }
        }
    }
}

/// Settles each batch by its partition's result in the response.
fn settle(inner: &Arc<Inner>, batches: Vec<Outgoing>, resp: ProduceResponse) {
    for o in batches {
        let result = resp
            .topics
            .iter()
            .filter(|t| t.topic_id == o.topic_id)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == o.batch.tp.partition);
        match result {
            None => finish_failed(
                inner,
                o.batch,
                ClientError::broker(
                    ErrorCode::UnknownServerError,
                    Some("the produce response has no result for this partition".into()),
                ),
            ),
            Some(p) if p.error == ErrorCode::None => finish_delivered(inner, o.batch, p.base_offset),
            Some(p) => {
                inner.client.on_error_code(&o.batch.tp.topic, p.error);
                let e = ClientError::broker(p.error, p.message.clone());
                retry_or_fail(inner, o.batch, e);
            }
        }
    }
}

/// Retries a batch after a backoff if the error allows and attempts remain;
/// otherwise fails its records.
fn retry_or_fail(inner: &Arc<Inner>, mut batch: Batch, error: ClientError) {
    let cfg = &inner.config;
    if !error.is_retriable() || batch.attempts >= cfg.retries {
        finish_failed(inner, batch, error);
        return;
    }
    let factor = 1u32.checked_shl(batch.attempts).unwrap_or(u32::MAX);
    let backoff = cfg
        .retry_backoff
        .saturating_mul(factor)
        .min(cfg.retry_backoff_max);
    let now = Instant::now().into_std();
    if now + backoff >= batch.created + cfg.delivery_timeout {
        let e = delivery_timed_out(&batch, cfg.delivery_timeout, Some(&error));
        finish_failed(inner, batch, e);
        return;
    }
    batch.attempts = batch.attempts.saturating_add(1);
    tracing::debug!(
        topic = %batch.tp.topic,
        partition = batch.tp.partition,
        attempt = batch.attempts,
        ?backoff,
        %error,
        "retrying a batch"
    );
    let until = now + backoff;
    inner.lock().acc.requeue(batch, until);
    inner.wake.notify_one();
}

/// The error of a batch whose `delivery_timeout` ran out, with the last
/// error it was retried for.
fn delivery_timed_out(batch: &Batch, timeout: Duration, last: Option<&ClientError>) -> ClientError {
    ClientError::DeliveryTimeout {
        timeout_ms: duration_ms(timeout) as u64,
        records: batch.record_count,
        last_error: last.map(ToString::to_string),
    }
}

// Released before the signal completes: whoever the signal wakes (a
// delivery future, a flush) sees the records no longer pending.
fn finish_delivered(inner: &Arc<Inner>, batch: Batch, base_offset: i64) {
    release(inner, &batch.tp, batch.record_count, batch.reserved_bytes);
    batch.signal.complete(Ok(base_offset));
}

fn finish_failed(inner: &Arc<Inner>, batch: Batch, error: ClientError) {
    tracing::debug!(topic = %batch.tp.topic, partition = batch.tp.partition, %error, "batch failed");
    release(inner, &batch.tp, batch.record_count, batch.reserved_bytes);
    batch.signal.complete(Err(error));
}

/// Frees a settled batch's buffer bytes and partition slot.
fn release(inner: &Arc<Inner>, tp: &TopicPartition, records: usize, reserved_bytes: usize) {
    {
        let mut st = inner.lock();
        st.acc.complete(tp);
        st.pending_records -= records;
    }
    // After the count drops, so that pending records never exceed what the
    // buffer holds.
    inner.buffer.add_permits(reserved_bytes);
    inner.wake.notify_one();
}
