//! What the coordinator needs of the shard it runs on, and nothing more.
//!
//! The coordinator lives on a shard but does not know the shard type: it
//! sees this trait, which `shard::Shard` implements. So the dependency runs
//! one way (the shard knows the coordinator; the coordinator knows this
//! interface, the topics, and the storage log it replays), and a test can
//! host a coordinator on something smaller than a shard.

use std::future::Future;
use std::sync::Arc;

use borges_net::protocol::ErrorCode;
use bytes::BytesMut;

use super::{Coordinator, GroupSettings};
use crate::topics::{PartKey, Topics};

/// The shard a coordinator runs on, as the coordinator sees it. Every
/// method is called on that shard's executor.
pub trait Host: 'static {
    /// This shard's index; member ids include it, to be unique across shards.
    fn shard_id(&self) -> usize;

    /// The metadata snapshot the shard follows.
    fn topics(&self) -> Arc<Topics>;

    /// Whether partition `key` belongs to this shard.
    fn owns(&self, key: PartKey) -> bool;

    /// Whether this shard has partition `key` open, its groups loaded.
    fn is_open(&self, key: PartKey) -> bool;

    /// Whether this broker leads partition `key` (of `__consumer_offsets`)
    /// now: only the leader coordinates its groups; a follower's copy of
    /// them goes stale.
    fn leads(&self, key: PartKey) -> bool;

    /// The coordinator's settings.
    fn group_settings(&self) -> &GroupSettings;

    /// The groups this shard coordinates.
    fn coordinator(&self) -> &Coordinator;

    /// Appends a batch of records to partition `key` (of
    /// `__consumer_offsets`) and waits until it is as durable as an
    /// acks=all produce; returns the batch's base offset (where it is in
    /// the log: writes may complete out of that order). The error is the
    /// partition's code and a message.
    fn append_durable(
        &self,
        key: PartKey,
        batch: BytesMut,
    ) -> impl Future<Output = Result<i64, (ErrorCode, String)>>;
}
