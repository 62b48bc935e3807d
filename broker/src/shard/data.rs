//! The data path of the partitions a shard owns: appends, reads, offset
//! lookups, and what consumers may see.
//!
//! These run on the owning shard, called in place or served for a call
//! from another shard (`calls.rs`). What a consumer may read ends at
//! [`Shard::visible_end`]: in the flush modes that promise durability, only
//! what is on disk; a consumer waiting for records not yet synced has them
//! synced for it (one task per partition, coalescing with producers' syncs).

use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use borges_meta::replica::{Replica, Role};

use borges_net::protocol::ErrorCode;
use borges_net::types::{LeaderEpoch, Offset, TimestampMs};
use borges_storage::{Chunk, StorageError};
use bytes::BytesMut;

use super::calls::ReplicaOf;
use super::{Fetched, PartError, PartKey, Partition, Produced, Shard};
use crate::config::FlushMode;

/// Syncs `p` while consumers wait for records that are appended but not yet
/// on disk (in the flush modes where they may read only durable records),
/// waking them after each sync. One such task per partition at a time; syncs
/// coalesce with the producers' (group commit). It stops when nobody waits
/// or the log fails (the waits then run out, and appends report the error).
pub(super) fn start_visibility_sync(p: &Rc<Partition>) {
    if p.visibility_sync.replace(true) {
        return;
    }
    let p = p.clone();
    glommio::spawn_local(async move {
        loop {
            let end = p.log.log_end_offset().0;
            if p.log.durable_offset().0 >= end {
                break;
            }
            if let Err(e) = p.log.sync_to(end).await {
                tracing::warn!(topic = %p.topic, partition = p.key.1, error = %e, "sync for waiting consumers failed");
                break;
            }
            p.notify.notify();
            if p.notify.waiters() == 0 {
                break;
            }
        }
        p.visibility_sync.set(false);
    })
    .detach();
}

/// The error for a request only a leader serves, on a replica that is not one.
pub(super) fn not_leader(p: &Partition, r: &Replica) -> PartError {
    let why = match r.role() {
        Role::Follower { leader } => format!("follows node {} (leader epoch {})", leader.0, r.leader_epoch()),
        Role::Offline => "has no leader".to_string(),
        Role::Leader => "leads under another epoch now".to_string(),
    };
    (
        ErrorCode::NotLeaderOrFollower,
        format!("partition {} of {} {why}", p.key.1, p.topic),
    )
}

/// The error a client gets for a storage error.
pub(super) fn storage_error(e: StorageError) -> PartError {
    let code = match &e {
        StorageError::InvalidBatch(borges_net::batch::BatchError::CrcMismatch { .. }) => {
            ErrorCode::CorruptMessage
        }
        StorageError::InvalidBatch(_) | StorageError::EmptyAppend => ErrorCode::InvalidRecord,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::Closed(_) | StorageError::StaleLeaderEpoch { .. } => ErrorCode::NotLeaderOrFollower,
        _ => ErrorCode::KafkaStorageError,
    };
    (code, e.to_string())
}

impl Shard {
    /// Appends `records` to partition `key`; a topic `compression.type`
    /// rewrites them, taking their decompressed size from `recompress_budget`.
    pub async fn produce_local(
        &self,
        key: PartKey,
        records: BytesMut,
        acks: i8,
        timeout: Duration,
        recompress_budget: &AtomicUsize,
    ) -> Result<Produced, PartError> {
        let p = self.partition(key)?;
        let epoch = {
            let r = p.replica.borrow();
            if !r.is_leader() {
                return Err(not_leader(&p, &r));
            }
            if acks == -1 && !r.enough_replicas() {
                return Err((
                    ErrorCode::NotEnoughReplicas,
                    format!(
                        "the ISR {:?} has fewer than min.insync.replicas {} members",
                        r.isr().iter().map(|n| n.0).collect::<Vec<_>>(),
                        r.config().min_isr
                    ),
                ));
            }
            r.leader_epoch()
        };
        let (max, compression) = {
            let s = p.settings.borrow();
            (s.max_message_bytes, s.compression)
        };
        if records.len() > max {
            return Err((
                ErrorCode::MessageTooLarge,
                format!(
                    "{} bytes of records exceed max.message.bytes {max}",
                    records.len()
                ),
            ));
        }
        let records = match compression {
            Some(c) if crate::recompress::needs_rewrite(&records, c)? => {
                let _one = self
                    .recompress_lock
                    .acquire_permit(1)
                    .await
                    .map_err(|_| (ErrorCode::UnknownServerError, "the shard is stopping".to_string()))?;
                let out = crate::recompress::to_codec(
                    records,
                    c,
                    recompress_budget,
                    self.config.recompress_max_bytes,
                )
                .await?;
                if out.len() > max {
                    return Err((
                        ErrorCode::MessageTooLarge,
                        format!(
                            "{} bytes of records after recompression exceed max.message.bytes {max}",
                            out.len()
                        ),
                    ));
                }
                out
            }
            _ => records,
        };
        let info = p
            .log
            .append(records, LeaderEpoch(epoch))
            .await
            .map_err(storage_error)?;
        p.appended.notify();
        let end = info.last_offset.0 + 1;
        match self.config.flush {
            FlushMode::AcksAll if acks == -1 => {
                let synced = p.log.sync_to(end).await.map_err(storage_error);
                // Consumers may read these records now (or see the error).
                p.notify.notify();
                synced?;
            }
            // Consumers see these records once they are on disk: at once
            // if a consumer waits for them, else at the next sync.
            FlushMode::AcksAll => {
                if p.notify.waiters() > 0 {
                    start_visibility_sync(&p);
                }
            }
            // Already synced by the append itself.
            FlushMode::EveryBatch => p.notify.notify(),
            FlushMode::Never => {
                p.notify.notify();
                if acks == -1 {
                    p.log.flush().await.map_err(storage_error)?;
                }
            }
        }
        if self.advance_hw(&p) {
            p.notify.notify();
        }
        if acks == -1 {
            self.wait_committed(&p, end, epoch, timeout).await?;
        }
        Ok(Produced {
            base_offset: info.base_offset.0 as i64,
            log_start_offset: p.log.log_start_offset().0 as i64,
        })
    }

    /// Waits until the high watermark reaches `end` (an acks=all write is
    /// on every in-sync replica), for at most `timeout`. Fails at once if
    /// the partition gets another leader or epoch meanwhile, or if the ISR
    /// falls below `min.insync.replicas` (the records stay appended: a
    /// retry may duplicate them).
    async fn wait_committed(
        &self,
        p: &Rc<Partition>,
        end: u64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<(), PartError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Leadership first: a replica that follows now may have cut
            // these records and learned a high watermark past them.
            {
                let r = p.replica.borrow();
                if !r.is_leader() || r.leader_epoch() != epoch {
                    return Err(not_leader(p, &r));
                }
            }
            if self.visible_end(p) >= end {
                return Ok(());
            }
            {
                let r = p.replica.borrow();
                if !r.enough_replicas() {
                    return Err((
                        ErrorCode::NotEnoughReplicasAfterAppend,
                        format!(
                            "the ISR {:?} fell below min.insync.replicas {} before the records reached it",
                            r.isr().iter().map(|n| n.0).collect::<Vec<_>>(),
                            r.config().min_isr
                        ),
                    ));
                }
            }
            // (The leader's own copy is on disk already where that counts:
            // an acks=all append is synced before it waits here.)
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err((
                    ErrorCode::RequestTimedOut,
                    format!("the in-sync replicas did not reach offset {end} within {timeout:?}"),
                ));
            }
            let notifies = [&p.notify];
            futures_lite::future::or(crate::notify::changed_any(&notifies), async {
                glommio::timer::sleep(deadline - now).await;
            })
            .await;
        }
    }

    /// The end of leader epoch `epoch` in partition `key`'s log, for a
    /// replica that believes `current_epoch` is the leader's.
    pub fn epoch_end_local(
        &self,
        key: PartKey,
        current_epoch: i32,
        epoch: i32,
    ) -> Result<(i32, i64), ErrorCode> {
        let p = self.partition(key).map_err(|(code, _)| code)?;
        p.replica.borrow().check_epoch(current_epoch)?;
        Ok(match p.log.end_offset_for_epoch(LeaderEpoch(epoch)) {
            Some((e, end)) => (e.0, end.0 as i64),
            // No epoch that old: the asker keeps no more than this log has.
            None => (-1, p.log.log_end_offset().0 as i64),
        })
    }

    /// Moves `p`'s high watermark as far as its replicas allow; whether it moved.
    pub fn advance_hw(&self, p: &Partition) -> bool {
        let end = self.leader_end(p);
        p.replica.borrow_mut().advance_hw(end)
    }

    pub async fn fetch_local(
        self: &Rc<Self>,
        key: PartKey,
        offset: i64,
        max_bytes: u32,
        replica: Option<ReplicaOf>,
    ) -> Fetched<Chunk> {
        let empty = |error| Fetched {
            error,
            high_watermark: -1,
            log_start_offset: -1,
            chunks: Vec::new(),
        };
        let p = match self.partition(key) {
            Ok(p) => p,
            Err((code, _)) => return empty(code),
        };
        if let Some(of) = replica {
            return self.replica_read(&p, of, offset, max_bytes).await;
        }
        if !p.replica.borrow().is_leader() {
            return empty(ErrorCode::NotLeaderOrFollower);
        }
        let visible = self.visible_end(&p);
        let mut out = Fetched {
            error: ErrorCode::None,
            high_watermark: visible as i64,
            log_start_offset: p.log.log_start_offset().0 as i64,
            chunks: Vec::new(),
        };
        if offset < 0 {
            out.error = ErrorCode::OffsetOutOfRange;
            return out;
        }
        if offset as u64 >= visible && p.log.log_end_offset().0 > visible {
            // Nothing this consumer may see yet, but records wait for a
            // sync: have them synced now rather than at the interval sync.
            if p.log.durable_offset().0 < p.log.log_end_offset().0 {
                start_visibility_sync(&p);
            }
        }
        if offset as u64 >= visible && offset as u64 <= p.log.log_end_offset().0 {
            // At or past the high watermark but within the log (a consumer
            // ahead of a new leader's high watermark): nothing to see yet.
            return out;
        }
        match p
            .log
            .read(Offset(offset as u64), max_bytes as usize, Some(Offset(visible)))
            .await
        {
            Ok(r) => {
                debug_assert!(r.next_offset.0 <= visible, "a fetch read past the visible end");
                out.high_watermark = visible as i64;
                out.log_start_offset = r.log_start_offset.0 as i64;
                out.chunks = r.chunks;
            }
            Err(e) => out.error = storage_error(e).0,
        }
        out
    }

    /// The end of what consumers may read: the high watermark (the
    /// smallest log end of the in-sync replicas, while there are at least
    /// `min.insync.replicas` of them), and never past what of this leader's
    /// own log counts ([`Shard::leader_end`]: a record read and then lost to
    /// a power loss would let a later append reuse its offset for a
    /// different record).
    pub fn visible_end(&self, p: &Partition) -> u64 {
        let end = self.leader_end(p);
        let (moved, hw) = {
            let mut r = p.replica.borrow_mut();
            let moved = r.advance_hw(end);
            let hw = r.high_watermark();
            debug_assert!(
                !r.is_leader() || hw <= p.log.log_end_offset().0,
                "a leader's high watermark past its log end"
            );
            (moved, hw)
        };
        if moved {
            // It moved here (the leader's own sync was the last to land):
            // whoever waits for it looks again.
            p.notify.notify();
        }
        hw.min(end)
    }

    /// What of the leader's own log counts for the high watermark: in the
    /// flush modes where an acknowledgement promises durability, only what
    /// is on disk; with `flush = never`, the log end.
    pub(super) fn leader_end(&self, p: &Partition) -> u64 {
        match self.config.flush {
            FlushMode::AcksAll | FlushMode::EveryBatch => {
                let durable = p.log.durable_offset().0;
                debug_assert!(
                    durable <= p.log.log_end_offset().0,
                    "durable offset past the log end"
                );
                durable
            }
            FlushMode::Never => p.log.log_end_offset().0,
        }
    }

    pub async fn list_offsets_local(&self, key: PartKey, timestamp: i64) -> Result<(i64, i64), PartError> {
        let p = self.partition(key)?;
        {
            let r = p.replica.borrow();
            if !r.is_leader() {
                return Err(not_leader(&p, &r));
            }
        }
        match timestamp {
            borges_net::protocol::EARLIEST_TIMESTAMP => Ok((-1, p.log.log_start_offset().0 as i64)),
            borges_net::protocol::LATEST_TIMESTAMP => {
                let visible = self.visible_end(&p);
                let r = p.replica.borrow();
                if !r.latest_offset_available() {
                    // KIP-207: until the new leader's high watermark reaches
                    // its epoch's start, the latest offset could go back.
                    return Err((
                        ErrorCode::OffsetNotAvailable,
                        format!(
                            "the high watermark {} has not reached the start {} of leader epoch {}",
                            r.high_watermark(),
                            r.epoch_start(),
                            r.leader_epoch()
                        ),
                    ));
                }
                Ok((-1, visible as i64))
            }
            ts if ts < 0 => Err((ErrorCode::InvalidRequest, format!("timestamp {ts} is not a time"))),
            ts => match p.log.offset_for_timestamp(TimestampMs(ts)).await {
                // Records above the high watermark are not there yet for a
                // consumer (and may be cut by the next leader).
                Ok(Some((o, _))) if o.0 >= self.visible_end(&p) => Ok((-1, -1)),
                Ok(Some((o, t))) => Ok((t.0, o.0 as i64)),
                Ok(None) => Ok((-1, -1)),
                Err(e) => Err(storage_error(e)),
            },
        }
    }
}
