//! The metadata quorum: tikv's Raft (`RawNode`) carrying the metadata log,
//! with the controller state machine on top, as one pure state machine.
//!
//! Inputs: `tick(now_ms)`, `step(bytes from a peer)`, `persisted(ready)`
//! (a write the caller made durable), and controller requests through
//! `decide`. Outputs, taken with `take_output`: messages to send (each to
//! one voter), writes to make durable in order, and the log index applied.
//! No I/O, no clock, no sockets: shard 0's loop is the adapter in the
//! broker, and the simulator drives this very code.
//!
//! Raft runs with `pre_vote` and `check_quorum`, so a voter returning from
//! a partition does not depose a healthy leader. The voters are fixed by
//! configuration (`--controllers`); no membership change travels.
//!
//! The controller becomes active when this node is the Raft leader and has
//! applied every entry up to the first of its term (so its image holds all
//! that earlier leaders committed); it becomes inactive the moment the node
//! stops leading or the term moves on, dropping what was not committed.
//! A proposal Raft drops (past `uncommitted_bytes_max`) also makes it
//! inactive, until every entry up to the log's end then is applied: its
//! earlier proposals of the term are still in the log.
//!
//! A leader sends a lagging voter a snapshot and then nothing more until
//! the voter acknowledges it; a snapshot not acknowledged within
//! `snapshot_ack_ticks` (lost, or refused) is sent again, and at once when
//! the caller reports the send failed (`send_failed`).
//!
//! Every message from a peer is decoded by our codec and checked before it
//! reaches Raft: the right recipient, a known sender, entries that follow
//! each other and decode as metadata, a commit index this log can hold, a
//! snapshot whose image loads. Anything else is a typed [`StepError`].

pub mod journal;
pub mod log;
pub mod wire;

use std::collections::BTreeMap;

use raft::prelude::{Entry, Message, MessageType, Snapshot};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};
use thiserror::Error;

use crate::controller::{Controller, ControllerConfig, ControllerError};
use crate::image::MetadataImage;
use crate::record::{decode_batch, encode_batch, DecodeError, RecordBatch, MAX_BATCH_RECORDS};
use log::{RaftLog, SnapshotWrite, Stored, Write};

/// The quorum's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// This node's id (its broker node id; Raft ids are the same numbers).
    pub node: u64,
    /// Every voter, this node included if it is one.
    pub voters: Vec<u64>,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Ticks without a leader before an election (randomized up to twice).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots.
    pub snapshot_every: u64,
    /// Most bytes of proposals the leader holds uncommitted; a proposal
    /// past it is dropped (back-pressure: the caller gets `NotActive` and
    /// retries once the log has caught up). At least 1 MiB.
    pub uncommitted_bytes_max: u64,
    /// Ticks a leader waits for a follower to acknowledge a snapshot before
    /// it counts the snapshot as lost and sends it again.
    pub snapshot_ack_ticks: u64,
    /// Seeds the election timeouts (mixed with the node id); 0 draws them
    /// at random. A simulation sets it to replay elections.
    pub seed: u64,
}

impl QuorumConfig {
    /// Kafka-like timing: 100 ms ticks, elections after 1 to 2 s.
    pub fn new(node: u64, voters: Vec<u64>) -> QuorumConfig {
        QuorumConfig {
            node,
            voters,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 1000,
            snapshot_ack_ticks: 40,
            uncommitted_bytes_max: 256 << 20,
            seed: 0,
        }
    }
}

/// Why a peer's message was refused (nothing reached Raft).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StepError {
    #[error("malformed raft message: {0}")]
    Decode(#[from] DecodeError),
    #[error("raft message for node {to} reached node {me}")]
    WrongRecipient { to: u64, me: u64 },
    #[error("raft message from {0}, which is not a voter")]
    UnknownSender(u64),
    #[error("raft message claims to be from {claimed} but came from {sender}")]
    ForgedSender { claimed: u64, sender: u64 },
    #[error("raft message refused: {0}")]
    Invalid(&'static str),
    #[error("raft refused the message: {0}")]
    Raft(String),
}

/// Why the quorum could not start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StartError {
    #[error("invalid quorum configuration: {0}")]
    Config(String),
    #[error("stored metadata snapshot does not load: {0}")]
    Snapshot(String),
}

/// A message for one voter: `(to, bytes)`.
pub type Outgoing = (u64, Vec<u8>);

/// What the caller must do.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send now.
    pub send: Vec<Outgoing>,
    /// Writes to make durable, in order; after each, send its messages and
    /// call `persisted` with its ready number.
    pub writes: Vec<(Write, Vec<Outgoing>)>,
}

/// A proposal's fate, as far as this node can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Committed,
    /// Leadership moved before it was applied: it may or may not commit.
    Unknown,
}

/// A proposal in flight: the index and term it was appended at (or, for a
/// decision that proposed nothing, the log's end it must see applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
}

/// The metadata quorum node. See the module documentation.
pub struct MetadataNode {
    raw: RawNode<RaftLog>,
    controller: Controller,
    config: QuorumConfig,
    applied: u64,
    /// The term in which the controller is active.
    active_term: Option<u64>,
    /// `(term, index)`: the last index when this node was first seen
    /// leading in `term`; applying it makes the controller active.
    term_start: Option<(u64, u64)>,
    last_tick_ms: Option<u64>,
    now_ms: u64,
    out: Output,
    /// Committed entries that did not decode or apply (a bug or damage).
    apply_errors: u64,
    /// `(ready, index)`: a snapshot from the leader, applied to the image,
    /// whose write is not yet durable. Once it is, Raft must count it as
    /// applied: Raft reads the entries after its applied index when it
    /// campaigns, and a snapshot compacted them away.
    snapshot_unpersisted: Option<(u64, u64)>,
    /// Raft ticks since start.
    ticks: u64,
    /// Leading: followers Raft holds waiting for a snapshot, with the
    /// snapshot's index and the tick it was first seen waiting.
    snapshot_waits: BTreeMap<u64, (u64, u64)>,
}

impl std::fmt::Debug for MetadataNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataNode")
            .field("node", &self.config.node)
            .field("role", &self.raw.raft.state)
            .field("term", &self.raw.raft.term)
            .field("applied", &self.applied)
            .finish()
    }
}

impl MetadataNode {
    /// Starts from what was durable (`Stored::default()` the first time).
    pub fn start(
        config: QuorumConfig,
        controller: ControllerConfig,
        stored: &Stored,
    ) -> Result<MetadataNode, StartError> {
        if config.voters.is_empty() || config.voters.contains(&0) {
            return Err(StartError::Config(
                "voters must be listed, with ids above 0".into(),
            ));
        }
        if config.snapshot_ack_ticks == 0 {
            return Err(StartError::Config("snapshot_ack_ticks must be at least 1".into()));
        }
        let image = if stored.snapshot.get_metadata().index > 0 {
            MetadataImage::decode_snapshot(&stored.snapshot.data)
                .map_err(|e| StartError::Snapshot(e.to_string()))?
        } else {
            MetadataImage::default()
        };
        let applied = stored.snapshot.get_metadata().index;
        let raft_config = raft::Config {
            id: config.node,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: config.uncommitted_bytes_max,
            election_seed: if config.seed == 0 {
                0
            } else {
                // One independent stream per node: hash (seed, node) so that
                // no two nodes' streams are shifts of each other.
                use crate::seams::Random;
                let mut h = crate::seams::SplitMix64::new(
                    config.seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ config.node,
                );
                h.next_u64().max(1)
            },
            ..raft::Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let log = RaftLog::restore(stored, &config.voters);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, log, &logger).map_err(|e| StartError::Config(e.to_string()))?;
        Ok(MetadataNode {
            raw,
            controller: Controller::new(controller, image),
            config,
            applied,
            active_term: None,
            term_start: None,
            last_tick_ms: None,
            now_ms: 0,
            out: Output::default(),
            apply_errors: 0,
            snapshot_unpersisted: None,
            ticks: 0,
            snapshot_waits: BTreeMap::new(),
        })
    }

    pub fn id(&self) -> u64 {
        self.config.node
    }

    /// The voter this node believes leads (0: none known).
    pub fn leader(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The controller is active here: requests may be decided.
    pub fn is_active(&self) -> bool {
        self.active_term.is_some()
    }

    /// The last log index applied to the image.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn apply_errors(&self) -> u64 {
        self.apply_errors
    }

    /// The committed metadata image.
    pub fn image(&self) -> &MetadataImage {
        self.controller.committed()
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Everything the caller must do since the last call.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    /// Advances time: Raft ticks for each `tick_ms` elapsed, and the
    /// active controller fences expired sessions and rebalances.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let last = *self.last_tick_ms.get_or_insert(self.now_ms);
        // A process that was stopped catches up a bounded number of ticks.
        let ticks = ((self.now_ms - last) / self.config.tick_ms).min(4 * self.config.election_ticks as u64);
        if ticks > 0 {
            self.last_tick_ms =
                Some(last + ((self.now_ms - last) / self.config.tick_ms) * self.config.tick_ms);
        }
        for _ in 0..ticks {
            self.raw.tick();
            self.ticks += 1;
        }
        self.check_snapshot_waits();
        self.process();
        if self.is_active() {
            let batch = self.controller.tick(self.now_ms);
            if !batch.is_empty() {
                // A dropped proposal makes the controller inactive; the
                // next active term redoes what is still needed.
                let _ = self.propose(batch);
            }
        }
        self.process();
    }

    /// A follower Raft holds in its snapshot state is sent nothing until it
    /// acknowledges the snapshot. Raft resumes it when an append response
    /// shows it caught up; a snapshot that was lost (or refused, or its
    /// answer lost) would hold it forever, so one not acknowledged within
    /// `snapshot_ack_ticks` is reported failed and Raft sends it again.
    fn check_snapshot_waits(&mut self) {
        if !self.is_leader() {
            self.snapshot_waits.clear();
            return;
        }
        let mut waiting = BTreeMap::new();
        for (&id, pr) in self.raw.raft.prs().iter() {
            if pr.state != ProgressState::Snapshot {
                continue;
            }
            let since = match self.snapshot_waits.get(&id) {
                Some(&(index, since)) if index == pr.pending_snapshot => since,
                _ => self.ticks,
            };
            waiting.insert(id, (pr.pending_snapshot, since));
        }
        for (&id, &(_, since)) in &waiting {
            if self.ticks - since >= self.config.snapshot_ack_ticks {
                self.raw.report_snapshot(id, SnapshotStatus::Failure);
            }
        }
        waiting.retain(|_, &mut (_, since)| self.ticks - since < self.config.snapshot_ack_ticks);
        self.snapshot_waits = waiting;
    }

    /// Reports that a message to `to` could not be sent (the transport
    /// knows): Raft stops streaming to it until it answers again, and a
    /// snapshot it was waiting for is sent again.
    pub fn send_failed(&mut self, to: u64) {
        if !self.is_leader() {
            return;
        }
        let in_snapshot = self
            .raw
            .raft
            .prs()
            .get(to)
            .is_some_and(|pr| pr.state == ProgressState::Snapshot);
        if in_snapshot {
            self.raw.report_snapshot(to, SnapshotStatus::Failure);
            self.snapshot_waits.remove(&to);
        } else {
            self.raw.report_unreachable(to);
        }
        self.process();
    }

    /// Campaigns at once (a one-voter quorum, or tests).
    pub fn campaign(&mut self) {
        let _ = self.raw.campaign();
        self.process();
    }

    /// A message from a peer.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        self.step_from(None, bytes)
    }

    /// [`MetadataNode::step`] for a message that came from `sender` (the
    /// peer the transport knows it by): one that claims another sender is
    /// refused.
    pub fn step_from(&mut self, sender: Option<u64>, bytes: &[u8]) -> Result<(), StepError> {
        let m = wire::decode_message(bytes)?;
        if let Some(sender) = sender {
            if m.from != sender {
                return Err(StepError::ForgedSender {
                    claimed: m.from,
                    sender,
                });
            }
        }
        self.check(&m)?;
        self.raw.step(m).map_err(|e| StepError::Raft(e.to_string()))?;
        self.process();
        Ok(())
    }

    /// Checks a peer's message before Raft sees it.
    fn check(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.config.node {
            return Err(StepError::WrongRecipient {
                to: m.to,
                me: self.config.node,
            });
        }
        if m.from == self.config.node || !self.config.voters.contains(&m.from) {
            return Err(StepError::UnknownSender(m.from));
        }
        let log = &self.raw.raft.raft_log;
        match m.msg_type {
            MessageType::MsgHeartbeat if m.commit > log.last_index() && m.term >= self.raw.raft.term => {
                // A leader never names a commit beyond what it has sent;
                // this log lost entries it had acknowledged. Raft would
                // abort; refuse, and let the leader probe and resend.
                return Err(StepError::Invalid("heartbeat commit beyond this log's end"));
            }
            MessageType::MsgAppend => {
                let mut prev = (m.index, m.log_term);
                for e in m.entries.iter() {
                    if prev.0.checked_add(1) != Some(e.index) || e.term < prev.1 || e.term > m.term {
                        return Err(StepError::Invalid("append entries out of sequence"));
                    }
                    prev = (e.index, e.term);
                    if e.index <= log.committed && log.term(e.index).is_ok_and(|t| t != e.term) {
                        return Err(StepError::Invalid("append conflicts with a committed entry"));
                    }
                    if !e.data.is_empty() {
                        decode_batch(&e.data)?;
                    }
                }
            }
            MessageType::MsgSnapshot => {
                let s = m
                    .snapshot
                    .as_ref()
                    .ok_or(StepError::Invalid("snapshot message without a snapshot"))?;
                let mut voters = s.get_metadata().get_conf_state().voters.clone();
                voters.sort_unstable();
                let mut ours = self.config.voters.clone();
                ours.sort_unstable();
                if voters != ours {
                    return Err(StepError::Invalid("snapshot names other voters"));
                }
                MetadataImage::decode_snapshot(&s.data)
                    .map_err(|_| StepError::Invalid("snapshot image does not load"))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The caller made the write of Ready `ready` durable.
    pub fn persisted(&mut self, ready: u64) {
        self.raw.on_persist_ready(ready);
        if let Some((number, index)) = self.snapshot_unpersisted {
            if number <= ready {
                self.snapshot_unpersisted = None;
                // The image holds the snapshot (`install`); tell Raft, which
                // allows it now that the snapshot is persisted.
                if index > self.raw.raft.raft_log.applied {
                    self.raw.advance_apply_to(index);
                }
            }
        }
        self.process();
    }

    /// Runs a controller decision; its records, if any, are proposed. The
    /// caller answers once `outcome` says committed, or at once when there
    /// is no proposal to wait for.
    ///
    /// A decision that records nothing was still read from the view, which
    /// holds this controller's uncommitted proposals: its answer waits for
    /// the log's end as it is now (a read barrier), unless all of it is
    /// applied already.
    pub fn decide<T>(
        &mut self,
        f: impl FnOnce(&mut Controller) -> Result<(T, RecordBatch), ControllerError>,
    ) -> Result<(T, Option<Proposal>), ControllerError> {
        if !self.is_active() {
            return Err(ControllerError::NotActive);
        }
        let (value, batch) = f(&mut self.controller)?;
        if batch.is_empty() {
            let last = self.raw.raft.raft_log.last_index();
            if self.applied >= last {
                return Ok((value, None));
            }
            let barrier = Proposal {
                index: last,
                term: self.raw.raft.term,
            };
            return Ok((value, Some(barrier)));
        }
        let proposal = self.propose(batch)?;
        self.process();
        Ok((value, Some(proposal)))
    }

    fn propose(&mut self, batch: RecordBatch) -> Result<Proposal, ControllerError> {
        // The controller bounds its decisions well below these; this is the
        // last line: an entry no peer could decode (or receive) stays out of
        // the log. The view already holds the batch, so it goes too.
        let data = encode_batch(&batch);
        if batch.len() > MAX_BATCH_RECORDS || data.len() > wire::MAX_PAYLOAD {
            self.drop_view();
            return Err(ControllerError::DecisionTooLarge(format!(
                "{} records, {} bytes in one entry (at most {MAX_BATCH_RECORDS} records, {} bytes)",
                batch.len(),
                data.len(),
                wire::MAX_PAYLOAD
            )));
        }
        if let Err(e) = self.raw.propose(Vec::new(), data) {
            debug_assert!(matches!(e, raft::Error::ProposalDropped), "propose: {e}");
            self.drop_view();
            return Err(ControllerError::NotActive);
        }
        Ok(Proposal {
            index: self.raw.raft.raft_log.last_index(),
            term: self.raw.raft.term,
        })
    }

    /// Whether `p` has been applied.
    pub fn outcome(&self, p: Proposal) -> Outcome {
        if self.active_term != Some(p.term) {
            return Outcome::Unknown;
        }
        if self.applied >= p.index {
            Outcome::Committed
        } else {
            Outcome::Pending
        }
    }

    /// A proposal did not make it into the log, but the view holds it:
    /// the controller goes inactive, dropping the view. This term's earlier
    /// proposals are still in the log, so it may decide again in this term
    /// only once everything up to the log's end is applied, so that the
    /// committed image it starts from holds them.
    fn drop_view(&mut self) {
        self.deactivate();
        if self.is_leader() {
            self.term_start = Some((self.raw.raft.term, self.raw.raft.raft_log.last_index()));
        }
        // Active again at once if nothing was pending.
        self.update_role();
    }

    fn deactivate(&mut self) {
        if self.active_term.take().is_some() {
            self.controller.become_inactive();
        }
    }

    /// Handles every Ready Raft has.
    fn process(&mut self) {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            let now: Vec<Outgoing> = rd
                .take_messages()
                .iter()
                .map(|m| (m.to, wire::encode_message(m)))
                .collect();
            self.out.send.extend(now);
            let mut write = Write {
                ready: Some(rd.number()),
                ..Write::default()
            };
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                self.install(&snap);
                self.snapshot_unpersisted = Some((rd.number(), snap.get_metadata().index));
                write.snapshot = Some(SnapshotWrite::Received(snap));
            }
            let committed = rd.take_committed_entries();
            self.apply(&committed);
            if !rd.entries().is_empty() {
                let entries = rd.take_entries();
                self.raw.mut_store().append(&entries);
                write.entries = entries;
            }
            if let Some(hs) = rd.hs() {
                self.raw.mut_store().set_hard_state(hs);
                write.hard_state = Some(hs.clone());
            }
            let after: Vec<Outgoing> = rd
                .take_persisted_messages()
                .iter()
                .map(|m| (m.to, wire::encode_message(m)))
                .collect();
            self.raw.advance_append_async(rd);
            self.out.writes.push((write, after));
            if let Some(last) = committed.last() {
                // Raft gave these out, so it allows applying them (a
                // snapshot's index is reported in `persisted`).
                self.raw.advance_apply_to(last.index);
            }
            self.maybe_snapshot();
            self.update_role();
        }
        self.update_role();
    }

    /// A snapshot from the leader: the image restarts from it.
    fn install(&mut self, snap: &Snapshot) {
        match MetadataImage::decode_snapshot(&snap.data) {
            Ok(image) => {
                self.deactivate();
                self.controller = Controller::new(self.controller.config().clone(), image);
                self.applied = snap.get_metadata().index;
            }
            // Checked when the message arrived; cannot fail here.
            Err(_) => self.apply_errors += 1,
        }
        self.raw.mut_store().install(snap);
    }

    fn apply(&mut self, entries: &[Entry]) {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            if !e.data.is_empty() {
                match decode_batch(&e.data) {
                    Ok(batch) => self.apply_errors += self.controller.replay(e.index, &batch).len() as u64,
                    Err(_) => self.apply_errors += 1,
                }
            }
            self.applied = e.index;
        }
    }

    /// Takes a snapshot every `snapshot_every` applied entries.
    fn maybe_snapshot(&mut self) {
        let store = self.raw.store();
        if self.applied < store.snapshot_index().saturating_add(self.config.snapshot_every) {
            return;
        }
        let Some(term) = store.term_at(self.applied) else {
            return;
        };
        let mut snap = Snapshot {
            data: self.controller.committed().encode_snapshot().into(),
            ..Snapshot::default()
        };
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(store.conf_state().clone());
        self.raw.mut_store().compact(&snap);
        let w = Write {
            ready: None,
            snapshot: Some(SnapshotWrite::Compacted(snap)),
            ..Write::default()
        };
        self.out.writes.push((w, Vec::new()));
    }

    /// Activates or deactivates the controller as leadership changes.
    fn update_role(&mut self) {
        let term = self.raw.raft.term;
        let leading = self.is_leader();
        if self.active_term.is_some() && (!leading || self.active_term != Some(term)) {
            self.deactivate();
        }
        if !leading {
            self.term_start = None;
            return;
        }
        if self.active_term.is_none() {
            let start = match self.term_start {
                Some((t, i)) if t == term => i,
                _ => {
                    let i = self.raw.raft.raft_log.last_index();
                    self.term_start = Some((term, i));
                    i
                }
            };
            if self.applied >= start {
                self.controller.become_active(self.now_ms);
                self.active_term = Some(term);
            }
        }
    }
}

impl MetadataImage {
    /// Whether `self` is the same metadata as `other` (ignoring the indexes
    /// registrations were applied at, which snapshots round).
    pub fn same_as(&self, other: &MetadataImage) -> bool {
        self.to_records() == other.to_records()
    }
}

#[cfg(test)]
mod send_check {
    fn is_send<T: Send>() {}
    #[test]
    fn the_node_can_move_to_shard_zero() {
        is_send::<super::MetadataNode>();
    }
}
