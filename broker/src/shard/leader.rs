//! The leader's side of replication on the shard that owns a partition:
//! serving followers' fetches (which report their progress and move the
//! high watermark), proposing ISR changes to the controller, and the
//! shard's replication tick (ISR shrinks, high-watermark checkpoints).
//!
//! The rules are `borges_meta::replica`'s; this file only feeds them the
//! log's offsets and the time, and carries their proposals to shard 0.

use std::rc::Rc;
use std::time::Duration;

use borges_meta::replica::IsrProposal;
use borges_net::protocol::{AlterPartitionItem, AlterPartitionRequest, ErrorCode};
use borges_net::types::{BrokerEpoch, Offset};
use borges_storage::Chunk;

use super::calls::{AlterIsr, ReplicaOf};
use super::{Fetched, Partition, Shard};
use crate::clock::monotonic_ms;

/// How often the high watermarks a shard's partitions reached are
/// checkpointed (Kafka's replica.high.watermark.checkpoint.interval.ms).
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

impl Shard {
    /// A follower's fetch of `p` from `offset`: checked against the
    /// partition's epoch and replicas, counted as the follower's progress,
    /// and answered with records up to the log end (not the high
    /// watermark: followers copy what consumers cannot see yet).
    pub(super) async fn replica_read(
        self: &Rc<Self>,
        p: &Rc<Partition>,
        of: ReplicaOf,
        offset: i64,
        max_bytes: u32,
    ) -> Fetched<Chunk> {
        let log_start = p.log.log_start_offset().0;
        let leo = p.log.log_end_offset().0;
        let mut out = Fetched {
            error: ErrorCode::None,
            high_watermark: p.replica.borrow().high_watermark() as i64,
            log_start_offset: log_start as i64,
            chunks: Vec::new(),
        };
        if let Err(code) = p.replica.borrow().check_fetch(of.node, of.leader_epoch) {
            out.error = code;
            return out;
        }
        if offset < 0 || (offset as u64) < log_start || offset as u64 > leo {
            out.error = ErrorCode::OffsetOutOfRange;
            return out;
        }
        let end = self.leader_end(p);
        // A restarted follower copies the log before the controller
        // unfences it; it is proposed for the ISR only once it is eligible.
        let eligible = self.topics().cluster.image.is_eligible(of.node);
        let (moved, proposal) = p.replica.borrow_mut().on_follower_fetch(
            of.node,
            offset as u64,
            leo,
            end,
            monotonic_ms(),
            eligible,
        );
        if moved {
            p.notify.notify();
        }
        if let Some(proposal) = proposal {
            tracing::info!(topic = %p.topic, partition = p.key.1, follower = of.node.0, isr = ?proposal.isr, "follower caught up: asking to add it to the ISR");
            self.propose_isr(p, proposal);
        }
        if max_bytes > 0 {
            // (A fetch whose response is full still reports every
            // partition's progress, with no records.)
            match p.log.read(Offset(offset as u64), max_bytes as usize, None).await {
                Ok(r) => out.chunks = r.chunks,
                Err(e) => out.error = super::data::storage_error(e).0,
            }
        }
        out.high_watermark = p.replica.borrow().high_watermark() as i64;
        out
    }

    /// Sends an ISR change to the controller (through shard 0). The change
    /// counts once the image shows it; a refusal lets it be proposed again.
    pub(super) fn propose_isr(self: &Rc<Self>, p: &Rc<Partition>, proposal: IsrProposal) {
        p.replica.borrow_mut().proposed(&proposal, monotonic_ms());
        let shard = self.clone();
        let p = p.clone();
        glommio::spawn_local(async move {
            let req = AlterPartitionRequest {
                node: shard.config.node_id,
                // Shard 0 knows this broker's epoch and fills it in.
                broker_epoch: BrokerEpoch(-1),
                partitions: vec![AlterPartitionItem {
                    topic_id: p.key.0,
                    partition: p.key.1,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch,
                    isr: proposal.isr.iter().map(|n| n.0).collect(),
                }],
            };
            // (code, why): what kept the change from being seen to commit.
            let failed = match shard.call(0, AlterIsr(req)).await {
                Err(_) => Some((ErrorCode::None, "shard 0 is stopping: never sent".to_string())),
                Ok(resp) if resp.error != ErrorCode::None => Some((
                    resp.error,
                    format!("{}: {}", resp.error, resp.message.unwrap_or_default()),
                )),
                Ok(resp) => resp
                    .partitions
                    .into_iter()
                    .find(|r| r.error != ErrorCode::None)
                    .map(|r| (r.error, format!("{}: {}", r.error, r.message.unwrap_or_default()))),
            };
            if let Some((code, why)) = failed {
                tracing::warn!(topic = %p.topic, partition = p.key.1, isr = ?proposal.isr, %why, "ISR change not made");
                let mut r = p.replica.borrow_mut();
                if r.pending().is_some_and(|q| q.partition_epoch == proposal.partition_epoch) {
                    r.proposal_failed(refused_for_good(code));
                }
            }
        })
        .detach();
    }

    /// The shard's replication tick, until it stops: ISR members that lag
    /// are proposed for removal; beside it, a task checkpoints the high
    /// watermarks, so that many slow checkpoints never delay a shrink.
    pub async fn replication_ticker(self: Rc<Self>) {
        let s = self.clone();
        glommio::spawn_local(async move {
            while !s.stopping.get() {
                glommio::timer::sleep(HW_CHECKPOINT_INTERVAL).await;
                for p in s.local_partitions() {
                    p.checkpoint_hw().await;
                }
            }
        })
        .detach();
        let lag = self.config.replica_lag_time_max;
        let tick = (lag / 4).clamp(Duration::from_millis(100), Duration::from_millis(2500));
        while !self.stopping.get() {
            glommio::timer::sleep(tick).await;
            let now = monotonic_ms();
            for p in self.local_partitions() {
                let proposal = p.replica.borrow_mut().shrink_check(now);
                if let Some(proposal) = proposal {
                    tracing::warn!(topic = %p.topic, partition = p.key.1, isr = ?proposal.isr, "followers lag: asking to shrink the ISR");
                    self.propose_isr(&p, proposal);
                }
            }
        }
    }
}

/// Whether the controller's answer means the change cannot commit (it
/// refused it against the state it holds), rather than that the answer
/// was lost: a decision that timed out, or a controller that lost its
/// leadership, may still commit the change (`NotController` covers both).
fn refused_for_good(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::None // never sent
            | ErrorCode::InvalidUpdateVersion
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::IneligibleReplica
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::StaleBrokerEpoch
            | ErrorCode::BrokerIdNotRegistered
            | ErrorCode::InvalidRequest
    )
}
