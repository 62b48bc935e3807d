//! The consumer: assigned partitions, positions, prefetching fetches.
//!
//! Each assigned partition has a position (the offset of the next record
//! `poll` returns) and a fetch position (the next offset to ask the broker
//! for); records between the two sit in the partition's buffer. `poll` hands
//! out buffered records, then at once starts the next Fetch for every broker
//! that has none in flight, so the broker is already reading while the
//! application processes what it got: one fetch per broker is always in
//! flight. A fetch result is applied only if its partition's fetch position
//! is still the one it asked for (a `seek` in between discards it), so
//! records come out in offset order, each once.
//!
//! A fetch returns whole batches, so the first may start before the offset
//! asked for: records below it are skipped. A batch cut short at the end of
//! the response (the broker's byte limit) is dropped and fetched again.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use borges_net::batch::{for_each_record, BatchError, BatchIter};
use borges_net::protocol::{
    ErrorCode, FetchPartition, FetchRequest, FetchResponse, FetchTopic, Request, Response,
};
use borges_net::types::TopicId;
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use crate::admin::{duration_ms, list_offsets, OffsetSpec};
use crate::client::unexpected;
use crate::error::{code_invalidates_metadata, code_is_retriable};
use crate::group::{
    GroupConfig, Membership, PollGuard, RebalanceListener, RebalanceProtocol, TopicPartition,
};
use crate::{Client, ClientError};

/// What the consumer does when it has no position for a partition, or its
/// position is outside the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    /// Start from the earliest offset the log keeps.
    Earliest,
    /// Start from the end: only records produced from now on.
    Latest,
    /// Return `ClientError::OffsetOutOfRange` from `poll`; the application seeks.
    None,
}

/// Where `seek` moves a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This offset.
    Offset(i64),
    /// The log start offset.
    Earliest,
    /// The log end offset.
    Latest,
    /// The first record whose timestamp is at or after this time (ms); the
    /// log end if there is none.
    Timestamp(i64),
}

/// Consumer settings. `ConsumerConfig::default()` gives Kafka-like defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Longest the broker waits for `fetch_min_bytes` before answering.
    pub fetch_max_wait: Duration,
    /// The broker answers as soon as it has this many bytes.
    pub fetch_min_bytes: u32,
    /// Soft cap on the records in one fetch response.
    pub fetch_max_bytes: u32,
    /// Soft cap on one partition's records in one fetch response.
    pub partition_max_bytes: u32,
    /// What to do without a valid position.
    pub auto_offset_reset: AutoOffsetReset,
    /// Most records one `poll` returns; the rest stay buffered.
    pub max_poll_records: usize,
    /// How long to wait for a response beyond `fetch_max_wait`.
    pub request_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            partition_max_bytes: 8 << 20,
            auto_offset_reset: AutoOffsetReset::Earliest,
            max_poll_records: 10_000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic (shared by every record of the fetch: no copy per record).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: i64,
    /// Milliseconds since the Unix epoch (CreateTime, or the broker's
    /// append time for LogAppendTime topics).
    pub timestamp: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

type PartKey = (String, u32);

/// Wait before fetching a partition again after a retriable error.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct PartState {
    /// Offset of the next record `poll` returns; `None` until resolved.
    position: Option<i64>,
    /// Next offset to fetch: `position` plus the buffered records.
    fetch_position: i64,
    buffered: VecDeque<ConsumerRecord>,
    in_flight: bool,
    /// Bumped by every seek, so that a fetch started before it is ignored.
    epoch: u64,
    /// No fetch before this (after a retriable error).
    retry_at: Option<Instant>,
    /// From the last fetch response.
    high_watermark: i64,
    /// The topic id the position belongs to, from the first fetch: a topic
    /// deleted and re-created under the same name has a new id and a new
    /// log, where the old position means nothing.
    topic_id: Option<TopicId>,
}

impl Default for PartState {
    fn default() -> Self {
        PartState {
            position: None,
            fetch_position: 0,
            buffered: VecDeque::new(),
            in_flight: false,
            epoch: 0,
            retry_at: None,
            high_watermark: -1,
            topic_id: None,
        }
    }
}

/// One partition of a fetch in flight.
struct Asked {
    key: PartKey,
    topic_id: TopicId,
    fetch_offset: i64,
    epoch: u64,
}

struct FetchOutcome {
    node: i32,
    asked: Vec<Asked>,
    result: Result<FetchResponse, ClientError>,
}

/// Reads records from assigned partitions.
///
/// Not shared: methods take `&mut self`. Dropping it cancels its fetches.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    parts: BTreeMap<PartKey, PartState>,
    fetches: JoinSet<FetchOutcome>,
    fetching_nodes: HashSet<i32>,
    /// Rotates the partition order of fetch requests, so that the broker's
    /// byte budget does not always favour the same partitions.
    rotation: usize,
    /// Set by `subscribe`: the assignment comes from a consumer group.
    /// Shared with the group work of a `poll` in progress, so that a poll
    /// future dropped mid-await (`select!`, a timeout) leaves the
    /// membership where it was instead of taking it along.
    group: Option<Arc<tokio::sync::Mutex<Membership>>>,
    /// An error met by a `poll` that had records to return: those come
    /// first, the error with the next `poll`.
    deferred_error: Option<ClientError>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.parts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer with no assignment.
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            parts: BTreeMap::new(),
            fetches: JoinSet::new(),
            fetching_nodes: HashSet::new(),
            rotation: 0,
            group: None,
            deferred_error: None,
        }
    }

    /// Joins consumer group `group.group_id`, subscribed to `topics`: the
    /// group's members share the topics' partitions, and `poll` follows the
    /// group's rebalances (see the `group` module). Replaces any manual
    /// assignment; do not call `assign` afterwards.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), borges_client::ClientError> {
    /// use borges_client::{Client, ClientConfig, Consumer, ConsumerConfig, GroupConfig, NoopListener};
    /// let client = Client::connect("127.0.0.1:9092", ClientConfig::default()).await?;
    /// let mut consumer = Consumer::new(client, ConsumerConfig::default());
    /// consumer.subscribe(GroupConfig::new("billing"), &["payments"], Box::new(NoopListener))?;
    /// loop {
    ///     for record in consumer.poll(std::time::Duration::from_secs(1)).await? {
    ///         println!("{}/{} @{}", record.topic, record.partition, record.offset);
    ///     }
    ///     // With auto-commit (the default) the next poll commits what this one returned.
    /// }
    /// # }
    /// ```
    pub fn subscribe(
        &mut self,
        group: GroupConfig,
        topics: &[&str],
        listener: Box<dyn RebalanceListener>,
    ) -> Result<(), ClientError> {
        if group.group_id.is_empty() {
            return Err(ClientError::Config("the group id is empty".into()));
        }
        if topics.is_empty() {
            return Err(ClientError::Config("subscribe to at least one topic".into()));
        }
        if group.assignors.is_empty() {
            return Err(ClientError::Config("at least one assignor is needed".into()));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClientError::Config(
                "subscribe must be called inside a tokio runtime (it starts the heartbeat task)".into(),
            ));
        }
        if group.heartbeat_interval >= group.session_timeout {
            return Err(ClientError::Config(
                "heartbeat_interval must be shorter than session_timeout".into(),
            ));
        }
        self.parts.clear();
        self.group = Some(Arc::new(tokio::sync::Mutex::new(Membership::new(
            &self.client,
            group,
            topics.iter().map(|t| t.to_string()).collect(),
            listener,
            self.config.request_timeout,
        ))));
        Ok(())
    }

    /// The group's generation and this member's id, once joined.
    pub fn group_member(&self) -> Option<(i32, String)> {
        // Never contended: the group work of a poll holds it only while
        // that poll runs, and this takes `&self`.
        let g = self.group.as_ref()?.try_lock().ok()?;
        let st = g.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        g.joined.then(|| (st.generation, st.member_id.clone()))
    }

    /// Commits the positions of every assigned partition (the offsets of the
    /// next records `poll` would return) for the subscribed group.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets = self.positions();
        self.commit_offsets(&offsets).await
    }

    /// Commits the given next-offsets to read for the subscribed group.
    pub async fn commit_offsets(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<(), ClientError> {
        let Some(g) = self.group.clone() else {
            return Err(ClientError::Config(
                "commit needs a group: call subscribe first".into(),
            ));
        };
        let mut g = g.lock().await;
        g.commit(&self.client, offsets).await
    }

    /// The group's committed offset of a partition; `None` if it has none.
    pub async fn committed(&mut self, topic: &str, partition: u32) -> Result<Option<i64>, ClientError> {
        let Some(g) = self.group.clone() else {
            return Err(ClientError::Config(
                "committed needs a group: call subscribe first".into(),
            ));
        };
        let mut g = g.lock().await;
        let tp = (topic.to_string(), partition);
        let got = g.committed(&self.client, std::slice::from_ref(&tp)).await?;
        Ok(got.get(&tp).copied().filter(|o| *o >= 0))
    }

    /// Leaves the group cleanly: commits (with auto-commit), tells the
    /// listener the partitions are revoked, and sends LeaveGroup so the
    /// others take over at once (a static member just stops, see
    /// `GroupConfig::instance_id`).
    pub async fn close(mut self) -> Result<(), ClientError> {
        let Some(g) = self.group.take() else {
            return Ok(());
        };
        let mut g = g.lock().await;
        let mut result = Ok(());
        if g.joined && !g.owned.is_empty() {
            if g.config.enable_auto_commit && !g.needs_rejoin() {
                let offsets = self.positions();
                result = g.commit(&self.client, &offsets).await;
            }
            let owned: Vec<TopicPartition> = g.owned.iter().cloned().collect();
            if g.shared.lost.load(std::sync::atomic::Ordering::SeqCst) {
                // Expelled meanwhile (the commit said so): lost, not revoked.
                g.listener.on_partitions_lost(&owned);
            } else {
                g.listener.on_partitions_revoked(&owned);
            }
        }
        g.leave(&self.client).await;
        result
    }

    /// `(partition, position)` of every assigned partition with a position.
    fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.parts
            .iter()
            .filter_map(|(k, s)| s.position.map(|p| (k.clone(), p)))
            .collect()
    }

    /// Group work before a poll: lost partitions, auto-commit, rebalances.
    async fn maintain_group(&mut self) -> Result<(), ClientError> {
        let Some(g) = self.group.clone() else {
            return Ok(());
        };
        let mut g = g.lock().await;
        self.maintain_with(&mut g).await
    }

    /// If the membership was lost, drops every owned partition and its
    /// position (they may belong to others now) and tells the listener.
    fn drop_if_lost(&mut self, g: &mut Membership) {
        if g.shared.lost.swap(false, std::sync::atomic::Ordering::SeqCst) && !g.owned.is_empty() {
            let lost: Vec<TopicPartition> = std::mem::take(&mut g.owned).into_iter().collect();
            g.unpositioned.clear();
            tracing::info!(group = %g.config.group_id, partitions = lost.len(), "membership lost");
            g.listener.on_partitions_lost(&lost);
            self.unassign(&lost);
        }
    }

    async fn maintain_with(&mut self, g: &mut Membership) -> Result<(), ClientError> {
        self.drop_if_lost(g);
        if g.config.enable_auto_commit
            && g.joined
            && !g.needs_rejoin()
            && g.last_commit.elapsed() >= g.config.auto_commit_interval
        {
            let offsets = self.positions();
            if let Err(e) = g.commit(&self.client, &offsets).await {
                tracing::debug!(group = %g.config.group_id, error = %e, "auto-commit failed");
            }
            g.last_commit = Instant::now();
        }
        while g.needs_rejoin() {
            // A commit or a rejoin may have learnt the membership is gone.
            self.drop_if_lost(g);
            // Decided by this member's own assignors, not by the protocol
            // the group chose last time: a member that supports only an
            // eager one may be joining, and then the group switches to it,
            // with every partition reassigned in one generation.
            let eager = g.rebalance_protocol() == RebalanceProtocol::Eager;
            if eager && !g.owned.is_empty() {
                let all: Vec<TopicPartition> = g.owned.iter().cloned().collect();
                self.revoke(g, &all).await;
            }
            let new: BTreeSet<TopicPartition> = match g.join_and_sync(&self.client).await {
                Ok(Some(parts)) => parts.into_iter().collect(),
                // Lost while rejoining: dropped at the top of the loop.
                Ok(None) => continue,
                Err(e) => {
                    // Still owed a rejoin (the next poll tries again); a
                    // fenced member's partitions are lost now.
                    self.drop_if_lost(g);
                    return Err(e);
                }
            };
            let revoked: Vec<TopicPartition> = g.owned.difference(&new).cloned().collect();
            if !revoked.is_empty() {
                self.revoke(g, &revoked).await;
                // Cooperative: the partitions revoked go to their new owners
                // in a second rebalance, which this member starts at once.
                g.shared.rejoin.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let added: Vec<TopicPartition> = new.difference(&g.owned).cloned().collect();
            if !added.is_empty() {
                // Owned from now on, whether or not their committed offsets
                // can be read yet (they are fetched from once they are).
                g.owned.extend(added.iter().cloned());
                g.unpositioned.extend(added.iter().cloned());
                g.listener.on_partitions_assigned(&added);
            }
        }
        self.position_assigned(g).await
    }

    /// Starts the partitions assigned without a position yet at the group's
    /// committed offsets (or per `auto_offset_reset`). If the offsets cannot
    /// be read now, the partitions stay assigned and the next `poll` tries
    /// again; only a fatal error is returned.
    async fn position_assigned(&mut self, g: &mut Membership) -> Result<(), ClientError> {
        if g.unpositioned.is_empty() {
            return Ok(());
        }
        let parts: Vec<TopicPartition> = g.unpositioned.iter().cloned().collect();
        let committed = match g.committed(&self.client, &parts).await {
            Ok(c) => c,
            Err(e) if e.is_retriable() => {
                tracing::info!(group = %g.config.group_id, error = %e, "cannot read committed offsets yet");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for tp in &parts {
            let st = self.parts.entry(tp.clone()).or_default();
            match committed.get(tp) {
                Some(&o) if o >= 0 => set_position(st, o),
                _ => {} // auto_offset_reset decides
            }
        }
        g.unpositioned.clear();
        Ok(())
    }

    /// Takes partitions away: commits their positions first (auto-commit)
    /// and tells the listener.
    async fn revoke(&mut self, g: &mut Membership, parts: &[TopicPartition]) {
        if g.config.enable_auto_commit {
            let offsets: Vec<(TopicPartition, i64)> = parts
                .iter()
                .filter_map(|k| self.parts.get(k).and_then(|s| s.position).map(|p| (k.clone(), p)))
                .collect();
            if let Err(e) = g.commit(&self.client, &offsets).await {
                tracing::info!(group = %g.config.group_id, error = %e, "commit before revocation failed");
            }
        }
        if g.shared.lost.load(std::sync::atomic::Ordering::SeqCst) {
            // The commit learnt that the membership is gone: the partitions
            // are someone else's already, lost rather than revoked (a
            // listener that saves its state on revocation must not).
            self.drop_if_lost(g);
            return;
        }
        g.listener.on_partitions_revoked(parts);
        self.unassign(parts);
        for p in parts {
            g.owned.remove(p);
            g.unpositioned.remove(p);
        }
    }

    fn unassign(&mut self, parts: &[TopicPartition]) {
        for p in parts {
            self.parts.remove(p);
        }
    }

    /// Replaces the assignment. Partitions kept keep their positions; new
    /// ones start per `auto_offset_reset` unless sought. Topics are checked
    /// on the next `poll`.
    pub fn assign<I, S>(&mut self, partitions: I)
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let wanted: BTreeMap<PartKey, ()> =
            partitions.into_iter().map(|(t, p)| ((t.into(), p), ())).collect();
        self.parts.retain(|k, _| wanted.contains_key(k));
        for k in wanted.into_keys() {
            self.parts.entry(k).or_default();
        }
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.parts.keys().cloned().collect()
    }

    /// Moves a partition's position. Records buffered for it, and any fetch
    /// in flight for it, are discarded.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<(), ClientError> {
        let offset = match to {
            SeekTo::Offset(o) => o,
            SeekTo::Earliest => self.lookup(topic, partition, OffsetSpec::Earliest).await?,
            SeekTo::Latest => self.lookup(topic, partition, OffsetSpec::Latest).await?,
            SeekTo::Timestamp(ms) => match self.lookup(topic, partition, OffsetSpec::Timestamp(ms)).await? {
                -1 => self.lookup(topic, partition, OffsetSpec::Latest).await?,
                o => o,
            },
        };
        let st = self.state_mut(topic, partition)?;
        set_position(st, offset);
        Ok(())
    }

    /// The offset of the next record `poll` will return for a partition,
    /// resolving it per `auto_offset_reset` if it has none yet.
    pub async fn position(&mut self, topic: &str, partition: u32) -> Result<i64, ClientError> {
        if let Some(p) = self.state_mut(topic, partition)?.position {
            return Ok(p);
        }
        self.resolve(&(topic.to_string(), partition)).await
    }

    /// The high watermark the last fetch of a partition reported (-1 before any).
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<i64> {
        self.parts.get(&(topic.to_string(), partition)).map(|s| {
            if s.position.is_some() {
                s.high_watermark
            } else {
                -1
            }
        })
    }

    /// Records from the assigned partitions, in offset order per partition,
    /// at most `max_poll_records`; an empty vector if none arrived within
    /// `timeout`. The next fetches are in flight when it returns.
    ///
    /// Records are taken from the buffers (and positions moved past them)
    /// only right before returning, with no wait in between: an error, or a
    /// `poll` future dropped mid-wait (`select!`, a timeout), never costs
    /// records. An error met while records are ready comes with the next
    /// `poll`, after them.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = Instant::now() + timeout;
        let wake = self
            .group
            .as_ref()
            .and_then(|g| g.try_lock().ok().map(|g| g.shared.clone()));
        let _polling = wake.clone().map(PollGuard::new);
        if let Some(e) = self.deferred_error.take() {
            return Err(e);
        }
        loop {
            self.maintain_group().await?;
            self.resolve_all().await?;
            let started = self.start_fetches().await;
            let out = drain(&mut self.parts, self.config.max_poll_records);
            if !out.is_empty() {
                // The drained partitions' next fetches, from cached
                // metadata: nothing here waits, so the records cannot be
                // lost between being taken and being returned.
                let launched = self.launch_fetches();
                if let Some(e) = started.err().or(launched.err()) {
                    self.deferred_error = Some(e);
                }
                return Ok(out);
            }
            started?;
            if self.fetches.is_empty() {
                // Nothing could be fetched (no assignment, or every partition
                // backing off): wait a little, not in a busy loop.
                let wake_at = self
                    .parts
                    .values()
                    .filter_map(|s| s.retry_at)
                    .min()
                    .unwrap_or(deadline)
                    .min(deadline);
                match &wake {
                    Some(w) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(wake_at) => {}
                            _ = w.wake.notified() => {}
                        }
                    }
                    None => tokio::time::sleep_until(wake_at).await,
                }
                if Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                continue;
            }
            let next = async {
                match &wake {
                    Some(w) => tokio::select! {
                        r = self.fetches.join_next() => Some(r),
                        _ = w.wake.notified() => None,
                    },
                    None => Some(self.fetches.join_next().await),
                }
            };
            match timeout_at(deadline, next).await {
                Err(_) => return Ok(Vec::new()),
                // The group needs this member to rejoin: do it now.
                Ok(None) => continue,
                Ok(Some(None)) => {}
                Ok(Some(Some(Err(e)))) => {
                    // The fetch task panicked or was cancelled; its node is
                    // unknown here, so every node may fetch again.
                    tracing::warn!(error = %e, "fetch task failed");
                    self.fetching_nodes.clear();
                    for st in self.parts.values_mut() {
                        st.in_flight = false;
                    }
                }
                Ok(Some(Some(Ok(outcome)))) => self.apply(outcome)?,
            }
        }
    }

    fn state_mut(&mut self, topic: &str, partition: u32) -> Result<&mut PartState, ClientError> {
        self.parts
            .get_mut(&(topic.to_string(), partition))
            .ok_or_else(|| ClientError::NotAssigned {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Looks an offset up for an assigned partition. Borrows only the
    /// client across the wait, so that a `Consumer` future stays `Send`
    /// (the rebalance listener need not be `Sync`).
    fn lookup(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> impl std::future::Future<Output = Result<i64, ClientError>> + Send + 'static {
        let assigned = self.parts.contains_key(&(topic.to_string(), partition));
        let client = self.client.clone();
        let timeout = self.config.request_timeout;
        let topic = topic.to_string();
        async move {
            if !assigned {
                return Err(ClientError::NotAssigned { topic, partition });
            }
            Ok(list_offsets(&client, &topic, partition, spec, timeout)
                .await?
                .offset)
        }
    }

    /// Gives a position to every partition without one.
    async fn resolve_all(&mut self) -> Result<(), ClientError> {
        let unresolved: Vec<PartKey> = self
            .parts
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for k in unresolved {
            self.resolve(&k).await?;
        }
        Ok(())
    }

    async fn resolve(&mut self, k: &PartKey) -> Result<i64, ClientError> {
        let spec = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => OffsetSpec::Earliest,
            AutoOffsetReset::Latest => OffsetSpec::Latest,
            AutoOffsetReset::None => {
                return Err(ClientError::OffsetOutOfRange {
                    topic: k.0.clone(),
                    partition: k.1,
                    offset: -1,
                })
            }
        };
        let offset = self.lookup(&k.0, k.1, spec).await?;
        let st = self.state_mut(&k.0, k.1)?;
        set_position(st, offset);
        Ok(offset)
    }

    /// Partitions that may be fetched now: a position, nothing buffered,
    /// nothing in flight, no backoff.
    fn fetch_candidates(&self) -> Vec<PartKey> {
        let now = Instant::now();
        self.parts
            .iter()
            .filter(|(_, s)| {
                s.position.is_some()
                    && !s.in_flight
                    && s.buffered.is_empty()
                    && s.retry_at.is_none_or(|t| t <= now)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Loads the metadata of every fetchable partition's topic (a
    /// retriable failure backs the partition off), then starts the
    /// fetches. Every partition is tried; the first error is returned.
    async fn start_fetches(&mut self) -> Result<(), ClientError> {
        let mut first_error = None;
        let mut topics: Vec<String> = self.fetch_candidates().into_iter().map(|k| k.0).collect();
        topics.dedup();
        for topic in topics {
            if let Err(e) = self.client.topic_metadata(&topic).await {
                // Backed off either way: a topic that is gone for good is
                // reported at most once per backoff, and the other
                // partitions keep being fetched meanwhile.
                let keys: Vec<PartKey> = self.parts.keys().filter(|k| k.0 == topic).cloned().collect();
                for k in keys {
                    self.backoff(&k);
                }
                if !e.is_retriable() {
                    first_error.get_or_insert(e);
                }
            }
        }
        let launched = self.launch_fetches();
        match first_error {
            Some(e) => Err(e),
            None => launched,
        }
    }

    /// Starts a fetch on every leader with none in flight, for its
    /// fetchable partitions whose topic metadata is cached (the others wait
    /// for `start_fetches`). Does not wait.
    fn launch_fetches(&mut self) -> Result<(), ClientError> {
        let mut first_error = None;
        let mut by_node: BTreeMap<i32, Vec<Asked>> = BTreeMap::new();
        for k in self.fetch_candidates() {
            let Some(meta) = self.client.cached_topic(&k.0) else {
                continue;
            };
            let leader = match meta.leader(k.1) {
                Ok(l) => l,
                Err(e) if e.is_retriable() => {
                    self.client.invalidate_topic(&k.0);
                    self.backoff(&k);
                    continue;
                }
                Err(e) => {
                    self.backoff(&k);
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if self.fetching_nodes.contains(&leader) {
                continue;
            }
            let st = self.parts.get_mut(&k).expect("a candidate is assigned");
            match st.topic_id {
                Some(id) if id != meta.id => {
                    // Re-created: the old position is reset by
                    // `auto_offset_reset` and the application is told.
                    tracing::info!(topic = %k.0, partition = k.1, position = ?st.position,
                        "topic re-created under a new id; resetting the position");
                    first_error.get_or_insert(ClientError::TopicRecreated {
                        topic: k.0.clone(),
                        partition: k.1,
                        position: st.position.unwrap_or(-1),
                    });
                    st.topic_id = Some(meta.id);
                    st.position = None;
                    st.buffered.clear();
                    st.epoch += 1;
                    st.retry_at = None;
                    continue;
                }
                Some(_) => {}
                None => st.topic_id = Some(meta.id),
            }
            st.retry_at = None;
            by_node.entry(leader).or_default().push(Asked {
                topic_id: meta.id,
                fetch_offset: st.fetch_position,
                epoch: st.epoch,
                key: k,
            });
        }
        for (node, mut asked) in by_node {
            if asked.is_empty() {
                continue;
            }
            let n = asked.len();
            asked.rotate_left(self.rotation % n);
            self.rotation = self.rotation.wrapping_add(1);
            let mut topics: Vec<FetchTopic> = Vec::new();
            for a in &asked {
                self.parts.get_mut(&a.key).expect("asked is assigned").in_flight = true;
                let part = FetchPartition {
                    partition: a.key.1,
                    fetch_offset: a.fetch_offset,
                    partition_max_bytes: self.config.partition_max_bytes,
                };
                match topics.last_mut() {
                    Some(t) if t.topic_id == a.topic_id => t.partitions.push(part),
                    _ => topics.push(FetchTopic {
                        topic_id: a.topic_id,
                        partitions: vec![part],
                    }),
                }
            }
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: duration_ms(self.config.fetch_max_wait),
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                topics,
            });
            let client = self.client.clone();
            let timeout = self.config.request_timeout + self.config.fetch_max_wait;
            self.fetching_nodes.insert(node);
            self.fetches.spawn(async move {
                let result = match client.send_to(node, &request, timeout).await {
                    Ok(Response::Fetch(r)) => Ok(r),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e),
                };
                FetchOutcome { node, asked, result }
            });
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn backoff(&mut self, k: &PartKey) {
        if let Some(st) = self.parts.get_mut(k) {
            st.retry_at = Some(Instant::now() + RETRY_BACKOFF);
        }
    }

    /// Applies a fetch result to the partitions it asked for.
    fn apply(&mut self, outcome: FetchOutcome) -> Result<(), ClientError> {
        self.fetching_nodes.remove(&outcome.node);
        for a in &outcome.asked {
            if let Some(st) = self.parts.get_mut(&a.key) {
                st.in_flight = false;
            }
        }
        let resp = match outcome.result {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                tracing::debug!(node = outcome.node, error = %e, "fetch failed; retrying");
                for a in &outcome.asked {
                    if let Some(code) = e.code() {
                        self.client.on_error_code(&a.key.0, code);
                    }
                    self.backoff(&a.key);
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut first_error = None;
        for a in outcome.asked {
            let Some(p) = resp
                .topics
                .iter()
                .filter(|t| t.topic_id == a.topic_id)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition == a.key.1)
            else {
                continue;
            };
            let Some(st) = self.parts.get_mut(&a.key) else {
                continue;
            };
            if st.epoch != a.epoch || st.fetch_position != a.fetch_offset {
                continue; // sought meanwhile
            }
            match p.error {
                ErrorCode::None => {
                    // -1 when the broker skipped the partition (its byte budget ran out).
                    if p.high_watermark >= 0 {
                        st.high_watermark = p.high_watermark;
                    }
                    let next =
                        decode_fetched_into(&a.key.0, a.key.1, &p.records, a.fetch_offset, &mut st.buffered)
                            .map_err(ClientError::CorruptBatch)?;
                    st.fetch_position = next;
                }
                ErrorCode::OffsetOutOfRange => match self.config.auto_offset_reset {
                    AutoOffsetReset::None => {
                        first_error.get_or_insert(ClientError::OffsetOutOfRange {
                            topic: a.key.0.clone(),
                            partition: a.key.1,
                            offset: a.fetch_offset,
                        });
                    }
                    _ => {
                        tracing::info!(topic = %a.key.0, partition = a.key.1, offset = a.fetch_offset,
                            "offset out of range; resetting");
                        st.position = None;
                        st.buffered.clear();
                        st.epoch += 1;
                    }
                },
                code if code_is_retriable(code) || code_invalidates_metadata(code) => {
                    self.client.on_error_code(&a.key.0, code);
                    st.retry_at = Some(Instant::now() + RETRY_BACKOFF);
                }
                code => {
                    first_error.get_or_insert(ClientError::broker(code, None));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Takes up to `max` buffered records, partition by partition, moving each
/// partition's position past what it hands out.
fn drain(parts: &mut BTreeMap<PartKey, PartState>, max: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::with_capacity(max.min(parts.values().map(|st| st.buffered.len()).sum()));
    for st in parts.values_mut() {
        let n = st.buffered.len().min(max - out.len());
        if n > 0 {
            out.extend(st.buffered.drain(..n));
            st.position = out.last().map(|r| r.offset + 1);
        }
        if st.buffered.is_empty() {
            // Offsets with no record (compaction, control batches) move the
            // position up to what was fetched.
            if let Some(p) = st.position.as_mut() {
                *p = (*p).max(st.fetch_position);
            }
        }
    }
    out
}

fn set_position(st: &mut PartState, offset: i64) {
    st.position = Some(offset);
    st.fetch_position = offset;
    st.buffered.clear();
    st.epoch += 1;
    st.retry_at = None;
}

/// Decodes the batches of one partition's fetch data: the records at or
/// after `fetch_offset`, and the offset to fetch next. Records below
/// `fetch_offset` (the front of the first batch) are skipped; an incomplete
/// trailing batch is dropped (it is fetched again from `next`).
#[cfg(test)]
pub(crate) fn decode_fetched(
    topic: &str,
    partition: u32,
    data: &Bytes,
    fetch_offset: i64,
) -> Result<(Vec<ConsumerRecord>, i64), BatchError> {
    let mut out = VecDeque::new();
    let next = decode_fetched_into(topic, partition, data, fetch_offset, &mut out)?;
    Ok((out.into(), next))
}

/// `decode_fetched` appending to `out` directly (no intermediate vectors:
/// this is the consumer's per-record hot path). On an error, `out` is left
/// as it was.
pub(crate) fn decode_fetched_into(
    topic: &str,
    partition: u32,
    data: &Bytes,
    fetch_offset: i64,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<i64, BatchError> {
    let before = out.len();
    let mut next = fetch_offset;
    let topic: Arc<str> = Arc::from(topic);
    for item in BatchIter::new(data) {
        let (header, range) = match item {
            Ok(x) => x,
            Err(e) => {
                out.truncate(before);
                return Err(e);
            }
        };
        if header.last_offset() < next {
            continue;
        }
        if !header.is_control() {
            let from = next;
            let walked = for_each_record(&data.slice(range), |r| {
                if r.offset >= from {
                    out.push_back(ConsumerRecord {
                        topic: topic.clone(),
                        partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: if r.headers.is_empty() {
                            Vec::new()
                        } else {
                            r.headers.into_iter().map(|h| (h.key, h.value)).collect()
                        },
                    });
                }
            });
            if let Err(e) = walked {
                out.truncate(before);
                return Err(e);
            }
        }
        next = header.last_offset() + 1;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use borges_net::batch::{Compression, RecordBatchBuilder};

    /// Three batches of 5 records at offsets 0, 5 and 10.
    fn three_batches(compression: Compression) -> Vec<u8> {
        let mut all = Vec::new();
        for base in [0i64, 5, 10] {
            let mut b = RecordBatchBuilder::new(compression).base_offset(base);
            for i in 0..5 {
                let v = format!("v{}", base + i);
                b.push(
                    1000 + base + i,
                    Some(b"k"),
                    Some(v.as_bytes()),
                    &[("h", Some(b"x"))],
                );
            }
            all.extend_from_slice(&b.build().unwrap());
        }
        all
    }

    #[test]
    fn skips_records_below_the_fetch_offset() {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let data = Bytes::from(three_batches(c));
            let (recs, next) = decode_fetched("t", 0, &data, 7).unwrap();
            let offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (7..15).collect::<Vec<_>>());
            assert_eq!(next, 15);
            assert_eq!(recs[0].value.as_deref(), Some(&b"v7"[..]));
            assert_eq!(recs[0].timestamp, 1007);
            assert_eq!(
                recs[0].headers,
                vec![("h".to_string(), Some(Bytes::from_static(b"x")))]
            );
        }
    }

    #[test]
    fn drops_an_incomplete_trailing_batch() {
        let all = three_batches(Compression::None);
        for cut in 1..40 {
            let data = Bytes::copy_from_slice(&all[..all.len() - cut]);
            let (recs, next) = decode_fetched("t", 3, &data, 0).unwrap();
            assert_eq!(recs.len(), 10, "cut {cut}");
            assert_eq!(next, 10);
            assert!(recs.iter().all(|r| r.partition == 3 && &*r.topic == "t"));
        }
        let (recs, next) = decode_fetched("t", 0, &Bytes::new(), 42).unwrap();
        assert!(recs.is_empty());
        assert_eq!(next, 42);
    }

    #[test]
    fn whole_batches_below_the_offset_are_skipped() {
        let data = Bytes::from(three_batches(Compression::None));
        let (recs, next) = decode_fetched("t", 0, &data, 14).unwrap();
        assert_eq!(recs.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![14]);
        assert_eq!(next, 15);
        let (recs, next) = decode_fetched("t", 0, &data, 20).unwrap();
        assert!(recs.is_empty());
        assert_eq!(next, 20, "the position never moves back");
    }

    #[test]
    fn corrupt_batches_are_errors() {
        let mut all = three_batches(Compression::None);
        let last = all.len() - 1;
        all[last] ^= 0xff;
        let data = Bytes::from(all);
        assert!(matches!(
            decode_fetched("t", 0, &data, 0),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn drain_moves_positions_and_respects_the_cap() {
        let state = |records: Vec<i64>| {
            let mut st = PartState::default();
            set_position(&mut st, records[0]);
            for o in &records {
                st.buffered.push_back(ConsumerRecord {
                    topic: "t".into(),
                    partition: 0,
                    offset: *o,
                    timestamp: 0,
                    key: None,
                    value: None,
                    headers: vec![],
                });
            }
            st.fetch_position = records.last().unwrap() + 1;
            st
        };
        let mut parts = BTreeMap::new();
        parts.insert(("t".to_string(), 0), state(vec![5, 6, 7]));
        parts.insert(("t".to_string(), 1), state(vec![0, 1]));
        let out = drain(&mut parts, 4);
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5, 6, 7, 0]);
        assert_eq!(parts[&("t".to_string(), 0)].position, Some(8));
        assert_eq!(parts[&("t".to_string(), 1)].position, Some(1));
        let out = drain(&mut parts, 100);
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![1]);
        assert_eq!(parts[&("t".to_string(), 1)].position, Some(2));
        // Nothing buffered: the position catches up with the fetch position
        // (a fetch that returned only skipped offsets).
        parts.get_mut(&("t".to_string(), 1)).unwrap().fetch_position = 9;
        assert!(drain(&mut parts, 100).is_empty());
        assert_eq!(parts[&("t".to_string(), 1)].position, Some(9));
    }
}
