//! The partitions one shard owns, and the metadata snapshot they follow.
//!
//! Each shard opens exactly the partitions that `topics::shard_for` gives
//! it. A new snapshot from shard 0 ([`Registry::apply`]) opens those that
//! appeared (creating their directories), closes and removes those that
//! went, and hands changed settings to the logs that stay. The shard's
//! tail-cache budget is divided among its partitions here.
//!
//! Lives on its shard's executor only; nothing in it is shared between cores.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use borges_meta::image::PartitionState;
use borges_meta::replica::{Replica, ReplicaConfig, Transition};
use borges_net::protocol::ErrorCode;
use borges_net::types::PartitionId;
use borges_storage::{Clock, DataDirs, Log};
use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::group::{Coordinator, OFFSETS_TOPIC};
use crate::notify::Notify;
use crate::topics::{self, shard_for, PartKey, TopicMeta, TopicSettings, Topics};

use super::PartError;

/// The least tail cache a partition gets, however many share the budget.
const TAIL_CACHE_MIN_BYTES: usize = 256 << 10;

/// One partition owned by this shard.
pub struct Partition {
    pub topic: String,
    pub key: PartKey,
    pub log: Log,
    /// Woken when what consumers may read moves (the high watermark), and
    /// when the partition's role changes or it closes.
    pub notify: Notify,
    /// Woken when the log end moves (followers long-poll on it), and when
    /// the partition's role changes or it closes.
    pub appended: Notify,
    /// Its replication state (`borges_meta::replica`).
    pub replica: RefCell<Replica>,
    /// A follower truncates by leader epoch before it fetches: set when it
    /// starts following a leader or an epoch, cleared once it has.
    pub needs_truncation: Cell<bool>,
    /// The high watermark last checkpointed to its log directory.
    pub checkpointed_hw: Cell<u64>,
    /// A follower leaves the partition out of its fetches until then
    /// (monotonic ms), after its leader refused it.
    pub fetch_paused_until: Cell<u64>,
    pub settings: RefCell<TopicSettings>,
    /// A task syncs the log for consumers waiting on records not yet on disk.
    pub visibility_sync: Cell<bool>,
}

impl Partition {
    /// Checkpoints the high watermark if it moved since the last time.
    pub async fn checkpoint_hw(&self) {
        let hw = self.replica.borrow().high_watermark();
        if hw == self.checkpointed_hw.get() {
            return;
        }
        match self
            .log
            .checkpoint_high_watermark(borges_net::types::Offset(hw))
            .await
        {
            Ok(()) => self.checkpointed_hw.set(hw),
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.key.1, error = %e, "high watermark checkpoint failed")
            }
        }
    }
}

/// The partitions of one shard, by key, and the snapshot they were opened for.
pub struct Registry {
    shard: usize,
    shards: usize,
    config: Rc<BrokerConfig>,
    dirs: DataDirs,
    clock: Rc<dyn Clock>,
    topics: RefCell<Arc<Topics>>,
    partitions: RefCell<HashMap<PartKey, Rc<Partition>>>,
    /// One snapshot is applied at a time.
    apply_lock: Semaphore,
}

impl Registry {
    pub fn new(
        shard: usize,
        shards: usize,
        config: Rc<BrokerConfig>,
        dirs: DataDirs,
        clock: Rc<dyn Clock>,
    ) -> Registry {
        Registry {
            shard,
            shards,
            config,
            dirs,
            clock,
            topics: RefCell::new(Arc::new(Topics::default())),
            partitions: RefCell::new(HashMap::new()),
            apply_lock: Semaphore::new(1),
        }
    }

    /// The snapshot applied last.
    pub fn topics(&self) -> Arc<Topics> {
        self.topics.borrow().clone()
    }

    /// The partition, or the error a client gets when this shard has no such partition.
    pub fn get(&self, key: PartKey) -> Result<Rc<Partition>, PartError> {
        self.local(key).ok_or_else(|| self.missing(key))
    }

    /// The partition if this shard has it open.
    pub fn local(&self, key: PartKey) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(&key).cloned()
    }

    pub fn all(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// The partitions of `snap` that belong to this shard: those whose
    /// replicas include this broker (every partition, for topics the
    /// snapshot's image does not place, as a single node's).
    fn wanted<'a>(&self, snap: &'a Topics) -> HashMap<PartKey, &'a TopicMeta> {
        let mut wanted = HashMap::new();
        let me = borges_meta::NodeId(self.config.node_id);
        for t in snap.topics.values() {
            let placed = snap.cluster.image.topic(borges_meta::TopicId(t.id));
            for p in 0..t.partitions {
                let key = (t.topic_id(), p);
                if shard_for(key.0, key.1, self.shards) != self.shard {
                    continue;
                }
                let here = placed
                    .and_then(|img| img.partitions.get(p as usize))
                    .is_none_or(|state| state.replicas.contains(&me));
                if here {
                    wanted.insert(key, t);
                }
            }
        }
        wanted
    }

    /// The error for a partition this shard does not have: one that lives
    /// on another broker is `NotLeaderOrFollower` (the client refreshes its
    /// metadata and goes there), one nobody has is unknown.
    fn missing(&self, key: PartKey) -> PartError {
        let topics = self.topics();
        let elsewhere = topics
            .cluster
            .image
            .topic(borges_meta::TopicId(key.0 .0))
            .and_then(|t| t.partitions.get(key.1 as usize))
            .is_some_and(|p| !p.replicas.contains(&borges_meta::NodeId(self.config.node_id)));
        if elsewhere {
            (
                ErrorCode::NotLeaderOrFollower,
                format!("partition {} of topic id {} is on another broker", key.1, key.0),
            )
        } else {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("partition {} of topic id {} is not here", key.1, key.0),
            )
        }
    }

    /// Opens and closes this shard's partitions to match a metadata snapshot.
    /// The groups of an offsets partition are loaded into `coordinator`
    /// before the partition can be found, and forgotten when it goes.
    pub async fn apply(&self, snap: Arc<Topics>, coordinator: &Coordinator) {
        let Ok(_guard) = self.apply_lock.acquire_permit(1).await else {
            return;
        };
        let wanted = self.wanted(&snap);
        self.remove_unwanted(&wanted, &snap, coordinator).await;
        // The shard's tail-cache budget is shared by its partitions (bytes
        // not yet written to their files are kept whatever the budget).
        let log_defaults = self.config.log_defaults();
        let cache_each = (self.config.tail_cache_bytes_per_shard / wanted.len().max(1))
            .clamp(TAIL_CACHE_MIN_BYTES, log_defaults.tail_cache_bytes_max);
        for (key, t) in wanted {
            let mut settings = topics::settings(&log_defaults, &t.configs);
            settings.log.flush = self.config.log_flush_policy();
            settings.log.tail_cache_bytes_max = cache_each;
            match self.local(key) {
                Some(p) => {
                    if let Err(e) = p.log.set_config(settings.log.clone()) {
                        tracing::error!(topic = %t.name, error = %e, "new topic settings refused");
                    }
                    *p.settings.borrow_mut() = settings;
                }
                None => self.open(key, t, settings).await,
            }
            if let Some(p) = self.local(key) {
                let transition = self.follow_image(&p, &snap);
                if p.topic == OFFSETS_TOPIC {
                    self.follow_groups(&p, transition, t.partitions, coordinator)
                        .await;
                }
            }
        }
        *self.topics.borrow_mut() = snap;
    }

    /// An offsets partition's groups follow its leadership: loaded from the
    /// log when this broker becomes the leader (served only once the load
    /// is whole), forgotten when it follows or goes offline (a follower's
    /// copy would go stale while another broker coordinates them).
    async fn follow_groups(
        &self,
        p: &Rc<Partition>,
        transition: Transition,
        partitions: u32,
        coordinator: &Coordinator,
    ) {
        match transition {
            Transition::BecameLeader => {
                coordinator.begin_load(p.key.1);
                // (A failed load is retried by the shard: `Shard::retry_group_loads`.)
                if coordinator.load(p.key.1, &p.log).await.is_ok() && !p.replica.borrow().is_leader() {
                    // It stopped leading while it loaded.
                    coordinator.unload(p.key.1, partitions);
                }
            }
            Transition::BecameFollower { .. } | Transition::WentOffline => {
                coordinator.unload(p.key.1, partitions)
            }
            Transition::Unchanged | Transition::IsrChanged => {}
        }
    }

    /// The replication settings of `p` with `replicas` replicas.
    fn replica_config(&self, p: &Partition, replicas: usize) -> ReplicaConfig {
        let majority = replicas / 2 + 1;
        let mut min_isr = p
            .settings
            .borrow()
            .min_insync_replicas
            .or(self.config.min_insync_replicas)
            .unwrap_or(majority);
        if p.topic == OFFSETS_TOPIC {
            // Group commits are acks=all writes: the internal topic never
            // asks for more replicas than it has.
            min_isr = min_isr.min(replicas);
        }
        ReplicaConfig {
            lag_max_ms: u64::try_from(self.config.replica_lag_time_max.as_millis()).unwrap_or(u64::MAX),
            min_isr,
        }
    }

    /// Moves `p`'s replication state to what `snap`'s image says of it
    /// (a partition the image does not place is led here alone).
    fn follow_image(&self, p: &Partition, snap: &Topics) -> Transition {
        let me = borges_meta::NodeId(self.config.node_id);
        let state = snap
            .cluster
            .image
            .partition(borges_meta::TopicId(p.key.0 .0), p.key.1)
            .cloned()
            .unwrap_or_else(|| PartitionState {
                replicas: vec![me],
                isr: vec![me],
                leader: me,
                leader_epoch: borges_meta::LeaderEpoch(0),
                partition_epoch: borges_meta::PartitionEpoch(0),
            });
        let config = self.replica_config(p, state.replicas.len());
        let now = crate::clock::monotonic_ms();
        // A produce that read an older epoch before an await lands nowhere.
        p.log.fence_leader_epoch(state.leader_epoch);
        let transition = {
            let mut r = p.replica.borrow_mut();
            r.set_config(config);
            r.apply(&state, p.log.log_end_offset().0, now)
        };
        match transition {
            Transition::Unchanged => return transition,
            Transition::BecameFollower { leader } => {
                tracing::info!(topic = %p.topic, partition = p.key.1, leader = leader.0, epoch = state.leader_epoch.0, "following");
                p.needs_truncation.set(true);
                p.fetch_paused_until.set(0);
            }
            Transition::BecameLeader => {
                tracing::info!(topic = %p.topic, partition = p.key.1, epoch = state.leader_epoch.0, isr = ?state.isr, "leading");
                p.needs_truncation.set(false);
            }
            Transition::IsrChanged => {}
            Transition::WentOffline => p.needs_truncation.set(false),
        }
        // Waiting produces, fetches and followers look again.
        p.notify.notify();
        p.appended.notify();
        transition
    }

    /// Closes and removes the partitions no longer wanted here.
    /// A partition of a topic that still exists (no longer a replica here)
    /// is closed but its data kept; a deleted topic's is removed.
    async fn remove_unwanted(
        &self,
        wanted: &HashMap<PartKey, &TopicMeta>,
        snap: &Topics,
        coordinator: &Coordinator,
    ) {
        let gone: Vec<Rc<Partition>> = {
            let mut parts = self.partitions.borrow_mut();
            let keys: Vec<PartKey> = parts
                .keys()
                .filter(|k| !wanted.contains_key(k))
                .copied()
                .collect();
            keys.iter().filter_map(|k| parts.remove(k)).collect()
        };
        for p in gone {
            if p.topic == OFFSETS_TOPIC {
                let partitions = self.topics().topics.get(&p.topic).map_or(1, |t| t.partitions);
                coordinator.unload(p.key.1, partitions);
            }
            p.checkpoint_hw().await;
            if let Err(e) = p.log.close().await {
                tracing::warn!(topic = %p.topic, partition = p.key.1, error = %e, "closing a deleted partition");
            }
            p.notify.notify();
            p.appended.notify();
            let kept = snap
                .topics
                .get(&p.topic)
                .is_some_and(|t| t.topic_id() == p.key.0 && p.key.1 < t.partitions);
            if kept {
                tracing::info!(topic = %p.topic, partition = p.key.1, "no longer a replica here: closed, data kept");
                continue;
            }
            if let Err(e) = self.dirs.remove(&p.topic, PartitionId(p.key.1)) {
                tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "removing a deleted partition");
            }
        }
    }

    /// Opens (or creates) one partition and registers it.
    async fn open(&self, key: PartKey, t: &TopicMeta, settings: TopicSettings) {
        let mut path = match self.dirs.place(&t.name, PartitionId(key.1)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(topic = %t.name, partition = key.1, error = %e, "cannot place partition");
                return;
            }
        };
        // A directory of the same name may hold a deleted topic's data (it
        // was deleted while this broker was down, or a crash came before
        // the directory went): the topic id written in it tells.
        match partition_topic_id(&path) {
            Ok(Some(id)) if id == t.id => {}
            Ok(Some(old)) => {
                tracing::warn!(topic = %t.name, partition = key.1, old_id = old, new_id = t.id, "removing a deleted topic's partition directory of the same name");
                let placed = self
                    .dirs
                    .remove(&t.name, PartitionId(key.1))
                    .and_then(|_| self.dirs.place(&t.name, PartitionId(key.1)));
                path = match placed {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(topic = %t.name, partition = key.1, error = %e, "cannot replace a deleted topic's partition directory");
                        return;
                    }
                };
                if let Err(e) = write_partition_topic_id(&path, t.id) {
                    tracing::error!(topic = %t.name, partition = key.1, error = %e, "cannot record the partition's topic id");
                    return;
                }
            }
            // New, or written before directories recorded their topic.
            Ok(None) => {
                if let Err(e) = write_partition_topic_id(&path, t.id) {
                    tracing::error!(topic = %t.name, partition = key.1, error = %e, "cannot record the partition's topic id");
                    return;
                }
            }
            Err(e) => {
                tracing::error!(topic = %t.name, partition = key.1, error = %e, "cannot read the partition's topic id");
                return;
            }
        }
        let log = match Log::open(path, settings.log.clone(), self.clock.clone()).await {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(topic = %t.name, partition = key.1, error = %e, "cannot open partition");
                return;
            }
        };
        let r = log.recovery_report();
        if r.truncated.is_some() || !r.segments_deleted.is_empty() {
            tracing::warn!(topic = %t.name, partition = key.1, report = ?r, "partition recovered with truncation");
        }
        let hw = match log.checkpointed_high_watermark() {
            Ok(hw) => hw.0,
            Err(e) => {
                tracing::warn!(topic = %t.name, partition = key.1, error = %e, "unreadable high watermark checkpoint; starting from 0");
                0
            }
        };
        let me = borges_meta::NodeId(self.config.node_id);
        let p = Rc::new(Partition {
            topic: t.name.clone(),
            key,
            log,
            notify: Notify::default(),
            appended: Notify::default(),
            replica: RefCell::new(Replica::new(
                me,
                hw,
                ReplicaConfig {
                    lag_max_ms: u64::MAX,
                    min_isr: 1,
                },
            )),
            needs_truncation: Cell::new(false),
            checkpointed_hw: Cell::new(hw),
            fetch_paused_until: Cell::new(0),
            settings: RefCell::new(settings),
            visibility_sync: Cell::new(false),
        });
        // An offsets partition's groups are loaded once the image makes
        // this broker its leader (`follow_groups`, right after this, with
        // nothing in between that a request could see).
        self.partitions.borrow_mut().insert(key, p);
    }

    /// Closes every partition cleanly (flushed, synced, indexes written).
    pub async fn close_all(&self) {
        // After any snapshot being applied, and before none other: a
        // snapshot that arrives while the shard stops must not reopen what
        // is being closed.
        let guard = self.apply_lock.acquire_permit(1).await;
        self.apply_lock.close();
        drop(guard);
        let parts: Vec<Rc<Partition>> = self.partitions.borrow_mut().drain().map(|(_, p)| p).collect();
        for p in parts {
            p.checkpoint_hw().await;
            if let Err(e) = p.log.close().await {
                tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "close failed");
            }
            p.notify.notify();
            p.appended.notify();
        }
    }
}

/// The file in a partition directory that names its topic (Kafka's
/// `partition.metadata`): `version: 0` and `topic_id: <16 hex digits>`.
const PARTITION_METADATA: &str = "partition.metadata";

/// The topic id recorded in a partition directory; `None` if none is.
fn partition_topic_id(dir: &std::path::Path) -> std::io::Result<Option<u64>> {
    let path = dir.join(PARTITION_METADATA);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: no topic_id line", path.display()),
            )
        })?;
    Ok(Some(id))
}

/// Records `id` in a partition directory: written, synced, renamed into
/// place. The rename is made durable by the directory sync that opening
/// the partition's log does next (`Log::open` syncs the directory before
/// it returns), so it costs no directory sync of its own.
fn write_partition_topic_id(dir: &std::path::Path, id: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join("partition.metadata.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    write!(f, "version: 0\ntopic_id: {id:016x}\n")?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(PARTITION_METADATA))
}

#[cfg(test)]
mod partition_metadata_tests {
    use super::*;

    #[test]
    fn a_partition_directory_names_its_topic() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(partition_topic_id(dir.path()).unwrap(), None);
        write_partition_topic_id(dir.path(), 0xab).unwrap();
        assert_eq!(partition_topic_id(dir.path()).unwrap(), Some(0xab));
        write_partition_topic_id(dir.path(), 7).unwrap();
        assert_eq!(partition_topic_id(dir.path()).unwrap(), Some(7));
        std::fs::write(dir.path().join(PARTITION_METADATA), "garbage").unwrap();
        assert!(partition_topic_id(dir.path()).is_err());
    }
}
