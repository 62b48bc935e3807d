//! Consumer-group messages: finding the coordinator, the join/sync/heartbeat
//! /leave membership protocol, committed offsets, and group administration.
//!
//! The coordinator treats member metadata and assignments as opaque bytes;
//! the client's assignors define them (`borges-client`, `group` module), as
//! in Kafka's embedded consumer protocol.

use bytes::{BufMut, Bytes, BytesMut};

use super::super::wire::{
    put_array, put_bytes, put_nullable_string, put_string, Decode, Encode, Input, Reader,
};
use super::super::{DecodeError, ErrorCode};
use super::{error_code, put_error};

fn opaque<B: Input>(r: &mut Reader<'_, B>, what: &'static str) -> Result<Bytes, DecodeError> {
    r.bytes(what).map(Input::into_bytes)
}

// ------------------------------------------------------------ FindCoordinator

/// Asks which broker coordinates a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindCoordinatorRequest {
    pub group_id: String,
}

wire_struct! { FindCoordinatorRequest, min = 1,
    encode(self, out) { put_string(out, &self.group_id); }
    decode(r) { Ok(FindCoordinatorRequest { group_id: r.string("group id")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindCoordinatorResponse {
    pub error: ErrorCode,
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

wire_struct! { FindCoordinatorResponse, min = 2 + 4 + 1 + 2,
    encode(self, out) {
        put_error(out, self.error);
        out.put_i32(self.node_id);
        put_string(out, &self.host);
        out.put_u16(self.port);
    }
    decode(r) {
        Ok(FindCoordinatorResponse {
            error: error_code(r)?,
            node_id: r.i32()?,
            host: r.string("host")?,
            port: r.u16()?,
        })
    }
}

// ------------------------------------------------------------------ JoinGroup

/// One assignment protocol a member supports, with its subscription metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupProtocol {
    pub name: String,
    pub metadata: Bytes,
}

wire_struct! { JoinGroupProtocol, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_bytes(out, &self.metadata);
    }
    decode(r) {
        Ok(JoinGroupProtocol { name: r.string("protocol name")?, metadata: opaque(r, "protocol metadata")? })
    }
}

/// Joins a group, or rejoins it for a rebalance. The answer comes once every
/// known member has (re)joined or the rebalance timeout has passed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupRequest {
    pub group_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// Empty on a member's first join: the coordinator assigns one.
    pub member_id: String,
    /// Static membership: a stable id for this consumer instance.
    pub group_instance_id: Option<String>,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// In order of the member's preference.
    pub protocols: Vec<JoinGroupProtocol>,
}

wire_struct! { JoinGroupRequest, min = 1 + 4 + 4 + 1 + 1 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.group_id);
        out.put_i32(self.session_timeout_ms);
        out.put_i32(self.rebalance_timeout_ms);
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
        put_string(out, &self.protocol_type);
        put_array(out, &self.protocols);
    }
    decode(r) {
        Ok(JoinGroupRequest {
            group_id: r.string("group id")?,
            session_timeout_ms: r.i32()?,
            rebalance_timeout_ms: r.i32()?,
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
            protocol_type: r.string("protocol type")?,
            protocols: r.array("protocols")?,
        })
    }
}

/// A member as the leader sees it: what it subscribed with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

wire_struct! { JoinGroupMember, min = 1 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
        put_bytes(out, &self.metadata);
    }
    decode(r) {
        Ok(JoinGroupMember {
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
            metadata: opaque(r, "member metadata")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupResponse {
    pub error: ErrorCode,
    pub generation_id: i32,
    /// The protocol the coordinator chose; `None` on error.
    pub protocol_name: Option<String>,
    pub leader: String,
    /// This member's id (new on a first join).
    pub member_id: String,
    /// Every member with its metadata, for the leader only; empty for the others.
    pub members: Vec<JoinGroupMember>,
}

wire_struct! { JoinGroupResponse, min = 2 + 4 + 1 + 1 + 1 + 1,
    encode(self, out) {
        put_error(out, self.error);
        out.put_i32(self.generation_id);
        put_nullable_string(out, self.protocol_name.as_deref());
        put_string(out, &self.leader);
        put_string(out, &self.member_id);
        put_array(out, &self.members);
    }
    decode(r) {
        Ok(JoinGroupResponse {
            error: error_code(r)?,
            generation_id: r.i32()?,
            protocol_name: r.nullable_string("protocol name")?,
            leader: r.string("leader")?,
            member_id: r.string("member id")?,
            members: r.array("members")?,
        })
    }
}

// ------------------------------------------------------------------ SyncGroup

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroupAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

wire_struct! { SyncGroupAssignment, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.member_id);
        put_bytes(out, &self.assignment);
    }
    decode(r) {
        Ok(SyncGroupAssignment { member_id: r.string("member id")?, assignment: opaque(r, "assignment")? })
    }
}

/// Ends a rebalance: the leader sends every member's assignment, the others
/// send none; each gets its own assignment back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub assignments: Vec<SyncGroupAssignment>,
}

wire_struct! { SyncGroupRequest, min = 1 + 4 + 1 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.group_id);
        out.put_i32(self.generation_id);
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
        put_array(out, &self.assignments);
    }
    decode(r) {
        Ok(SyncGroupRequest {
            group_id: r.string("group id")?,
            generation_id: r.i32()?,
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
            assignments: r.array("assignments")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroupResponse {
    pub error: ErrorCode,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

wire_struct! { SyncGroupResponse, min = 2 + 1 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_nullable_string(out, self.protocol_name.as_deref());
        put_bytes(out, &self.assignment);
    }
    decode(r) {
        Ok(SyncGroupResponse {
            error: error_code(r)?,
            protocol_name: r.nullable_string("protocol name")?,
            assignment: opaque(r, "assignment")?,
        })
    }
}

// ------------------------------------------------------------------ Heartbeat

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

wire_struct! { HeartbeatRequest, min = 1 + 4 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.group_id);
        out.put_i32(self.generation_id);
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
    }
    decode(r) {
        Ok(HeartbeatRequest {
            group_id: r.string("group id")?,
            generation_id: r.i32()?,
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
        })
    }
}

/// `RebalanceInProgress` tells the member to rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatResponse {
    pub error: ErrorCode,
}

wire_struct! { HeartbeatResponse, min = 2,
    encode(self, out) { put_error(out, self.error); }
    decode(r) { Ok(HeartbeatResponse { error: error_code(r)? }) }
}

// ----------------------------------------------------------------- LeaveGroup

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

wire_struct! { LeavingMember, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
    }
    decode(r) {
        Ok(LeavingMember {
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaveGroupRequest {
    pub group_id: String,
    pub members: Vec<LeavingMember>,
}

wire_struct! { LeaveGroupRequest, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.group_id);
        put_array(out, &self.members);
    }
    decode(r) { Ok(LeaveGroupRequest { group_id: r.string("group id")?, members: r.array("members")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeftMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: ErrorCode,
}

wire_struct! { LeftMember, min = 1 + 1 + 2,
    encode(self, out) {
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
        put_error(out, self.error);
    }
    decode(r) {
        Ok(LeftMember {
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
            error: error_code(r)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaveGroupResponse {
    pub error: ErrorCode,
    pub members: Vec<LeftMember>,
}

wire_struct! { LeaveGroupResponse, min = 2 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_array(out, &self.members);
    }
    decode(r) { Ok(LeaveGroupResponse { error: error_code(r)?, members: r.array("members")? }) }
}

// --------------------------------------------------------------- OffsetCommit

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitPartition {
    pub partition: u32,
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record; -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

wire_struct! { OffsetCommitPartition, min = 4 + 8 + 4 + 1,
    encode(self, out) {
        out.put_u32(self.partition);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_nullable_string(out, self.metadata.as_deref());
    }
    decode(r) {
        Ok(OffsetCommitPartition {
            partition: r.u32()?,
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            metadata: r.nullable_string("commit metadata")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitTopic {
    pub name: String,
    pub partitions: Vec<OffsetCommitPartition>,
}

wire_struct! { OffsetCommitTopic, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(OffsetCommitTopic { name: r.string("topic name")?, partitions: r.array("partitions")? }) }
}

/// Commits offsets for a group. A member of an active generation sends its
/// generation and id (a stale one is fenced); generation -1 with an empty
/// member id commits for a group without members (tools, manual assignment).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<OffsetCommitTopic>,
}

wire_struct! { OffsetCommitRequest, min = 1 + 4 + 1 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.group_id);
        out.put_i32(self.generation_id);
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
        put_array(out, &self.topics);
    }
    decode(r) {
        Ok(OffsetCommitRequest {
            group_id: r.string("group id")?,
            generation_id: r.i32()?,
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
            topics: r.array("topics")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionError {
    pub partition: u32,
    pub error: ErrorCode,
}

wire_struct! { PartitionError, min = 4 + 2,
    encode(self, out) {
        out.put_u32(self.partition);
        put_error(out, self.error);
    }
    decode(r) { Ok(PartitionError { partition: r.u32()?, error: error_code(r)? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitTopicResponse {
    pub name: String,
    pub partitions: Vec<PartitionError>,
}

wire_struct! { OffsetCommitTopicResponse, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(OffsetCommitTopicResponse { name: r.string("topic name")?, partitions: r.array("partitions")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitResponse {
    pub topics: Vec<OffsetCommitTopicResponse>,
}

wire_struct! { OffsetCommitResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(OffsetCommitResponse { topics: r.array("topics")? }) }
}

// ---------------------------------------------------------------- OffsetFetch

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchTopic {
    pub name: String,
    pub partitions: Vec<u32>,
}

impl Encode for u32 {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u32(*self);
    }
}

impl<B: Input> Decode<B> for u32 {
    const MIN_WIRE_LEN: usize = 4;
    fn decode(r: &mut Reader<'_, B>) -> Result<Self, DecodeError> {
        r.u32()
    }
}

wire_struct! { OffsetFetchTopic, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(OffsetFetchTopic { name: r.string("topic name")?, partitions: r.array("partitions")? }) }
}

/// Reads a group's committed offsets: of the partitions named, or of every
/// partition it has committed when `topics` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchRequest {
    pub group_id: String,
    pub topics: Option<Vec<OffsetFetchTopic>>,
}

wire_struct! { OffsetFetchRequest, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.group_id);
        match &self.topics {
            None => super::super::wire::put_varint(out, 0),
            Some(t) => {
                super::super::wire::put_len(out, t.len() + 1);
                for topic in t {
                    topic.encode(out);
                }
            }
        }
    }
    decode(r) {
        Ok(OffsetFetchRequest { group_id: r.string("group id")?, topics: r.nullable_array("topics")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchPartition {
    pub partition: u32,
    /// -1 when the group has committed nothing for the partition.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub error: ErrorCode,
}

wire_struct! { OffsetFetchPartition, min = 4 + 8 + 4 + 1 + 2,
    encode(self, out) {
        out.put_u32(self.partition);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_nullable_string(out, self.metadata.as_deref());
        put_error(out, self.error);
    }
    decode(r) {
        Ok(OffsetFetchPartition {
            partition: r.u32()?,
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            metadata: r.nullable_string("commit metadata")?,
            error: error_code(r)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchTopicResponse {
    pub name: String,
    pub partitions: Vec<OffsetFetchPartition>,
}

wire_struct! { OffsetFetchTopicResponse, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(OffsetFetchTopicResponse { name: r.string("topic name")?, partitions: r.array("partitions")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchResponse {
    pub error: ErrorCode,
    pub topics: Vec<OffsetFetchTopicResponse>,
}

wire_struct! { OffsetFetchResponse, min = 2 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_array(out, &self.topics);
    }
    decode(r) { Ok(OffsetFetchResponse { error: error_code(r)?, topics: r.array("topics")? }) }
}

// ----------------------------------------------------------------- ListGroups

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsRequest {}

wire_struct! { ListGroupsRequest, min = 0,
    encode(self, _out) {}
    decode(_r) { Ok(ListGroupsRequest {}) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
}

wire_struct! { ListedGroup, min = 1 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.group_id);
        put_string(out, &self.protocol_type);
        put_string(out, &self.state);
    }
    decode(r) {
        Ok(ListedGroup {
            group_id: r.string("group id")?,
            protocol_type: r.string("protocol type")?,
            state: r.string("state")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsResponse {
    pub error: ErrorCode,
    pub groups: Vec<ListedGroup>,
}

wire_struct! { ListGroupsResponse, min = 2 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_array(out, &self.groups);
    }
    decode(r) { Ok(ListGroupsResponse { error: error_code(r)?, groups: r.array("groups")? }) }
}

// ------------------------------------------------------------- DescribeGroups

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeGroupsRequest {
    pub groups: Vec<String>,
}

wire_struct! { DescribeGroupsRequest, min = 1,
    encode(self, out) { put_array(out, &self.groups); }
    decode(r) { Ok(DescribeGroupsRequest { groups: r.array("groups")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

wire_struct! { DescribedMember, min = 1 + 1 + 1 + 1 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.member_id);
        put_nullable_string(out, self.group_instance_id.as_deref());
        put_string(out, &self.client_id);
        put_string(out, &self.client_host);
        put_bytes(out, &self.metadata);
        put_bytes(out, &self.assignment);
    }
    decode(r) {
        Ok(DescribedMember {
            member_id: r.string("member id")?,
            group_instance_id: r.nullable_string("group instance id")?,
            client_id: r.string("client id")?,
            client_host: r.string("client host")?,
            metadata: opaque(r, "member metadata")?,
            assignment: opaque(r, "assignment")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribedGroup {
    pub error: ErrorCode,
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub generation_id: i32,
    pub members: Vec<DescribedMember>,
}

wire_struct! { DescribedGroup, min = 2 + 1 + 1 + 1 + 1 + 4 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_string(out, &self.group_id);
        put_string(out, &self.state);
        put_string(out, &self.protocol_type);
        put_string(out, &self.protocol);
        out.put_i32(self.generation_id);
        put_array(out, &self.members);
    }
    decode(r) {
        Ok(DescribedGroup {
            error: error_code(r)?,
            group_id: r.string("group id")?,
            state: r.string("state")?,
            protocol_type: r.string("protocol type")?,
            protocol: r.string("protocol")?,
            generation_id: r.i32()?,
            members: r.array("members")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeGroupsResponse {
    pub groups: Vec<DescribedGroup>,
}

wire_struct! { DescribeGroupsResponse, min = 1,
    encode(self, out) { put_array(out, &self.groups); }
    decode(r) { Ok(DescribeGroupsResponse { groups: r.array("groups")? }) }
}

// --------------------------------------------------------------- DeleteGroups

/// Deletes groups that have no members, with their committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteGroupsRequest {
    pub groups: Vec<String>,
}

wire_struct! { DeleteGroupsRequest, min = 1,
    encode(self, out) { put_array(out, &self.groups); }
    decode(r) { Ok(DeleteGroupsRequest { groups: r.array("groups")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupResult {
    pub group_id: String,
    pub error: ErrorCode,
}

wire_struct! { GroupResult, min = 1 + 2,
    encode(self, out) {
        put_string(out, &self.group_id);
        put_error(out, self.error);
    }
    decode(r) { Ok(GroupResult { group_id: r.string("group id")?, error: error_code(r)? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteGroupsResponse {
    pub results: Vec<GroupResult>,
}

wire_struct! { DeleteGroupsResponse, min = 1,
    encode(self, out) { put_array(out, &self.results); }
    decode(r) { Ok(DeleteGroupsResponse { results: r.array("results")? }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;

    fn round_trip<T: Encode + Decode<Bytes> + PartialEq + std::fmt::Debug>(v: &T) {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        let limits = Limits::default();
        let mut r = Reader::new(out.clone().freeze(), &limits);
        let back = T::decode(&mut r).expect("decodes");
        assert_eq!(r.remaining(), 0);
        assert_eq!(&back, v);
        // Every strict prefix is a typed error, never a panic.
        for cut in 0..out.len() {
            let mut r = Reader::new(out.clone().freeze().slice(..cut), &limits);
            assert!(T::decode(&mut r).is_err(), "prefix of {cut} bytes decoded");
        }
    }

    #[test]
    fn group_messages_round_trip() {
        round_trip(&JoinGroupRequest {
            group_id: "g".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            member_id: String::new(),
            group_instance_id: Some("i-1".into()),
            protocol_type: "consumer".into(),
            protocols: vec![JoinGroupProtocol {
                name: "range".into(),
                metadata: Bytes::from_static(b"\x01\x02"),
            }],
        });
        round_trip(&JoinGroupResponse {
            error: ErrorCode::None,
            generation_id: 3,
            protocol_name: Some("range".into()),
            leader: "m-1".into(),
            member_id: "m-2".into(),
            members: vec![JoinGroupMember {
                member_id: "m-1".into(),
                group_instance_id: None,
                metadata: Bytes::from_static(b"xyz"),
            }],
        });
        round_trip(&SyncGroupRequest {
            group_id: "g".into(),
            generation_id: 3,
            member_id: "m-1".into(),
            group_instance_id: None,
            assignments: vec![SyncGroupAssignment {
                member_id: "m-1".into(),
                assignment: Bytes::from_static(b"a"),
            }],
        });
        round_trip(&OffsetCommitRequest {
            group_id: "g".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![OffsetCommitTopic {
                name: "t".into(),
                partitions: vec![OffsetCommitPartition {
                    partition: 2,
                    offset: 42,
                    leader_epoch: -1,
                    metadata: Some("m".into()),
                }],
            }],
        });
        round_trip(&OffsetFetchRequest {
            group_id: "g".into(),
            topics: None,
        });
        round_trip(&OffsetFetchRequest {
            group_id: "g".into(),
            topics: Some(vec![OffsetFetchTopic {
                name: "t".into(),
                partitions: vec![0, 5],
            }]),
        });
        round_trip(&DescribeGroupsResponse {
            groups: vec![DescribedGroup {
                error: ErrorCode::None,
                group_id: "g".into(),
                state: "Stable".into(),
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                generation_id: 7,
                members: vec![DescribedMember {
                    member_id: "m".into(),
                    group_instance_id: Some("i".into()),
                    client_id: "c".into(),
                    client_host: "127.0.0.1".into(),
                    metadata: Bytes::new(),
                    assignment: Bytes::from_static(b"q"),
                }],
            }],
        });
        round_trip(&LeaveGroupResponse {
            error: ErrorCode::None,
            members: vec![LeftMember {
                member_id: "m".into(),
                group_instance_id: None,
                error: ErrorCode::UnknownMemberId,
            }],
        });
    }
}
