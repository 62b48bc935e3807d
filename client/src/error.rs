//! The one error type every client call returns.

use std::sync::Arc;

use borges_net::batch::BatchError;
use borges_net::protocol::{DecodeError, ErrorCode};

/// Why a client call failed.
///
/// Cloneable, because one failure (a broken connection, a rejected produce
/// request) is handed to every record future it touched. `is_retriable` says
/// whether the same call may succeed if made again, usually after a metadata
/// refresh; the producer and consumer retry those internally.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The connection failed: refused, reset, or closed by the broker.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// The broker sent bytes this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    /// The broker answered with an error code, for the whole request or for
    /// the one topic or partition this result is about.
    #[error("broker error {code}: {message}")]
    Broker {
        /// Kafka's number for what went wrong.
        code: ErrorCode,
        /// The broker's explanation, or the code's description when it gave none.
        message: String,
    },
    /// No answer came within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The broker does not know a topic of this name.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic exists but has no partition with this index.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// The topic named.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },
    /// A record could not be encoded (for instance, a batch past the size cap).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A fetched record batch failed its CRC or did not decode.
    #[error("corrupt record batch from the broker: {0}")]
    CorruptBatch(BatchError),
    /// The consumer's position is outside the log and `auto_offset_reset` is
    /// `None` (or the partition had no position yet).
    #[error("offset {offset} is out of range for {topic}/{partition}")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset that was out of range; -1 when there was no position at all.
        offset: i64,
    },
    /// The consumer was asked about a partition it is not assigned.
    #[error("{topic}/{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A configuration value or argument is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An assigned topic was deleted and re-created under the same name (a
    /// new topic id): the consumer's position in the old log was dropped
    /// and the partition starts again by `auto_offset_reset`.
    #[error(
        "{topic} was re-created; position {position} of {topic}/{partition} in the old topic was dropped"
    )]
    TopicRecreated {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The position in the old topic (-1 if there was none).
        position: i64,
    },
    /// A record larger than the producer's `buffer_memory_bytes` or
    /// `max_request_bytes` (Kafka's `RecordTooLargeException`).
    #[error("a record of {size} bytes is larger than the producer can buffer or send ({max} bytes)")]
    RecordTooLarge {
        /// The record's estimated size in a batch.
        size: usize,
        /// The smaller of `buffer_memory_bytes` and `max_request_bytes`.
        max: usize,
    },
    /// A record was not acknowledged within the producer's
    /// `delivery_timeout` (Kafka's `delivery.timeout.ms`).
    #[error("{records} record(s) not delivered within {timeout_ms} ms (last error: {})", last_error.as_deref().unwrap_or("none"))]
    DeliveryTimeout {
        /// The configured delivery timeout.
        timeout_ms: u64,
        /// Records of the batch that failed.
        records: usize,
        /// The error the batch was last retried for, if any.
        last_error: Option<String>,
    },
    /// The producer (or the connection it needed) was closed.
    #[error("closed")]
    Closed,
}

impl ClientError {
    /// Whether the same call may succeed if made again (after refreshing
    /// metadata): connection failures, timeouts, and the broker codes Kafka
    /// calls retriable, plus `UnknownTopicId` (the topic was re-created under
    /// a new id, which a metadata refresh learns).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::Timeout => true,
            ClientError::Broker { code, .. } => code_is_retriable(*code),
            _ => false,
        }
    }

    /// The broker's error code, when the broker is the one that refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A broker error with the given code; the code's description stands in
    /// for a missing message.
    pub(crate) fn broker(code: ErrorCode, message: Option<String>) -> ClientError {
        let message = match message {
            Some(m) if !m.is_empty() => m,
            _ => code.description().to_string(),
        };
        ClientError::Broker { code, message }
    }

    /// The error a call gets when its connection has gone away.
    pub(crate) fn connection_closed(why: &str) -> ClientError {
        ClientError::Io(Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            why.to_string(),
        )))
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}

/// Whether a per-partition or request-level code is worth retrying after a
/// metadata refresh. `UnknownTopicId` is added to Kafka's list: a topic
/// deleted and re-created has a new id, which a refresh picks up.
pub(crate) fn code_is_retriable(code: ErrorCode) -> bool {
    code.is_retriable() || code == ErrorCode::UnknownTopicId
}

/// Whether a code means the client's metadata is stale.
pub(crate) fn code_invalidates_metadata(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::UnknownTopicId
            | ErrorCode::LeaderNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_classification() {
        assert!(ClientError::Timeout.is_retriable());
        assert!(ClientError::connection_closed("x").is_retriable());
        assert!(ClientError::broker(ErrorCode::NotLeaderOrFollower, None).is_retriable());
        assert!(ClientError::broker(ErrorCode::UnknownTopicId, None).is_retriable());
        assert!(!ClientError::broker(ErrorCode::CorruptMessage, None).is_retriable());
        assert!(!ClientError::UnknownTopic("t".into()).is_retriable());
        assert!(!ClientError::Closed.is_retriable());
        let e = ClientError::broker(ErrorCode::InvalidConfig, Some(String::new()));
        assert!(e.to_string().contains(ErrorCode::InvalidConfig.description()));
    }
}
