//! The follower's side of replication: one fetcher task per (this shard,
//! leader node) pair carries every partition this shard follows on that
//! leader, so that a thousand partitions cost one request stream.
//!
//! Each round the task first truncates the partitions that started
//! following a new leader or epoch (it asks the leader for the end of its
//! latest epoch, OffsetForLeaderEpoch, and cuts its log where the
//! histories part: `borges_meta::replica::truncation_point`), then sends
//! one long-poll ReplicaFetch for the rest, appends what comes back at the
//! leader's offsets (`Log::append_replicated`), syncs it where the flush
//! policy makes acknowledgements durable, and only then fetches again: the
//! next fetch's offsets are what the leader counts as this replica's log
//! end. A new image wakes the task, which drops a fetch in flight and
//! starts over with the partitions the image gives it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use borges_meta::replica::{truncation_point, Role};
use borges_meta::NodeId;
use borges_net::protocol::{
    EpochQueryPartition, EpochQueryTopic, ErrorCode, FetchResponse, OffsetForLeaderEpochRequest,
    ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchTopic, Request, Response,
};
use borges_net::types::{BrokerEpoch, LeaderEpoch, Offset, TopicId};
use borges_storage::StorageError;
use bytes::BytesMut;

use super::{Partition, Shard};
use crate::config::FlushMode;
use crate::notify::{changed_any, Notify};
use crate::peer::{PeerConn, PeerError, CONNECT_TIMEOUT};

/// The first pause after a failed connection or call; it doubles up to
/// [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a fetcher waits before it asks again a leader that refused
/// (it has not seen the image that makes it leader, or it is fenced).
const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// How long a partition its leader refused stays out of the fetches.
const PARTITION_PAUSE_MS: u64 = 100;
/// ... and one that cannot catch up by fetching at all.
const PARTITION_STUCK_MS: u64 = 1000;

/// What a fetcher follows: each partition with its leader epoch.
type Following = Vec<((TopicId, u32), i32)>;

/// The fetcher tasks of a shard, by leader: the signal that makes each
/// look at its partitions again, and what it was last told it follows (a
/// fetcher is woken only when that changes).
#[derive(Default)]
pub struct Fetchers {
    tasks: RefCell<HashMap<NodeId, (Rc<Notify>, Following)>>,
}

impl Fetchers {
    /// Fetcher tasks running now.
    pub fn len(&self) -> usize {
        self.tasks.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    /// After an image: a fetcher for every leader this shard's partitions
    /// follow, and every running fetcher told to look again.
    pub fn start_fetchers(self: &Rc<Self>) {
        let mut following: BTreeMap<NodeId, Following> = BTreeMap::new();
        for p in self.local_partitions() {
            let r = p.replica.borrow();
            if let Role::Follower { leader } = r.role() {
                following
                    .entry(leader)
                    .or_default()
                    .push((p.key, r.leader_epoch()));
            }
        }
        for f in following.values_mut() {
            f.sort();
        }
        let mut wake = Vec::new();
        let mut start = Vec::new();
        {
            let mut tasks = self.fetchers.tasks.borrow_mut();
            for (&leader, (notify, known)) in tasks.iter_mut() {
                let now = following.remove(&leader).unwrap_or_default();
                if *known != now {
                    *known = now;
                    wake.push(notify.clone());
                }
            }
            for (leader, now) in following {
                let notify = Rc::new(Notify::default());
                tasks.insert(leader, (notify.clone(), now));
                start.push((leader, notify));
            }
        }
        // Spawned with the table released: a task may run at once (and
        // end at once, when the broker stops), taking itself out of it.
        for (leader, notify) in start {
            let shard = self.clone();
            glommio::spawn_local(async move { shard.fetch_from(leader, notify).await }).detach();
        }
        for w in wake {
            w.notify();
        }
    }

    /// The partitions of this shard that follow `leader` now.
    fn followed(&self, leader: NodeId) -> Vec<Rc<Partition>> {
        let mut ps: Vec<Rc<Partition>> = self
            .local_partitions()
            .into_iter()
            .filter(|p| p.replica.borrow().role() == Role::Follower { leader })
            .collect();
        ps.sort_by_key(|p| p.key);
        ps
    }

    /// Where `node` takes connections, as the image has it.
    fn broker_addr(&self, node: NodeId) -> Option<SocketAddr> {
        let topics = self.topics();
        let b = topics.cluster.image.broker(node)?;
        let address = &b.reg.address;
        address
            .parse()
            .ok()
            .or_else(|| address.to_socket_addrs().ok()?.next())
    }

    /// This broker's epoch, as the image has it.
    fn own_broker_epoch(&self) -> BrokerEpoch {
        self.topics()
            .cluster
            .image
            .broker(NodeId(self.config.node_id))
            .map_or(BrokerEpoch(-1), |b| b.reg.epoch)
    }

    /// One fetcher: until no partition of this shard follows `leader`.
    async fn fetch_from(self: Rc<Self>, leader: NodeId, wake: Rc<Notify>) {
        tracing::info!(shard = self.id, leader = leader.0, "replica fetcher started");
        let mut conn: Option<PeerConn> = None;
        let mut backoff = BACKOFF_MIN;
        let mut round = 0usize;
        loop {
            let mut parts = self.followed(leader);
            if parts.is_empty() || self.stopping.get() {
                break;
            }
            // Each round starts at another partition, so that a response
            // that fills up never starves the same ones.
            round = round.wrapping_add(1);
            let n = parts.len();
            parts.rotate_left(round % n);
            // Taken before anything is read, so that no image is missed.
            let version = wake.version();
            let pause = match self.fetch_round(leader, &parts, &mut conn, &wake, version).await {
                Ok(Round::Again) => {
                    backoff = BACKOFF_MIN;
                    None
                }
                Ok(Round::Pause) => Some(REFUSED_PAUSE),
                Err(e) => {
                    tracing::debug!(shard = self.id, leader = leader.0, error = %e, "replica fetch failed");
                    conn = None;
                    let b = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    Some(b)
                }
            };
            if let Some(d) = pause {
                if wake.version() == version {
                    let notifies = [&*wake];
                    futures_lite::future::or(changed_any(&notifies), glommio::timer::sleep(d)).await;
                }
            }
        }
        self.fetchers.tasks.borrow_mut().remove(&leader);
        tracing::info!(shard = self.id, leader = leader.0, "replica fetcher stopped");
        // A partition that started following this leader after the last
        // look finds no fetcher: start one for it.
        if !self.stopping.get() && !self.followed(leader).is_empty() {
            self.start_fetchers();
        }
    }

    /// Truncates what must be, then fetches once.
    async fn fetch_round(
        self: &Rc<Self>,
        leader: NodeId,
        parts: &[Rc<Partition>],
        conn: &mut Option<PeerConn>,
        wake: &Notify,
        version: u64,
    ) -> Result<Round, PeerError> {
        let Some(addr) = self.broker_addr(leader) else {
            return Ok(Round::Pause);
        };
        if conn.is_none() {
            *conn = Some(
                futures_lite::future::or(PeerConn::connect(addr, self.config.max_frame_bytes), async {
                    glommio::timer::sleep(CONNECT_TIMEOUT).await;
                    Err(PeerError::Timeout(CONNECT_TIMEOUT))
                })
                .await?,
            );
        }
        let c = conn.as_mut().expect("connected above");
        let truncating: Vec<&Rc<Partition>> = parts.iter().filter(|p| p.needs_truncation.get()).collect();
        let mut paused = false;
        if !truncating.is_empty() {
            paused |= self.truncate(c, &truncating).await?;
        }
        let now = crate::clock::monotonic_ms();
        let fetching: Vec<&Rc<Partition>> = parts
            .iter()
            .filter(|p| !p.needs_truncation.get() && p.fetch_paused_until.get() <= now)
            .filter(|p| match p.log.failure() {
                None => true,
                Some(why) => {
                    // Its log end may count records that never reached the
                    // disk: it must not tell the leader it holds them.
                    tracing::error!(topic = %p.topic, partition = p.key.1, %why, "the log failed: not fetching it");
                    p.fetch_paused_until.set(now + PARTITION_STUCK_MS);
                    false
                }
            })
            .collect();
        if fetching.is_empty() {
            return Ok(Round::Pause);
        }
        let max_wait = self.config.replica_fetch_wait_max;
        let mut sent: BTreeMap<(TopicId, u32), (Rc<Partition>, i32)> = BTreeMap::new();
        let mut topics: Vec<ReplicaFetchTopic> = Vec::new();
        for p in fetching {
            let epoch = p.replica.borrow().leader_epoch();
            let part = ReplicaFetchPartition {
                partition: p.key.1,
                leader_epoch: epoch,
                fetch_offset: p.log.log_end_offset().0 as i64,
                partition_max_bytes: self.config.replica_fetch_max_bytes,
            };
            match topics.last_mut() {
                Some(t) if t.topic_id == p.key.0 => t.partitions.push(part),
                _ => topics.push(ReplicaFetchTopic {
                    topic_id: p.key.0,
                    partitions: vec![part],
                }),
            }
            sent.insert(p.key, (p.clone(), epoch));
        }
        let req = Request::ReplicaFetch(ReplicaFetchRequest {
            replica: self.config.node_id,
            broker_epoch: self.own_broker_epoch(),
            max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
            min_bytes: 1,
            max_bytes: self.config.replica_fetch_response_max_bytes,
            topics,
        });
        // A new image ends the wait: the call in flight is dropped with its
        // connection, and the next round asks for what the image says.
        if wake.version() != version {
            return Ok(Round::Again);
        }
        let notifies = [wake];
        let answered = futures_lite::future::or(
            async { Some(c.call(&req, max_wait + Duration::from_secs(5)).await) },
            async {
                changed_any(&notifies).await;
                None
            },
        )
        .await;
        let resp = match answered {
            None => {
                *conn = None;
                return Ok(Round::Again);
            }
            Some(Err(PeerError::Refused { code, message })) => {
                tracing::debug!(leader = leader.0, %code, %message, "replica fetch refused");
                return Ok(Round::Pause);
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(Response::ReplicaFetch(r))) => r,
            Some(Ok(other)) => {
                return Err(PeerError::WrongApi {
                    got: other.api_key(),
                    want: req.api_key(),
                })
            }
        };
        self.take_fetched(leader, resp, &sent).await;
        Ok(if paused { Round::Pause } else { Round::Again })
    }

    /// Appends what a fetch brought, syncs it where acknowledgements are
    /// durable, and moves each follower's high watermark. A partition its
    /// leader refused sits out the next fetches for a while.
    async fn take_fetched(
        &self,
        leader: NodeId,
        resp: FetchResponse,
        sent: &BTreeMap<(TopicId, u32), (Rc<Partition>, i32)>,
    ) {
        let mut appended: Vec<(Rc<Partition>, i64)> = Vec::new();
        for t in resp.topics {
            for r in t.partitions {
                let Some((p, epoch)) = sent.get(&(t.topic_id, r.partition)) else {
                    tracing::warn!(
                        leader = leader.0,
                        topic = t.topic_id.0,
                        partition = r.partition,
                        "the leader answered for a partition not asked"
                    );
                    continue;
                };
                // The image may have moved on while the fetch was out.
                let current = {
                    let rep = p.replica.borrow();
                    rep.role() == (Role::Follower { leader }) && rep.leader_epoch() == *epoch
                };
                if !current || p.needs_truncation.get() {
                    continue;
                }
                match r.error {
                    ErrorCode::None => {}
                    ErrorCode::OffsetOutOfRange => {
                        let leo = p.log.log_end_offset().0 as i64;
                        if leo < r.log_start_offset {
                            tracing::error!(topic = %p.topic, partition = p.key.1, leo, leader_log_start = r.log_start_offset, "this replica's log ends before the leader's starts; it cannot catch up by fetching");
                            p.fetch_paused_until
                                .set(crate::clock::monotonic_ms() + PARTITION_STUCK_MS);
                        } else {
                            p.needs_truncation.set(true);
                        }
                        continue;
                    }
                    code => {
                        // Only this partition waits (its leader has not seen
                        // the image yet, or has moved on); the others go on.
                        tracing::debug!(topic = %p.topic, partition = p.key.1, %code, "replica fetch of a partition refused");
                        p.fetch_paused_until
                            .set(crate::clock::monotonic_ms() + PARTITION_PAUSE_MS);
                        continue;
                    }
                }
                if !r.records.is_empty() {
                    match p.log.append_replicated(BytesMut::from(&r.records[..])).await {
                        Ok(info) => {
                            p.appended.notify();
                            // (It may have finished after an image made this
                            // replica the leader: its epoch starts after.)
                            p.replica
                                .borrow_mut()
                                .appended_as_follower(info.last_offset.0 + 1);
                        }
                        Err(
                            e @ (StorageError::NonMonotonicOffset { .. }
                            | StorageError::StaleLeaderEpoch { .. }),
                        ) => {
                            tracing::warn!(topic = %p.topic, partition = p.key.1, error = %e, "the leader's records do not follow this log: truncating again");
                            p.needs_truncation.set(true);
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "appending the leader's records failed");
                            p.fetch_paused_until
                                .set(crate::clock::monotonic_ms() + PARTITION_STUCK_MS);
                            continue;
                        }
                    }
                }
                appended.push((p.clone(), r.high_watermark));
            }
        }
        for (p, hw) in appended {
            let leo = p.log.log_end_offset().0;
            if self.config.flush != FlushMode::Never && p.log.durable_offset().0 < leo {
                // The next fetch tells the leader this replica holds
                // everything below it: under a durable flush policy, on disk.
                if let Err(e) = p.log.sync_to(leo).await {
                    tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "syncing the leader's records failed");
                    p.fetch_paused_until
                        .set(crate::clock::monotonic_ms() + PARTITION_STUCK_MS);
                    continue;
                }
            }
            p.replica
                .borrow_mut()
                .follower_fetched(u64::try_from(hw).unwrap_or(0), leo);
        }
    }

    /// Asks the leader where each partition's latest epoch ends and cuts
    /// the log there. Returns whether some partition was refused.
    async fn truncate(&self, c: &mut PeerConn, parts: &[&Rc<Partition>]) -> Result<bool, PeerError> {
        let mut topics: Vec<EpochQueryTopic> = Vec::new();
        let mut asked: BTreeMap<(TopicId, u32), (Rc<Partition>, i32)> = BTreeMap::new();
        for p in parts {
            let current = p.replica.borrow().leader_epoch();
            let Some(latest) = p.log.latest_epoch() else {
                // No history: nothing of this log can differ from the leader's.
                p.needs_truncation.set(false);
                continue;
            };
            let q = EpochQueryPartition {
                partition: p.key.1,
                current_leader_epoch: current,
                leader_epoch: latest.0,
            };
            match topics.last_mut() {
                Some(t) if t.topic_id == p.key.0 => t.partitions.push(q),
                _ => topics.push(EpochQueryTopic {
                    topic_id: p.key.0,
                    partitions: vec![q],
                }),
            }
            asked.insert(p.key, ((*p).clone(), current));
        }
        if topics.is_empty() {
            return Ok(false);
        }
        let req = Request::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest {
            replica: self.config.node_id,
            topics,
        });
        let resp = match c.call(&req, crate::peer::CALL_TIMEOUT).await {
            Ok(Response::OffsetForLeaderEpoch(r)) => r,
            Ok(other) => {
                return Err(PeerError::WrongApi {
                    got: other.api_key(),
                    want: req.api_key(),
                })
            }
            Err(PeerError::Refused { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        let mut refused = false;
        for t in resp.topics {
            for r in t.partitions {
                let Some((p, epoch)) = asked.get(&(t.topic_id, r.partition)) else {
                    continue;
                };
                if p.replica.borrow().leader_epoch() != *epoch || !p.needs_truncation.get() {
                    continue;
                }
                if r.error != ErrorCode::None {
                    tracing::debug!(topic = %p.topic, partition = p.key.1, code = %r.error, "epoch query refused");
                    refused = true;
                    p.fetch_paused_until
                        .set(crate::clock::monotonic_ms() + PARTITION_PAUSE_MS);
                    continue;
                }
                let leo = p.log.log_end_offset().0;
                let log_start = p.log.log_start_offset().0;
                let own_end = (r.leader_epoch >= 0)
                    .then(|| p.log.end_offset_for_epoch(LeaderEpoch(r.leader_epoch)))
                    .flatten()
                    .map(|(e, o)| (e.0, o.0));
                let own_first = p
                    .log
                    .epoch_history()
                    .entries()
                    .first()
                    .map_or(log_start, |e| e.start_offset.0);
                let hw = p.replica.borrow().high_watermark();
                let target = truncation_point((r.leader_epoch, r.end_offset), own_end, own_first, leo, hw)
                    .max(log_start);
                if target < leo {
                    tracing::warn!(topic = %p.topic, partition = p.key.1, leo, target, leader_epoch = r.leader_epoch, leader_end = r.end_offset, "truncating a divergent tail");
                    match p.log.truncate_to(Offset(target)).await {
                        Ok(end) => p.replica.borrow_mut().truncated(end.0),
                        Err(e) => {
                            tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "truncation failed");
                            refused = true;
                            continue;
                        }
                    }
                }
                if p.replica.borrow().leader_epoch() == *epoch {
                    p.needs_truncation.set(false);
                }
            }
        }
        Ok(refused)
    }
}

/// How a fetch round ended.
enum Round {
    /// Go on at once.
    Again,
    /// Something was refused: pause a little (or until a new image).
    Pause,
}
