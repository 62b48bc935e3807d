//! The Borges broker: thread-per-core shards that serve the native
//! protocol over the storage engine. The `borges` binary (cli/) starts it.
//!
//! Layout:
//! - `server.rs`: start and stop: executors, channel mesh, accept loops, housekeeping, signals.
//! - `shard/`: a shard's state, its partitions, the typed calls between shards, the data
//!   path, and on shard 0 the topic changes (persisted and broadcast).
//! - `conn.rs`: one connection: framing, limits, pipelining, zero-copy writes.
//! - `handlers.rs`: one handler per API.
//! - `topics.rs`: topic metadata (types and file), per-topic settings, partition-to-shard mapping.
//! - `metadata.rs`: the rules and transitions of topic metadata, pure (no I/O).
//! - `raft_journal.rs`: the metadata quorum's Raft state on disk (framed, fdatasynced).
//! - `recompress.rs`: topic-level compression.
//! - `notify.rs`: wake-ups for long polls.
//! - `config.rs`: the TOML file and defaults.
//! - `clock.rs`: monotonic and wall time as an input, for the logic that keeps deadlines.
//! - `watchdog.rs`: shard heartbeats and the thread that reports a stalled shard.

pub mod clock;
pub mod config;
pub mod conn;
pub mod group;
pub mod handlers;
pub mod membership;
pub mod metadata;
pub mod notify;
pub mod peer;
pub mod peer_api;
pub mod quorum_host;
pub mod raft_journal;
pub mod recompress;
pub mod server;
pub mod shard;
pub mod topics;
pub mod watchdog;
