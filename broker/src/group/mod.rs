//! The group coordinator: consumer-group membership and committed offsets.
//!
//! A group belongs to one partition of the internal compacted topic
//! `__consumer_offsets` (by a hash of its id), and the shard that owns that
//! partition coordinates it: every group request is passed to that shard,
//! which keeps the group's state in memory and writes every change that
//! must survive a restart (committed offsets, the membership of each
//! completed rebalance, deletions) to the partition before answering. When a
//! shard opens such a partition it replays it to rebuild its groups.
//!
//! Membership follows Kafka's protocol. A rebalance starts when a member
//! joins, leaves, changes its subscription or misses its session timeout;
//! every member must rejoin (JoinGroup) within the rebalance timeout, or is
//! removed. The coordinator then bumps the generation, picks a protocol all
//! members support, answers every join, and gives the leader the members'
//! subscriptions; the leader computes the assignment (the assignors are in
//! the client) and sends it with its SyncGroup; every member's SyncGroup is
//! answered with its part. A request that carries a stale generation or an
//! unknown member id is refused (fencing). A member with an instance id
//! (static membership) that comes back takes over its previous identity and
//! assignment without a rebalance.
//!
//! Layout: `host.rs` is what the coordinator needs of its shard (a trait
//! the shard implements, so that this module does not depend on the
//! shard's); `records.rs` is the format of the records kept in
//! `__consumer_offsets`; `state.rs` is a group's state machine.

mod host;
pub mod records;
mod state;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use borges_net::batch::{decode_records_bytes, BatchIter, Compression, RecordBatchBuilder};
use borges_net::protocol::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, DescribedGroup,
    ErrorCode, GroupResult, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, LeftMember, ListedGroup, OffsetCommitRequest,
    OffsetCommitResponse, OffsetCommitTopicResponse, OffsetFetchPartition, OffsetFetchRequest,
    OffsetFetchResponse, OffsetFetchTopicResponse, PartitionError, Request, Response, SyncGroupRequest,
    SyncGroupResponse,
};
use borges_net::types::Offset;
use borges_storage::{Chunk, Log};
use bytes::Bytes;
use glommio::channels::local_channel;

use crate::clock::Clock;
use crate::topics::{PartKey, Topics};
pub use host::Host;
use records::{GroupValue, OffsetValue, RecordKey};
pub use state::GroupState;
use state::{Group, Member};

/// The internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Longest metadata string an offset commit may carry.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Largest subscription (per protocol) or assignment one member may hand
/// the coordinator, which keeps it in memory for as long as the member lives.
pub const MEMBER_DATA_MAX_BYTES: usize = 1 << 20;

/// The partition of `__consumer_offsets` that holds `group`.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(group.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// Settings of the coordinator: part of the broker's configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupSettings {
    /// Shortest session timeout a group member may ask for.
    #[arg(
        id = "group_min_session_timeout_ms",
        long = "group-min-session-timeout-ms",
        env = "BORGES_GROUP_MIN_SESSION_TIMEOUT_MS",
        value_parser = crate::config::millis,
        default_value = "1000"
    )]
    pub min_session_timeout: Duration,
    /// Longest session timeout a group member may ask for.
    #[arg(
        id = "group_max_session_timeout_ms",
        long = "group-max-session-timeout-ms",
        env = "BORGES_GROUP_MAX_SESSION_TIMEOUT_MS",
        value_parser = crate::config::millis,
        default_value = "300000"
    )]
    pub max_session_timeout: Duration,
    /// How long a group with no members waits for more to join before its
    /// first rebalance completes, so that a group starting up does not
    /// rebalance once per member.
    #[arg(
        id = "group_initial_rebalance_delay_ms",
        long = "group-initial-rebalance-delay-ms",
        env = "BORGES_GROUP_INITIAL_REBALANCE_DELAY_MS",
        value_parser = crate::config::millis,
        default_value = "300"
    )]
    pub initial_rebalance_delay: Duration,
    /// Most members of one group.
    #[arg(
        id = "group_max_size",
        long = "group-max-size",
        env = "BORGES_GROUP_MAX_SIZE",
        default_value_t = 1000
    )]
    pub max_group_size: usize,
}

type GroupRef = Rc<RefCell<Group>>;

/// How long after a failed load of an offsets partition it is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(1);
/// How long a load in flight keeps its partition from being loaded again.
const LOAD_IN_FLIGHT: Duration = Duration::from_secs(3600);

/// The groups one shard coordinates; lives on that shard's executor.
pub struct Coordinator {
    groups: RefCell<HashMap<String, GroupRef>>,
    /// Offsets partitions whose load failed (their groups are not served:
    /// COORDINATOR_LOAD_IN_PROGRESS), with when to try again.
    unloaded: RefCell<HashMap<u32, Instant>>,
    next_member: Cell<u64>,
    /// Every deadline and timestamp of the coordinator is read from here.
    clock: Rc<dyn Clock>,
}

impl Coordinator {
    pub fn new(clock: Rc<dyn Clock>) -> Coordinator {
        Coordinator {
            groups: RefCell::new(HashMap::new()),
            unloaded: RefCell::new(HashMap::new()),
            next_member: Cell::new(0),
            clock,
        }
    }

    /// Monotonic time, for sessions and rebalance deadlines.
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn get(&self, id: &str) -> Option<GroupRef> {
        self.groups.borrow().get(id).cloned()
    }

    fn get_or_create(&self, id: &str) -> GroupRef {
        self.groups
            .borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| Rc::new(RefCell::new(Group::new(id.to_string(), self.now()))))
            .clone()
    }

    fn new_member_id(&self, shard: usize, client_id: &str) -> String {
        let n = self.next_member.get();
        self.next_member.set(n + 1);
        let nanos = self
            .clock
            .wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let tag = xxhash_rust::xxh3::xxh3_64(
            &[nanos.to_be_bytes(), n.to_be_bytes(), (shard as u64).to_be_bytes()].concat(),
        );
        let prefix = if client_id.is_empty() { "member" } else { client_id };
        format!("{prefix}-{tag:016x}")
    }

    /// Groups of this shard: id, protocol type, state.
    pub fn list(&self) -> Vec<ListedGroup> {
        self.groups
            .borrow()
            .values()
            .map(|g| {
                let g = g.borrow();
                ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    state: g.state.name().to_string(),
                }
            })
            .collect()
    }

    /// Whether the groups of offsets partition `partition` are loaded (a
    /// partition not opened here yet counts as loaded: `Host::is_open`
    /// says whether it is open).
    pub fn is_loaded(&self, partition: u32) -> bool {
        !self.unloaded.borrow().contains_key(&partition)
    }

    /// Offsets partitions whose failed load is due to be tried again; each
    /// is not due again for `LOAD_RETRY` (the load in progress settles it).
    pub fn loads_due(&self) -> Vec<u32> {
        let now = self.now();
        let mut unloaded = self.unloaded.borrow_mut();
        let due: Vec<u32> = unloaded
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &due {
            // In flight: not due again until it settles (`load` sets the
            // next retry if it fails), so no two loads of one partition run.
            unloaded.insert(*p, now + LOAD_IN_FLIGHT);
        }
        due
    }

    /// A load of `partition` is about to start (this broker became its
    /// leader): its groups are not served until the load succeeds.
    pub fn begin_load(&self, partition: u32) {
        let due = self.now() + LOAD_IN_FLIGHT;
        self.unloaded.borrow_mut().insert(partition, due);
    }

    /// Forgets the groups of an offsets partition this shard no longer owns.
    pub fn unload(&self, partition: u32, partitions: u32) {
        self.unloaded.borrow_mut().remove(&partition);
        self.groups
            .borrow_mut()
            .retain(|id, _| partition_for(id, partitions) != partition);
    }
}

/// The partition of `__consumer_offsets` that holds `group`, if the topic exists.
pub fn offsets_key(topics: &Topics, group: &str) -> Option<PartKey> {
    let t = topics.topics.get(OFFSETS_TOPIC)?;
    Some((t.topic_id(), partition_for(group, t.partitions)))
}

/// The group a request is about, for routing.
pub fn group_of(req: &Request) -> Option<&str> {
    Some(match req {
        Request::JoinGroup(r) => &r.group_id,
        Request::SyncGroup(r) => &r.group_id,
        Request::Heartbeat(r) => &r.group_id,
        Request::LeaveGroup(r) => &r.group_id,
        Request::OffsetCommit(r) => &r.group_id,
        Request::OffsetFetch(r) => &r.group_id,
        _ => return None,
    })
}

/// Handles a group request on the shard that coordinates its group.
pub async fn handle<H: Host>(host: &Rc<H>, req: Request, client_id: String, client_host: String) -> Response {
    match req {
        Request::JoinGroup(r) => Response::JoinGroup(join(host, r, client_id, client_host).await),
        Request::SyncGroup(r) => Response::SyncGroup(sync(host, r).await),
        Request::Heartbeat(r) => Response::Heartbeat(heartbeat(host, r)),
        Request::LeaveGroup(r) => Response::LeaveGroup(leave(host, r)),
        Request::OffsetCommit(r) => Response::OffsetCommit(commit(host, r).await),
        Request::OffsetFetch(r) => Response::OffsetFetch(fetch_offsets(host, r)),
        Request::DescribeGroups(r) => Response::DescribeGroups(describe(host, r)),
        Request::DeleteGroups(r) => Response::DeleteGroups(delete(host, r).await),
        other => unreachable!("{:?} is not a group request", other.api_key()),
    }
}

/// Checks this shard coordinates `group` now: its offsets partition is open here.
fn coordinates<H: Host>(host: &Rc<H>, group: &str) -> Result<PartKey, ErrorCode> {
    if group.is_empty() {
        return Err(ErrorCode::InvalidGroupId);
    }
    let key = offsets_key(&host.topics(), group).ok_or(ErrorCode::CoordinatorNotAvailable)?;
    if !host.owns(key) {
        return Err(ErrorCode::NotCoordinator);
    }
    if host.is_open(key) && !host.leads(key) {
        return Err(ErrorCode::NotCoordinator);
    }
    if !host.is_open(key) || !host.coordinator().is_loaded(key.1) {
        return Err(ErrorCode::CoordinatorLoadInProgress);
    }
    Ok(key)
}

fn join_error(member_id: &str, error: ErrorCode) -> JoinGroupResponse {
    JoinGroupResponse {
        error,
        generation_id: -1,
        protocol_name: None,
        leader: String::new(),
        member_id: member_id.to_string(),
        members: Vec::new(),
    }
}

async fn join<H: Host>(
    host: &Rc<H>,
    r: JoinGroupRequest,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let settings = host.group_settings();
    let key = match coordinates(host, &r.group_id) {
        Ok(k) => k,
        Err(e) => return join_error(&r.member_id, e),
    };
    let session = Duration::from_millis(r.session_timeout_ms.max(0) as u64);
    if r.session_timeout_ms <= 0
        || session < settings.min_session_timeout
        || session > settings.max_session_timeout
    {
        return join_error(&r.member_id, ErrorCode::InvalidSessionTimeout);
    }
    if r.protocol_type.is_empty() || r.protocols.is_empty() {
        return join_error(&r.member_id, ErrorCode::InconsistentGroupProtocol);
    }
    if r.protocols
        .iter()
        .any(|p| p.metadata.len() > MEMBER_DATA_MAX_BYTES)
    {
        return join_error(&r.member_id, ErrorCode::InvalidRequest);
    }
    let rebalance = Duration::from_millis(r.rebalance_timeout_ms.max(r.session_timeout_ms) as u64);
    let coordinator = host.coordinator();
    if !r.member_id.is_empty() && coordinator.get(&r.group_id).is_none() {
        return join_error(&r.member_id, ErrorCode::UnknownMemberId);
    }
    let group = coordinator.get_or_create(&r.group_id);
    let now = coordinator.now();
    let (rx, persist) = {
        let mut g = group.borrow_mut();
        if g.state == GroupState::Dead {
            return join_error(&r.member_id, ErrorCode::CoordinatorNotAvailable);
        }
        if !g.accepts_protocols(&r.protocol_type, &r.protocols) {
            return join_error(&r.member_id, ErrorCode::InconsistentGroupProtocol);
        }
        let protocols: Vec<(String, Bytes)> = r
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        let member_id = if r.member_id.is_empty() {
            let new_id = coordinator.new_member_id(host.shard_id(), &client_id);
            match r
                .group_instance_id
                .as_ref()
                .and_then(|i| g.instances.get(i).cloned())
            {
                Some(old_id) => {
                    // A static member is back: it takes over its old identity.
                    let unchanged = g.replace_static_member(&old_id, &new_id, &protocols);
                    if let Some(m) = g.members.get_mut(&new_id) {
                        m.session_timeout = session;
                        m.rebalance_timeout = rebalance;
                        m.client_id = client_id.clone();
                        m.client_host = client_host.clone();
                        m.last_heartbeat = now;
                    }
                    if g.state == GroupState::Stable && unchanged {
                        let resp = JoinGroupResponse {
                            error: ErrorCode::None,
                            generation_id: g.generation,
                            protocol_name: g.protocol.clone(),
                            leader: g.leader.clone().unwrap_or_default(),
                            member_id: new_id.clone(),
                            members: Vec::new(),
                        };
                        let value = g.to_value();
                        drop(g);
                        spawn_persist_group(host, key, &r.group_id, value);
                        return resp;
                    }
                    // The leader may have assigned to the old id: rebalance.
                    if g.state != GroupState::PreparingRebalance {
                        g.prepare_rebalance(now, settings);
                    }
                    new_id
                }
                None => {
                    if g.members.len() >= settings.max_group_size {
                        return join_error("", ErrorCode::GroupMaxSizeReached);
                    }
                    g.members.insert(
                        new_id.clone(),
                        Member {
                            id: new_id.clone(),
                            instance_id: r.group_instance_id.clone(),
                            client_id: client_id.clone(),
                            client_host: client_host.clone(),
                            session_timeout: session,
                            rebalance_timeout: rebalance,
                            protocols: protocols.clone(),
                            assignment: Bytes::new(),
                            last_heartbeat: now,
                            join_waiter: None,
                            sync_waiter: None,
                        },
                    );
                    if let Some(i) = &r.group_instance_id {
                        g.instances.insert(i.clone(), new_id.clone());
                    }
                    if g.state != GroupState::PreparingRebalance {
                        g.prepare_rebalance(now, settings);
                    }
                    new_id
                }
            }
        } else {
            if let Err(e) = g.check_member(&r.member_id, r.group_instance_id.as_deref()) {
                return join_error(&r.member_id, e);
            }
            let is_leader = g.leader.as_deref() == Some(r.member_id.as_str());
            let m = g.members.get_mut(&r.member_id).expect("checked above");
            let changed = m.protocols != protocols;
            m.protocols = protocols;
            m.session_timeout = session;
            m.rebalance_timeout = rebalance;
            m.last_heartbeat = now;
            match g.state {
                GroupState::PreparingRebalance => {}
                GroupState::CompletingRebalance if !changed => {
                    // A repeated join: answer with the generation in progress.
                    return g.join_response(&r.member_id);
                }
                GroupState::Stable if !changed && !is_leader => return g.join_response(&r.member_id),
                _ => g.prepare_rebalance(now, settings),
            }
            r.member_id.clone()
        };
        if g.state == GroupState::Empty {
            g.prepare_rebalance(now, settings);
        }
        let (tx, rx) = local_channel::new_bounded(1);
        if let Some(m) = g.members.get_mut(&member_id) {
            m.join_waiter = Some(tx);
        }
        let persist = g.try_complete_join(now);
        (rx, persist)
    };
    if let Some(value) = persist {
        spawn_persist_group(host, key, &r.group_id, value);
    }
    rx.recv()
        .await
        .unwrap_or_else(|| join_error(&r.member_id, ErrorCode::UnknownMemberId))
}

fn sync_error(error: ErrorCode) -> SyncGroupResponse {
    SyncGroupResponse {
        error,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

async fn sync<H: Host>(host: &Rc<H>, r: SyncGroupRequest) -> SyncGroupResponse {
    let key = match coordinates(host, &r.group_id) {
        Ok(k) => k,
        Err(e) => return sync_error(e),
    };
    if r.assignments
        .iter()
        .any(|a| a.assignment.len() > MEMBER_DATA_MAX_BYTES)
    {
        return sync_error(ErrorCode::InvalidRequest);
    }
    let Some(group) = host.coordinator().get(&r.group_id) else {
        return sync_error(ErrorCode::UnknownMemberId);
    };
    let (rx, persist) = {
        let mut g = group.borrow_mut();
        if let Err(e) = g.check_member(&r.member_id, r.group_instance_id.as_deref()) {
            return sync_error(e);
        }
        if r.generation_id != g.generation {
            return sync_error(ErrorCode::IllegalGeneration);
        }
        match g.state {
            GroupState::PreparingRebalance => return sync_error(ErrorCode::RebalanceInProgress),
            GroupState::Stable => {
                let m = &g.members[&r.member_id];
                return SyncGroupResponse {
                    error: ErrorCode::None,
                    protocol_name: g.protocol.clone(),
                    assignment: m.assignment.clone(),
                };
            }
            GroupState::Empty | GroupState::Dead => return sync_error(ErrorCode::UnknownMemberId),
            GroupState::CompletingRebalance => {}
        }
        let (tx, rx) = local_channel::new_bounded(1);
        let now = host.coordinator().now();
        let m = g.members.get_mut(&r.member_id).expect("checked above");
        m.sync_waiter = Some(tx);
        m.last_heartbeat = now;
        let mut persist = None;
        if g.leader.as_deref() == Some(r.member_id.as_str()) {
            let given: HashMap<&str, &Bytes> = r
                .assignments
                .iter()
                .map(|a| (a.member_id.as_str(), &a.assignment))
                .collect();
            for m in g.members.values_mut() {
                m.assignment = given.get(m.id.as_str()).map(|b| (*b).clone()).unwrap_or_default();
            }
            persist = Some((g.generation, g.to_value()));
        }
        (rx, persist)
    };
    if let Some((generation, value)) = persist {
        // The assignment is answered only once it is on disk, so that a
        // coordinator restart finds the group as its members know it.
        let stored = persist_records(
            host,
            key,
            vec![(
                RecordKey::Group {
                    group: r.group_id.clone(),
                },
                Some(value.encode()),
            )],
        )
        .await;
        let mut g = group.borrow_mut();
        if g.generation == generation && g.state == GroupState::CompletingRebalance {
            match stored {
                Ok(_) => g.complete_sync(),
                Err(e) => {
                    tracing::warn!(group = %r.group_id, error = ?e, "cannot persist the group's assignment");
                    g.fail_sync(ErrorCode::CoordinatorNotAvailable);
                    g.prepare_rebalance(host.coordinator().now(), host.group_settings());
                }
            }
        }
    }
    rx.recv()
        .await
        .unwrap_or_else(|| sync_error(ErrorCode::UnknownMemberId))
}

fn heartbeat<H: Host>(host: &Rc<H>, r: HeartbeatRequest) -> HeartbeatResponse {
    let error = (|| {
        coordinates(host, &r.group_id)?;
        let group = host
            .coordinator()
            .get(&r.group_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        let mut g = group.borrow_mut();
        g.check_member(&r.member_id, r.group_instance_id.as_deref())?;
        if r.generation_id != g.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        let state = g.state;
        g.members.get_mut(&r.member_id).expect("checked").last_heartbeat = host.coordinator().now();
        match state {
            GroupState::PreparingRebalance => Err(ErrorCode::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(ErrorCode::UnknownMemberId),
            GroupState::Stable | GroupState::CompletingRebalance => Ok(()),
        }
    })()
    .err()
    .unwrap_or(ErrorCode::None);
    HeartbeatResponse { error }
}

fn leave<H: Host>(host: &Rc<H>, r: LeaveGroupRequest) -> LeaveGroupResponse {
    let key = match coordinates(host, &r.group_id) {
        Ok(k) => k,
        Err(e) => {
            return LeaveGroupResponse {
                error: e,
                members: Vec::new(),
            }
        }
    };
    let Some(group) = host.coordinator().get(&r.group_id) else {
        return LeaveGroupResponse {
            error: ErrorCode::UnknownMemberId,
            members: Vec::new(),
        };
    };
    let mut results = Vec::new();
    let persist = {
        let mut g = group.borrow_mut();
        let mut removed = false;
        for m in r.members {
            // An instance id alone names a static member (tools use that).
            let id = if m.member_id.is_empty() {
                m.group_instance_id
                    .as_ref()
                    .and_then(|i| g.instances.get(i).cloned())
            } else {
                Some(m.member_id.clone())
            };
            let error = match id {
                None => ErrorCode::UnknownMemberId,
                Some(id) => match g.check_member(&id, m.group_instance_id.as_deref()) {
                    Ok(()) => {
                        g.remove_member(&id);
                        removed = true;
                        ErrorCode::None
                    }
                    Err(e) => e,
                },
            };
            results.push(LeftMember {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                error,
            });
        }
        if removed {
            g.on_members_removed(host.coordinator().now(), host.group_settings())
        } else {
            None
        }
    };
    if let Some(value) = persist {
        spawn_persist_group(host, key, &r.group_id, value);
    }
    LeaveGroupResponse {
        error: ErrorCode::None,
        members: results,
    }
}

async fn commit<H: Host>(host: &Rc<H>, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let all_failed = |error: ErrorCode, r: &OffsetCommitRequest| OffsetCommitResponse {
        topics: r
            .topics
            .iter()
            .map(|t| OffsetCommitTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionError {
                        partition: p.partition,
                        error,
                    })
                    .collect(),
            })
            .collect(),
    };
    let key = match coordinates(host, &r.group_id) {
        Ok(k) => k,
        Err(e) => return all_failed(e, &r),
    };
    let outside = r.generation_id < 0 && r.member_id.is_empty();
    let group = if outside {
        host.coordinator().get_or_create(&r.group_id)
    } else {
        match host.coordinator().get(&r.group_id) {
            Some(g) => g,
            None => return all_failed(ErrorCode::UnknownMemberId, &r),
        }
    };
    {
        let g = group.borrow();
        if g.state == GroupState::Dead {
            // Being deleted: its tombstones are being written, and a commit
            // written after them would come back with the next restart.
            return all_failed(ErrorCode::CoordinatorNotAvailable, &r);
        }
        let check = if outside {
            // A commit from outside the group's membership (tools, manual
            // assignment): only while nobody is a member.
            if g.members.is_empty() {
                Ok(())
            } else {
                Err(ErrorCode::UnknownMemberId)
            }
        } else {
            g.check_member(&r.member_id, r.group_instance_id.as_deref())
                .and_then(|()| {
                    if r.generation_id != g.generation {
                        Err(ErrorCode::IllegalGeneration)
                    } else if g.state == GroupState::CompletingRebalance {
                        Err(ErrorCode::RebalanceInProgress)
                    } else {
                        Ok(())
                    }
                })
        };
        if let Err(e) = check {
            return all_failed(e, &r);
        }
    }
    let topics = host.topics();
    let now_ms = host.coordinator().clock.wall_ms();
    let mut records = Vec::new();
    let mut results = Vec::new();
    let mut accepted = Vec::new();
    for t in &r.topics {
        let meta = topics.topics.get(&t.name);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let error = if meta.is_none_or(|m| p.partition >= m.partitions) {
                ErrorCode::UnknownTopicOrPartition
            } else if p
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES)
            {
                ErrorCode::OffsetMetadataTooLarge
            } else if p.offset < 0 {
                ErrorCode::InvalidRequest
            } else {
                let k = RecordKey::Offset {
                    group: r.group_id.clone(),
                    topic: t.name.clone(),
                    partition: p.partition,
                };
                let v = OffsetValue {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata.clone(),
                    commit_timestamp: now_ms,
                };
                records.push((k, Some(v.encode())));
                accepted.push(((t.name.clone(), p.partition), v));
                ErrorCode::None
            };
            parts.push(PartitionError {
                partition: p.partition,
                error,
            });
        }
        results.push(OffsetCommitTopicResponse {
            name: t.name.clone(),
            partitions: parts,
        });
    }
    if !records.is_empty() {
        let at = match persist_records(host, key, records).await {
            Ok(at) => at,
            Err(e) => return all_failed(e, &r),
        };
        // In log order, not in the order writes complete: a commit written
        // after this one but stored first keeps its value. Within this one
        // batch (`at` alike), a partition named twice keeps its last entry,
        // as a replay of the log does.
        let mut g = group.borrow_mut();
        for (k, v) in accepted {
            if g.offsets_at.get(&k).is_none_or(|&prev| prev <= at) {
                g.offsets_at.insert(k.clone(), at);
                g.offsets.insert(k, v);
            }
        }
    }
    OffsetCommitResponse { topics: results }
}

fn fetch_offsets<H: Host>(host: &Rc<H>, r: OffsetFetchRequest) -> OffsetFetchResponse {
    if let Err(error) = coordinates(host, &r.group_id) {
        return OffsetFetchResponse {
            error,
            topics: Vec::new(),
        };
    }
    let group = host.coordinator().get(&r.group_id);
    let entry = |topic: &str, partition: u32| -> OffsetFetchPartition {
        let committed = group
            .as_ref()
            .and_then(|g| g.borrow().offsets.get(&(topic.to_string(), partition)).cloned());
        match committed {
            Some(v) => OffsetFetchPartition {
                partition,
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                metadata: v.metadata,
                error: ErrorCode::None,
            },
            None => OffsetFetchPartition {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: None,
                error: ErrorCode::None,
            },
        }
    };
    let topics = match r.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| OffsetFetchTopicResponse {
                partitions: t.partitions.iter().map(|&p| entry(&t.name, p)).collect(),
                name: t.name,
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
            if let Some(g) = &group {
                for (t, p) in g.borrow().offsets.keys() {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
            }
            by_topic
                .into_iter()
                .map(|(name, mut parts)| {
                    parts.sort_unstable();
                    OffsetFetchTopicResponse {
                        partitions: parts.iter().map(|&p| entry(&name, p)).collect(),
                        name,
                    }
                })
                .collect()
        }
    };
    OffsetFetchResponse {
        error: ErrorCode::None,
        topics,
    }
}

fn describe<H: Host>(host: &Rc<H>, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = r
        .groups
        .into_iter()
        .map(|id| {
            if let Err(error) = coordinates(host, &id) {
                return DescribedGroup {
                    error,
                    group_id: id,
                    ..DescribedGroup::default()
                };
            }
            match host.coordinator().get(&id) {
                None => DescribedGroup {
                    error: ErrorCode::None,
                    group_id: id,
                    state: GroupState::Dead.name().to_string(),
                    ..DescribedGroup::default()
                },
                Some(g) => g.borrow().describe(),
            }
        })
        .collect();
    DescribeGroupsResponse { groups }
}

async fn delete<H: Host>(host: &Rc<H>, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in r.groups {
        let error = match delete_one(host, &id).await {
            Ok(()) => ErrorCode::None,
            Err(e) => e,
        };
        results.push(GroupResult { group_id: id, error });
    }
    DeleteGroupsResponse { results }
}

async fn delete_one<H: Host>(host: &Rc<H>, id: &str) -> Result<(), ErrorCode> {
    let key = coordinates(host, id)?;
    let group = host.coordinator().get(id).ok_or(ErrorCode::GroupIdNotFound)?;
    let records = {
        let mut g = group.borrow_mut();
        if !g.members.is_empty() || g.state != GroupState::Empty {
            return Err(ErrorCode::NonEmptyGroup);
        }
        g.state = GroupState::Dead;
        let mut records: Vec<(RecordKey, Option<Bytes>)> = g
            .offsets
            .keys()
            .map(|(t, p)| {
                (
                    RecordKey::Offset {
                        group: id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                    },
                    None,
                )
            })
            .collect();
        records.push((
            RecordKey::Group {
                group: id.to_string(),
            },
            None,
        ));
        records
    };
    let stored = persist_records(host, key, records).await;
    match stored {
        Ok(_) => {
            host.coordinator().groups.borrow_mut().remove(id);
            Ok(())
        }
        Err(e) => {
            group.borrow_mut().state = GroupState::Empty;
            Err(e)
        }
    }
}

/// Appends records to the group's offsets partition and waits until they
/// are as durable as an acks=all produce; returns their batch's offset in
/// the log.
async fn persist_records<H: Host>(
    host: &Rc<H>,
    key: PartKey,
    records: Vec<(RecordKey, Option<Bytes>)>,
) -> Result<i64, ErrorCode> {
    let ts = host.coordinator().clock.wall_ms();
    let mut b = RecordBatchBuilder::new(Compression::None);
    for (k, v) in &records {
        b.push(ts, Some(&k.encode()), v.as_deref(), &[]);
    }
    let batch = b.build().map_err(|e| {
        tracing::error!(error = %e, "cannot build a batch of group records");
        ErrorCode::UnknownServerError
    })?;
    host.append_durable(key, batch).await.map_err(|(code, msg)| {
        tracing::warn!(?code, %msg, "cannot write to __consumer_offsets");
        match code {
            ErrorCode::UnknownTopicOrPartition | ErrorCode::NotLeaderOrFollower => ErrorCode::NotCoordinator,
            _ => ErrorCode::CoordinatorNotAvailable,
        }
    })
}

fn spawn_persist_group<H: Host>(host: &Rc<H>, key: PartKey, group: &str, value: GroupValue) {
    let host = host.clone();
    let group = group.to_string();
    glommio::spawn_local(async move {
        let rec = vec![(RecordKey::Group { group: group.clone() }, Some(value.encode()))];
        if let Err(e) = persist_records(&host, key, rec).await {
            tracing::warn!(%group, error = ?e, "cannot persist group metadata");
        }
    })
    .detach();
}

/// Session timeouts and rebalance deadlines; every shard calls this often.
pub fn tick<H: Host>(host: &Rc<H>) {
    let coordinator = host.coordinator();
    let now = coordinator.now();
    let groups: Vec<GroupRef> = coordinator.groups.borrow().values().cloned().collect();
    for group in groups {
        let persist = group.borrow_mut().tick(now, host.group_settings());
        if let Some(value) = persist {
            let id = group.borrow().id.clone();
            if let Some(key) = offsets_key(&host.topics(), &id) {
                spawn_persist_group(host, key, &id, value);
            }
        }
    }
}

impl Coordinator {
    /// Rebuilds the groups of partition `partition` of `__consumer_offsets`
    /// from its log. All or nothing: if any of it cannot be read, no group
    /// of the partition is served (a partial load would answer -1 for
    /// offsets it missed, and a deletion would tombstone only what it saw)
    /// and the load is tried again (`loads_due`).
    pub async fn load(&self, partition: u32, log: &Log) -> Result<(), String> {
        let r = self.read_groups(partition, log).await;
        match r {
            Ok(applied) => {
                let now = self.now();
                let mut groups = self.groups.borrow_mut();
                for (id, mut g) in applied {
                    g.restore(now);
                    groups.insert(id, Rc::new(RefCell::new(g)));
                }
                self.unloaded.borrow_mut().remove(&partition);
                Ok(())
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "cannot load consumer groups; serving none of this partition's until a retry succeeds");
                self.unloaded
                    .borrow_mut()
                    .insert(partition, self.now() + LOAD_RETRY);
                Err(e)
            }
        }
    }

    async fn read_groups(&self, partition: u32, log: &Log) -> Result<HashMap<String, Group>, String> {
        let started = self.now();
        let mut from = log.log_start_offset().0;
        let end = log.log_end_offset().0;
        let mut records = 0u64;
        let mut skipped = 0u64;
        let mut applied: HashMap<String, Group> = HashMap::new();
        while from < end {
            let read = log
                .read(Offset(from), 4 << 20, None)
                .await
                .map_err(|e| format!("cannot read __consumer_offsets at {from}: {e}"))?;
            let before = from;
            for chunk in read.chunks {
                let bytes = match chunk {
                    Chunk::Memory(b) => b,
                    Chunk::File(s) => match s.read_to_vec() {
                        Ok(v) => Bytes::from(v),
                        Err(e) => return Err(format!("cannot read __consumer_offsets at {from}: {e}")),
                    },
                };
                for item in BatchIter::new(&bytes) {
                    let Ok((h, range)) = item else { break };
                    from = from.max(h.last_offset() as u64 + 1);
                    let Ok(batch) = decode_records_bytes(&bytes.slice(range)) else {
                        skipped += 1;
                        continue;
                    };
                    for rec in batch {
                        records += 1;
                        if !apply_record(&mut applied, rec.key, rec.value, started) {
                            skipped += 1;
                        }
                    }
                }
            }
            if from == before {
                return Err(format!(
                    "no batch readable at {from} of __consumer_offsets (its end is {end})"
                ));
            }
        }
        let elapsed = self.now().duration_since(started);
        tracing::info!(
            partition,
            groups = applied.len(),
            records,
            skipped,
            ?elapsed,
            "loaded consumer groups"
        );
        Ok(applied)
    }
}

/// Applies one record read at `now`; false if it could not be read.
fn apply_record(
    groups: &mut HashMap<String, Group>,
    key: Option<Bytes>,
    value: Option<Bytes>,
    now: Instant,
) -> bool {
    let Some(key) = key.and_then(|k| RecordKey::decode(k).ok()) else {
        return false;
    };
    match (key, value) {
        (
            RecordKey::Offset {
                group,
                topic,
                partition,
            },
            Some(v),
        ) => match OffsetValue::decode(v) {
            Ok(v) => {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group, now))
                    .offsets
                    .insert((topic, partition), v);
                true
            }
            Err(_) => false,
        },
        (
            RecordKey::Offset {
                group,
                topic,
                partition,
            },
            None,
        ) => {
            if let Some(g) = groups.get_mut(&group) {
                g.offsets.remove(&(topic, partition));
            }
            true
        }
        (RecordKey::Group { group }, Some(v)) => match GroupValue::decode(v) {
            Ok(v) => {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group, now))
                    .load_value(v, now);
                true
            }
            Err(_) => false,
        },
        (RecordKey::Group { group }, None) => {
            groups.remove(&group);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use borges_net::protocol::{JoinGroupProtocol, SyncGroupAssignment};
    use bytes::BytesMut;
    use std::sync::Arc;

    /// A coordinator's host that is no shard: it owns the one partition of
    /// `__consumer_offsets`, and keeps what is appended to it in memory.
    struct FakeHost {
        topics: Arc<Topics>,
        settings: GroupSettings,
        coordinator: Coordinator,
        appended: RefCell<Vec<BytesMut>>,
        /// While set, appends wait until the test releases them (in any
        /// order), as writes whose syncs complete out of order.
        hold: Cell<bool>,
        parked: RefCell<Vec<glommio::channels::local_channel::LocalSender<()>>>,
    }

    impl Host for FakeHost {
        fn shard_id(&self) -> usize {
            0
        }

        fn topics(&self) -> Arc<Topics> {
            self.topics.clone()
        }

        fn owns(&self, _key: PartKey) -> bool {
            true
        }

        fn is_open(&self, _key: PartKey) -> bool {
            true
        }

        fn leads(&self, _key: PartKey) -> bool {
            true
        }

        fn group_settings(&self) -> &GroupSettings {
            &self.settings
        }

        fn coordinator(&self) -> &Coordinator {
            &self.coordinator
        }

        async fn append_durable(&self, _key: PartKey, batch: BytesMut) -> Result<i64, (ErrorCode, String)> {
            let offset = self.appended.borrow().len() as i64;
            self.appended.borrow_mut().push(batch);
            if self.hold.get() {
                let (tx, rx) = local_channel::new_bounded(1);
                self.parked.borrow_mut().push(tx);
                rx.recv().await;
            }
            Ok(offset)
        }
    }

    fn fake_host(clock: Rc<ManualClock>) -> Rc<FakeHost> {
        let mut topics = Topics {
            next_id: 1,
            ..Topics::default()
        };
        crate::metadata::ensure_offsets_topic(&mut topics, 1);
        Rc::new(FakeHost {
            topics: Arc::new(topics),
            settings: GroupSettings {
                min_session_timeout: Duration::from_secs(1),
                max_session_timeout: Duration::from_secs(300),
                initial_rebalance_delay: Duration::from_millis(300),
                max_group_size: 1000,
            },
            coordinator: Coordinator::new(clock),
            appended: RefCell::new(Vec::new()),
            hold: Cell::new(false),
            parked: RefCell::new(Vec::new()),
        })
    }

    fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("an executor")
            .run(f)
    }

    fn heartbeat_of(host: &Rc<FakeHost>, member: &str, generation: i32) -> ErrorCode {
        let r = HeartbeatRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
        };
        heartbeat(host, r).error
    }

    /// The coordinator driven through its host and a manual clock: a member
    /// joins (after the initial delay), syncs, heartbeats, then misses its
    /// session and is removed; what must survive is appended each time.
    #[test]
    fn a_member_lives_and_expires_by_the_coordinator_clock() {
        run(async {
            let clock = Rc::new(ManualClock::new(1_000));
            let host = fake_host(clock.clone());
            let join = JoinGroupRequest {
                group_id: "g".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                member_id: String::new(),
                group_instance_id: None,
                protocol_type: "consumer".into(),
                protocols: vec![JoinGroupProtocol {
                    name: "range".into(),
                    metadata: Bytes::from_static(b"sub"),
                }],
            };
            let h = host.clone();
            let joined = glommio::spawn_local(async move { join_group(&h, join).await });
            // The first rebalance waits out the initial delay, by the clock.
            for _ in 0..3 {
                futures_lite::future::yield_now().await;
                tick(&host);
            }
            assert_eq!(host.coordinator.list()[0].state, "PreparingRebalance");
            clock.advance(Duration::from_millis(300));
            tick(&host);
            let j = joined.await;
            assert_eq!(j.error, ErrorCode::None);
            assert_eq!(j.generation_id, 1);
            assert_eq!(j.leader, j.member_id, "the only member leads");
            let sync = SyncGroupRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: j.member_id.clone(),
                group_instance_id: None,
                assignments: vec![SyncGroupAssignment {
                    member_id: j.member_id.clone(),
                    assignment: Bytes::from_static(b"all of it"),
                }],
            };
            let s = super::sync(&host, sync).await;
            assert_eq!(s.error, ErrorCode::None);
            assert_eq!(s.assignment, Bytes::from_static(b"all of it"));
            assert_eq!(host.appended.borrow().len(), 1, "the assignment is persisted");
            clock.advance(Duration::from_secs(9));
            assert_eq!(heartbeat_of(&host, &j.member_id, 1), ErrorCode::None);
            clock.advance(Duration::from_secs(9));
            tick(&host);
            assert_eq!(
                host.coordinator.list()[0].state,
                "Stable",
                "the heartbeat kept it"
            );
            clock.advance(Duration::from_millis(1_001));
            tick(&host);
            assert_eq!(host.coordinator.list()[0].state, "Empty");
            assert_eq!(heartbeat_of(&host, &j.member_id, 1), ErrorCode::UnknownMemberId);
            // The emptied group is persisted by a task of its own, which
            // runs once this one lets it.
            futures_lite::future::yield_now().await;
            assert_eq!(host.appended.borrow().len(), 2);
        });
    }

    /// An offset commit from outside the membership (as `Admin` sends).
    fn outside_commit(offset: i64) -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: "g".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![borges_net::protocol::OffsetCommitTopic {
                name: OFFSETS_TOPIC.into(),
                partitions: vec![borges_net::protocol::OffsetCommitPartition {
                    partition: 0,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                }],
            }],
        }
    }

    fn commit_error(r: &OffsetCommitResponse) -> ErrorCode {
        r.topics[0].partitions[0].error
    }

    fn committed_offset(host: &Rc<FakeHost>) -> i64 {
        let r = fetch_offsets(
            host,
            OffsetFetchRequest {
                group_id: "g".into(),
                topics: None,
            },
        );
        r.topics.first().map(|t| t.partitions[0].offset).unwrap_or(-1)
    }

    /// Lets the spawned tasks run until they park.
    async fn settle() {
        for _ in 0..10 {
            futures_lite::future::yield_now().await;
        }
    }

    /// Issue 19, finding 7: commits of 10 then 20, pipelined, whose writes
    /// complete in the other order: what the coordinator answers must be
    /// what its log says, the later commit (20).
    #[test]
    fn pipelined_commits_apply_in_log_order() {
        run(async {
            let host = fake_host(Rc::new(ManualClock::new(1_000)));
            host.hold.set(true);
            let h = host.clone();
            let first = glommio::spawn_local(async move { commit(&h, outside_commit(10)).await });
            settle().await;
            let h = host.clone();
            let second = glommio::spawn_local(async move { commit(&h, outside_commit(20)).await });
            settle().await;
            assert_eq!(host.parked.borrow().len(), 2, "both commits are being written");
            // The second write completes first.
            let later = host.parked.borrow_mut().pop().expect("parked");
            let _ = later.try_send(());
            assert_eq!(commit_error(&second.await), ErrorCode::None);
            assert_eq!(committed_offset(&host), 20);
            let earlier = host.parked.borrow_mut().pop().expect("parked");
            let _ = earlier.try_send(());
            assert_eq!(commit_error(&first.await), ErrorCode::None);
            assert_eq!(
                committed_offset(&host),
                20,
                "the commit of 10 is older in the log than that of 20"
            );
        });
    }

    /// Issue 19, finding 10: a commit that arrives while the group's
    /// deletion is being written is refused, not written after the
    /// tombstones (where a restart would bring it back).
    #[test]
    fn a_commit_to_a_group_being_deleted_is_refused() {
        run(async {
            let host = fake_host(Rc::new(ManualClock::new(1_000)));
            assert_eq!(
                commit_error(&commit(&host, outside_commit(5)).await),
                ErrorCode::None
            );
            host.hold.set(true);
            let h = host.clone();
            let deleting = glommio::spawn_local(async move { delete_one(&h, "g").await });
            settle().await;
            assert_eq!(host.parked.borrow().len(), 1, "the tombstones are being written");
            let h = host.clone();
            let late = glommio::spawn_local(async move { commit(&h, outside_commit(7)).await });
            settle().await;
            for tx in host.parked.borrow_mut().drain(..) {
                let _ = tx.try_send(());
            }
            settle().await;
            for tx in host.parked.borrow_mut().drain(..) {
                let _ = tx.try_send(());
            }
            assert_eq!(deleting.await, Ok(()));
            let r = late.await;
            assert_eq!(commit_error(&r), ErrorCode::CoordinatorNotAvailable);
            assert_eq!(
                host.appended.borrow().len(),
                2,
                "nothing written after the tombstones"
            );
        });
    }

    /// A log of `__consumer_offsets` holding commits of group "g" (offsets
    /// 1..=n of partition 0), closed and reopened so that reads go to files.
    async fn offsets_log(dir: &std::path::Path, n: i64) -> Log {
        let clock: Rc<dyn borges_storage::Clock> = Rc::new(borges_storage::SystemClock);
        let log = Log::open(dir, borges_storage::LogConfig::default(), clock.clone())
            .await
            .expect("open");
        for o in 1..=n {
            let mut b = RecordBatchBuilder::new(Compression::None);
            let k = RecordKey::Offset {
                group: "g".into(),
                topic: OFFSETS_TOPIC.into(),
                partition: 0,
            };
            let v = OffsetValue {
                offset: o,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp: 0,
            };
            b.push(0, Some(&k.encode()), Some(&v.encode()), &[]);
            log.append(b.build().expect("batch"), borges_net::types::LeaderEpoch(0))
                .await
                .expect("append");
        }
        log.close().await.expect("close");
        Log::open(dir, borges_storage::LogConfig::default(), clock)
            .await
            .expect("reopen")
    }

    /// Issue 19, finding 6: a read error while the coordinator replays its
    /// offsets partition must not leave it serving what it read so far (no
    /// group, offset -1): it answers COORDINATOR_LOAD_IN_PROGRESS until a
    /// later load reads the whole partition.
    #[test]
    fn a_failed_load_serves_nothing_until_a_load_succeeds() {
        run(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = offsets_log(dir.path(), 20).await;
            let host = fake_host(Rc::new(ManualClock::new(1_000)));
            let fetch = |host: &Rc<FakeHost>| {
                fetch_offsets(
                    host,
                    OffsetFetchRequest {
                        group_id: "g".into(),
                        topics: None,
                    },
                )
            };
            borges_storage::seam::fail(borges_storage::seam::Op::Read, 0, 1, libc::EIO, None);
            assert!(host.coordinator.load(0, &log).await.is_err());
            assert_eq!(
                borges_storage::seam::faults_left(),
                0,
                "the load met the read error"
            );
            borges_storage::seam::reset();
            let r = fetch(&host);
            assert_eq!(r.error, ErrorCode::CoordinatorLoadInProgress, "{r:?}");
            let c = commit(&host, outside_commit(99)).await;
            assert_eq!(commit_error(&c), ErrorCode::CoordinatorLoadInProgress);
            // The next load reads everything.
            assert_eq!(host.coordinator.loads_due(), Vec::<u32>::new(), "not due yet");
            host.coordinator
                .load(0, &log)
                .await
                .expect("the retry reads it all");
            assert!(host.coordinator.is_loaded(0));
            let r = fetch(&host);
            assert_eq!(r.error, ErrorCode::None);
            assert_eq!(committed_offset(&host), 20);
        });
    }

    async fn join_group(host: &Rc<FakeHost>, r: JoinGroupRequest) -> JoinGroupResponse {
        join(host, r, "client".into(), "127.0.0.1".into()).await
    }
}
