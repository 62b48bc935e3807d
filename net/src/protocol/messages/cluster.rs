//! Cluster messages: what the metadata image says of the brokers and the
//! controller (`borges cluster describe`; Kafka's DescribeCluster, with the
//! brokers' states and the controller's voters added).

use bytes::{BufMut, BytesMut};

use super::super::wire::{
    put_array, put_len, put_nullable_string, put_string, Decode, Encode, Input, Reader,
};
use super::super::{DecodeError, ErrorCode};
use super::{error_code, put_error};

// ------------------------------------------------------------ DescribeCluster

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeClusterRequest {}

wire_struct! { DescribeClusterRequest, min = 0,
    encode(self, _out) {}
    decode(_r) { Ok(DescribeClusterRequest {}) }
}

/// A broker's state in the metadata image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum BrokerState {
    /// Registered, heartbeating, unfenced: may lead and be in an ISR.
    #[default]
    Alive = 0,
    /// Registered but fenced (stopped heartbeating, or not caught up).
    Fenced = 1,
    /// In a controlled shutdown.
    ShuttingDown = 2,
}

impl BrokerState {
    /// The name `borges cluster describe` prints.
    pub fn name(self) -> &'static str {
        match self {
            BrokerState::Alive => "alive",
            BrokerState::Fenced => "fenced",
            BrokerState::ShuttingDown => "shutting_down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterBroker {
    pub node_id: i32,
    /// The advertised `host:port`.
    pub address: String,
    pub rack: Option<String>,
    pub state: BrokerState,
    /// The broker epoch of its current registration.
    pub epoch: i64,
    /// Partitions it leads.
    pub leader_count: u32,
}

wire_struct! { ClusterBroker, min = 4 + 1 + 1 + 1 + 8 + 4,
    encode(self, out) {
        out.put_i32(self.node_id);
        put_string(out, &self.address);
        put_nullable_string(out, self.rack.as_deref());
        out.put_u8(self.state as u8);
        out.put_i64(self.epoch);
        out.put_u32(self.leader_count);
    }
    decode(r) {
        Ok(ClusterBroker {
            node_id: r.i32()?,
            address: r.string("broker address")?,
            rack: r.nullable_string("rack")?,
            state: match r.u8()? {
                0 => BrokerState::Alive,
                1 => BrokerState::Fenced,
                2 => BrokerState::ShuttingDown,
                v => {
                    return Err(DecodeError::InvalidValue {
                        what: "broker state",
                        value: v as i64,
                    })
                }
            },
            epoch: r.i64()?,
            leader_count: r.u32()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeClusterResponse {
    /// The controller leader; -1 when none is known.
    pub controller_id: i32,
    /// The node ids of the controller quorum's voters.
    pub voters: Vec<i32>,
    pub brokers: Vec<ClusterBroker>,
    /// Partitions with no leader.
    pub offline_partitions: u32,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated_partitions: u32,
    /// The metadata log index the answer reflects.
    pub metadata_offset: u64,
}

wire_struct! { DescribeClusterResponse, min = 4 + 1 + 1 + 4 + 4 + 8,
    encode(self, out) {
        out.put_i32(self.controller_id);
        put_array(out, &self.voters);
        put_array(out, &self.brokers);
        out.put_u32(self.offline_partitions);
        out.put_u32(self.under_replicated_partitions);
        out.put_u64(self.metadata_offset);
    }
    decode(r) {
        Ok(DescribeClusterResponse {
            controller_id: r.i32()?,
            voters: r.array("voters")?,
            brokers: r.array("brokers")?,
            offline_partitions: r.u32()?,
            under_replicated_partitions: r.u32()?,
            metadata_offset: r.u64()?,
        })
    }
}

// --------------------------------------------------------------- ElectLeaders

/// Partitions of one topic, by index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

wire_struct! { TopicPartitions, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.topic);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(TopicPartitions { topic: r.string("topic")?, partitions: r.array("partitions")? })
    }
}

/// Preferred-leader election (Kafka's ElectLeaders with PREFERRED).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElectLeadersRequest {
    /// The partitions to elect for; `None`: every partition not led by
    /// its preferred replica.
    pub topics: Option<Vec<TopicPartitions>>,
}

wire_struct! { ElectLeadersRequest, min = 1,
    encode(self, out) {
        match &self.topics {
            None => put_len(out, 0),
            Some(t) => {
                put_len(out, t.len() + 1);
                for tp in t {
                    tp.encode(out);
                }
            }
        }
    }
    decode(r) { Ok(ElectLeadersRequest { topics: r.nullable_array("topics")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: u32,
    /// `None` when the preferred replica now leads;
    /// `ElectionNotNeeded` when it already did.
    pub error: ErrorCode,
    pub message: Option<String>,
}

wire_struct! { ElectionResult, min = 1 + 4 + 2 + 1,
    encode(self, out) {
        put_string(out, &self.topic);
        out.put_u32(self.partition);
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
    }
    decode(r) {
        Ok(ElectionResult {
            topic: r.string("topic")?,
            partition: r.u32()?,
            error: error_code(r)?,
            message: r.nullable_string("message")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElectLeadersResponse {
    /// For the whole request: `NotController` and the like.
    pub error: ErrorCode,
    pub results: Vec<ElectionResult>,
}

wire_struct! { ElectLeadersResponse, min = 2 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_array(out, &self.results);
    }
    decode(r) { Ok(ElectLeadersResponse { error: error_code(r)?, results: r.array("results")? }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;
    use bytes::Bytes;

    #[test]
    fn describe_cluster_round_trips_and_refuses_unknown_states() {
        let v = DescribeClusterResponse {
            controller_id: 2,
            voters: vec![1, 2, 3],
            brokers: vec![
                ClusterBroker {
                    node_id: 1,
                    address: "127.0.0.1:9092".into(),
                    rack: Some("r1".into()),
                    state: BrokerState::Fenced,
                    epoch: 7,
                    leader_count: 3,
                },
                ClusterBroker {
                    node_id: 2,
                    address: "127.0.0.2:9092".into(),
                    rack: None,
                    state: BrokerState::ShuttingDown,
                    epoch: 9,
                    leader_count: 0,
                },
            ],
            offline_partitions: 1,
            under_replicated_partitions: 4,
            metadata_offset: 99,
        };
        let mut out = BytesMut::new();
        v.encode(&mut out);
        let limits = Limits::default();
        let bytes: Bytes = out.clone().freeze();
        let mut r = Reader::new(bytes.clone(), &limits);
        assert_eq!(DescribeClusterResponse::decode(&mut r).unwrap(), v);
        assert_eq!(r.remaining(), 0);
        for cut in 0..bytes.len() {
            let mut r = Reader::new(bytes.slice(..cut), &limits);
            assert!(
                DescribeClusterResponse::decode(&mut r).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        // The state byte of the first broker, set to a value with no state.
        let at = 4 + 1 + 3 * 4 + 1 + 4 + 1 + "127.0.0.1:9092".len() + 1 + 2;
        let mut bad = out.clone();
        assert_eq!(bad[at], BrokerState::Fenced as u8);
        bad[at] = 9;
        let mut r = Reader::new(bad.freeze(), &limits);
        assert!(matches!(
            DescribeClusterResponse::decode(&mut r),
            Err(DecodeError::InvalidValue {
                what: "broker state",
                value: 9
            })
        ));
    }
}
