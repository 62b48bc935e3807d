//! A shard: one pinned glommio executor owning a subset of the partitions.
//!
//! Every partition belongs to exactly one shard (`topics::shard_for`).
//! A connection's shard serves a request by calling the owning shard for
//! each partition: directly when it is itself, otherwise with a message
//! over the channel mesh, answered by a reply message. Nothing on these
//! paths is shared between cores; what crosses is owned data (`Send`).
//!
//! Shard 0 also owns the topic metadata: it applies every change, persists
//! it, and hands the new snapshot to every shard.
//!
//! Layout:
//! - `mod.rs`: the shard's state and the plumbing of calls between shards.
//! - `calls.rs`: the typed calls, one type per kind with its own reply.
//! - `registry.rs`: the partitions this shard owns, opened and closed to
//!   follow the metadata snapshots.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use borges_net::protocol::{
    AlterConfigsRequest, AlterConfigsResponse, CreateTopicResult, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, ErrorCode, Response, TopicResult,
};
use borges_net::types::{LeaderEpoch, Offset, TimestampMs, TopicId};
use borges_storage::{Chunk, DataDirs, StorageError, SystemClock};
use bytes::BytesMut;
use glommio::channels::channel_mesh::Senders;
use glommio::sync::Semaphore;

use crate::config::{BrokerConfig, FlushMode};
use crate::notify::{changed_any, Notify};
use crate::topics::{self, shard_for, TopicMeta, Topics, MAX_PARTITIONS};

pub mod calls;
pub mod registry;

pub use crate::topics::PartKey;
pub use calls::{Admin, Envelope, Fetched, Produced, SendChunk, ShardCall, Unavailable};
pub use registry::{Partition, Registry};

/// A failure for one partition: the code the client gets and a message.
pub type PartError = (ErrorCode, String);

/// Syncs `p` while consumers wait for records that are appended but not yet
/// on disk (in the flush modes where they may read only durable records),
/// waking them after each sync. One such task per partition at a time; syncs
/// coalesce with the producers' (group commit). It stops when nobody waits
/// or the log fails (the waits then run out, and appends report the error).
fn start_visibility_sync(p: &Rc<Partition>) {
    if p.visibility_sync.replace(true) {
        return;
    }
    let p = p.clone();
    glommio::spawn_local(async move {
        loop {
            let end = p.log.log_end_offset().0;
            if p.log.durable_offset().0 >= end {
                break;
            }
            if let Err(e) = p.log.sync_to(end).await {
                tracing::warn!(topic = %p.topic, partition = p.key.1, error = %e, "sync for waiting consumers failed");
                break;
            }
            p.notify.notify();
            if p.notify.waiters() == 0 {
                break;
            }
        }
        p.visibility_sync.set(false);
    })
    .detach();
}

/// Counters of one shard (a probe: the logic counts, exporting is elsewhere).
#[derive(Default, Debug)]
pub struct ShardProbe {
    pub connections_accepted: Cell<u64>,
    pub connections_refused: Cell<u64>,
    pub frames_refused: Cell<u64>,
    pub requests_refused: Cell<u64>,
    pub produce_errors: Cell<u64>,
}

impl ShardProbe {
    pub fn bump(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

/// The fetch waits running on a shard, by (asking shard, wait id), so that
/// a cancel finds its wait. An entry lives exactly as long as its wait.
#[derive(Default)]
pub struct Waits {
    map: RefCell<HashMap<(usize, u64), Rc<Notify>>>,
}

impl Waits {
    /// Registers a wait; it is removed when the entry is dropped.
    pub fn register(&self, key: (usize, u64)) -> WaitEntry<'_> {
        let cancel = Rc::new(Notify::default());
        let old = self.map.borrow_mut().insert(key, cancel.clone());
        debug_assert!(old.is_none(), "wait ids are never reused");
        WaitEntry {
            waits: self,
            key,
            cancel,
        }
    }

    /// Ends the wait `key` if it is still running.
    pub fn cancel(&self, key: (usize, u64)) {
        let w = self.map.borrow_mut().remove(&key);
        if let Some(w) = w {
            w.notify();
        }
    }

    /// Waits registered now.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One registered wait; its `cancel` is notified by [`Waits::cancel`].
pub struct WaitEntry<'a> {
    waits: &'a Waits,
    key: (usize, u64),
    pub cancel: Rc<Notify>,
}

impl Drop for WaitEntry<'_> {
    fn drop(&mut self) {
        self.waits.map.borrow_mut().remove(&self.key);
    }
}

/// The state of one shard; lives on its executor only.
pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Rc<BrokerConfig>,
    /// The partitions this shard owns.
    pub registry: Registry,
    senders: Senders<Envelope>,
    /// Calls this shard made of others, waiting for their replies.
    pending: calls::Pending,
    /// Fetch waits running here, to cancel.
    pub waits: Waits,
    next_wait: Cell<u64>,
    admin_lock: Semaphore,
    /// One recompression at a time on this shard: each may hold up to
    /// `recompress_max_bytes` decompressed, whatever the number of
    /// partitions (or requests) asking at once.
    recompress_lock: Semaphore,
    /// Bytes of requests being handled on this shard.
    pub inflight: Rc<Semaphore>,
    pub connections: Cell<usize>,
    pub probe: ShardProbe,
    /// The consumer groups this shard coordinates.
    pub coordinator: crate::group::Coordinator,
}

fn storage_error(e: StorageError) -> PartError {
    let code = match &e {
        StorageError::InvalidBatch(borges_net::batch::BatchError::CrcMismatch { .. }) => {
            ErrorCode::CorruptMessage
        }
        StorageError::InvalidBatch(_) | StorageError::EmptyAppend => ErrorCode::InvalidRecord,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::Closed(_) => ErrorCode::NotLeaderOrFollower,
        _ => ErrorCode::KafkaStorageError,
    };
    (code, e.to_string())
}

impl Shard {
    pub fn new(
        id: usize,
        count: usize,
        config: Rc<BrokerConfig>,
        dirs: DataDirs,
        senders: Senders<Envelope>,
    ) -> Shard {
        let inflight = Rc::new(Semaphore::new(config.max_inflight_bytes_per_shard as u64));
        Shard {
            id,
            count,
            registry: Registry::new(id, count, config.clone(), dirs, Rc::new(SystemClock)),
            config,
            senders,
            pending: calls::Pending::default(),
            waits: Waits::default(),
            next_wait: Cell::new(0),
            admin_lock: Semaphore::new(1),
            recompress_lock: Semaphore::new(1),
            inflight,
            connections: Cell::new(0),
            probe: ShardProbe::default(),
            coordinator: crate::group::Coordinator::default(),
        }
    }

    /// The metadata snapshot this shard follows.
    pub fn topics(&self) -> Arc<Topics> {
        self.registry.topics()
    }

    pub fn owner(&self, key: PartKey) -> usize {
        shard_for(key.0, key.1, self.count)
    }

    fn partition(&self, key: PartKey) -> Result<Rc<Partition>, PartError> {
        self.registry.get(key)
    }

    /// The partition if this shard has it open.
    pub fn local_partition(&self, key: PartKey) -> Option<Rc<Partition>> {
        self.registry.local(key)
    }

    pub fn local_partitions(&self) -> Vec<Rc<Partition>> {
        self.registry.all()
    }

    /// Sends `call` to shard `to` and waits for its reply (served in place
    /// when `to` is this shard).
    pub async fn call<C: ShardCall>(self: &Rc<Self>, to: usize, call: C) -> Result<C::Reply, Unavailable> {
        if to == self.id {
            return Ok(call.serve(self).await);
        }
        let id = self.pending.next_id();
        let reply = C::waiting(&self.pending).park(id);
        let env = Envelope::Call {
            id,
            from: self.id,
            call: call.into_call(),
        };
        if self.senders.send_to(to, env).await.is_err() {
            C::waiting(&self.pending).forget(id);
            return Err(Unavailable);
        }
        reply.recv().await.ok_or(Unavailable)
    }

    /// Handles a message that arrived over the mesh.
    pub async fn on_envelope(self: &Rc<Self>, env: Envelope) {
        match env {
            Envelope::Call { id, from, call } => {
                let reply = call.serve(self).await;
                if self
                    .senders
                    .send_to(from, Envelope::Reply { id, reply })
                    .await
                    .is_err()
                {
                    tracing::warn!(shard = self.id, to = from, "reply to a stopped shard dropped");
                }
            }
            Envelope::Reply { id, reply } => self.pending.answer(id, reply),
        }
    }

    /// Appends `records` to partition `key`; a topic `compression.type`
    /// rewrites them, taking their decompressed size from `recompress_budget`.
    pub async fn produce_local(
        &self,
        key: PartKey,
        records: BytesMut,
        acks: i8,
        recompress_budget: &AtomicUsize,
    ) -> Result<Produced, PartError> {
        let p = self.partition(key)?;
        let (max, compression) = {
            let s = p.settings.borrow();
            (s.max_message_bytes, s.compression)
        };
        if records.len() > max {
            return Err((
                ErrorCode::MessageTooLarge,
                format!(
                    "{} bytes of records exceed max.message.bytes {max}",
                    records.len()
                ),
            ));
        }
        let records = match compression {
            Some(c) if crate::recompress::needs_rewrite(&records, c)? => {
                let _one = self
                    .recompress_lock
                    .acquire_permit(1)
                    .await
                    .map_err(|_| (ErrorCode::UnknownServerError, "the shard is stopping".to_string()))?;
                let out = crate::recompress::to_codec(
                    records,
                    c,
                    recompress_budget,
                    self.config.recompress_max_bytes,
                )
                .await?;
                if out.len() > max {
                    return Err((
                        ErrorCode::MessageTooLarge,
                        format!(
                            "{} bytes of records after recompression exceed max.message.bytes {max}",
                            out.len()
                        ),
                    ));
                }
                out
            }
            _ => records,
        };
        let info = p
            .log
            .append(records, LeaderEpoch(0))
            .await
            .map_err(storage_error)?;
        let end = info.last_offset.0 + 1;
        match self.config.flush {
            FlushMode::AcksAll if acks == -1 => {
                let synced = p.log.sync_to(end).await.map_err(storage_error);
                // Consumers may read these records now (or see the error).
                p.notify.notify();
                synced?;
            }
            // Consumers see these records once they are on disk: at once
            // if a consumer waits for them, else at the next sync.
            FlushMode::AcksAll => {
                if p.notify.waiters() > 0 {
                    start_visibility_sync(&p);
                }
            }
            // Already synced by the append itself.
            FlushMode::EveryBatch => p.notify.notify(),
            FlushMode::Never => {
                p.notify.notify();
                if acks == -1 {
                    p.log.flush().await.map_err(storage_error)?;
                }
            }
        }
        Ok(Produced {
            base_offset: info.base_offset.0 as i64,
            log_start_offset: p.log.log_start_offset().0 as i64,
        })
    }

    pub async fn fetch_local(&self, key: PartKey, offset: i64, max_bytes: u32) -> Fetched<Chunk> {
        let empty = |error| Fetched {
            error,
            high_watermark: -1,
            log_start_offset: -1,
            chunks: Vec::new(),
        };
        let p = match self.partition(key) {
            Ok(p) => p,
            Err((code, _)) => return empty(code),
        };
        let visible = self.visible_end(&p);
        let mut out = Fetched {
            error: ErrorCode::None,
            high_watermark: visible as i64,
            log_start_offset: p.log.log_start_offset().0 as i64,
            chunks: Vec::new(),
        };
        if offset < 0 {
            out.error = ErrorCode::OffsetOutOfRange;
            return out;
        }
        if offset as u64 >= visible && p.log.log_end_offset().0 > visible {
            // Nothing this consumer may see yet, but records wait for a
            // sync: have them synced now rather than at the interval sync.
            start_visibility_sync(&p);
        }
        match p
            .log
            .read(Offset(offset as u64), max_bytes as usize, Some(Offset(visible)))
            .await
        {
            Ok(r) => {
                debug_assert!(r.next_offset.0 <= visible, "a fetch read past the visible end");
                out.high_watermark = visible as i64;
                out.log_start_offset = r.log_start_offset.0 as i64;
                out.chunks = r.chunks;
            }
            Err(e) => out.error = storage_error(e).0,
        }
        out
    }

    /// The end of what consumers may read: in the flush modes where an
    /// acknowledgement promises durability, only what is on disk (a record
    /// read and then lost to a power loss would let a later append reuse its
    /// offset for a different record); with `flush = never`, the log end.
    /// Replication's high watermark takes this place in cluster part 2.
    pub fn visible_end(&self, p: &Partition) -> u64 {
        match self.config.flush {
            FlushMode::AcksAll | FlushMode::EveryBatch => {
                let durable = p.log.durable_offset().0;
                debug_assert!(
                    durable <= p.log.log_end_offset().0,
                    "durable offset past the log end"
                );
                durable
            }
            FlushMode::Never => p.log.log_end_offset().0,
        }
    }

    pub async fn list_offsets_local(&self, key: PartKey, timestamp: i64) -> Result<(i64, i64), PartError> {
        let p = self.partition(key)?;
        match timestamp {
            borges_net::protocol::EARLIEST_TIMESTAMP => Ok((-1, p.log.log_start_offset().0 as i64)),
            borges_net::protocol::LATEST_TIMESTAMP => Ok((-1, self.visible_end(&p) as i64)),
            ts if ts < 0 => Err((ErrorCode::InvalidRequest, format!("timestamp {ts} is not a time"))),
            ts => match p.log.offset_for_timestamp(TimestampMs(ts)).await {
                Ok(Some((o, t))) => Ok((t.0, o.0 as i64)),
                Ok(None) => Ok((-1, -1)),
                Err(e) => Err(storage_error(e)),
            },
        }
    }

    /// A fresh id for a fetch wait this shard asks for.
    pub fn new_wait_id(&self) -> u64 {
        let id = self.next_wait.get();
        self.next_wait.set(id + 1);
        id
    }

    /// Cancels wait `id` that this shard asked of shard `owner`. Mesh
    /// messages between two shards arrive in order, and a wait registers
    /// before its first await, so the cancel never overtakes its wait.
    pub fn cancel_wait(self: &Rc<Self>, owner: usize, id: u64) {
        if owner == self.id {
            self.waits.cancel((owner, id));
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let from = shard.id;
            let _ = shard.call(owner, calls::CancelWait { from, id }).await;
        })
        .detach();
    }

    /// Waits until one partition's log end passes the offset given with it
    /// (the end the fetch last saw: data below it did not satisfy the
    /// fetch, so it is no reason to read again), `wait` passes, or the
    /// wait is cancelled. A partition closed meanwhile wakes it too.
    pub async fn wait_for_data(&self, from: usize, id: u64, parts: &[(PartKey, i64)], wait: Duration) {
        let ps: Vec<(Rc<Partition>, i64)> = parts
            .iter()
            .filter_map(|(k, o)| self.partition(*k).ok().map(|p| (p, *o)))
            .collect();
        let ready = || ps.iter().any(|(p, o)| self.visible_end(p) as i64 > *o);
        if ps.is_empty() || ready() {
            return;
        }
        // Records appended but not yet on disk are not visible: have them
        // synced now, which wakes this wait when it is done.
        for (p, _) in &ps {
            if p.log.log_end_offset().0 > self.visible_end(p) {
                start_visibility_sync(p);
            }
        }
        // Leaves the registry however this ends: woken, timed out,
        // cancelled, or dropped unfinished (a wait served in place, on the
        // asking shard, is dropped when the fetch stops waiting).
        let entry = self.waits.register((from, id));
        let mut notifies: Vec<&Notify> = ps.iter().map(|(p, _)| &p.notify).collect();
        notifies.push(&entry.cancel);
        futures_lite::future::or(changed_any(&notifies), glommio::timer::sleep(wait)).await;
    }

    /// Opens and closes this shard's partitions to match a metadata snapshot.
    pub async fn apply(&self, snap: Arc<Topics>) {
        self.registry.apply(snap, &self.coordinator).await
    }

    /// Closes every partition cleanly (flushed, synced, indexes written).
    pub async fn close_all(&self) {
        self.registry.close_all().await
    }

    async fn broadcast(self: &Rc<Self>, snap: Arc<Topics>) {
        for shard in 0..self.count {
            // A shard that cannot be reached is stopping: it needs no snapshot.
            let _ = self.call(shard, calls::Apply(snap.clone())).await;
        }
    }

    fn meta_home(&self) -> &std::path::Path {
        &self.config.data_dirs[0]
    }

    /// Applies a topic change; shard 0 only.
    async fn admin(self: &Rc<Self>, req: Admin) -> Response {
        assert_eq!(self.id, 0, "topic metadata changes are made on shard 0");
        let _guard = self
            .admin_lock
            .acquire_permit(1)
            .await
            .expect("the admin lock is never closed");
        let mut topics = (*self.topics()).clone();
        let (response, changed) = match req {
            Admin::Create(r) => self.create_topics(&mut topics, r),
            Admin::Delete(r) => delete_topics(&mut topics, r),
            Admin::Alter(r) => alter_configs(&mut topics, r),
        };
        if changed {
            if let Err(e) = topics.save(self.meta_home()) {
                tracing::error!(error = %e, "cannot persist topic metadata");
                return failed_response(response, ErrorCode::KafkaStorageError, &e.to_string());
            }
            self.broadcast(Arc::new(topics)).await;
        }
        response
    }

    fn create_topics(&self, topics: &mut Topics, r: CreateTopicsRequest) -> (Response, bool) {
        let mut results = Vec::new();
        let mut changed = false;
        for t in r.topics {
            let fail = |error, message: String| CreateTopicResult {
                name: t.name.clone(),
                id: TopicId(0),
                error,
                message: Some(message),
            };
            let partitions = if t.partitions == 0 {
                self.config.default_partitions
            } else {
                t.partitions
            };
            let result = if let Err(e) = borges_storage::validate_topic_name(&t.name) {
                fail(ErrorCode::InvalidTopicException, e.to_string())
            } else if t.name.starts_with("__") {
                fail(
                    ErrorCode::InvalidTopicException,
                    "names starting with __ are reserved".into(),
                )
            } else if topics.topics.contains_key(&t.name) {
                fail(
                    ErrorCode::TopicAlreadyExists,
                    format!("topic {} already exists", t.name),
                )
            } else if partitions > MAX_PARTITIONS {
                fail(
                    ErrorCode::InvalidPartitions,
                    format!("at most {MAX_PARTITIONS} partitions"),
                )
            } else if t.replication_factor > 1 {
                fail(
                    ErrorCode::InvalidReplicationFactor,
                    format!("replication factor {} > 1 brokers", t.replication_factor),
                )
            } else if let Some(msg) = t
                .configs
                .iter()
                .find_map(|(k, v)| topics::validate_config(k, v).err())
            {
                fail(ErrorCode::InvalidConfig, msg)
            } else {
                let id = topics.next_id.max(1);
                if !r.validate_only {
                    topics.next_id = id + 1;
                    topics.topics.insert(
                        t.name.clone(),
                        TopicMeta {
                            name: t.name.clone(),
                            id,
                            partitions,
                            configs: t.configs.iter().cloned().collect(),
                        },
                    );
                    changed = true;
                }
                CreateTopicResult {
                    name: t.name.clone(),
                    id: TopicId(id),
                    error: ErrorCode::None,
                    message: None,
                }
            };
            results.push(result);
        }
        (
            Response::CreateTopics(CreateTopicsResponse { topics: results }),
            changed,
        )
    }
}

fn delete_topics(topics: &mut Topics, r: DeleteTopicsRequest) -> (Response, bool) {
    let mut changed = false;
    let results = r
        .names
        .into_iter()
        .map(|name| {
            if name.starts_with("__") && topics.topics.contains_key(&name) {
                TopicResult {
                    message: Some(format!("{name} is an internal topic")),
                    name,
                    error: ErrorCode::PolicyViolation,
                }
            } else if topics.topics.remove(&name).is_some() {
                changed = true;
                TopicResult {
                    name,
                    error: ErrorCode::None,
                    message: None,
                }
            } else {
                TopicResult {
                    message: Some(format!("no topic {name}")),
                    name,
                    error: ErrorCode::UnknownTopicOrPartition,
                }
            }
        })
        .collect();
    (
        Response::DeleteTopics(DeleteTopicsResponse { topics: results }),
        changed,
    )
}

fn alter_configs(topics: &mut Topics, r: AlterConfigsRequest) -> (Response, bool) {
    let mut changed = false;
    let mut results = Vec::new();
    for t in r.topics {
        let result = match topics.topics.get_mut(&t.name) {
            None => TopicResult {
                message: Some(format!("no topic {}", t.name)),
                name: t.name,
                error: ErrorCode::UnknownTopicOrPartition,
            },
            Some(meta) => {
                let bad = t.configs.iter().find_map(|(k, v)| match v {
                    Some(v) => topics::validate_config(k, v).err(),
                    None if topics::TOPIC_CONFIG_KEYS.contains(&k.as_str()) => None,
                    None => Some(format!("unknown topic setting {k:?}")),
                });
                match bad {
                    Some(msg) => TopicResult {
                        name: t.name,
                        error: ErrorCode::InvalidConfig,
                        message: Some(msg),
                    },
                    None => {
                        if !r.validate_only {
                            for (k, v) in t.configs {
                                match v {
                                    Some(v) => meta.configs.insert(k, v),
                                    None => meta.configs.remove(&k),
                                };
                            }
                            changed = true;
                        }
                        TopicResult {
                            name: t.name,
                            error: ErrorCode::None,
                            message: None,
                        }
                    }
                }
            }
        };
        results.push(result);
    }
    (
        Response::AlterConfigs(AlterConfigsResponse { topics: results }),
        changed,
    )
}

/// Marks every result of an admin response failed (the change was not persisted).
fn failed_response(resp: Response, code: ErrorCode, message: &str) -> Response {
    match resp {
        Response::CreateTopics(mut r) => {
            for t in &mut r.topics {
                if t.error == ErrorCode::None {
                    t.error = code;
                    t.message = Some(message.to_string());
                }
            }
            Response::CreateTopics(r)
        }
        Response::DeleteTopics(mut r) => {
            for t in &mut r.topics {
                t.error = code;
                t.message = Some(message.to_string());
            }
            Response::DeleteTopics(r)
        }
        Response::AlterConfigs(mut r) => {
            for t in &mut r.topics {
                t.error = code;
                t.message = Some(message.to_string());
            }
            Response::AlterConfigs(r)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::changed_any;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn a_wait_leaves_the_registry_however_it_ends() {
        let waits = Waits::default();
        let cx = &mut Context::from_waker(Waker::noop());
        // Dropped unfinished (a wait served in place whose fetch stopped
        // waiting): nothing stays behind.
        for id in 0..100 {
            let entry = waits.register((0, id));
            let notifies = [&*entry.cancel];
            let mut f = Box::pin(changed_any(&notifies));
            assert!(f.as_mut().poll(cx).is_pending());
        }
        assert!(waits.is_empty(), "{} dropped waits left behind", waits.len());
        // Cancelled: the wait is woken and gone.
        let entry = waits.register((1, 7));
        let cancel = entry.cancel.clone();
        let notifies = [&*cancel];
        let mut f = Box::pin(changed_any(&notifies));
        assert!(f.as_mut().poll(cx).is_pending());
        waits.cancel((1, 7));
        assert_eq!(f.as_mut().poll(cx), Poll::Ready(()));
        assert!(waits.is_empty());
        drop(entry);
        assert!(waits.is_empty());
    }
}
