//! One group's state machine.
//!
//! ```text
//!            join                  all rejoined /          leader's
//!  Empty ----------> Preparing ---- timeout -------> Completing ---------> Stable
//!    ^               Rebalance                       Rebalance   SyncGroup   |
//!    |  last member      ^   ^                          |                    |
//!    +---- leaves -------+   +-- join, leave, expiry ---+--------------------+
//! ```
//!
//! Time is an argument (`now`, monotonic): nothing here reads a clock, so
//! the transitions are tested with a clock the test moves.
//!
//! Waiting requests are parked as one-shot channels on their member
//! (`join_waiter`, `sync_waiter`) and answered when the transition they wait
//! for happens; a member removed while waiting has its channel dropped and
//! gets `UnknownMemberId`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use borges_net::protocol::{
    DescribedGroup, DescribedMember, ErrorCode, JoinGroupMember, JoinGroupProtocol, JoinGroupResponse,
    SyncGroupResponse,
};
use bytes::Bytes;
use glommio::channels::local_channel::LocalSender;

use super::records::{GroupValue, MemberValue, OffsetValue};
use super::GroupSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (it may still have committed offsets).
    Empty,
    /// Waiting for every member to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    Stable,
    /// Being deleted.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// Protocol names with this member's metadata, in its order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    pub join_waiter: Option<LocalSender<JoinGroupResponse>>,
    pub sync_waiter: Option<LocalSender<SyncGroupResponse>>,
}

impl Member {
    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// By member id; ordered so that choices (the leader) are deterministic.
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id to member id.
    pub instances: HashMap<String, String>,
    pub offsets: HashMap<(String, u32), OffsetValue>,
    /// Where in `__consumer_offsets` each committed offset of this run was
    /// written: commits are written concurrently and may complete out of
    /// order, and the one later in the log is the one that counts (a
    /// restart replays the log in order). Absent for offsets loaded at
    /// start, which every later commit follows in the log.
    pub offsets_at: HashMap<(String, u32), i64>,
    /// A rebalance completes no earlier than this (the initial delay) ...
    pub rebalance_not_before: Instant,
    /// ... and no later than this, without the members that did not rejoin.
    pub rebalance_deadline: Instant,
}

impl Group {
    pub fn new(id: String, now: Instant) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
            offsets: HashMap::new(),
            offsets_at: HashMap::new(),
            rebalance_not_before: now,
            rebalance_deadline: now,
        }
    }

    /// Whether a member with these protocols may join: same protocol type,
    /// and at least one protocol every current member also supports.
    pub fn accepts_protocols(&self, protocol_type: &str, protocols: &[JoinGroupProtocol]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref().is_some_and(|t| t != protocol_type) {
            return false;
        }
        protocols.iter().any(|p| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| *n == p.name))
        })
    }

    /// `Ok` if `member_id` is a current member and `instance_id` (if given)
    /// still maps to it; `FencedInstanceId` when another member has taken
    /// the instance over.
    pub fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(i) = instance_id {
            if let Some(current) = self.instances.get(i) {
                if current != member_id {
                    return Err(ErrorCode::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(())
    }

    /// Moves a static member to a new member id, keeping its assignment;
    /// the old id's parked requests are answered `FencedInstanceId`. Returns
    /// whether the group's selected protocol is still among the member's,
    /// which is all a returning static member is checked for (KIP-345): its
    /// metadata differs from what it sent before whenever it owned
    /// partitions then (cooperative subscriptions carry them and their
    /// generation), and after a coordinator restart only the selected
    /// protocol's metadata is known at all.
    pub fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        let Some(mut m) = self.members.remove(old_id) else {
            return false;
        };
        if let Some(tx) = m.join_waiter.take() {
            let _ = tx.try_send(super::join_error(old_id, ErrorCode::FencedInstanceId));
        }
        if let Some(tx) = m.sync_waiter.take() {
            let _ = tx.try_send(super::sync_error(ErrorCode::FencedInstanceId));
        }
        let unchanged = self
            .protocol
            .as_ref()
            .is_some_and(|p| protocols.iter().any(|(n, _)| n == p));
        m.id = new_id.to_string();
        m.protocols = protocols.to_vec();
        if let Some(i) = &m.instance_id {
            self.instances.insert(i.clone(), new_id.to_string());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_string());
        }
        self.members.insert(new_id.to_string(), m);
        unchanged
    }

    /// Starts a rebalance: every member must rejoin.
    pub fn prepare_rebalance(&mut self, now: Instant, settings: &GroupSettings) {
        self.fail_sync(ErrorCode::RebalanceInProgress);
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_not_before = if self.state == GroupState::Empty {
            now + settings.initial_rebalance_delay
        } else {
            now
        };
        self.rebalance_deadline = now + timeout.max(settings.initial_rebalance_delay);
        self.state = GroupState::PreparingRebalance;
    }

    /// Answers parked SyncGroups with `error` (a rebalance started or failed).
    pub fn fail_sync(&mut self, error: ErrorCode) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync_waiter.take() {
                let _ = tx.try_send(super::sync_error(error));
            }
        }
    }

    /// Removes a member; its parked requests see their channel closed.
    pub fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(i) = &m.instance_id {
                if self.instances.get(i).map(String::as_str) == Some(id) {
                    self.instances.remove(i);
                }
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// A tick at `now`: members past their session timeout (and not
    /// waiting in a JoinGroup or a SyncGroup: a member waits there for the
    /// others, and cannot heartbeat meanwhile) are removed and the rest
    /// rebalance, and a
    /// rebalance whose members have all rejoined or whose deadline has
    /// passed completes. Returns the value to persist when the group
    /// became empty.
    pub fn tick(&mut self, now: Instant, settings: &GroupSettings) -> Option<GroupValue> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && now.duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member missed its session timeout");
            self.remove_member(id);
        }
        if expired.is_empty() {
            self.try_complete_join(now)
        } else {
            self.on_members_removed(now, settings)
        }
    }

    /// After members left or expired: rebalance the rest. Returns the value
    /// to persist when the group became empty.
    pub fn on_members_removed(&mut self, now: Instant, settings: &GroupSettings) -> Option<GroupValue> {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, settings),
            GroupState::Empty | GroupState::Dead => return None,
            GroupState::PreparingRebalance => {}
        }
        if self.members.is_empty() {
            // Nobody left to wait for.
            self.rebalance_not_before = now;
        }
        self.try_complete_join(now)
    }

    /// Completes the rebalance in progress if every member has rejoined (and
    /// the initial delay has passed) or its deadline has come. Returns the
    /// value to persist when the group became empty.
    pub fn try_complete_join(&mut self, now: Instant) -> Option<GroupValue> {
        if self.state != GroupState::PreparingRebalance {
            return None;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if !(all_joined && now >= self.rebalance_not_before) && now < self.rebalance_deadline {
            return None;
        }
        let late: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in late {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time");
            self.remove_member(&id);
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return Some(self.to_value());
        }
        self.protocol = self.choose_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        if self.protocol_type.is_none() {
            self.protocol_type = Some("consumer".into());
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let resp = self.join_response(&id);
            let m = self.members.get_mut(&id).expect("listed above");
            m.last_heartbeat = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.try_send(resp);
            }
        }
        None
    }

    /// The protocol every member supports that most members prefer.
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: Vec<(usize, usize, &String)> = candidates
            .iter()
            .enumerate()
            .map(|(order, c)| {
                let v = self
                    .members
                    .values()
                    .filter(|m| {
                        m.protocols
                            .iter()
                            .find(|(n, _)| candidates.contains(&n))
                            .map(|(n, _)| n)
                            == Some(*c)
                    })
                    .count();
                (v, usize::MAX - order, *c)
            })
            .collect();
        votes.sort();
        votes.last().map(|(_, _, c)| (*c).clone())
    }

    /// The JoinGroup answer of the current generation for `member_id`: the
    /// leader gets every member's subscription.
    pub fn join_response(&self, member_id: &str) -> JoinGroupResponse {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinGroupResponse {
            error: ErrorCode::None,
            generation_id: self.generation,
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinGroupMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata(self.protocol.as_deref()),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The leader's assignment is stored: the group is stable; every parked
    /// SyncGroup gets its member's part.
    pub fn complete_sync(&mut self) {
        self.state = GroupState::Stable;
        let protocol = self.protocol.clone();
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync_waiter.take() {
                let _ = tx.try_send(SyncGroupResponse {
                    error: ErrorCode::None,
                    protocol_name: protocol.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
    }

    /// The membership as persisted.
    pub fn to_value(&self) -> GroupValue {
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    metadata: m.metadata(self.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Takes the membership read back from `__consumer_offsets` at `now`.
    pub fn load_value(&mut self, v: GroupValue, now: Instant) {
        self.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        self.generation = v.generation;
        self.protocol = v.protocol;
        self.leader = v.leader;
        self.members.clear();
        self.instances.clear();
        for m in v.members {
            if let Some(i) = &m.instance_id {
                self.instances.insert(i.clone(), m.member_id.clone());
            }
            let protocols = self
                .protocol
                .clone()
                .map(|p| vec![(p, m.metadata.clone())])
                .unwrap_or_default();
            self.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocols,
                    assignment: m.assignment,
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
    }

    /// After a load: members get a fresh session to come back in.
    pub fn restore(&mut self, now: Instant) {
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        for m in self.members.values_mut() {
            m.last_heartbeat = now;
        }
    }

    pub fn describe(&self) -> DescribedGroup {
        DescribedGroup {
            error: ErrorCode::None,
            group_id: self.id.clone(),
            state: self.state.name().to_string(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            generation_id: self.generation,
            members: self
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(self.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use glommio::channels::local_channel::{self, LocalReceiver};

    fn settings() -> GroupSettings {
        GroupSettings {
            min_session_timeout: Duration::from_secs(1),
            max_session_timeout: Duration::from_secs(300),
            initial_rebalance_delay: Duration::from_millis(300),
            max_group_size: 1000,
        }
    }

    fn member(id: &str, session: Duration, rebalance: Duration, now: Instant) -> Member {
        Member {
            id: id.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocols: vec![("range".into(), Bytes::from(format!("{id}-subscription")))],
            assignment: Bytes::new(),
            last_heartbeat: now,
            join_waiter: None,
            sync_waiter: None,
        }
    }

    /// A stable group of generation 1 with members `ids`, led by the first.
    fn stable(clock: &ManualClock, ids: &[&str], session: Duration, rebalance: Duration) -> Group {
        let mut g = Group::new("g".into(), clock.now());
        for id in ids {
            g.members
                .insert(id.to_string(), member(id, session, rebalance, clock.now()));
        }
        g.state = GroupState::Stable;
        g.generation = 1;
        g.protocol_type = Some("consumer".into());
        g.protocol = Some("range".into());
        g.leader = Some(ids[0].to_string());
        g
    }

    /// Parks a JoinGroup for `id`, as a member that rejoined.
    fn rejoin(g: &mut Group, id: &str) -> LocalReceiver<JoinGroupResponse> {
        let (tx, rx) = local_channel::new_bounded(1);
        g.members.get_mut(id).expect("a member").join_waiter = Some(tx);
        rx
    }

    #[test]
    fn a_missed_session_removes_the_member_and_starts_a_rebalance() {
        let clock = ManualClock::new(1_000);
        let s = settings();
        let secs = Duration::from_secs;
        let mut g = stable(&clock, &["a", "b"], secs(10), secs(30));
        clock.advance(secs(5));
        g.members.get_mut("a").unwrap().last_heartbeat = clock.now();
        clock.advance(secs(5));
        // b's session (10 s) has not passed yet: nothing happens.
        assert!(g.tick(clock.now(), &s).is_none());
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.members.len(), 2);
        clock.advance(Duration::from_millis(1));
        assert!(g.tick(clock.now(), &s).is_none());
        assert!(!g.members.contains_key("b"), "b missed its session");
        assert!(g.members.contains_key("a"));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.rebalance_deadline, clock.now() + secs(30));
        assert_eq!(g.generation, 1);
        // a never rejoins: its session runs out too, and the group, empty,
        // completes its rebalance at once and is persisted as empty.
        clock.advance(secs(4));
        assert!(g.tick(clock.now(), &s).is_none());
        assert!(g.members.contains_key("a"));
        clock.advance(secs(1));
        let persisted = g.tick(clock.now(), &s).expect("an empty group is persisted");
        assert!(g.members.is_empty());
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert!(persisted.members.is_empty());
        assert_eq!(persisted.generation, 2);
    }

    #[test]
    fn a_member_waiting_in_join_does_not_expire() {
        let clock = ManualClock::new(0);
        let secs = Duration::from_secs;
        let mut g = stable(&clock, &["a"], secs(10), secs(60));
        g.prepare_rebalance(clock.now(), &settings());
        let _waiting = rejoin(&mut g, "a");
        clock.advance(secs(11));
        // Every member has rejoined: the rebalance completes; no expiry.
        assert!(g.tick(clock.now(), &settings()).is_none());
        assert!(g.members.contains_key("a"));
        assert_eq!(g.state, GroupState::CompletingRebalance);
    }

    #[test]
    fn a_member_waiting_in_sync_does_not_expire() {
        let clock = ManualClock::new(0);
        let secs = Duration::from_secs;
        let mut g = stable(&clock, &["a", "b"], secs(2), secs(10));
        g.state = GroupState::CompletingRebalance;
        let (tx, _rx) = local_channel::new_bounded(1);
        g.members.get_mut("b").expect("b").sync_waiter = Some(tx);
        g.members.get_mut("a").expect("a").last_heartbeat = clock.now() + secs(2);
        clock.advance(secs(3));
        // b waits for the leader's assignment, past its session: kept.
        assert!(g.tick(clock.now(), &settings()).is_none());
        assert!(g.members.contains_key("b"), "b is waiting in SyncGroup");
        assert_eq!(g.state, GroupState::CompletingRebalance);
        // The leader, not waiting, does expire; b's SyncGroup is answered.
        clock.advance(secs(2));
        g.tick(clock.now(), &settings());
        assert!(!g.members.contains_key("a"));
        assert!(g.members.contains_key("b"));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(g.members["b"].sync_waiter.is_none(), "told to rejoin");
    }

    #[test]
    fn the_rebalance_timeout_drops_members_that_did_not_rejoin() {
        let clock = ManualClock::new(0);
        let s = settings();
        let secs = Duration::from_secs;
        let mut g = stable(&clock, &["a", "b"], secs(60), secs(20));
        // a rejoins (say, with a new subscription): every member must rejoin.
        g.prepare_rebalance(clock.now(), &s);
        let a = rejoin(&mut g, "a");
        assert!(g.try_complete_join(clock.now()).is_none());
        assert_eq!(g.state, GroupState::PreparingRebalance);
        clock.advance(secs(10));
        assert!(g.tick(clock.now(), &s).is_none());
        assert_eq!(g.state, GroupState::PreparingRebalance, "b still has time");
        assert_eq!(g.members.len(), 2);
        clock.advance(secs(10));
        assert!(g.tick(clock.now(), &s).is_none());
        assert!(!g.members.contains_key("b"), "b did not rejoin in time");
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.generation, 2);
        assert_eq!(g.leader.as_deref(), Some("a"));
        let resp = futures_lite::future::block_on(a.recv()).expect("a's join is answered");
        assert_eq!(resp.error, ErrorCode::None);
        assert_eq!(resp.generation_id, 2);
        assert_eq!(resp.leader, "a");
        let members: Vec<&str> = resp.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(members, ["a"], "the leader gets the subscriptions");
        assert_eq!(resp.members[0].metadata, Bytes::from("a-subscription"));
    }

    #[test]
    fn a_new_group_waits_out_the_initial_delay() {
        let clock = ManualClock::new(0);
        let s = settings();
        let mut g = Group::new("g".into(), clock.now());
        g.members.insert(
            "a".into(),
            member("a", Duration::from_secs(10), Duration::from_secs(10), clock.now()),
        );
        g.prepare_rebalance(clock.now(), &s);
        let _a = rejoin(&mut g, "a");
        clock.advance(Duration::from_millis(299));
        assert!(g.tick(clock.now(), &s).is_none());
        assert_eq!(g.state, GroupState::PreparingRebalance, "more members may come");
        clock.advance(Duration::from_millis(1));
        assert!(g.tick(clock.now(), &s).is_none());
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.generation, 1);
        assert_eq!(g.protocol.as_deref(), Some("range"));
    }
}
