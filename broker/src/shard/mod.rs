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
//! - `admin.rs`: topic changes on shard 0: persisted, then handed to every
//!   shard (the rules themselves are pure, in `crate::metadata`).
//! - `calls.rs`: the typed calls, one type per kind with its own reply.
//! - `registry.rs`: the partitions this shard owns, opened and closed to
//!   follow the metadata snapshots.
//! - `data.rs`: produce, fetch and list offsets on the partitions owned here.
//! - `waits.rs`: long-poll fetch waits and their cancellation.
//! - `leader.rs`: a leader's side of replication: followers' fetches, ISR
//!   proposals, the replication tick (the rules: `borges_meta::replica`).
//! - `follower.rs`: a follower's side: one fetcher per leader node.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use borges_net::protocol::ErrorCode;
use borges_storage::{DataDirs, SystemClock};
use glommio::channels::channel_mesh::Senders;
use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::topics::{shard_for, Topics};

mod admin;
pub mod calls;
mod data;
mod follower;
mod leader;
pub mod registry;
mod waits;

pub use crate::topics::PartKey;
pub use calls::{Admin, Envelope, Fetched, Produced, SendChunk, ShardCall, Unavailable};
pub use registry::{Partition, Registry};
pub use waits::{WaitEntry, Waits};

/// How long a group coordinator's write waits for the in-sync replicas
/// (Kafka's offsets.commit.timeout.ms).
const GROUP_APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A failure for one partition: the code the client gets and a message.
pub type PartError = (ErrorCode, String);

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
    /// The replica fetchers of this shard's followed partitions.
    pub fetchers: follower::Fetchers,
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
    /// The metadata quorum node; on shard 0 only, set once it has started.
    pub quorum: std::cell::OnceCell<Rc<crate::quorum_host::QuorumHost>>,
    /// This broker's registration epoch, once the controller has given one.
    pub broker_epoch: Cell<Option<borges_net::types::BrokerEpoch>>,
    /// Set once every shard has the committed metadata: until then the
    /// port takes only other brokers' requests.
    pub serving: Cell<bool>,
    /// Set as the broker begins to stop (shard 0's membership).
    pub stopping: Cell<bool>,
    /// The metadata log index of the last image handed to every shard.
    broadcast_applied: Cell<u64>,
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
            fetchers: follower::Fetchers::default(),
            next_wait: Cell::new(0),
            admin_lock: Semaphore::new(1),
            recompress_lock: Semaphore::new(1),
            inflight,
            connections: Cell::new(0),
            probe: ShardProbe::default(),
            coordinator: crate::group::Coordinator::new(Rc::new(crate::clock::SystemClock)),
            quorum: std::cell::OnceCell::new(),
            broker_epoch: Cell::new(None),
            serving: Cell::new(false),
            stopping: Cell::new(false),
            broadcast_applied: Cell::new(0),
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

    /// Loads again the consumer groups of the offsets partitions whose
    /// load failed, once their retry is due (called with the group tick).
    pub fn retry_group_loads(self: &Rc<Self>) {
        for partition in self.coordinator.loads_due() {
            let Some((key, partitions)) = self
                .registry
                .topics()
                .topics
                .get(crate::group::OFFSETS_TOPIC)
                .map(|t| ((t.topic_id(), partition), t.partitions))
            else {
                continue;
            };
            let Some(p) = self.registry.local(key) else {
                continue;
            };
            let shard = self.clone();
            glommio::spawn_local(async move {
                if shard.coordinator.load(partition, &p.log).await.is_ok() {
                    let leads = shard
                        .registry
                        .local(key)
                        .is_some_and(|p| p.replica.borrow().is_leader());
                    if !leads {
                        // Closed here while it loaded: not ours any more.
                        shard.coordinator.unload(partition, partitions);
                    } else {
                        tracing::info!(partition, "consumer groups loaded on a retry");
                    }
                }
            })
            .detach();
        }
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

    /// Opens and closes this shard's partitions to match a metadata snapshot.
    pub async fn apply(&self, snap: Arc<Topics>) {
        self.registry.apply(snap, &self.coordinator).await
    }

    /// Closes every partition cleanly (flushed, synced, indexes written).
    pub async fn close_all(&self) {
        self.registry.close_all().await
    }
}

/// The coordinator sees the shard it runs on through this interface only.
impl crate::group::Host for Shard {
    fn shard_id(&self) -> usize {
        self.id
    }

    fn topics(&self) -> Arc<Topics> {
        self.registry.topics()
    }

    fn owns(&self, key: PartKey) -> bool {
        self.owner(key) == self.id
    }

    fn is_open(&self, key: PartKey) -> bool {
        self.registry.local(key).is_some()
    }

    fn leads(&self, key: PartKey) -> bool {
        self.registry
            .local(key)
            .is_some_and(|p| p.replica.borrow().is_leader())
    }

    fn group_settings(&self) -> &crate::group::GroupSettings {
        &self.config.groups
    }

    fn coordinator(&self) -> &crate::group::Coordinator {
        &self.coordinator
    }

    async fn append_durable(&self, key: PartKey, batch: bytes::BytesMut) -> Result<i64, PartError> {
        let recompress_budget = std::sync::atomic::AtomicUsize::new(self.config.recompress_max_bytes);
        self.produce_local(key, batch, -1, GROUP_APPEND_TIMEOUT, &recompress_budget)
            .await
            .map(|p| p.base_offset)
    }
}
