//! The Borges storage engine: partition logs of segmented record batches,
//! written with direct I/O through glommio.
//!
//! A [`Log`] is one partition's directory of segments, owned by the shard
//! (pinned glommio executor) that opened it: single-threaded, no locks
//! shared with other cores. It knows nothing of sockets, clusters or
//! clients; batches arrive as bytes in Kafka's RecordBatch v2 format
//! (`borges_net::batch`) and reads return them as memory or file ranges.
//!
//! Compaction ([`Log::compact`], Kafka's `cleanup.policy=compact`) rewrites
//! sealed segments so that each key keeps only its latest record (and a
//! tombstone only for [`CompactionConfig::delete_retention_ms`]). Offsets
//! never change: a batch keeps its base offset and offset range and loses
//! records, an emptied batch disappears, so a compacted log has gaps. The
//! cleaned segment is written beside the old one (`<base>.log.cleaned`)
//! and renamed over it; the `cleaner-offset-checkpoint` file tells recovery
//! below which offset gaps are legitimate (above it, batches must follow
//! each other exactly, as before). Reads, timestamp lookups, retention and
//! truncation all work across gaps. See `compact.rs` and docs/FORMAT.md.
//!
//! Layout:
//! - `log.rs`: [`Log`]: append, read, sync (group commit), roll, retention,
//!   truncation, close.
//! - `recovery.rs`: opening a log and recovering it after a crash.
//! - `compact.rs`: compaction (the log cleaner) and its checkpoint.
//! - `writer.rs`: aligned direct-I/O appends with write-behind.
//! - `segment.rs`: a segment, its file naming, and the batch-header scanner.
//! - `index.rs`: the sparse offset and time indexes.
//! - `cache.rs`: the in-memory tail of recent batches.
//! - `epoch.rs`: the leader-epoch history and its checkpoint file.
//! - `dirs.rs`: placing partitions over several data directories.
//! - `config.rs`, `clock.rs`, `error.rs`, `fsutil.rs`: settings, time as an
//!   input, errors, small-file helpers.
//! - `seam.rs`: the file-system seam every durable step passes through,
//!   where tests inject faults and record the order of steps.
//! - `simdisk.rs`: a model of the disk after a crash, built from recorded
//!   steps, for the crash-point harness.

mod cache;
mod clock;
mod compact;
mod config;
mod dirs;
mod epoch;
mod error;
mod fsutil;
mod index;
mod log;
mod recovery;
#[doc(hidden)]
pub mod seam;
mod segment;
#[doc(hidden)]
pub mod simdisk;
mod writer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use compact::{CompactionConfig, CompactionOutcome};
pub use config::{FlushPolicy, LogConfig, ALIGN, SHARD_PREEMPT_TIMER};
pub use dirs::{
    parse_partition_dir_name, partition_dir_name, validate_topic_name, DataDirs, PlacedPartition,
};
pub use epoch::{EpochEntry, LeaderEpochCache};
pub use error::{Result, StorageError};
pub use log::{AppendInfo, Chunk, FileSlice, Log, LogRead, RetentionOutcome};
pub use recovery::{RecoveryReport, Truncation};
pub use segment::ScanStop;
