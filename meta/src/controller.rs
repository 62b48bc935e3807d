//! The active controller's decisions, as a pure state machine.
//!
//! Inputs: requests (register, heartbeat, create or delete topics, alter
//! configs, elect leaders, alter an ISR), ticks carrying the time in
//! milliseconds, and the batches Raft commits (`replay`). Outputs: replies,
//! and a batch of records for the caller to propose to Raft. Nothing here
//! does I/O or reads a clock; the broker's shard 0 drives it, and so does
//! the simulator.
//!
//! As in KRaft, the controller keeps two images: `committed`, built from
//! the committed log only, and `view`, which is `committed` plus the
//! records this controller has proposed and not yet seen committed. Each
//! decision is made against `view` and applied to it at once, so that the
//! next request sees it. When the node loses Raft leadership (or a proposal
//! is dropped), `become_inactive` throws the view away and rebuilds it
//! from `committed`. Heartbeats live only in the active controller's
//! memory: a newly active controller gives every broker a full session
//! timeout before it fences anyone.
//!
//! Rules (Kafka's, with the differences written in docs/ARCHITECTURE.md):
//! - A broker registers fenced and is unfenced by a heartbeat once it has
//!   applied the log up to its own registration.
//! - A registration with the node id of a live session, another
//!   incarnation and other data directories is refused
//!   (`DuplicateBrokerRegistration`) until that session expires; one that
//!   shares a data directory replaces the old registration at once (a
//!   broker locks its directories, so the old process is gone); the same
//!   incarnation retrying gets its epoch back.
//! - A fenced broker leads nothing and leaves every ISR where it is not the
//!   last member; the last member stays, so the partition can come back
//!   with it (no unclean election unless the topic allows it).
//! - A broker in controlled shutdown gives up leadership wherever another
//!   eligible ISR member exists; `should_shut_down` turns true once the
//!   committed image shows nothing more to move.
//! - A client request's decision (create or import topics, alter settings)
//!   fits one Raft entry ([`MAX_DECISION_RECORDS`], [`MAX_DECISION_BYTES`]),
//!   keeps the cluster within [`MAX_CLUSTER_PARTITIONS`] and the image's
//!   snapshot within [`MAX_IMAGE_BYTES`]; what would not is refused with a
//!   typed error, per topic where a request names several.

use std::collections::BTreeMap;

use borges_net::protocol::ErrorCode;
use borges_net::types::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, TopicId};
use thiserror::Error;

use crate::image::{check_partition, valid_topic_name, ApplyError, MetadataImage, PartitionState};
use crate::placement::{self, Candidate, PlacementError};
use crate::record::{
    encode_record, LeaderChange, MetadataRecord, PartitionChange, PartitionRecord, RecordBatch,
    RegisterBroker, MAX_REPLICAS, MAX_STRING,
};
use crate::seams::Random;

/// The topic setting that allows electing a replica outside the ISR.
pub const UNCLEAN_ELECTION_KEY: &str = "unclean.leader.election.enable";

/// Most records one client request's decision (create or import topics,
/// alter settings) may make: well under one batch's limit
/// ([`crate::record::MAX_BATCH_RECORDS`]).
pub const MAX_DECISION_RECORDS: usize = 50_000;
/// Most encoded bytes such a decision may make: well under what one Raft
/// message carries ([`crate::quorum::wire::MAX_PAYLOAD`]).
pub const MAX_DECISION_BYTES: usize = 16 << 20;
/// Most partitions the cluster may hold. It bounds the decisions that touch
/// every partition (fencing the broker that leads them all, a rebalance):
/// one change each, at most ~290 bytes (64 replicas), so 100 000 of them
/// are under 30 MiB and well under a batch's record limit.
pub const MAX_CLUSTER_PARTITIONS: usize = 100_000;
/// Most bytes the image's snapshot may take: it travels to a lagging voter
/// in one Raft message ([`crate::quorum::wire::MAX_PAYLOAD`], 64 MiB) and
/// lands in one journal frame. Registrations are not counted against it.
pub const MAX_IMAGE_BYTES: usize = 48 << 20;

/// The controller's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// A broker that has not heartbeated for this long is fenced
    /// (`broker.session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// `auto.leader.rebalance.enable`.
    pub auto_rebalance: bool,
    /// `leader.imbalance.check.interval.ms`.
    pub rebalance_interval_ms: u64,
    /// `leader.imbalance.per.broker.percentage`: a broker whose preferred
    /// partitions are led elsewhere more than this share gets them back.
    pub imbalance_percent: u32,
    /// The largest replication factor a topic may have. 1 until data
    /// replication (issue 11) lands.
    pub max_replication_factor: usize,
    /// Partitions and replication factor of a topic created with -1.
    pub default_partitions: u32,
    pub default_replication_factor: usize,
    /// Most partitions one topic may have.
    pub max_partitions: u32,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
            auto_rebalance: true,
            rebalance_interval_ms: 300_000,
            imbalance_percent: 10,
            max_replication_factor: 1,
            default_partitions: 1,
            default_replication_factor: 1,
            max_partitions: 10_000,
        }
    }
}

/// Why the controller refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControllerError {
    #[error("this node is not the active controller")]
    NotActive,
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    #[error("broker {node} sent epoch {sent}; its current epoch is {current}")]
    StaleBrokerEpoch {
        node: NodeId,
        sent: BrokerEpoch,
        current: BrokerEpoch,
    },
    #[error(
        "node id {node} is registered by a live broker at {address} with other data directories; \
         refused until that broker's session expires"
    )]
    DuplicateBroker { node: NodeId, address: String },
    #[error("invalid registration: {0}")]
    InvalidRegistration(&'static str),
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("no topic {0}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("the partition is already led by its preferred replica")]
    ElectionNotNeeded,
    #[error("the preferred replica {0} is not in the ISR or not eligible")]
    PreferredLeaderNotAvailable(NodeId),
    #[error("broker {0} does not lead the partition")]
    NotLeader(NodeId),
    #[error("leader epoch {sent} is not the partition's {current}")]
    FencedLeaderEpoch { sent: LeaderEpoch, current: LeaderEpoch },
    #[error("partition epoch {sent} is not the partition's {current}")]
    InvalidUpdateVersion {
        sent: PartitionEpoch,
        current: PartitionEpoch,
    },
    #[error("proposed ISR member {0} is fenced, shutting down or not a replica")]
    IneligibleReplica(NodeId),
    #[error("invalid ISR: {0}")]
    InvalidIsr(&'static str),
    /// A counter the decision needs is at its largest value (it can only
    /// get there through a damaged or hostile log).
    #[error("no more {0} are left")]
    Exhausted(&'static str),
    /// More records or bytes than one decision may carry (one Raft entry).
    #[error("too large for one metadata change: {0}")]
    DecisionTooLarge(String),
    #[error("the cluster would have more than {limit} partitions")]
    ClusterPartitionLimit { limit: usize },
    #[error("the metadata image would outgrow {limit} bytes")]
    ImageTooLarge { limit: usize },
}

impl ControllerError {
    /// The code a client or broker gets for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControllerError::NotActive => ErrorCode::NotController,
            ControllerError::UnknownBroker(_) => ErrorCode::BrokerIdNotRegistered,
            ControllerError::StaleBrokerEpoch { .. } => ErrorCode::StaleBrokerEpoch,
            ControllerError::DuplicateBroker { .. } => ErrorCode::DuplicateBrokerRegistration,
            ControllerError::InvalidRegistration(_) => ErrorCode::InvalidRequest,
            ControllerError::InvalidTopic(_) => ErrorCode::InvalidTopicException,
            ControllerError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            ControllerError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            ControllerError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            ControllerError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            ControllerError::UnknownTopic(_) | ControllerError::UnknownPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            ControllerError::ElectionNotNeeded => ErrorCode::ElectionNotNeeded,
            ControllerError::PreferredLeaderNotAvailable(_) => ErrorCode::PreferredLeaderNotAvailable,
            ControllerError::NotLeader(_) => ErrorCode::NotLeaderOrFollower,
            ControllerError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            ControllerError::InvalidUpdateVersion { .. } => ErrorCode::InvalidUpdateVersion,
            ControllerError::IneligibleReplica(_) => ErrorCode::IneligibleReplica,
            ControllerError::InvalidIsr(_) => ErrorCode::InvalidRequest,
            ControllerError::Exhausted(_) => ErrorCode::UnknownServerError,
            ControllerError::DecisionTooLarge(_) | ControllerError::ImageTooLarge { .. } => {
                ErrorCode::PolicyViolation
            }
            ControllerError::ClusterPartitionLimit { .. } => ErrorCode::InvalidPartitions,
        }
    }
}

/// A broker asking to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub node: NodeId,
    pub incarnation: u128,
    pub address: String,
    pub rack: Option<String>,
    pub shards: u16,
    pub log_dirs: Vec<u128>,
}

/// A broker's periodic heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: NodeId,
    pub epoch: BrokerEpoch,
    /// The highest metadata log index the broker has applied.
    pub metadata_offset: u64,
    /// The broker is stopping now: fence it at once (its last heartbeat).
    pub want_fence: bool,
    /// The broker wants a controlled shutdown.
    pub want_shutdown: bool,
}

/// What the controller tells a heartbeating broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub fenced: bool,
    pub shutting_down: bool,
    /// Controlled shutdown is complete: every leadership that could move
    /// has moved, and that is committed.
    pub should_shut_down: bool,
}

/// A topic to create. `-1` asks for the default partitions or factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Settings, already validated by the broker that took the request.
    pub configs: Vec<(String, String)>,
}

/// A topic of a single-node data directory, as `topics.json` held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedTopic {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    pub configs: Vec<(String, String)>,
}

/// A leader's request to change its partition's ISR (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    pub node: NodeId,
    pub broker_epoch: BrokerEpoch,
    pub topic: TopicId,
    pub partition: u32,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    last_heartbeat_ms: u64,
    /// The broker said it is stopping (its last heartbeat).
    gone: bool,
}

/// Why a broker leaves its leaderships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// Fenced: leads nothing afterwards.
    Fenced,
    /// Controlled shutdown: leads only what cannot move.
    ShuttingDown,
}

/// The controller state machine. See the module documentation.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    committed: MetadataImage,
    view: MetadataImage,
    sessions: BTreeMap<NodeId, Session>,
    active: bool,
    next_rebalance_ms: u64,
}

type Result<T> = std::result::Result<T, ControllerError>;

/// What a client request's decision still may add: its own records and
/// bytes (one Raft entry), the cluster's partitions, the image's bytes.
#[derive(Debug, Clone, Copy)]
struct Budget {
    records: usize,
    bytes: usize,
    partitions: usize,
    image_bytes: usize,
}

/// Records, encoded bytes and partitions some records add.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    records: usize,
    bytes: usize,
    partitions: usize,
}

impl Cost {
    fn add(&mut self, rec: &MetadataRecord, times: usize) {
        let mut buf = Vec::new();
        encode_record(rec, &mut buf);
        self.records += times;
        // Each record of a batch has a 4-byte length before it.
        self.bytes += (4 + buf.len()) * times;
    }
}

impl Budget {
    fn check(&self, c: Cost) -> Result<()> {
        if self.records + c.records > MAX_DECISION_RECORDS || self.bytes + c.bytes > MAX_DECISION_BYTES {
            return Err(ControllerError::DecisionTooLarge(format!(
                "{} records, {} bytes: too many partitions or settings in one request \
                 (one change holds at most {MAX_DECISION_RECORDS} records and {MAX_DECISION_BYTES} bytes)",
                self.records + c.records,
                self.bytes + c.bytes
            )));
        }
        if self.partitions + c.partitions > MAX_CLUSTER_PARTITIONS {
            return Err(ControllerError::ClusterPartitionLimit {
                limit: MAX_CLUSTER_PARTITIONS,
            });
        }
        if self.image_bytes + c.bytes > MAX_IMAGE_BYTES {
            return Err(ControllerError::ImageTooLarge {
                limit: MAX_IMAGE_BYTES,
            });
        }
        Ok(())
    }

    fn take(&mut self, c: Cost) -> Result<()> {
        self.check(c)?;
        self.records += c.records;
        self.bytes += c.bytes;
        self.partitions += c.partitions;
        self.image_bytes += c.bytes;
        Ok(())
    }
}

impl Controller {
    /// A controller over `committed` (empty, or loaded from a snapshot and
    /// the log after it), not yet active.
    pub fn new(config: ControllerConfig, committed: MetadataImage) -> Controller {
        Controller {
            config,
            view: committed.clone(),
            committed,
            sessions: BTreeMap::new(),
            active: false,
            next_rebalance_ms: 0,
        }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The image of the committed log.
    pub fn committed(&self) -> &MetadataImage {
        &self.committed
    }

    /// The committed image plus this controller's uncommitted proposals.
    pub fn view(&self) -> &MetadataImage {
        &self.view
    }

    /// Applies a batch Raft committed at `index`.
    pub fn replay(&mut self, index: u64, batch: &[MetadataRecord]) -> Vec<ApplyError> {
        let errors = self.committed.apply_batch(index, batch);
        if !self.active {
            self.view.apply_batch(index, batch);
        } else {
            // Our own proposal coming back: the view has it already; only
            // the registration index (known now) is taken from the log.
            self.view.applied = self.view.applied.max(index);
        }
        errors
    }

    /// This node became the Raft leader and has replayed every entry of
    /// earlier terms: it decides from now on.
    pub fn become_active(&mut self, now_ms: u64) {
        self.active = true;
        self.view = self.committed.clone();
        self.sessions = self
            .view
            .brokers()
            .map(|b| {
                let s = Session {
                    last_heartbeat_ms: now_ms,
                    gone: false,
                };
                (b.reg.node, s)
            })
            .collect();
        self.next_rebalance_ms = now_ms + self.config.rebalance_interval_ms;
    }

    /// This node lost leadership or a proposal was dropped: forget what was
    /// not committed.
    pub fn become_inactive(&mut self) {
        self.active = false;
        self.view = self.committed.clone();
        self.sessions.clear();
    }

    /// The budget of a decision starting now, against the view.
    fn budget(&self) -> Budget {
        Budget {
            records: 0,
            bytes: 0,
            partitions: self.view.partitions().count(),
            image_bytes: self.view.snapshot_len(),
        }
    }

    fn check_active(&self) -> Result<()> {
        if self.active {
            Ok(())
        } else {
            Err(ControllerError::NotActive)
        }
    }

    /// Applies `rec` to the view and adds it to `out`. Every record the
    /// controller makes must apply; one that does not is a bug, caught in
    /// tests and dropped (never proposed) in production.
    fn emit(&mut self, out: &mut RecordBatch, rec: MetadataRecord) {
        let index = self.view.applied;
        let applied = self.view.apply(index, &rec);
        debug_assert!(
            applied.is_ok(),
            "controller made a record that does not apply: {rec:?}: {applied:?}"
        );
        if applied.is_ok() {
            out.push(rec);
        }
    }

    /// A broker registers (or re-registers after a restart).
    pub fn register(&mut self, req: &Registration, now_ms: u64) -> Result<(BrokerEpoch, RecordBatch)> {
        self.check_active()?;
        validate_registration(req)?;
        let mut out = Vec::new();
        if let Some(existing) = self.view.broker(req.node) {
            let old_epoch = existing.reg.epoch;
            if existing.reg.incarnation == req.incarnation {
                self.touch(req.node, now_ms);
                return Ok((old_epoch, out));
            }
            // The same data directory means the old process is gone: a
            // broker holds an exclusive lock on its directories, so two live
            // processes cannot share one. The restart replaces it at once.
            let same_directory = existing.reg.log_dirs.iter().any(|d| req.log_dirs.contains(d));
            if !same_directory && self.session_alive(req.node, now_ms) {
                return Err(ControllerError::DuplicateBroker {
                    node: req.node,
                    address: existing.reg.address.clone(),
                });
            }
            // Checked before fencing touches the view: a refusal changes
            // nothing.
            if self.view.next_broker_epoch().0 == i64::MAX {
                return Err(ControllerError::Exhausted("broker epochs"));
            }
            if !existing.fenced {
                self.fence(req.node, old_epoch, &mut out);
            }
        }
        let epoch = self.view.next_broker_epoch();
        if epoch.0 == i64::MAX {
            return Err(ControllerError::Exhausted("broker epochs"));
        }
        let rec = RegisterBroker {
            node: req.node,
            incarnation: req.incarnation,
            epoch,
            address: req.address.clone(),
            rack: req.rack.clone(),
            shards: req.shards,
            log_dirs: req.log_dirs.clone(),
        };
        self.emit(&mut out, MetadataRecord::RegisterBroker(rec));
        self.touch(req.node, now_ms);
        Ok((epoch, out))
    }

    fn touch(&mut self, node: NodeId, now_ms: u64) {
        self.sessions.insert(
            node,
            Session {
                last_heartbeat_ms: now_ms,
                gone: false,
            },
        );
    }

    fn session_alive(&self, node: NodeId, now_ms: u64) -> bool {
        self.sessions.get(&node).is_some_and(|s| {
            !s.gone && now_ms.saturating_sub(s.last_heartbeat_ms) <= self.config.session_timeout_ms
        })
    }

    /// A broker's heartbeat: keeps its session, and moves it between fenced,
    /// unfenced and shutting down.
    pub fn heartbeat(&mut self, hb: &Heartbeat, now_ms: u64) -> Result<(HeartbeatReply, RecordBatch)> {
        self.check_active()?;
        let b = self
            .view
            .broker(hb.node)
            .ok_or(ControllerError::UnknownBroker(hb.node))?;
        if b.reg.epoch != hb.epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                node: hb.node,
                sent: hb.epoch,
                current: b.reg.epoch,
            });
        }
        let (fenced, shutting_down) = (b.fenced, b.shutting_down);
        self.touch(hb.node, now_ms);
        let mut out = Vec::new();
        if hb.want_fence {
            if !fenced {
                self.fence(hb.node, hb.epoch, &mut out);
            }
            if let Some(s) = self.sessions.get_mut(&hb.node) {
                s.gone = true;
            }
        } else if hb.want_shutdown {
            if !shutting_down {
                let rec = MetadataRecord::BrokerShuttingDown {
                    node: hb.node,
                    epoch: hb.epoch,
                };
                self.emit(&mut out, rec);
            }
            // Again on every heartbeat: an ISR member may have become
            // eligible to take over since the last one.
            self.leave(hb.node, Leaving::ShuttingDown, &mut out);
        } else if fenced && !shutting_down && self.caught_up(hb) {
            let rec = MetadataRecord::UnfenceBroker {
                node: hb.node,
                epoch: hb.epoch,
            };
            self.emit(&mut out, rec);
            self.rejoin(hb.node, &mut out);
        }
        let b = self.view.broker(hb.node).expect("checked above");
        let reply = HeartbeatReply {
            fenced: b.fenced,
            shutting_down: b.shutting_down,
            should_shut_down: b.shutting_down && self.shutdown_complete(hb.node, hb.epoch),
        };
        Ok((reply, out))
    }

    /// The broker has applied the committed log past its registration.
    fn caught_up(&self, hb: &Heartbeat) -> bool {
        self.committed
            .broker(hb.node)
            .is_some_and(|b| b.reg.epoch == hb.epoch && hb.metadata_offset >= b.registered_at)
    }

    /// Committed: the broker is shutting down, and leads nothing that
    /// another eligible ISR member could lead.
    fn shutdown_complete(&self, node: NodeId, epoch: BrokerEpoch) -> bool {
        let c = &self.committed;
        c.broker(node)
            .is_some_and(|b| b.reg.epoch == epoch && (b.shutting_down || b.fenced))
            && !c
                .partitions()
                .any(|(_, _, p)| p.leader == node && p.isr.iter().any(|&m| m != node && c.is_eligible(m)))
    }

    /// Fences expired sessions and, every rebalance interval, moves
    /// leaderships back to their preferred replicas.
    pub fn tick(&mut self, now_ms: u64) -> RecordBatch {
        let mut out = Vec::new();
        if !self.active {
            return out;
        }
        let expired: Vec<(NodeId, BrokerEpoch)> = self
            .view
            .brokers()
            .filter(|b| !b.fenced && !self.session_alive(b.reg.node, now_ms))
            .map(|b| (b.reg.node, b.reg.epoch))
            .collect();
        for (node, epoch) in expired {
            self.fence(node, epoch, &mut out);
        }
        if self.config.auto_rebalance && now_ms >= self.next_rebalance_ms {
            self.next_rebalance_ms = now_ms + self.config.rebalance_interval_ms;
            self.rebalance(&mut out);
        }
        out
    }

    fn fence(&mut self, node: NodeId, epoch: BrokerEpoch, out: &mut RecordBatch) {
        self.emit(out, MetadataRecord::FenceBroker { node, epoch });
        self.leave(node, Leaving::Fenced, out);
    }

    /// Moves `node` out of leaderships and ISRs, as far as the rules allow.
    fn leave(&mut self, node: NodeId, why: Leaving, out: &mut RecordBatch) {
        let touched: Vec<(TopicId, u32)> = self
            .view
            .partitions()
            .filter(|(_, _, p)| p.leader == node || (p.isr.contains(&node) && p.isr.len() > 1))
            .map(|(t, i, _)| (t, i))
            .collect();
        for (topic, partition) in touched {
            let unclean = self.unclean_allowed(topic);
            let p = self.view.partition(topic, partition).expect("listed above");
            let mut isr: Vec<NodeId> = p.isr.iter().copied().filter(|&m| m != node).collect();
            let mut leader = p.leader;
            if p.leader == node {
                match self.choose_leader(&p.replicas, &isr, unclean) {
                    Some((l, new_isr)) => {
                        leader = l;
                        if let Some(i) = new_isr {
                            isr = i;
                        }
                    }
                    None if why == Leaving::ShuttingDown => continue,
                    None => leader = NodeId::NONE,
                }
            }
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            self.change(topic, partition, leader, isr, out);
        }
    }

    /// `node` was unfenced: it leads the partitions that were offline
    /// waiting for it.
    fn rejoin(&mut self, node: NodeId, out: &mut RecordBatch) {
        let offline: Vec<(TopicId, u32)> = self
            .view
            .partitions()
            .filter(|(_, _, p)| !p.has_leader() && p.replicas.contains(&node))
            .map(|(t, i, _)| (t, i))
            .collect();
        for (topic, partition) in offline {
            let unclean = self.unclean_allowed(topic);
            let p = self.view.partition(topic, partition).expect("listed above");
            if let Some((leader, new_isr)) = self.choose_leader(&p.replicas, &p.isr, unclean) {
                let isr = new_isr.unwrap_or_else(|| p.isr.clone());
                self.change(topic, partition, leader, isr, out);
            }
        }
    }

    /// The first replica, in preferred order, that is in `isr` and
    /// eligible; failing that, when `unclean`, the first eligible replica,
    /// with the ISR reset to it.
    fn choose_leader(
        &self,
        replicas: &[NodeId],
        isr: &[NodeId],
        unclean: bool,
    ) -> Option<(NodeId, Option<Vec<NodeId>>)> {
        let eligible = |n: &&NodeId| self.view.is_eligible(**n);
        if let Some(&n) = replicas.iter().filter(|n| isr.contains(n)).find(eligible) {
            return Some((n, None));
        }
        if unclean {
            return replicas.iter().find(eligible).map(|&n| (n, Some(vec![n])));
        }
        None
    }

    fn unclean_allowed(&self, topic: TopicId) -> bool {
        self.view
            .topic(topic)
            .and_then(|t| t.configs.get(UNCLEAN_ELECTION_KEY))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Emits a change of `topic:partition` to `leader` and `isr`, if that
    /// changes anything.
    fn change(
        &mut self,
        topic: TopicId,
        partition: u32,
        leader: NodeId,
        isr: Vec<NodeId>,
        out: &mut RecordBatch,
    ) {
        let p = self
            .view
            .partition(topic, partition)
            .expect("caller looked it up");
        if p.leader == leader && p.isr == isr {
            return;
        }
        if p.partition_epoch.0 == i32::MAX || (p.leader != leader && p.leader_epoch.0 == i32::MAX) {
            // Only a damaged or hostile log puts an epoch there; the
            // partition keeps its state rather than the image overflow.
            return;
        }
        let rec = PartitionChange {
            topic,
            partition,
            leader: if p.leader == leader {
                LeaderChange::Unchanged
            } else {
                LeaderChange::To(leader)
            },
            isr: (p.isr != isr).then_some(isr),
            replicas: None,
        };
        self.emit(out, MetadataRecord::PartitionChange(rec));
    }

    /// For every broker whose preferred partitions are led elsewhere more
    /// than the imbalance share, gives them back where it can.
    fn rebalance(&mut self, out: &mut RecordBatch) {
        let mut preferred: BTreeMap<NodeId, (usize, Vec<(TopicId, u32)>)> = BTreeMap::new();
        for (t, i, p) in self.view.partitions() {
            let e = preferred.entry(p.preferred()).or_default();
            e.0 += 1;
            if p.leader != p.preferred() {
                e.1.push((t, i));
            }
        }
        for (node, (total, misled)) in preferred {
            if !self.view.is_eligible(node)
                || misled.len() * 100 <= total * self.config.imbalance_percent as usize
            {
                continue;
            }
            for (t, i) in misled {
                // Not available is not an error here: it is tried again next interval.
                let _ = self.elect_preferred_one(t, i, out);
            }
        }
    }

    fn elect_preferred_one(&mut self, topic: TopicId, partition: u32, out: &mut RecordBatch) -> Result<()> {
        let p = self
            .view
            .partition(topic, partition)
            .expect("caller looked it up");
        let preferred = p.preferred();
        if p.leader == preferred {
            return Err(ControllerError::ElectionNotNeeded);
        }
        if !p.isr.contains(&preferred) || !self.view.is_eligible(preferred) {
            return Err(ControllerError::PreferredLeaderNotAvailable(preferred));
        }
        let isr = p.isr.clone();
        self.change(topic, partition, preferred, isr, out);
        Ok(())
    }

    /// Preferred-leader election for the partitions named, or for every
    /// partition not led by its preferred replica when `None`.
    #[allow(clippy::type_complexity)]
    pub fn elect_preferred(
        &mut self,
        targets: Option<&[(String, u32)]>,
    ) -> Result<(Vec<((String, u32), Result<()>)>, RecordBatch)> {
        self.check_active()?;
        let targets: Vec<(String, u32)> = match targets {
            Some(t) => t.to_vec(),
            None => self
                .view
                .topics()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.leader != p.preferred())
                        .map(|(i, _)| (t.name.clone(), i as u32))
                })
                .collect(),
        };
        let mut out = Vec::new();
        let mut results = Vec::with_capacity(targets.len());
        for (name, partition) in targets {
            let r = match self.view.topic_by_name(&name) {
                None => Err(ControllerError::UnknownTopic(name.clone())),
                Some(t) if partition as usize >= t.partitions.len() => {
                    Err(ControllerError::UnknownPartition {
                        topic: name.clone(),
                        partition,
                    })
                }
                Some(t) => {
                    let id = t.id;
                    self.elect_preferred_one(id, partition, &mut out)
                }
            };
            results.push(((name, partition), r));
        }
        Ok((results, out))
    }

    /// Creates topics: one result per request, in order, and the records
    /// of those that succeeded. With `validate_only` nothing is recorded.
    pub fn create_topics(
        &mut self,
        topics: &[NewTopic],
        validate_only: bool,
        rng: &mut dyn Random,
    ) -> Result<(Vec<Result<TopicId>>, RecordBatch)> {
        self.check_active()?;
        let mut out = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        let mut seen = std::collections::BTreeSet::new();
        let mut budget = self.budget();
        for t in topics {
            let r = self
                .plan_topic(t, &budget, rng)
                .and_then(|(partitions, replicas, cost)| {
                    if !seen.insert(t.name.as_str()) {
                        return Err(ControllerError::TopicExists(t.name.clone()));
                    }
                    let id = self.view.next_topic_id();
                    if id.0 == u64::MAX {
                        return Err(ControllerError::Exhausted("topic ids"));
                    }
                    budget.take(cost)?;
                    if !validate_only {
                        self.emit_topic(t, id, partitions, replicas, &mut out);
                    }
                    Ok(id)
                });
            results.push(r);
        }
        Ok((results, out))
    }

    /// Checks a new topic, that it fits `budget`, and places its replicas.
    fn plan_topic(
        &self,
        t: &NewTopic,
        budget: &Budget,
        rng: &mut dyn Random,
    ) -> Result<(u32, Vec<Vec<NodeId>>, Cost)> {
        if !valid_topic_name(&t.name) {
            return Err(ControllerError::InvalidTopic(t.name.clone()));
        }
        if self.view.topic_by_name(&t.name).is_some() {
            return Err(ControllerError::TopicExists(t.name.clone()));
        }
        let partitions = match t.partitions {
            -1 => self.config.default_partitions,
            n if n >= 1 && n as u32 <= self.config.max_partitions => n as u32,
            n => {
                return Err(ControllerError::InvalidPartitions(format!(
                    "partition count {n} is outside 1..={}",
                    self.config.max_partitions
                )))
            }
        };
        let rf = match t.replication_factor {
            -1 => self.config.default_replication_factor,
            n if n >= 1 => n as usize,
            n => {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "replication factor {n} is below 1"
                )))
            }
        };
        if rf > self.config.max_replication_factor {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "replication factor {rf} is above {}, the most this cluster supports until data replication lands",
                self.config.max_replication_factor
            )));
        }
        for (k, v) in &t.configs {
            if k.is_empty() || k.len() > MAX_STRING || v.len() > MAX_STRING {
                return Err(ControllerError::InvalidConfig(format!(
                    "{k:?} is empty or too long"
                )));
            }
        }
        // Before placement, which is as long as the partitions are many.
        let cost = topic_cost(&t.name, &t.configs, partitions, rf.min(MAX_REPLICAS));
        budget.check(cost)?;
        let candidates: Vec<Candidate> = self
            .view
            .eligible_brokers()
            .map(|b| Candidate {
                node: b.reg.node,
                rack: b.reg.rack.clone(),
            })
            .collect();
        let replicas = placement::place(&candidates, partitions, rf, rng).map_err(|e| match e {
            PlacementError::NotEnoughBrokers { .. } | PlacementError::ZeroReplicationFactor => {
                ControllerError::InvalidReplicationFactor(e.to_string())
            }
        })?;
        Ok((partitions, replicas, cost))
    }

    fn emit_topic(
        &mut self,
        t: &NewTopic,
        id: TopicId,
        partitions: u32,
        replicas: Vec<Vec<NodeId>>,
        out: &mut RecordBatch,
    ) {
        self.emit(
            out,
            MetadataRecord::Topic {
                id,
                name: t.name.clone(),
            },
        );
        for (key, value) in &t.configs {
            let rec = MetadataRecord::Config {
                topic: id,
                key: key.clone(),
                value: Some(value.clone()),
            };
            self.emit(out, rec);
        }
        debug_assert_eq!(replicas.len(), partitions as usize);
        for (i, r) in replicas.into_iter().enumerate() {
            let rec = PartitionRecord {
                topic: id,
                partition: i as u32,
                leader: r[0],
                isr: r.clone(),
                replicas: r,
                leader_epoch: 0,
                partition_epoch: 0,
            };
            self.emit(out, MetadataRecord::Partition(rec));
        }
    }

    /// Takes in the topics of a single-node broker's data directory, with
    /// their ids, every replica on `node`; ids below `next_id` are never
    /// handed out again.
    pub fn import_topics(
        &mut self,
        topics: &[ImportedTopic],
        next_id: TopicId,
        node: NodeId,
    ) -> Result<RecordBatch> {
        self.check_active()?;
        for t in topics {
            if t.id.0 == u64::MAX {
                return Err(ControllerError::Exhausted("topic ids"));
            }
            if !valid_topic_name(&t.name) {
                return Err(ControllerError::InvalidTopic(t.name.clone()));
            }
            if self.view.topic_by_name(&t.name).is_some() || self.view.topic(t.id).is_some() {
                return Err(ControllerError::TopicExists(t.name.clone()));
            }
            if t.partitions == 0 || t.partitions > self.config.max_partitions {
                return Err(ControllerError::InvalidPartitions(format!(
                    "{}: {} partitions",
                    t.name, t.partitions
                )));
            }
        }
        let mut budget = self.budget();
        for t in topics {
            budget.take(topic_cost(&t.name, &t.configs, t.partitions, 1))?;
        }
        let mut out = Vec::new();
        for t in topics {
            let new = NewTopic {
                name: t.name.clone(),
                partitions: t.partitions as i32,
                replication_factor: 1,
                configs: t.configs.clone(),
            };
            let replicas = vec![vec![node]; t.partitions as usize];
            self.emit_topic(&new, t.id, t.partitions, replicas, &mut out);
        }
        if next_id > self.view.next_topic_id() {
            self.emit(&mut out, MetadataRecord::ReserveTopicIds { next: next_id });
        }
        Ok(out)
    }

    /// Deletes topics by name: one result per name, in order.
    pub fn delete_topics(&mut self, names: &[String]) -> Result<(Vec<Result<TopicId>>, RecordBatch)> {
        self.check_active()?;
        let mut out = Vec::new();
        let results = names
            .iter()
            .map(|name| {
                let id = self
                    .view
                    .topic_by_name(name)
                    .map(|t| t.id)
                    .ok_or_else(|| ControllerError::UnknownTopic(name.clone()))?;
                self.emit(&mut out, MetadataRecord::RemoveTopic { id });
                Ok(id)
            })
            .collect();
        Ok((results, out))
    }

    /// Sets (`Some`) or removes (`None`) topic settings, already validated
    /// by the broker that took the request.
    pub fn alter_configs(
        &mut self,
        topic: &str,
        changes: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<RecordBatch> {
        self.check_active()?;
        let id = self
            .view
            .topic_by_name(topic)
            .map(|t| t.id)
            .ok_or_else(|| ControllerError::UnknownTopic(topic.to_string()))?;
        for (k, v) in changes {
            if k.is_empty() || k.len() > MAX_STRING || v.as_ref().is_some_and(|v| v.len() > MAX_STRING) {
                return Err(ControllerError::InvalidConfig(format!(
                    "{k:?} is empty or too long"
                )));
            }
        }
        let mut cost = Cost::default();
        for (key, value) in changes {
            let rec = MetadataRecord::Config {
                topic: id,
                key: key.clone(),
                value: value.clone(),
            };
            cost.add(&rec, 1);
        }
        self.budget().check(cost)?;
        let mut out = Vec::new();
        if validate_only {
            return Ok(out);
        }
        for (key, value) in changes {
            let rec = MetadataRecord::Config {
                topic: id,
                key: key.clone(),
                value: value.clone(),
            };
            self.emit(&mut out, rec);
        }
        // Allowing unclean election may bring offline partitions back.
        if self.unclean_allowed(id) {
            let eligible: Vec<NodeId> = self.view.eligible_brokers().map(|b| b.reg.node).collect();
            for n in eligible {
                self.rejoin(n, &mut out);
            }
        }
        Ok(out)
    }

    /// A leader changes its partition's ISR, naming the epochs it saw
    /// (compare-and-set). Returns the new state.
    pub fn alter_isr(&mut self, req: &AlterIsr) -> Result<(PartitionState, RecordBatch)> {
        self.check_active()?;
        let b = self
            .view
            .broker(req.node)
            .ok_or(ControllerError::UnknownBroker(req.node))?;
        if b.reg.epoch != req.broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                node: req.node,
                sent: req.broker_epoch,
                current: b.reg.epoch,
            });
        }
        let name = || {
            self.view
                .topic(req.topic)
                .map(|t| t.name.clone())
                .unwrap_or_default()
        };
        let p = self.view.partition(req.topic, req.partition).ok_or_else(|| {
            ControllerError::UnknownPartition {
                topic: name(),
                partition: req.partition,
            }
        })?;
        if p.leader != req.node {
            return Err(ControllerError::NotLeader(req.node));
        }
        if p.leader_epoch != req.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch {
                sent: req.leader_epoch,
                current: p.leader_epoch,
            });
        }
        if p.partition_epoch != req.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                sent: req.partition_epoch,
                current: p.partition_epoch,
            });
        }
        if req.isr.len() > MAX_REPLICAS {
            return Err(ControllerError::InvalidIsr("too many members"));
        }
        if p.partition_epoch.0 == i32::MAX {
            return Err(ControllerError::Exhausted("partition epochs"));
        }
        check_partition(&p.replicas, &req.isr, req.node).map_err(ControllerError::InvalidIsr)?;
        // A member may be added only if it is eligible (KIP-903's rule).
        if let Some(&n) = req
            .isr
            .iter()
            .find(|n| !p.isr.contains(n) && !self.view.is_eligible(**n))
        {
            return Err(ControllerError::IneligibleReplica(n));
        }
        let mut out = Vec::new();
        let isr = req.isr.clone();
        self.change(req.topic, req.partition, req.node, isr, &mut out);
        let state = self
            .view
            .partition(req.topic, req.partition)
            .expect("exists")
            .clone();
        Ok((state, out))
    }

    /// What must hold of the view after every decision: placement and ISR
    /// rules, no fenced leader, epochs below the next one. Cheap enough for
    /// tests and the simulator to call after each step.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        for b in self.view.brokers() {
            if b.reg.epoch >= self.view.next_broker_epoch() {
                return Err(format!(
                    "broker {} epoch {} not below the next",
                    b.reg.node, b.reg.epoch
                ));
            }
        }
        for (t, i, p) in self.view.partitions() {
            check_partition(&p.replicas, &p.isr, p.leader).map_err(|e| format!("{t}:{i}: {e}"))?;
            if p.has_leader() {
                let b = self
                    .view
                    .broker(p.leader)
                    .ok_or(format!("{t}:{i}: leader {} unregistered", p.leader))?;
                if b.fenced {
                    return Err(format!("{t}:{i}: fenced broker {} leads", p.leader));
                }
            }
        }
        Ok(())
    }
}

/// The records a new topic makes: itself, its settings, and `partitions`
/// partitions of `rf` replicas (all the same size).
fn topic_cost(name: &str, configs: &[(String, String)], partitions: u32, rf: usize) -> Cost {
    let mut cost = Cost::default();
    let id = TopicId(0);
    cost.add(
        &MetadataRecord::Topic {
            id,
            name: name.to_string(),
        },
        1,
    );
    for (key, value) in configs {
        let rec = MetadataRecord::Config {
            topic: id,
            key: key.clone(),
            value: Some(value.clone()),
        };
        cost.add(&rec, 1);
    }
    let replicas = vec![NodeId(0); rf];
    let p = PartitionRecord {
        topic: id,
        partition: 0,
        isr: replicas.clone(),
        replicas,
        leader: NodeId(0),
        leader_epoch: 0,
        partition_epoch: 0,
    };
    cost.add(&MetadataRecord::Partition(p), partitions as usize);
    cost.partitions = partitions as usize;
    cost
}

fn validate_registration(req: &Registration) -> Result<()> {
    if req.node.0 < 0 {
        return Err(ControllerError::InvalidRegistration("node id is negative"));
    }
    if req.address.is_empty() || req.address.len() > MAX_STRING {
        return Err(ControllerError::InvalidRegistration(
            "address is empty or too long",
        ));
    }
    if req
        .rack
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > MAX_STRING)
    {
        return Err(ControllerError::InvalidRegistration("rack is empty or too long"));
    }
    if req.shards == 0 {
        return Err(ControllerError::InvalidRegistration("shard count is 0"));
    }
    if req.log_dirs.len() > MAX_REPLICAS {
        return Err(ControllerError::InvalidRegistration("too many data directories"));
    }
    Ok(())
}
