//! The Borges broker: thread-per-core shards that serve the native
//! protocol over the storage engine. The `borges` binary (cli/) starts it.
//!
//! Layout:
//! - `server.rs`: start and stop: executors, channel mesh, accept loops, housekeeping, signals.
//! - `shard.rs`: a shard's state, its partitions, cross-shard calls, topic metadata (shard 0).
//! - `conn.rs`: one connection: framing, limits, pipelining, zero-copy writes.
//! - `handlers.rs`: one handler per API.
//! - `topics.rs`: topic metadata, per-topic settings, partition-to-shard mapping.
//! - `recompress.rs`: topic-level compression.
//! - `notify.rs`: wake-ups for long polls.
//! - `config.rs`: the TOML file and defaults.
//! - `watchdog.rs`: shard heartbeats and the thread that reports a stalled shard.

pub mod config;
pub mod conn;
pub mod group;
pub mod handlers;
pub mod notify;
pub mod recompress;
pub mod server;
pub mod shard;
pub mod topics;
pub mod watchdog;
