//! One partition replica's replication state, as a pure state machine: the
//! leader's view of its followers, the high watermark, the ISR changes it
//! asks the controller for, and a follower's truncation point.
//!
//! Inputs: the partition's state from the committed metadata image, the
//! log end offsets the shard reads off its log, follower fetches, and the
//! time in milliseconds. Outputs: whether the high watermark moved, and ISR
//! changes to send to the controller. No I/O, no clock; the broker's shard
//! drives it, and so can the simulator.
//!
//! Rules (Kafka's, KIP-101, KIP-207, KIP-497; see docs/ARCHITECTURE.md):
//! - The high watermark is the smallest log end offset over the leader and
//!   the ISR members (the committed ISR, plus a member whose addition is
//!   pending), counted only while the committed ISR has at least
//!   `min_isr` members; it never goes down while this replica leads.
//! - A follower is caught up at a fetch that reaches the leader's log end,
//!   or that reaches where the log end was at its previous fetch (then it
//!   was caught up at that previous fetch's time). An ISR member not caught
//!   up for `lag_max_ms` is proposed for removal; a replica outside the ISR
//!   whose fetch reaches both the high watermark and the start of the
//!   leader's epoch is proposed for addition. One change is in flight at a
//!   time, and the controller's answer arrives as a new image.
//! - A fetch names the leader epoch the follower believes current: an older
//!   one is fenced, a newer one unknown (this replica has not seen that
//!   image yet).

use std::collections::BTreeMap;

use borges_net::protocol::ErrorCode;

use crate::image::PartitionState;
use crate::NodeId;

/// What a replica does for its partition now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: NodeId,
    },
    /// No leader, or this broker is not a replica.
    Offline,
}

/// What applying an image changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing this replica acts on.
    Unchanged,
    /// Same leader and epoch; the ISR or partition epoch moved.
    IsrChanged,
    BecameLeader,
    /// A new leader or a new epoch: truncate by epoch before fetching.
    BecameFollower {
        leader: NodeId,
    },
    WentOffline,
}

/// The leader's knowledge of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The offset of its last fetch (it holds everything below); `None`
    /// until it fetches from this leader.
    leo: Option<u64>,
    last_caught_up_ms: u64,
    last_fetch_ms: u64,
    /// The leader's log end at that fetch.
    leader_leo_at_last_fetch: u64,
}

/// An ISR change sent to the controller and not yet seen in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    pub isr: Vec<NodeId>,
    pub sent_ms: u64,
    /// The partition epoch it was asked against.
    pub partition_epoch: i32,
}

/// An ISR change to ask the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// The settings a replica follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `replica.lag.time.max.ms`.
    pub lag_max_ms: u64,
    /// `min.insync.replicas`.
    pub min_isr: usize,
}

/// How long a proposal may stay unanswered before it is asked again.
pub const PENDING_RETRY_MS: u64 = 5_000;

/// One replica's replication state.
#[derive(Debug, Clone)]
pub struct Replica {
    me: NodeId,
    role: Role,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<NodeId>,
    isr: Vec<NodeId>,
    pending: Option<PendingIsr>,
    /// Replicas of additions whose outcome is unknown (the controller's
    /// answer was lost or ambiguous): the change may yet commit, so they
    /// count for the high watermark until an image with a newer partition
    /// epoch says what the ISR is.
    maybe_added: Vec<NodeId>,
    followers: BTreeMap<NodeId, Progress>,
    hw: u64,
    /// The log end when this replica became leader of its epoch.
    epoch_start: u64,
    config: ReplicaConfig,
}

impl Replica {
    /// A replica that has not seen an image yet, with the high watermark
    /// its log checkpointed.
    pub fn new(me: NodeId, hw: u64, config: ReplicaConfig) -> Replica {
        Replica {
            me,
            role: Role::Offline,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            pending: None,
            maybe_added: Vec::new(),
            followers: BTreeMap::new(),
            hw,
            epoch_start: 0,
            config,
        }
    }

    /// A partition no image places (a single node's): this broker leads
    /// it alone, at epoch 0.
    pub fn solo(me: NodeId, hw: u64, leo: u64, config: ReplicaConfig) -> Replica {
        let mut r = Replica::new(me, hw, config);
        let state = PartitionState {
            replicas: vec![me],
            isr: vec![me],
            leader: me,
            leader_epoch: crate::LeaderEpoch(0),
            partition_epoch: crate::PartitionEpoch(0),
        };
        r.apply(&state, leo, 0);
        r
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> u64 {
        self.hw
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    pub fn pending(&self) -> Option<&PendingIsr> {
        self.pending.as_ref()
    }

    pub fn epoch_start(&self) -> u64 {
        self.epoch_start
    }

    pub fn config(&self) -> ReplicaConfig {
        self.config
    }

    pub fn set_config(&mut self, config: ReplicaConfig) {
        self.config = config;
    }

    /// The last known log end offset of `node` (a follower), as its leader knows it.
    pub fn follower_leo(&self, node: NodeId) -> Option<u64> {
        self.followers.get(&node).and_then(|p| p.leo)
    }

    /// Follows the partition's state in a committed image. `leo` is the
    /// log end offset now.
    pub fn apply(&mut self, st: &PartitionState, leo: u64, now_ms: u64) -> Transition {
        if st.leader_epoch.0 < self.leader_epoch
            || (st.leader_epoch.0 == self.leader_epoch && st.partition_epoch.0 < self.partition_epoch)
        {
            // Images only go forward; an older state is no news.
            return Transition::Unchanged;
        }
        let new_epoch = st.leader_epoch.0 != self.leader_epoch;
        let was = self.role;
        self.leader_epoch = st.leader_epoch.0;
        self.replicas = st.replicas.clone();
        let isr_changed = self.isr != st.isr || self.partition_epoch != st.partition_epoch.0;
        self.isr = st.isr.clone();
        if self
            .pending
            .as_ref()
            .is_some_and(|p| st.partition_epoch.0 > p.partition_epoch)
            || new_epoch
        {
            // The controller decided (this change or another): whatever is
            // still needed is proposed again against the new state.
            self.pending = None;
        }
        if st.partition_epoch.0 > self.partition_epoch || new_epoch {
            // The image says what the ISR is: no change asked against an
            // older partition epoch can commit any more.
            self.maybe_added.clear();
        }
        self.partition_epoch = st.partition_epoch.0;
        let role = if !st.replicas.contains(&self.me) || !st.has_leader() {
            Role::Offline
        } else if st.leader == self.me {
            Role::Leader
        } else {
            Role::Follower { leader: st.leader }
        };
        self.role = role;
        match role {
            Role::Leader if new_epoch || was != Role::Leader => {
                self.epoch_start = leo;
                self.followers = self
                    .replicas
                    .iter()
                    .filter(|&&n| n != self.me)
                    .map(|&n| {
                        // Members are given a full lag window to show they
                        // keep up with the new leader.
                        let caught = if self.isr.contains(&n) { now_ms } else { 0 };
                        (
                            n,
                            Progress {
                                leo: None,
                                last_caught_up_ms: caught,
                                last_fetch_ms: 0,
                                leader_leo_at_last_fetch: 0,
                            },
                        )
                    })
                    .collect();
                self.hw = self.hw.min(leo);
                Transition::BecameLeader
            }
            Role::Leader => {
                // Replicas added by a reassignment (or placed at last, for
                // a partition led alone until now) get a progress entry;
                // ISR members a full lag window, as on becoming leader.
                for &n in &self.replicas {
                    if n != self.me {
                        let caught = if self.isr.contains(&n) { now_ms } else { 0 };
                        self.followers.entry(n).or_insert(Progress {
                            leo: None,
                            last_caught_up_ms: caught,
                            last_fetch_ms: 0,
                            leader_leo_at_last_fetch: 0,
                        });
                    }
                }
                let replicas = &self.replicas;
                self.followers.retain(|n, _| replicas.contains(n));
                if isr_changed {
                    Transition::IsrChanged
                } else {
                    Transition::Unchanged
                }
            }
            Role::Follower { leader } => {
                self.followers.clear();
                if new_epoch || was != role {
                    Transition::BecameFollower { leader }
                } else if isr_changed {
                    Transition::IsrChanged
                } else {
                    Transition::Unchanged
                }
            }
            Role::Offline => {
                self.followers.clear();
                if was != Role::Offline {
                    Transition::WentOffline
                } else {
                    Transition::Unchanged
                }
            }
        }
    }

    /// The members the high watermark waits for: the committed ISR and any
    /// replica whose addition is pending (KIP-497).
    fn hw_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let added = self
            .pending
            .iter()
            .flat_map(|p| p.isr.iter().copied())
            .chain(self.maybe_added.iter().copied())
            .filter(|n| !self.isr.contains(n));
        self.isr.iter().copied().chain(added)
    }

    /// Moves the high watermark as far as the ISR allows, with the leader's
    /// own end at `leader_end` (its log end, or what of it is durable where
    /// acknowledgements promise durability). Returns whether it moved.
    pub fn advance_hw(&mut self, leader_end: u64) -> bool {
        // A topic whose min.insync.replicas exceeds its replicas refuses
        // acks=all, but its high watermark still moves with a full ISR.
        let needed = self.config.min_isr.clamp(1, self.replicas.len().max(1));
        if self.role != Role::Leader || self.isr.len() < needed {
            return false;
        }
        let mut candidate = leader_end;
        for n in self.hw_members() {
            if n == self.me {
                continue;
            }
            match self.followers.get(&n).and_then(|p| p.leo) {
                Some(leo) => candidate = candidate.min(leo),
                None => return false,
            }
        }
        if candidate > self.hw {
            self.hw = candidate;
            true
        } else {
            false
        }
    }

    /// Whether `node` may fetch this partition from this replica as a
    /// follower under `leader_epoch`.
    pub fn check_fetch(&self, node: NodeId, leader_epoch: i32) -> Result<(), ErrorCode> {
        self.check_epoch(leader_epoch)?;
        if node == self.me || !self.replicas.contains(&node) {
            return Err(ErrorCode::ReplicaNotAvailable);
        }
        Ok(())
    }

    /// Whether this replica leads under `leader_epoch`.
    pub fn check_epoch(&self, leader_epoch: i32) -> Result<(), ErrorCode> {
        if self.role != Role::Leader {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        match leader_epoch.cmp(&self.leader_epoch) {
            std::cmp::Ordering::Less => Err(ErrorCode::FencedLeaderEpoch),
            std::cmp::Ordering::Greater => Err(ErrorCode::UnknownLeaderEpoch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// A follower fetched from `fetch_offset` (checked with
    /// [`Replica::check_fetch`]); the leader's log ends at `leader_leo`, of
    /// which `leader_end` counts for the high watermark. Returns whether
    /// the high watermark moved, and an ISR addition to propose: only for
    /// an `eligible` follower (registered, unfenced, not shutting down, as
    /// the image has it: KIP-903), which the controller would refuse
    /// otherwise.
    pub fn on_follower_fetch(
        &mut self,
        node: NodeId,
        fetch_offset: u64,
        leader_leo: u64,
        leader_end: u64,
        now_ms: u64,
        eligible: bool,
    ) -> (bool, Option<IsrProposal>) {
        let Some(p) = self.followers.get_mut(&node) else {
            return (false, None);
        };
        debug_assert!(
            fetch_offset <= leader_leo,
            "a follower fetched past the leader's log end"
        );
        if fetch_offset >= leader_leo {
            p.last_caught_up_ms = now_ms;
        } else if fetch_offset >= p.leader_leo_at_last_fetch {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.last_fetch_ms = now_ms;
        p.leader_leo_at_last_fetch = leader_leo;
        p.leo = Some(fetch_offset);
        let moved = self.advance_hw(leader_end);
        let join = eligible
            && !self.isr.contains(&node)
            && self.pending.is_none()
            && fetch_offset >= self.hw
            && fetch_offset >= self.epoch_start;
        let proposal = join.then(|| {
            let isr: Vec<NodeId> = self
                .replicas
                .iter()
                .copied()
                .filter(|n| self.isr.contains(n) || *n == node)
                .collect();
            self.proposal(isr)
        });
        (moved, proposal)
    }

    fn proposal(&self, isr: Vec<NodeId>) -> IsrProposal {
        IsrProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        }
    }

    /// The ISR members that have not caught up for `lag_max_ms`, as a
    /// removal to propose; `None` when all keep up or a change is pending
    /// (a pending change unanswered for [`PENDING_RETRY_MS`] is forgotten,
    /// so that it is proposed again).
    pub fn shrink_check(&mut self, now_ms: u64) -> Option<IsrProposal> {
        if self.role != Role::Leader {
            return None;
        }
        if let Some(p) = &self.pending {
            if now_ms.saturating_sub(p.sent_ms) < PENDING_RETRY_MS {
                return None;
            }
            // Unanswered: it may still commit.
            self.proposal_failed(false);
        }
        let lagging = |n: &NodeId| {
            *n != self.me
                && self
                    .followers
                    .get(n)
                    .is_none_or(|p| now_ms.saturating_sub(p.last_caught_up_ms) > self.config.lag_max_ms)
        };
        if !self.isr.iter().any(lagging) {
            return None;
        }
        let isr: Vec<NodeId> = self.isr.iter().copied().filter(|n| !lagging(n)).collect();
        debug_assert!(isr.contains(&self.me), "a leader never removes itself");
        Some(self.proposal(isr))
    }

    /// A proposal was sent to the controller.
    pub fn proposed(&mut self, p: &IsrProposal, now_ms: u64) {
        self.pending = Some(PendingIsr {
            isr: p.isr.clone(),
            sent_ms: now_ms,
            partition_epoch: p.partition_epoch,
        });
    }

    /// The change was not seen to commit, and may be proposed again.
    /// `definite`: the controller refused it, so it cannot commit; else
    /// (a lost or ambiguous answer) the replicas it added keep counting for
    /// the high watermark until an image settles the ISR.
    pub fn proposal_failed(&mut self, definite: bool) {
        if let Some(p) = self.pending.take() {
            if !definite {
                for n in p.isr {
                    if !self.isr.contains(&n) && !self.maybe_added.contains(&n) {
                        self.maybe_added.push(n);
                    }
                }
            }
        }
    }

    /// Whether an acks=all write may be appended: the committed ISR has at
    /// least `min_isr` members.
    pub fn enough_replicas(&self) -> bool {
        self.isr.len() >= self.config.min_isr.max(1)
    }

    /// Whether the latest offset may be listed (KIP-207): a new leader's
    /// high watermark has reached the start of its epoch.
    pub fn latest_offset_available(&self) -> bool {
        self.role == Role::Leader && self.hw >= self.epoch_start
    }

    /// A follower's high watermark after a fetch: the leader's, as far as
    /// its own log reaches.
    pub fn follower_fetched(&mut self, leader_hw: u64, leo: u64) {
        if matches!(self.role, Role::Follower { .. }) {
            self.hw = self.hw.max(leader_hw.min(leo));
        }
    }

    /// The log was truncated to `leo` (a truncation that began while this
    /// replica followed may end after it leads).
    pub fn truncated(&mut self, leo: u64) {
        self.hw = self.hw.min(leo);
        self.epoch_start = self.epoch_start.min(leo);
    }

    /// A follower's append of the previous leader's records ended at `end`,
    /// and may have finished after this replica became leader: its epoch
    /// starts after them.
    pub fn appended_as_follower(&mut self, end: u64) {
        if self.role == Role::Leader {
            self.epoch_start = self.epoch_start.max(end);
        }
    }
}

/// Where a follower truncates its log after asking its leader for the end
/// of its latest epoch (KIP-101, KIP-279).
///
/// `leader` is the answer: the largest epoch of the leader's log at or
/// below the one asked and where it ends (`-1, -1` when the leader has
/// none). `own_end` is the follower's own answer for that same epoch
/// (`LeaderEpochCache::end_offset_for`); `own_first` is where its history
/// starts. Truncating more than needed is safe (the records are fetched
/// again); less never is: a record above the result may differ from the
/// leader's.
pub fn truncation_point(
    leader: (i32, i64),
    own_end: Option<(i32, u64)>,
    own_first: u64,
    own_leo: u64,
    own_hw: u64,
) -> u64 {
    let (epoch, end) = leader;
    if epoch < 0 {
        // The leader knows no epoch this far back: only what was committed
        // (below the follower's high watermark) is known to be shared, and
        // never past the leader's end (`end`, when it gave one).
        let target = own_hw.min(own_leo);
        return if end >= 0 { target.min(end as u64) } else { target };
    }
    let end = end as u64;
    let target = match own_end {
        // The follower has the epoch (or an older one): its records of it
        // match the leader's as far as both go.
        Some((_, own)) => own.min(end),
        // Every epoch the follower has is newer than any the leader has at
        // or below the one asked: none of it is the leader's.
        None => own_first.min(end),
    };
    target.min(own_leo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LeaderEpoch, PartitionEpoch};

    const CFG: ReplicaConfig = ReplicaConfig {
        lag_max_ms: 30_000,
        min_isr: 2,
    };

    fn n(i: i32) -> NodeId {
        NodeId(i)
    }

    fn state(leader: i32, isr: &[i32], le: i32, pe: i32) -> PartitionState {
        PartitionState {
            replicas: vec![n(1), n(2), n(3)],
            isr: isr.iter().map(|&i| n(i)).collect(),
            leader: n(leader),
            leader_epoch: LeaderEpoch(le),
            partition_epoch: PartitionEpoch(pe),
        }
    }

    fn leader() -> Replica {
        let mut r = Replica::new(n(1), 0, CFG);
        assert_eq!(
            r.apply(&state(1, &[1, 2, 3], 0, 0), 0, 0),
            Transition::BecameLeader
        );
        r
    }

    #[test]
    fn the_high_watermark_is_the_smallest_isr_log_end() {
        let mut r = leader();
        // The leader alone has records: nothing is committed.
        assert!(!r.advance_hw(10));
        let (moved, _) = r.on_follower_fetch(n(2), 10, 10, 10, 1, true);
        assert!(!moved, "member 3 has not fetched");
        let (moved, _) = r.on_follower_fetch(n(3), 4, 10, 10, 1, true);
        assert!(moved);
        assert_eq!(r.high_watermark(), 4);
        // A slower fetch never moves it back.
        r.on_follower_fetch(n(3), 2, 10, 10, 2, true);
        assert_eq!(r.high_watermark(), 4);
        r.on_follower_fetch(n(3), 10, 10, 10, 3, true);
        assert_eq!(r.high_watermark(), 10);
        // The leader's own durable end bounds it.
        r.on_follower_fetch(n(2), 12, 12, 11, 4, true);
        r.on_follower_fetch(n(3), 12, 12, 11, 4, true);
        assert_eq!(r.high_watermark(), 11);
    }

    #[test]
    fn the_high_watermark_waits_while_the_isr_is_below_min_isr() {
        let mut r = Replica::new(n(1), 0, CFG);
        r.apply(&state(1, &[1], 0, 0), 0, 0);
        assert!(!r.enough_replicas());
        assert!(
            !r.advance_hw(5),
            "an ISR of 1 under min.insync.replicas 2 commits nothing"
        );
        r.apply(&state(1, &[1, 2], 0, 1), 5, 0);
        r.on_follower_fetch(n(2), 5, 5, 5, 1, true);
        assert_eq!(r.high_watermark(), 5);
        assert!(r.enough_replicas());
    }

    #[test]
    fn lagging_members_are_proposed_for_removal_and_caught_up_ones_for_addition() {
        let mut r = leader();
        r.on_follower_fetch(n(2), 0, 0, 0, 1_000, true);
        r.on_follower_fetch(n(3), 0, 0, 0, 1_000, true);
        assert_eq!(r.shrink_check(20_000), None);
        // Node 2 keeps fetching the leader's end; node 3 stops.
        r.on_follower_fetch(n(2), 0, 5, 5, 29_000, true);
        r.on_follower_fetch(n(2), 5, 5, 5, 31_500, true);
        let p = r.shrink_check(31_500).expect("node 3 lags");
        assert_eq!(p.isr, vec![n(1), n(2)]);
        r.proposed(&p, 31_500);
        assert_eq!(r.shrink_check(32_000), None, "one change in flight");
        // While the shrink is pending the HW still counts the committed ISR.
        r.on_follower_fetch(n(2), 9, 9, 9, 32_000, true);
        assert_eq!(r.high_watermark(), 0);
        // The controller commits it.
        assert_eq!(
            r.apply(&state(1, &[1, 2], 0, 1), 9, 32_100),
            Transition::IsrChanged
        );
        assert!(r.pending().is_none());
        r.on_follower_fetch(n(2), 9, 9, 9, 32_200, true);
        assert_eq!(r.high_watermark(), 9);
        // Node 3 returns: behind the HW it does not join; at it, it does.
        let (_, join) = r.on_follower_fetch(n(3), 5, 9, 9, 33_000, true);
        assert_eq!(join, None);
        let (_, join) = r.on_follower_fetch(n(3), 9, 9, 9, 33_100, true);
        let join = join.expect("caught up");
        assert_eq!(join.isr, vec![n(1), n(2), n(3)]);
        assert_eq!(join.partition_epoch, 1);
        r.proposed(&join, 33_100);
        // While the expansion is pending the HW waits for the new member too.
        r.on_follower_fetch(n(2), 12, 12, 12, 33_200, true);
        assert_eq!(r.high_watermark(), 9);
        r.on_follower_fetch(n(3), 12, 12, 12, 33_300, true);
        assert_eq!(r.high_watermark(), 12);
    }

    #[test]
    fn an_addition_whose_outcome_is_unknown_keeps_counting() {
        let mut r = Replica::new(n(1), 0, CFG);
        r.apply(&state(1, &[1, 2], 0, 0), 0, 0);
        r.on_follower_fetch(n(2), 0, 0, 0, 1, true);
        let (_, join) = r.on_follower_fetch(n(3), 0, 0, 0, 2, true);
        let join = join.expect("caught up");
        r.proposed(&join, 2);
        // The answer is lost: node 3 still counts, so the high watermark
        // does not pass what it holds.
        r.proposal_failed(false);
        r.on_follower_fetch(n(2), 10, 10, 10, 3, true);
        assert_eq!(r.high_watermark(), 0, "node 3 may be in the ISR");
        r.on_follower_fetch(n(3), 10, 10, 10, 4, true);
        assert_eq!(r.high_watermark(), 10);
        // Unanswered past the retry time: the same.
        let mut q = Replica::new(n(1), 0, CFG);
        q.apply(&state(1, &[1, 2], 0, 0), 0, 0);
        q.on_follower_fetch(n(2), 0, 0, 0, 1, true);
        let (_, join) = q.on_follower_fetch(n(3), 0, 0, 0, 2, true);
        q.proposed(&join.unwrap(), 2);
        q.shrink_check(2 + PENDING_RETRY_MS);
        assert!(q.pending().is_none());
        q.on_follower_fetch(n(2), 10, 10, 10, 3 + PENDING_RETRY_MS, true);
        assert_eq!(q.high_watermark(), 0);
        // An image settles it: the ISR without node 3.
        q.apply(&state(1, &[1, 2], 0, 1), 10, 4 + PENDING_RETRY_MS);
        q.on_follower_fetch(n(2), 10, 10, 10, 5 + PENDING_RETRY_MS, true);
        assert_eq!(q.high_watermark(), 10);
        // A definite refusal stops counting at once.
        let mut d = Replica::new(n(1), 0, CFG);
        d.apply(&state(1, &[1, 2], 0, 0), 0, 0);
        let (_, join) = d.on_follower_fetch(n(3), 0, 0, 0, 2, true);
        d.proposed(&join.unwrap(), 2);
        d.proposal_failed(true);
        d.on_follower_fetch(n(2), 10, 10, 10, 3, true);
        assert_eq!(d.high_watermark(), 10);
    }

    #[test]
    fn a_replication_factor_below_min_isr_still_commits_with_a_full_isr() {
        let mut r = Replica::new(
            n(1),
            0,
            ReplicaConfig {
                lag_max_ms: 30_000,
                min_isr: 3,
            },
        );
        let one = PartitionState {
            replicas: vec![n(1)],
            isr: vec![n(1)],
            leader: n(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        };
        r.apply(&one, 0, 0);
        assert!(!r.enough_replicas(), "acks=all is refused");
        assert!(r.advance_hw(4), "but what is appended becomes visible");
    }

    #[test]
    fn a_new_leader_joins_no_replica_before_its_epoch_start() {
        let mut r = Replica::new(n(1), 3, CFG);
        r.apply(&state(2, &[1, 2, 3], 0, 0), 8, 0);
        assert_eq!(r.apply(&state(1, &[1, 2], 1, 1), 8, 10), Transition::BecameLeader);
        assert_eq!(r.epoch_start(), 8);
        assert!(
            !r.latest_offset_available(),
            "KIP-207: HW 3 is below the epoch start 8"
        );
        let (_, join) = r.on_follower_fetch(n(3), 3, 8, 8, 20, true);
        assert_eq!(join, None, "at the HW but below the epoch start");
        r.on_follower_fetch(n(2), 8, 8, 8, 30, true);
        assert!(r.latest_offset_available());
        let (_, join) = r.on_follower_fetch(n(3), 8, 8, 8, 40, false);
        assert_eq!(join, None, "a fenced follower is not proposed");
        let (_, join) = r.on_follower_fetch(n(3), 8, 8, 8, 41, true);
        assert!(join.is_some());
    }

    #[test]
    fn fetches_are_fenced_by_epoch_and_replica_set() {
        let mut r = leader();
        r.apply(&state(1, &[1, 2, 3], 3, 4), 0, 0);
        assert_eq!(r.check_fetch(n(2), 3), Ok(()));
        assert_eq!(r.check_fetch(n(2), 2), Err(ErrorCode::FencedLeaderEpoch));
        assert_eq!(r.check_fetch(n(2), 4), Err(ErrorCode::UnknownLeaderEpoch));
        assert_eq!(r.check_fetch(n(7), 3), Err(ErrorCode::ReplicaNotAvailable));
        assert_eq!(r.check_fetch(n(1), 3), Err(ErrorCode::ReplicaNotAvailable));
        assert_eq!(
            r.apply(&state(2, &[2, 3], 4, 5), 0, 0),
            Transition::BecameFollower { leader: n(2) }
        );
        assert_eq!(r.check_fetch(n(3), 4), Err(ErrorCode::NotLeaderOrFollower));
        // An older image changes nothing.
        assert_eq!(r.apply(&state(1, &[1, 2, 3], 3, 4), 0, 0), Transition::Unchanged);
        assert_eq!(r.role(), Role::Follower { leader: n(2) });
    }

    #[test]
    fn a_solo_partition_commits_its_own_appends() {
        let mut r = Replica::solo(
            n(1),
            0,
            0,
            ReplicaConfig {
                lag_max_ms: 30_000,
                min_isr: 1,
            },
        );
        assert!(r.advance_hw(7));
        assert_eq!(r.high_watermark(), 7);
        assert!(r.latest_offset_available());
    }

    /// Kafka's divergence cases (KIP-101, KIP-279): the follower asks for
    /// the end of its latest epoch; the answer and its own history give
    /// the truncation point.
    #[test]
    fn truncation_covers_every_divergence_case() {
        // Same epoch, follower shorter: nothing to cut.
        assert_eq!(truncation_point((3, 100), Some((3, 80)), 0, 80, 70), 80);
        // Same epoch, follower longer: cut to the leader's end.
        assert_eq!(truncation_point((3, 100), Some((3, 120)), 0, 120, 90), 100);
        // The follower's latest epoch 4 is unknown to the leader, whose
        // epoch 3 ends at 90; the follower's epoch 3 ended at 95 (then 4).
        assert_eq!(truncation_point((3, 90), Some((3, 95)), 0, 130, 80), 90);
        // The leader's answer is older than anything... the follower has
        // epoch 1 ending at 40, the leader's epoch 2 ends at 60.
        assert_eq!(truncation_point((2, 60), Some((1, 40)), 0, 70, 30), 40);
        // Every epoch of the follower is newer than the leader's answer.
        assert_eq!(truncation_point((1, 50), None, 20, 70, 10), 20);
        // The leader has no epochs: keep only what was committed, and no
        // more than the leader has.
        assert_eq!(truncation_point((-1, -1), Some((5, 70)), 0, 70, 33), 33);
        assert_eq!(truncation_point((-1, 20), Some((5, 70)), 0, 70, 33), 20);
        // Never past the follower's own end.
        assert_eq!(truncation_point((3, 100), Some((3, 100)), 0, 60, 60), 60);
    }
}
