//! Cluster metadata, as pure state machines.
//!
//! - [`record`]: what the metadata log holds, and its codec (typed errors
//!   on any malformed input; a fuzz target in `meta/fuzz`).
//! - [`image`]: the in-memory view every broker builds by applying the
//!   committed records in order, and its snapshot encoding.
//! - [`placement`]: replicas over brokers and racks, leaders balanced.
//! - [`controller`]: the active controller's decisions. Inputs are requests
//!   (register, heartbeat, create topics, ...), ticks with the time, and
//!   the records Raft commits; outputs are records to propose and replies.
//! - [`quorum`]: Raft (tikv's RawNode) carrying the metadata log, with
//!   the controller on top; messages in our own codec.
//! - [`seams`]: the random source the controller draws from.
//!
//! Nothing in this crate does I/O or reads a clock.

pub mod controller;
pub mod image;
pub mod placement;
pub mod quorum;
pub mod record;
pub mod replica;
pub mod seams;

pub use borges_net::types::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, TopicId};
