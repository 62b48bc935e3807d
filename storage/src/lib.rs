//! The Borges storage engine: partition logs of segmented record batches,
//! written with direct I/O through glommio.
//!
//! A [`Log`] is one partition's directory of segments, owned by the shard
//! (pinned glommio executor) that opened it: single-threaded, no locks
//! shared with other cores. It knows nothing of sockets, clusters or
//! clients; batches arrive as bytes in Kafka's RecordBatch v2 format
//! (`borges_net::batch`) and reads return them as memory or file ranges.
//!
//! Layout:
//! - `log.rs`: [`Log`]: append, read, sync (group commit), roll, retention,
//!   truncation, close.
//! - `recovery.rs`: opening a log and recovering it after a crash.
//! - `writer.rs`: aligned direct-I/O appends with write-behind.
//! - `segment.rs`: a segment, its file naming, and the batch-header scanner.
//! - `index.rs`: the sparse offset and time indexes.
//! - `cache.rs`: the in-memory tail of recent batches.
//! - `epoch.rs`: the leader-epoch history and its checkpoint file.
//! - `dirs.rs`: placing partitions over several data directories.
//! - `config.rs`, `clock.rs`, `error.rs`, `fsutil.rs`: settings, time as an
//!   input, errors, small-file helpers.

mod cache;
mod clock;
mod config;
mod dirs;
mod epoch;
mod error;
mod fsutil;
mod index;
mod log;
mod recovery;
mod segment;
mod writer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FlushPolicy, LogConfig, ALIGN, SHARD_PREEMPT_TIMER};
pub use dirs::{
    parse_partition_dir_name, partition_dir_name, validate_topic_name, DataDirs, PlacedPartition,
};
pub use epoch::{EpochEntry, LeaderEpochCache};
pub use error::{Result, StorageError};
pub use log::{AppendInfo, Chunk, FileSlice, Log, LogRead, RetentionOutcome};
pub use recovery::{RecoveryReport, Truncation};
pub use segment::ScanStop;
