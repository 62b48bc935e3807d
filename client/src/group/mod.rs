//! Consumer groups: subscribing, rebalancing, heartbeats and committed offsets.
//!
//! A consumer that subscribes joins a group at the group's coordinator.
//! `Consumer::poll` does the membership work on the caller's task: it joins
//! (JoinGroup), computes the assignment when it is the leader (see
//! `assignor`), gets its own part (SyncGroup), starts each newly assigned
//! partition at the group's committed offset (or per `auto_offset_reset`),
//! and tells the application through its `RebalanceListener`. A background
//! task heartbeats; when the coordinator answers that the group is
//! rebalancing, the next `poll` (woken at once) rejoins, and heartbeats go
//! on until it does, so that the member has the rebalance timeout to get
//! there.
//!
//! With an eager assignor (range, round-robin) among the member's assignors
//! every partition is revoked before rejoining; when all of them are
//! cooperative (cooperative-sticky) only the partitions that move are
//! revoked, and the others keep being consumed through the rebalance.
//!
//! Offsets are at-least-once: with auto-commit, `poll` commits the
//! positions of what earlier polls returned (the application has processed
//! it by then), every `auto_commit_interval`, before a partition is revoked,
//! and on `close`. A member that crashes leaves its last records
//! uncommitted, and their new owner reads them again.

pub mod assignor;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use borges_net::protocol::{
    ErrorCode, FindCoordinatorRequest, HeartbeatRequest, JoinGroupProtocol, JoinGroupRequest,
    LeaveGroupRequest, LeavingMember, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic,
    OffsetFetchRequest, OffsetFetchTopic, Request, Response, SyncGroupAssignment, SyncGroupRequest,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::unexpected;
use crate::{Client, ClientError};
pub use assignor::{Assignment, Assignor, RebalanceProtocol, Subscription, TopicPartition};

/// The protocol type of consumer groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Settings of a consumer's group membership.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group to join.
    pub group_id: String,
    /// Static membership: a stable id per consumer instance. A member that
    /// restarts with the same id within the session timeout gets its
    /// partitions back without a rebalance (and does not leave on close).
    pub instance_id: Option<String>,
    /// The coordinator removes a member it has not heard from for this long.
    pub session_timeout: Duration,
    /// How long members have to rejoin once a rebalance starts.
    pub rebalance_timeout: Duration,
    /// How often the background task heartbeats.
    pub heartbeat_interval: Duration,
    /// Assignors in order of preference; the group uses one all support.
    /// The member rebalances cooperatively only if all of them are
    /// cooperative: with an eager one among them (the default
    /// [cooperative-sticky, range]) it revokes everything before rejoining,
    /// since the group may switch to that one.
    pub assignors: Vec<Assignor>,
    /// Commit positions automatically (see the module docs).
    pub enable_auto_commit: bool,
    /// How often auto-commit commits.
    pub auto_commit_interval: Duration,
    /// Longest the application may go between `poll` calls (Kafka's
    /// `max.poll.interval.ms`). Past it the heartbeat task takes the member
    /// out of the group (LeaveGroup; a static member just stops
    /// heartbeating, and its session expires), so that an application that
    /// is stuck does not hold its partitions while its heartbeats keep it
    /// alive; the next `poll` finds them lost and rejoins.
    pub max_poll_interval: Duration,
}

impl GroupConfig {
    /// Kafka-like defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            instance_id: None,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
            assignors: vec![Assignor::CooperativeSticky, Assignor::Range],
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            max_poll_interval: Duration::from_secs(300),
        }
    }
}

/// Told when the consumer's assignment changes. Called from `poll` (or
/// `close`), on the application's task.
pub trait RebalanceListener: Send {
    /// These partitions are being taken away; with auto-commit their
    /// positions are already committed.
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// These partitions were added to the assignment.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// The membership was lost (session expired, fenced): these partitions
    /// may already belong to others, and their positions were not committed.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions)
    }
}

/// A listener that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopListener;

impl RebalanceListener for NoopListener {}

/// What the heartbeat task and the consumer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<MemberState>,
    /// The coordinator asked for a rejoin.
    pub(crate) rejoin: AtomicBool,
    /// The membership is gone: the partitions are lost.
    pub(crate) lost: AtomicBool,
    /// Another member took over this instance id: fatal.
    pub(crate) fenced: AtomicBool,
    pub(crate) wake: tokio::sync::Notify,
    /// The application is inside `poll` now.
    pub(crate) in_poll: AtomicBool,
    /// When it last entered or left `poll`.
    pub(crate) last_poll: Mutex<Option<Instant>>,
}

/// Marks a `poll` in progress for `max_poll_interval` (dropped when the
/// `poll` returns or is cancelled).
pub(crate) struct PollGuard(Arc<Shared>);

impl PollGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> PollGuard {
        shared.in_poll.store(true, Ordering::SeqCst);
        *shared.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        PollGuard(shared)
    }
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        *self.0.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.0.in_poll.store(false, Ordering::SeqCst);
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct MemberState {
    pub(crate) member_id: String,
    pub(crate) generation: i32,
    /// Heartbeats are sent from a completed sync until `poll` starts the
    /// next JoinGroup: through a rebalance the coordinator has announced,
    /// too, so that a member has the whole rebalance timeout, not its
    /// session, to call `poll` and rejoin (KIP-62). While its JoinGroup and
    /// SyncGroup wait, the coordinator does not expire it.
    pub(crate) active: bool,
    pub(crate) coordinator: Option<i32>,
}

impl Shared {
    fn get(&self) -> MemberState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut MemberState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the application has been out of `poll` longer than `limit`.
    fn poll_overdue(&self, limit: Duration) -> bool {
        if self.in_poll.load(Ordering::SeqCst) {
            return false;
        }
        self.last_poll
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() > limit)
    }

    fn request_rejoin(&self) {
        self.rejoin.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Backoff between attempts that failed with a retriable error.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The group side of a subscribed consumer.
pub(crate) struct Membership {
    pub(crate) config: GroupConfig,
    pub(crate) topics: Vec<String>,
    pub(crate) listener: Box<dyn RebalanceListener>,
    pub(crate) shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
    /// The partitions this member owns now.
    pub(crate) owned: BTreeSet<TopicPartition>,
    /// Owned partitions whose committed offsets could not be read yet:
    /// nothing is fetched from them until they are.
    pub(crate) unpositioned: BTreeSet<TopicPartition>,
    pub(crate) protocol: Option<Assignor>,
    pub(crate) joined: bool,
    pub(crate) last_commit: Instant,
    request_timeout: Duration,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("group", &self.config.group_id)
            .field("state", &self.shared.get())
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

fn group_error(code: ErrorCode) -> ClientError {
    ClientError::broker(code, None)
}

/// Finds the coordinator of `group`: its node id.
pub(crate) async fn find_coordinator(client: &Client, group: &str) -> Result<i32, ClientError> {
    let req = Request::FindCoordinator(FindCoordinatorRequest {
        group_id: group.to_string(),
    });
    match client.send_any(&req).await? {
        Response::FindCoordinator(r) if r.error == ErrorCode::None => {
            client.learn_broker(r.node_id, &r.host, r.port);
            Ok(r.node_id)
        }
        Response::FindCoordinator(r) => Err(group_error(r.error)),
        other => Err(unexpected(&other)),
    }
}

/// Sends a request to the coordinator of `group`, finding it first.
pub(crate) async fn send_to_coordinator(
    client: &Client,
    group: &str,
    cached: &mut Option<i32>,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let node = match *cached {
        Some(n) => n,
        None => {
            let n = find_coordinator(client, group).await?;
            *cached = Some(n);
            n
        }
    };
    let r = client.send_to(node, req, timeout).await;
    if matches!(&r, Err(e) if e.is_retriable()) {
        *cached = None;
    }
    r
}

fn is_coordinator_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable | ErrorCode::CoordinatorLoadInProgress
    )
}

impl Membership {
    pub(crate) fn new(
        client: &Client,
        config: GroupConfig,
        topics: Vec<String>,
        listener: Box<dyn RebalanceListener>,
        request_timeout: Duration,
    ) -> Membership {
        let shared = Arc::new(Shared::default());
        shared.rejoin.store(true, Ordering::SeqCst);
        let heartbeat = tokio::spawn(heartbeat_loop(client.clone(), config.clone(), shared.clone()));
        Membership {
            config,
            topics,
            listener,
            shared,
            heartbeat,
            owned: BTreeSet::new(),
            unpositioned: BTreeSet::new(),
            protocol: None,
            joined: false,
            last_commit: Instant::now(),
            request_timeout,
        }
    }

    fn subscription(&self) -> Subscription {
        let st = self.shared.get();
        Subscription {
            topics: self.topics.clone(),
            owned: self.owned.iter().cloned().collect(),
            generation: if self.owned.is_empty() { -1 } else { st.generation },
        }
    }

    /// How this member rebalances: cooperatively only if every assignor it
    /// supports is cooperative (Kafka's rule), since the group may pick any
    /// of them; with the default [cooperative-sticky, range] it is eager.
    pub(crate) fn rebalance_protocol(&self) -> RebalanceProtocol {
        if self
            .config
            .assignors
            .iter()
            .all(|a| a.protocol() == RebalanceProtocol::Cooperative)
        {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        }
    }

    pub(crate) fn is_static(&self) -> bool {
        self.config.instance_id.is_some()
    }

    pub(crate) fn needs_rejoin(&self) -> bool {
        !self.joined || self.shared.rejoin.load(Ordering::SeqCst) || self.shared.lost.load(Ordering::SeqCst)
    }

    /// Commits `offsets` (next offsets to read) as this member.
    pub(crate) async fn commit(
        &mut self,
        client: &Client,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let st = self.shared.get();
        let mut coordinator = st.coordinator;
        let req = commit_request(
            &self.config.group_id,
            st.generation,
            &st.member_id,
            self.config.instance_id.clone(),
            offsets,
        );
        let resp = send_to_coordinator(
            client,
            &self.config.group_id,
            &mut coordinator,
            &req,
            self.request_timeout,
        )
        .await;
        self.shared.update(|s| s.coordinator = coordinator);
        let first = commit_result(resp?)?;
        match first {
            None => {
                self.last_commit = Instant::now();
                Ok(())
            }
            Some(code) => {
                match code {
                    ErrorCode::RebalanceInProgress => self.shared.request_rejoin(),
                    // This member's generation is over: its partitions may
                    // be someone else's now, and so are its positions.
                    ErrorCode::IllegalGeneration => self.lose(),
                    ErrorCode::UnknownMemberId => {
                        self.shared.update(|s| s.member_id.clear());
                        self.lose();
                    }
                    ErrorCode::FencedInstanceId => {
                        self.shared.fenced.store(true, Ordering::SeqCst);
                        self.lose();
                    }
                    // Another broker coordinates the group now (its offsets
                    // partition has a new leader): find it again.
                    ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable => {
                        self.shared.update(|s| s.coordinator = None)
                    }
                    _ => {}
                }
                Err(group_error(code))
            }
        }
    }

    /// The membership is gone (the coordinator said so): the partitions are
    /// lost, and the next `poll` drops them and rejoins.
    fn lose(&self) {
        self.shared.lost.store(true, Ordering::SeqCst);
        self.shared.request_rejoin();
    }

    /// Committed offsets of `parts` (-1 for none).
    pub(crate) async fn committed(
        &mut self,
        client: &Client,
        parts: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, ClientError> {
        let mut coordinator = self.shared.get().coordinator;
        let r = fetch_committed(
            client,
            &self.config.group_id,
            &mut coordinator,
            parts,
            self.request_timeout,
        )
        .await;
        self.shared.update(|s| s.coordinator = coordinator);
        r
    }

    /// Joins (or rejoins) the group and returns the new assignment. Retries
    /// retriable failures; fails on fatal ones (fenced, bad configuration).
    /// A failure leaves the member still needing to rejoin, so that the
    /// next `poll` tries again (or reports the same fatal error) instead of
    /// going on outside the group.
    ///
    /// `Ok(None)`: the coordinator answered that this member's membership is
    /// gone (unknown member, stale generation) while it still owns
    /// partitions; the caller drops them (they are lost, not revoked) and
    /// calls again.
    pub(crate) async fn join_and_sync(
        &mut self,
        client: &Client,
    ) -> Result<Option<Vec<TopicPartition>>, ClientError> {
        let r = self.join_and_sync_once(client).await;
        if !matches!(r, Ok(Some(_))) {
            self.shared.rejoin.store(true, Ordering::SeqCst);
        }
        r
    }

    async fn join_and_sync_once(
        &mut self,
        client: &Client,
    ) -> Result<Option<Vec<TopicPartition>>, ClientError> {
        let deadline = Instant::now() + self.config.rebalance_timeout.max(self.request_timeout) * 2;
        loop {
            if self.shared.fenced.load(Ordering::SeqCst) {
                return Err(group_error(ErrorCode::FencedInstanceId));
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout);
            }
            match self.try_join_and_sync(client).await {
                Ok(parts) => return Ok(Some(parts)),
                Err(Retry::Now) => {}
                Err(Retry::Later(e)) => {
                    tracing::debug!(group = %self.config.group_id, error = %e, "rejoining after an error");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(Retry::Fatal(e)) => return Err(e),
            }
            if self.shared.lost.load(Ordering::SeqCst) && !self.owned.is_empty() {
                return Ok(None);
            }
        }
    }

    async fn try_join_and_sync(&mut self, client: &Client) -> Result<Vec<TopicPartition>, Retry> {
        self.shared.update(|s| s.active = false);
        self.shared.rejoin.store(false, Ordering::SeqCst);
        let st = self.shared.get();
        let mut coordinator = st.coordinator;
        let sub = self.subscription().encode();
        let join = Request::JoinGroup(JoinGroupRequest {
            group_id: self.config.group_id.clone(),
            session_timeout_ms: ms(self.config.session_timeout),
            rebalance_timeout_ms: ms(self.config.rebalance_timeout),
            member_id: st.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
            protocols: self
                .config
                .assignors
                .iter()
                .map(|a| JoinGroupProtocol {
                    name: a.name().into(),
                    metadata: sub.clone(),
                })
                .collect(),
        });
        let timeout = self.config.rebalance_timeout + self.request_timeout;
        let resp = send_to_coordinator(client, &self.config.group_id, &mut coordinator, &join, timeout).await;
        self.shared.update(|s| s.coordinator = coordinator);
        let jr = match resp {
            Ok(Response::JoinGroup(r)) => r,
            Ok(other) => return Err(Retry::Fatal(unexpected(&other))),
            Err(e) => return Err(classify(e)),
        };
        self.check_rebalance_answer(jr.error)?;
        self.shared.update(|s| {
            s.member_id = jr.member_id.clone();
            s.generation = jr.generation_id;
        });
        let protocol = jr.protocol_name.as_deref().and_then(Assignor::from_name);
        let Some(protocol) = protocol else {
            return Err(Retry::Fatal(ClientError::Config(format!(
                "the group chose protocol {:?}, which this client does not implement",
                jr.protocol_name
            ))));
        };
        self.protocol = Some(protocol);
        let mut assignments = Vec::new();
        if jr.leader == jr.member_id && !jr.members.is_empty() {
            let members: Vec<(String, Subscription)> = jr
                .members
                .iter()
                .map(|m| {
                    let s = Subscription::decode(m.metadata.clone()).unwrap_or_else(|e| {
                        tracing::warn!(member = %m.member_id, error = %e, "unreadable subscription; assigning nothing");
                        Subscription::default()
                    });
                    (m.member_id.clone(), s)
                })
                .collect();
            let topics: BTreeSet<String> = members
                .iter()
                .flat_map(|(_, s)| s.topics.iter().cloned())
                .collect();
            let mut counts = HashMap::new();
            for t in topics {
                match client.refresh_topic(&t).await {
                    Ok(meta) => {
                        counts.insert(t, meta.partition_count());
                    }
                    Err(ClientError::UnknownTopic(_)) => {}
                    Err(e) => return Err(classify(e)),
                }
            }
            for (member_id, parts) in protocol.assign(&members, &counts) {
                assignments.push(SyncGroupAssignment {
                    member_id,
                    assignment: Assignment { partitions: parts }.encode(),
                });
            }
        }
        let sync = Request::SyncGroup(SyncGroupRequest {
            group_id: self.config.group_id.clone(),
            generation_id: jr.generation_id,
            member_id: jr.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            assignments,
        });
        let resp = send_to_coordinator(client, &self.config.group_id, &mut coordinator, &sync, timeout).await;
        self.shared.update(|s| s.coordinator = coordinator);
        let sr = match resp {
            Ok(Response::SyncGroup(r)) => r,
            Ok(other) => return Err(Retry::Fatal(unexpected(&other))),
            Err(e) => return Err(classify(e)),
        };
        self.check_rebalance_answer(sr.error)?;
        let assignment = Assignment::decode(sr.assignment)
            .map_err(|e| Retry::Fatal(ClientError::Config(e.to_string())))?;
        self.joined = true;
        self.shared.update(|s| s.active = true);
        Ok(assignment.partitions)
    }

    /// What a JoinGroup or SyncGroup error code means for the next attempt.
    fn check_rebalance_answer(&self, code: ErrorCode) -> Result<(), Retry> {
        match code {
            ErrorCode::None => Ok(()),
            // The membership is gone: what this member owns is lost.
            ErrorCode::UnknownMemberId => {
                self.shared.update(|s| s.member_id.clear());
                self.shared.lost.store(true, Ordering::SeqCst);
                Err(Retry::Now)
            }
            ErrorCode::IllegalGeneration => {
                self.shared.lost.store(true, Ordering::SeqCst);
                Err(Retry::Now)
            }
            ErrorCode::RebalanceInProgress => Err(Retry::Now),
            ErrorCode::FencedInstanceId => {
                // Another process took this instance id over: this one must
                // stop consuming, for good.
                self.shared.fenced.store(true, Ordering::SeqCst);
                self.shared.lost.store(true, Ordering::SeqCst);
                Err(Retry::Fatal(group_error(code)))
            }
            code if is_coordinator_error(code) => {
                self.shared.update(|s| s.coordinator = None);
                Err(Retry::Later(group_error(code)))
            }
            code => Err(Retry::Fatal(group_error(code))),
        }
    }

    /// Leaves the group (dynamic members only: a static member keeps its
    /// place until its session times out, so that a restart is seamless).
    pub(crate) async fn leave(&mut self, client: &Client) {
        self.heartbeat.abort();
        let st = self.shared.get();
        if self.is_static() || st.member_id.is_empty() {
            return;
        }
        let mut coordinator = st.coordinator;
        let req = Request::LeaveGroup(LeaveGroupRequest {
            group_id: self.config.group_id.clone(),
            members: vec![LeavingMember {
                member_id: st.member_id,
                group_instance_id: None,
            }],
        });
        if let Err(e) = send_to_coordinator(
            client,
            &self.config.group_id,
            &mut coordinator,
            &req,
            self.request_timeout,
        )
        .await
        {
            tracing::debug!(group = %self.config.group_id, error = %e, "leaving the group failed");
        }
    }
}

enum Retry {
    Now,
    Later(ClientError),
    Fatal(ClientError),
}

fn classify(e: ClientError) -> Retry {
    if e.is_retriable() {
        Retry::Later(e)
    } else {
        Retry::Fatal(e)
    }
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

async fn heartbeat_loop(client: Client, config: GroupConfig, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(config.heartbeat_interval).await;
        let st = shared.get();
        if !st.active {
            continue;
        }
        let mut coordinator = st.coordinator;
        if shared.poll_overdue(config.max_poll_interval) {
            tracing::warn!(
                group = %config.group_id,
                max_poll_interval = ?config.max_poll_interval,
                "poll was not called within max_poll_interval: leaving the group"
            );
            shared.update(|s| {
                s.active = false;
                s.member_id.clear();
            });
            shared.lost.store(true, Ordering::SeqCst);
            shared.request_rejoin();
            if config.instance_id.is_none() {
                let req = Request::LeaveGroup(LeaveGroupRequest {
                    group_id: config.group_id.clone(),
                    members: vec![LeavingMember {
                        member_id: st.member_id.clone(),
                        group_instance_id: None,
                    }],
                });
                let r = send_to_coordinator(
                    &client,
                    &config.group_id,
                    &mut coordinator,
                    &req,
                    config.session_timeout,
                )
                .await;
                if let Err(e) = r {
                    tracing::debug!(group = %config.group_id, error = %e, "leaving the group failed");
                }
            }
            continue;
        }
        let req = Request::Heartbeat(HeartbeatRequest {
            group_id: config.group_id.clone(),
            generation_id: st.generation,
            member_id: st.member_id.clone(),
            group_instance_id: config.instance_id.clone(),
        });
        let resp = send_to_coordinator(
            &client,
            &config.group_id,
            &mut coordinator,
            &req,
            config.session_timeout,
        )
        .await;
        shared.update(|s| s.coordinator = coordinator);
        let code = match resp {
            Ok(Response::Heartbeat(r)) => r.error,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(group = %config.group_id, error = %e, "heartbeat failed");
                continue;
            }
        };
        // An answer about a membership `poll` has already moved past (it
        // rejoined while this heartbeat was in flight) is stale.
        let now = shared.get();
        if !now.active || now.generation != st.generation || now.member_id != st.member_id {
            continue;
        }
        match code {
            ErrorCode::None => {}
            ErrorCode::RebalanceInProgress => shared.request_rejoin(),
            ErrorCode::IllegalGeneration => {
                shared.lost.store(true, Ordering::SeqCst);
                shared.request_rejoin();
            }
            ErrorCode::UnknownMemberId => {
                shared.update(|s| s.member_id.clear());
                shared.lost.store(true, Ordering::SeqCst);
                shared.request_rejoin();
            }
            ErrorCode::FencedInstanceId => {
                shared.fenced.store(true, Ordering::SeqCst);
                shared.lost.store(true, Ordering::SeqCst);
                shared.request_rejoin();
            }
            c if is_coordinator_error(c) => shared.update(|s| s.coordinator = None),
            other => tracing::warn!(group = %config.group_id, code = ?other, "heartbeat refused"),
        }
    }
}

pub(crate) fn commit_request(
    group: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<String>,
    offsets: &[(TopicPartition, i64)],
) -> Request {
    let mut topics: Vec<OffsetCommitTopic> = Vec::new();
    for ((t, p), o) in offsets {
        let part = OffsetCommitPartition {
            partition: *p,
            offset: *o,
            leader_epoch: -1,
            metadata: None,
        };
        match topics.iter_mut().find(|x| &x.name == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(OffsetCommitTopic {
                name: t.clone(),
                partitions: vec![part],
            }),
        }
    }
    Request::OffsetCommit(OffsetCommitRequest {
        group_id: group.to_string(),
        generation_id: generation,
        member_id: member_id.to_string(),
        group_instance_id: instance_id,
        topics,
    })
}

/// The first per-partition error of a commit response, if any.
pub(crate) fn commit_result(resp: Response) -> Result<Option<ErrorCode>, ClientError> {
    match resp {
        Response::OffsetCommit(r) => Ok(r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error)
            .find(|e| *e != ErrorCode::None)),
        other => Err(unexpected(&other)),
    }
}

/// Committed offsets of `parts` for `group` (-1 for none); all the group's
/// commits when `parts` is empty.
pub(crate) async fn fetch_committed(
    client: &Client,
    group: &str,
    coordinator: &mut Option<i32>,
    parts: &[TopicPartition],
    timeout: Duration,
) -> Result<HashMap<TopicPartition, i64>, ClientError> {
    let topics = if parts.is_empty() {
        None
    } else {
        let mut topics: Vec<OffsetFetchTopic> = Vec::new();
        for (t, p) in parts {
            match topics.iter_mut().find(|x| &x.name == t) {
                Some(x) => x.partitions.push(*p),
                None => topics.push(OffsetFetchTopic {
                    name: t.clone(),
                    partitions: vec![*p],
                }),
            }
        }
        Some(topics)
    };
    let req = Request::OffsetFetch(OffsetFetchRequest {
        group_id: group.to_string(),
        topics,
    });
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = match send_to_coordinator(client, group, coordinator, &req, timeout).await {
            Ok(Response::OffsetFetch(r)) => r,
            Ok(other) => return Err(unexpected(&other)),
            Err(e) if e.is_retriable() && attempts < 50 => {
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if r.error != ErrorCode::None {
            if is_coordinator_error(r.error) && attempts < 50 {
                *coordinator = None;
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
            return Err(group_error(r.error));
        }
        let mut out = HashMap::new();
        for t in r.topics {
            for p in t.partitions {
                if p.error != ErrorCode::None {
                    return Err(group_error(p.error));
                }
                out.insert((t.name.clone(), p.partition), p.offset);
            }
        }
        return Ok(out);
    }
}

/// A group as `Admin::list_groups` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// "consumer" for consumer groups.
    pub protocol_type: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
}

/// A member as `Admin::describe_group` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its static instance id, if any.
    pub instance_id: Option<String>,
    /// The client id it connected with.
    pub client_id: String,
    /// The address it connected from.
    pub client_host: String,
    /// The topics it subscribes to (when its subscription is readable).
    pub topics: Vec<String>,
    /// Its partitions.
    pub assignment: Vec<TopicPartition>,
}

/// A group's state, members and assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
    /// The assignor in use.
    pub protocol: String,
    /// The current generation.
    pub generation: i32,
    /// Members, by member id.
    pub members: Vec<MemberDescription>,
}

impl crate::Admin {
    /// Every group the cluster coordinates, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let req = Request::ListGroups(borges_net::protocol::ListGroupsRequest {});
        match self.client().send_any(&req).await? {
            Response::ListGroups(r) if r.error == ErrorCode::None => Ok(r
                .groups
                .into_iter()
                .map(|g| GroupListing {
                    group_id: g.group_id,
                    protocol_type: g.protocol_type,
                    state: g.state,
                })
                .collect()),
            Response::ListGroups(r) => Err(group_error(r.error)),
            other => Err(unexpected(&other)),
        }
    }

    /// A group's members and their assignments. A group that does not
    /// exist describes as state "Dead" with no members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let req = Request::DescribeGroups(borges_net::protocol::DescribeGroupsRequest {
            groups: vec![group.to_string()],
        });
        let d = match self.client().send_any(&req).await? {
            Response::DescribeGroups(r) => r
                .groups
                .into_iter()
                .find(|g| g.group_id == group)
                .ok_or_else(|| ClientError::Config(format!("no answer for group {group}")))?,
            other => return Err(unexpected(&other)),
        };
        if d.error != ErrorCode::None {
            return Err(group_error(d.error));
        }
        Ok(GroupDescription {
            group_id: d.group_id,
            state: d.state,
            protocol: d.protocol,
            generation: d.generation_id,
            members: d
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    topics: Subscription::decode(m.metadata)
                        .map(|s| s.topics)
                        .unwrap_or_default(),
                    assignment: Assignment::decode(m.assignment)
                        .map(|a| a.partitions)
                        .unwrap_or_default(),
                    member_id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                })
                .collect(),
        })
    }

    /// The group's committed offsets, by partition.
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, i64)>, ClientError> {
        let mut coordinator = None;
        let timeout = self.client().config().request_timeout;
        let mut v: Vec<(TopicPartition, i64)> =
            fetch_committed(self.client(), group, &mut coordinator, &[], timeout)
                .await?
                .into_iter()
                .collect();
        v.sort();
        Ok(v)
    }

    /// Sets a group's committed offsets. The group must have no members
    /// (`Broker { code: UnknownMemberId }` otherwise): stop its consumers first.
    pub async fn set_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), ClientError> {
        let mut coordinator = None;
        let req = commit_request(group, -1, "", None, offsets);
        let timeout = self.client().config().request_timeout;
        let resp = send_to_coordinator(self.client(), group, &mut coordinator, &req, timeout).await?;
        match commit_result(resp)? {
            None => Ok(()),
            Some(code) => Err(group_error(code)),
        }
    }

    /// Deletes a group with no members, and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let req = Request::DeleteGroups(borges_net::protocol::DeleteGroupsRequest {
            groups: vec![group.to_string()],
        });
        match self.client().send_any(&req).await? {
            Response::DeleteGroups(r) => match r.results.into_iter().find(|g| g.group_id == group) {
                Some(g) if g.error == ErrorCode::None => Ok(()),
                Some(g) => Err(group_error(g.error)),
                None => Err(ClientError::Config(format!("no answer for group {group}"))),
            },
            other => Err(unexpected(&other)),
        }
    }
}
