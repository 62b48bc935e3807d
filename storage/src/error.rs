//! The storage engine's error type.

use std::io;
use std::path::PathBuf;

use borges_net::batch::BatchError;
use borges_net::types::Offset;

/// Everything the storage engine can refuse or fail at. Input errors
/// (`InvalidBatch`, `OffsetOutOfRange`, `InvalidTopicName`, ...) leave the log
/// untouched; an `Io` error during a write or a sync poisons the log
/// (`LogFailed`), because after a failed write or fdatasync the state of the
/// file is unknown and acknowledging anything more would be a lie.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("record batch of {size} bytes exceeds the maximum of {max}")]
    BatchTooLarge { size: usize, max: usize },
    #[error("append of no record batches")]
    EmptyAppend,
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("cannot truncate to offset {requested}: log starts at {log_start}")]
    InvalidTruncation { requested: Offset, log_start: Offset },
    #[error("a replicated batch at base offset {base} is below the log end {expected_at_least} or the batch before it")]
    NonMonotonicOffset { base: i64, expected_at_least: Offset },
    #[error("append under leader epoch {epoch}, older than the log's latest epoch {latest}")]
    StaleLeaderEpoch {
        epoch: borges_net::types::LeaderEpoch,
        latest: borges_net::types::LeaderEpoch,
    },
    #[error("invalid topic name {0:?}: 1 to 249 characters of [a-zA-Z0-9._-], not \".\" or \"..\"")]
    InvalidTopicName(String),
    #[error("partition {0} exists in more than one data directory: {1:?}")]
    DuplicatePartition(String, Vec<PathBuf>),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// What the engine read back from its own files contradicts what it
    /// knows of them; never a panic.
    #[error("{path} is inconsistent at position {position}: {detail}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        detail: String,
    },
    #[error("log {0} failed after an I/O error and accepts no more writes: {1}")]
    LogFailed(PathBuf, String),
    #[error("log {0} is closed")]
    Closed(PathBuf),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
