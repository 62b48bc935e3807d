//! Replication messages, between brokers only: a follower's fetch from its
//! leader (one request carries every partition that the follower's shard
//! follows on that leader), its question for the end of a leader epoch
//! before it fetches (Kafka's OffsetForLeaderEpoch), and a leader's change
//! of an ISR sent to the active controller (Kafka's AlterPartition).
//!
//! A replica fetch is answered with a [`FetchResponse`](super::FetchResponse)
//! body, so that the leader sends records straight from its segment files
//! as it does for consumers.

use bytes::{BufMut, BytesMut};

use super::super::wire::{put_array, put_nullable_string, Decode, Encode, Input, Reader};
use super::super::{DecodeError, ErrorCode};
use super::{error_code, put_error, topic_id};
use crate::types::{BrokerEpoch, TopicId};

// ------------------------------------------------------------ ReplicaFetch

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaFetchPartition {
    pub partition: u32,
    /// The leader epoch the follower believes current: a leader of another
    /// epoch refuses the partition (FENCED_LEADER_EPOCH when the follower's
    /// is older, UNKNOWN_LEADER_EPOCH when it is newer).
    pub leader_epoch: i32,
    /// The follower's log end offset: it has every record below it.
    pub fetch_offset: i64,
    pub partition_max_bytes: u32,
}

wire_struct! { ReplicaFetchPartition, min = 4 + 4 + 8 + 4,
    encode(self, out) {
        out.put_u32(self.partition);
        out.put_i32(self.leader_epoch);
        out.put_i64(self.fetch_offset);
        out.put_u32(self.partition_max_bytes);
    }
    decode(r) {
        Ok(ReplicaFetchPartition {
            partition: r.u32()?,
            leader_epoch: r.i32()?,
            fetch_offset: r.i64()?,
            partition_max_bytes: r.u32()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaFetchTopic {
    pub topic_id: TopicId,
    pub partitions: Vec<ReplicaFetchPartition>,
}

wire_struct! { ReplicaFetchTopic, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(ReplicaFetchTopic { topic_id: topic_id(r)?, partitions: r.array("partitions")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaFetchRequest {
    /// The follower's node id.
    pub replica: i32,
    /// The follower's broker epoch (its registration's).
    pub broker_epoch: BrokerEpoch,
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub topics: Vec<ReplicaFetchTopic>,
}

wire_struct! { ReplicaFetchRequest, min = 4 + 8 + 4 + 4 + 4 + 1,
    encode(self, out) {
        out.put_i32(self.replica);
        out.put_i64(self.broker_epoch.0);
        out.put_u32(self.max_wait_ms);
        out.put_u32(self.min_bytes);
        out.put_u32(self.max_bytes);
        put_array(out, &self.topics);
    }
    decode(r) {
        Ok(ReplicaFetchRequest {
            replica: r.i32()?,
            broker_epoch: BrokerEpoch(r.i64()?),
            max_wait_ms: r.u32()?,
            min_bytes: r.u32()?,
            max_bytes: r.u32()?,
            topics: r.array("topics")?,
        })
    }
}

// ---------------------------------------------------- OffsetForLeaderEpoch

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochQueryPartition {
    pub partition: u32,
    /// The leader epoch the asker believes current (fenced as in a fetch).
    pub current_leader_epoch: i32,
    /// The epoch whose end offset is asked: the asker's latest.
    pub leader_epoch: i32,
}

wire_struct! { EpochQueryPartition, min = 4 + 4 + 4,
    encode(self, out) {
        out.put_u32(self.partition);
        out.put_i32(self.current_leader_epoch);
        out.put_i32(self.leader_epoch);
    }
    decode(r) {
        Ok(EpochQueryPartition {
            partition: r.u32()?,
            current_leader_epoch: r.i32()?,
            leader_epoch: r.i32()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochQueryTopic {
    pub topic_id: TopicId,
    pub partitions: Vec<EpochQueryPartition>,
}

wire_struct! { EpochQueryTopic, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(EpochQueryTopic { topic_id: topic_id(r)?, partitions: r.array("partitions")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetForLeaderEpochRequest {
    /// The asking replica's node id.
    pub replica: i32,
    pub topics: Vec<EpochQueryTopic>,
}

wire_struct! { OffsetForLeaderEpochRequest, min = 4 + 1,
    encode(self, out) {
        out.put_i32(self.replica);
        put_array(out, &self.topics);
    }
    decode(r) {
        Ok(OffsetForLeaderEpochRequest { replica: r.i32()?, topics: r.array("topics")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochEndPartition {
    pub partition: u32,
    pub error: ErrorCode,
    /// The largest epoch of the leader's log at or below the one asked
    /// (-1: none), and where it ends: the start of the next epoch, or the
    /// log end offset for the latest (-1 with no epoch).
    pub leader_epoch: i32,
    pub end_offset: i64,
}

wire_struct! { EpochEndPartition, min = 4 + 2 + 4 + 8,
    encode(self, out) {
        out.put_u32(self.partition);
        put_error(out, self.error);
        out.put_i32(self.leader_epoch);
        out.put_i64(self.end_offset);
    }
    decode(r) {
        Ok(EpochEndPartition {
            partition: r.u32()?,
            error: error_code(r)?,
            leader_epoch: r.i32()?,
            end_offset: r.i64()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochEndTopic {
    pub topic_id: TopicId,
    pub partitions: Vec<EpochEndPartition>,
}

wire_struct! { EpochEndTopic, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(EpochEndTopic { topic_id: topic_id(r)?, partitions: r.array("partitions")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetForLeaderEpochResponse {
    pub topics: Vec<EpochEndTopic>,
}

wire_struct! { OffsetForLeaderEpochResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(OffsetForLeaderEpochResponse { topics: r.array("topics")? }) }
}

// ----------------------------------------------------------- AlterPartition

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterPartitionItem {
    pub topic_id: TopicId,
    pub partition: u32,
    /// The epochs the leader saw: the change is a compare-and-set on them.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

wire_struct! { AlterPartitionItem, min = 8 + 4 + 4 + 4 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        out.put_u32(self.partition);
        out.put_i32(self.leader_epoch);
        out.put_i32(self.partition_epoch);
        put_array(out, &self.isr);
    }
    decode(r) {
        Ok(AlterPartitionItem {
            topic_id: topic_id(r)?,
            partition: r.u32()?,
            leader_epoch: r.i32()?,
            partition_epoch: r.i32()?,
            isr: r.array("isr")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterPartitionRequest {
    /// The leader's node id and broker epoch.
    pub node: i32,
    pub broker_epoch: BrokerEpoch,
    pub partitions: Vec<AlterPartitionItem>,
}

wire_struct! { AlterPartitionRequest, min = 4 + 8 + 1,
    encode(self, out) {
        out.put_i32(self.node);
        out.put_i64(self.broker_epoch.0);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(AlterPartitionRequest {
            node: r.i32()?,
            broker_epoch: BrokerEpoch(r.i64()?),
            partitions: r.array("partitions")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterPartitionResult {
    pub topic_id: TopicId,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: Option<String>,
    /// The partition's state after the change (or as it is, when refused).
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

wire_struct! { AlterPartitionResult, min = 8 + 4 + 2 + 1 + 4 + 4 + 4 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        out.put_u32(self.partition);
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
        out.put_i32(self.leader);
        out.put_i32(self.leader_epoch);
        out.put_i32(self.partition_epoch);
        put_array(out, &self.isr);
    }
    decode(r) {
        Ok(AlterPartitionResult {
            topic_id: topic_id(r)?,
            partition: r.u32()?,
            error: error_code(r)?,
            message: r.nullable_string("message")?,
            leader: r.i32()?,
            leader_epoch: r.i32()?,
            partition_epoch: r.i32()?,
            isr: r.array("isr")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterPartitionResponse {
    /// A request-wide refusal (NOT_CONTROLLER, STALE_BROKER_EPOCH, ...);
    /// `None` when each partition has its own result.
    pub error: ErrorCode,
    pub message: Option<String>,
    pub partitions: Vec<AlterPartitionResult>,
}

wire_struct! { AlterPartitionResponse, min = 2 + 1 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(AlterPartitionResponse {
            error: error_code(r)?,
            message: r.nullable_string("message")?,
            partitions: r.array("partitions")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;
    use bytes::Bytes;

    fn round_trip<T: Encode + Decode<Bytes> + PartialEq + std::fmt::Debug>(v: &T) {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        let limits = Limits::default();
        let mut r = Reader::new(out.clone().freeze(), &limits);
        let back = T::decode(&mut r).expect("decodes");
        r.finish().expect("nothing left over");
        assert_eq!(&back, v);
        // Every strict prefix is refused, never misread.
        for cut in 0..out.len() {
            let mut r = Reader::new(out.clone().freeze().slice(..cut), &limits);
            assert!(
                T::decode(&mut r).and_then(|_| r.finish()).is_err(),
                "prefix of {cut} bytes read"
            );
        }
    }

    #[test]
    fn messages_round_trip() {
        round_trip(&ReplicaFetchRequest {
            replica: 2,
            broker_epoch: BrokerEpoch(7),
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![ReplicaFetchTopic {
                topic_id: TopicId(3),
                partitions: vec![ReplicaFetchPartition {
                    partition: 1,
                    leader_epoch: 4,
                    fetch_offset: 99,
                    partition_max_bytes: 4096,
                }],
            }],
        });
        round_trip(&OffsetForLeaderEpochRequest {
            replica: 1,
            topics: vec![EpochQueryTopic {
                topic_id: TopicId(9),
                partitions: vec![EpochQueryPartition {
                    partition: 0,
                    current_leader_epoch: 5,
                    leader_epoch: 3,
                }],
            }],
        });
        round_trip(&OffsetForLeaderEpochResponse {
            topics: vec![EpochEndTopic {
                topic_id: TopicId(9),
                partitions: vec![EpochEndPartition {
                    partition: 0,
                    error: ErrorCode::FencedLeaderEpoch,
                    leader_epoch: 2,
                    end_offset: 40,
                }],
            }],
        });
        round_trip(&AlterPartitionRequest {
            node: 1,
            broker_epoch: BrokerEpoch(12),
            partitions: vec![AlterPartitionItem {
                topic_id: TopicId(2),
                partition: 3,
                leader_epoch: 1,
                partition_epoch: 6,
                isr: vec![1, 3],
            }],
        });
        round_trip(&AlterPartitionResponse {
            error: ErrorCode::None,
            message: None,
            partitions: vec![AlterPartitionResult {
                topic_id: TopicId(2),
                partition: 3,
                error: ErrorCode::InvalidUpdateVersion,
                message: Some("stale".into()),
                leader: 1,
                leader_epoch: 1,
                partition_epoch: 7,
                isr: vec![1, 2, 3],
            }],
        });
    }
}
