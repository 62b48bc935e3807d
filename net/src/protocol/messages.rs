//! Every api's request and response bodies, and their encodings.
//!
//! Fields go on the wire in declaration order; `docs/PROTOCOL.md` has the
//! table for each message. Types whose bodies carry records decode only from
//! the buffer type that keeps them zero-copy: `BytesMut` for produce requests
//! (the broker patches offsets in place), `Bytes` for fetch responses.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{
    put_array, put_bool, put_bytes, put_bytes32, put_len, put_nullable_string, put_string, put_varint,
    Decode, Encode, Input, Reader,
};
use super::{DecodeError, ErrorCode};
use crate::types::TopicId;

fn put_error(out: &mut BytesMut, e: ErrorCode) {
    out.put_i16(e.code());
}

fn error_code<B: Input>(r: &mut Reader<'_, B>) -> Result<ErrorCode, DecodeError> {
    r.i16().map(ErrorCode::from_i16)
}

fn topic_id<B: Input>(r: &mut Reader<'_, B>) -> Result<TopicId, DecodeError> {
    r.u64().map(TopicId)
}

/// Implements `Encode` and `Decode` for a message whose fields are written in
/// order by the given expressions. `$B` is the buffer type parameter or a
/// concrete buffer type.
macro_rules! wire_struct {
    (
        $ty:ident, min = $min:expr,
        encode($s:ident, $out:ident) $enc:block
        decode($r:ident) $dec:block
    ) => {
        impl Encode for $ty {
            fn encode(&$s, $out: &mut BytesMut) $enc
        }
        impl<B: Input> Decode<B> for $ty {
            const MIN_WIRE_LEN: usize = $min;
            fn decode($r: &mut Reader<'_, B>) -> Result<Self, DecodeError> $dec
        }
    };
    (
        $ty:ident<$buf:ty>, min = $min:expr,
        encode($s:ident, $out:ident) $enc:block
        decode($r:ident) $dec:block
    ) => {
        impl Encode for $ty {
            fn encode(&$s, $out: &mut BytesMut) $enc
        }
        impl Decode<$buf> for $ty {
            const MIN_WIRE_LEN: usize = $min;
            fn decode($r: &mut Reader<'_, $buf>) -> Result<Self, DecodeError> $dec
        }
    };
}

/// A topic config override: key and value.
impl Encode for (String, String) {
    fn encode(&self, out: &mut BytesMut) {
        put_string(out, &self.0);
        put_string(out, &self.1);
    }
}

impl<B: Input> Decode<B> for (String, String) {
    const MIN_WIRE_LEN: usize = 2;
    fn decode(r: &mut Reader<'_, B>) -> Result<Self, DecodeError> {
        Ok((r.string("config key")?, r.string("config value")?))
    }
}

/// A config change: key and new value, `None` to return to the default.
impl Encode for (String, Option<String>) {
    fn encode(&self, out: &mut BytesMut) {
        put_string(out, &self.0);
        put_nullable_string(out, self.1.as_deref());
    }
}

impl<B: Input> Decode<B> for (String, Option<String>) {
    const MIN_WIRE_LEN: usize = 2;
    fn decode(r: &mut Reader<'_, B>) -> Result<Self, DecodeError> {
        Ok((r.string("config key")?, r.nullable_string("config value")?))
    }
}

// ---------------------------------------------------------------- ApiVersions

/// Asks which apis and versions the broker supports. Empty body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiVersionsRequest {}

wire_struct! { ApiVersionsRequest, min = 0,
    encode(self, _out) {}
    decode(_r) { Ok(ApiVersionsRequest {}) }
}

/// The versions of one api the broker supports, inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiVersionRange {
    pub api_key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

wire_struct! { ApiVersionRange, min = 6,
    encode(self, out) {
        out.put_u16(self.api_key);
        out.put_u16(self.min_version);
        out.put_u16(self.max_version);
    }
    decode(r) {
        Ok(ApiVersionRange { api_key: r.u16()?, min_version: r.u16()?, max_version: r.u16()? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiVersionsResponse {
    pub apis: Vec<ApiVersionRange>,
}

impl ApiVersionsResponse {
    /// The answer of a broker built from this crate: every `ApiKey` at the
    /// versions this build decodes.
    pub fn supported() -> ApiVersionsResponse {
        ApiVersionsResponse {
            apis: super::ApiKey::ALL
                .iter()
                .map(|k| ApiVersionRange {
                    api_key: k.key(),
                    min_version: k.min_version(),
                    max_version: k.max_version(),
                })
                .collect(),
        }
    }
}

wire_struct! { ApiVersionsResponse, min = 1,
    encode(self, out) { put_array(out, &self.apis); }
    decode(r) { Ok(ApiVersionsResponse { apis: r.array("apis")? }) }
}

// ------------------------------------------------------------------- Metadata

/// Asks for brokers and topic metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataRequest {
    /// Topic names; `None` asks for every topic.
    pub topics: Option<Vec<String>>,
}

wire_struct! { MetadataRequest, min = 1,
    encode(self, out) {
        match &self.topics {
            None => put_varint(out, 0),
            Some(t) => {
                put_len(out, t.len() + 1);
                for name in t {
                    put_string(out, name);
                }
            }
        }
    }
    decode(r) { Ok(MetadataRequest { topics: r.nullable_array("topics")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerMeta {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

wire_struct! { BrokerMeta, min = 4 + 1 + 2,
    encode(self, out) {
        out.put_i32(self.node_id);
        put_string(out, &self.host);
        out.put_u16(self.port);
    }
    decode(r) { Ok(BrokerMeta { node_id: r.i32()?, host: r.string("host")?, port: r.u16()? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionMeta {
    pub partition: u32,
    pub error: ErrorCode,
    /// Node id of the leader; -1 when there is none.
    pub leader: i32,
    pub leader_epoch: i32,
    /// Node ids of every replica, leader included.
    pub replicas: Vec<i32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
}

wire_struct! { PartitionMeta, min = 4 + 2 + 4 + 4 + 1 + 1,
    encode(self, out) {
        out.put_u32(self.partition);
        put_error(out, self.error);
        out.put_i32(self.leader);
        out.put_i32(self.leader_epoch);
        put_array(out, &self.replicas);
        put_array(out, &self.isr);
    }
    decode(r) {
        Ok(PartitionMeta {
            partition: r.u32()?,
            error: error_code(r)?,
            leader: r.i32()?,
            leader_epoch: r.i32()?,
            replicas: r.array("replicas")?,
            isr: r.array("isr")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicMeta {
    pub error: ErrorCode,
    pub name: String,
    pub id: TopicId,
    pub partitions: Vec<PartitionMeta>,
}

wire_struct! { TopicMeta, min = 2 + 1 + 8 + 1,
    encode(self, out) {
        put_error(out, self.error);
        put_string(out, &self.name);
        out.put_u64(self.id.0);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(TopicMeta {
            error: error_code(r)?,
            name: r.string("topic name")?,
            id: topic_id(r)?,
            partitions: r.array("partitions")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerMeta>,
    /// Node id of the controller; -1 when there is none.
    pub controller_id: i32,
    pub topics: Vec<TopicMeta>,
}

wire_struct! { MetadataResponse, min = 1 + 4 + 1,
    encode(self, out) {
        put_array(out, &self.brokers);
        out.put_i32(self.controller_id);
        put_array(out, &self.topics);
    }
    decode(r) {
        Ok(MetadataResponse {
            brokers: r.array("brokers")?,
            controller_id: r.i32()?,
            topics: r.array("topics")?,
        })
    }
}

// --------------------------------------------------------------- CreateTopics

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreatableTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    /// Config overrides, key and value.
    pub configs: Vec<(String, String)>,
}

wire_struct! { CreatableTopic, min = 1 + 4 + 2 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        out.put_u32(self.partitions);
        out.put_u16(self.replication_factor);
        put_array(out, &self.configs);
    }
    decode(r) {
        Ok(CreatableTopic {
            name: r.string("topic name")?,
            partitions: r.u32()?,
            replication_factor: r.u16()?,
            configs: r.array("configs")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTopicsRequest {
    pub topics: Vec<CreatableTopic>,
    pub timeout_ms: u32,
    /// Check the request without creating anything.
    pub validate_only: bool,
}

wire_struct! { CreateTopicsRequest, min = 1 + 4 + 1,
    encode(self, out) {
        put_array(out, &self.topics);
        out.put_u32(self.timeout_ms);
        put_bool(out, self.validate_only);
    }
    decode(r) {
        Ok(CreateTopicsRequest {
            topics: r.array("topics")?,
            timeout_ms: r.u32()?,
            validate_only: r.bool("validate_only")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTopicResult {
    pub name: String,
    /// The new topic's id; `TopicId(0)` when it was not created.
    pub id: TopicId,
    pub error: ErrorCode,
    pub message: Option<String>,
}

wire_struct! { CreateTopicResult, min = 1 + 8 + 2 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        out.put_u64(self.id.0);
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
    }
    decode(r) {
        Ok(CreateTopicResult {
            name: r.string("topic name")?,
            id: topic_id(r)?,
            error: error_code(r)?,
            message: r.nullable_string("message")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTopicsResponse {
    pub topics: Vec<CreateTopicResult>,
}

wire_struct! { CreateTopicsResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(CreateTopicsResponse { topics: r.array("topics")? }) }
}

// --------------------------------------------------------------- DeleteTopics

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteTopicsRequest {
    pub names: Vec<String>,
    pub timeout_ms: u32,
}

wire_struct! { DeleteTopicsRequest, min = 1 + 4,
    encode(self, out) {
        put_array(out, &self.names);
        out.put_u32(self.timeout_ms);
    }
    decode(r) { Ok(DeleteTopicsRequest { names: r.array("names")?, timeout_ms: r.u32()? }) }
}

/// The outcome for one topic of an admin request (delete, alter configs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
}

wire_struct! { TopicResult, min = 1 + 2 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
    }
    decode(r) {
        Ok(TopicResult {
            name: r.string("topic name")?,
            error: error_code(r)?,
            message: r.nullable_string("message")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteTopicsResponse {
    pub topics: Vec<TopicResult>,
}

wire_struct! { DeleteTopicsResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(DeleteTopicsResponse { topics: r.array("topics")? }) }
}

// -------------------------------------------------------------------- Produce

/// Records for one partition: one or more concatenated record batches,
/// carried as opaque bytes (the broker validates them, not this layer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducePartition {
    pub partition: u32,
    /// A piece of the request frame's own allocation, so the broker can
    /// rewrite base offsets and leader epochs in place.
    pub records: BytesMut,
}

wire_struct! { ProducePartition<BytesMut>, min = 4 + 1,
    encode(self, out) {
        out.put_u32(self.partition);
        put_bytes(out, &self.records);
    }
    decode(r) { Ok(ProducePartition { partition: r.u32()?, records: r.bytes("records")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceTopic {
    pub topic_id: TopicId,
    pub partitions: Vec<ProducePartition>,
}

wire_struct! { ProduceTopic<BytesMut>, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(ProduceTopic { topic_id: topic_id(r)?, partitions: r.array("partitions")? }) }
}

/// `acks = 0` asks for no response at all; `acks = 1` for one after the
/// leader appended; `acks = -1` for one after every in-sync replica did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRequest {
    /// -1, 0 or 1; anything else fails decoding with `InvalidValue`.
    pub acks: i8,
    pub timeout_ms: u32,
    pub topics: Vec<ProduceTopic>,
}

wire_struct! { ProduceRequest<BytesMut>, min = 1 + 4 + 1,
    encode(self, out) {
        out.put_i8(self.acks);
        out.put_u32(self.timeout_ms);
        put_array(out, &self.topics);
    }
    decode(r) {
        let acks = r.i8()?;
        if !(-1..=1).contains(&acks) {
            return Err(DecodeError::InvalidValue { what: "acks", value: acks as i64 });
        }
        Ok(ProduceRequest { acks, timeout_ms: r.u32()?, topics: r.array("topics")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducePartitionResponse {
    pub partition: u32,
    pub error: ErrorCode,
    /// Offset assigned to the first record; -1 on error.
    pub base_offset: i64,
    pub log_start_offset: i64,
    pub message: Option<String>,
}

wire_struct! { ProducePartitionResponse, min = 4 + 2 + 8 + 8 + 1,
    encode(self, out) {
        out.put_u32(self.partition);
        put_error(out, self.error);
        out.put_i64(self.base_offset);
        out.put_i64(self.log_start_offset);
        put_nullable_string(out, self.message.as_deref());
    }
    decode(r) {
        Ok(ProducePartitionResponse {
            partition: r.u32()?,
            error: error_code(r)?,
            base_offset: r.i64()?,
            log_start_offset: r.i64()?,
            message: r.nullable_string("message")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceTopicResponse {
    pub topic_id: TopicId,
    pub partitions: Vec<ProducePartitionResponse>,
}

wire_struct! { ProduceTopicResponse, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(ProduceTopicResponse { topic_id: topic_id(r)?, partitions: r.array("partitions")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceResponse {
    pub topics: Vec<ProduceTopicResponse>,
}

wire_struct! { ProduceResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(ProduceResponse { topics: r.array("topics")? }) }
}

// ---------------------------------------------------------------------- Fetch

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchPartition {
    pub partition: u32,
    pub fetch_offset: i64,
    pub partition_max_bytes: u32,
}

wire_struct! { FetchPartition, min = 4 + 8 + 4,
    encode(self, out) {
        out.put_u32(self.partition);
        out.put_i64(self.fetch_offset);
        out.put_u32(self.partition_max_bytes);
    }
    decode(r) {
        Ok(FetchPartition {
            partition: r.u32()?,
            fetch_offset: r.i64()?,
            partition_max_bytes: r.u32()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchTopic {
    pub topic_id: TopicId,
    pub partitions: Vec<FetchPartition>,
}

wire_struct! { FetchTopic, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(FetchTopic { topic_id: topic_id(r)?, partitions: r.array("partitions")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchRequest {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub topics: Vec<FetchTopic>,
}

wire_struct! { FetchRequest, min = 4 + 4 + 4 + 1,
    encode(self, out) {
        out.put_u32(self.max_wait_ms);
        out.put_u32(self.min_bytes);
        out.put_u32(self.max_bytes);
        put_array(out, &self.topics);
    }
    decode(r) {
        Ok(FetchRequest {
            max_wait_ms: r.u32()?,
            min_bytes: r.u32()?,
            max_bytes: r.u32()?,
            topics: r.array("topics")?,
        })
    }
}

/// Bytes a `FetchPartitionResponse` takes before its records: the records
/// length is a fixed `u32`, so a sender can write it before it has the bytes.
pub(crate) const FETCH_PARTITION_HEAD_LEN: usize = 4 + 2 + 8 + 8 + 4;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchPartitionResponse {
    pub partition: u32,
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole record batches as stored; a slice of the response frame.
    pub records: Bytes,
}

wire_struct! { FetchPartitionResponse<Bytes>, min = FETCH_PARTITION_HEAD_LEN,
    encode(self, out) {
        out.put_u32(self.partition);
        put_error(out, self.error);
        out.put_i64(self.high_watermark);
        out.put_i64(self.log_start_offset);
        put_bytes32(out, &self.records);
    }
    decode(r) {
        Ok(FetchPartitionResponse {
            partition: r.u32()?,
            error: error_code(r)?,
            high_watermark: r.i64()?,
            log_start_offset: r.i64()?,
            records: r.bytes32("records")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchTopicResponse {
    pub topic_id: TopicId,
    pub partitions: Vec<FetchPartitionResponse>,
}

wire_struct! { FetchTopicResponse<Bytes>, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(FetchTopicResponse { topic_id: topic_id(r)?, partitions: r.array("partitions")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchResponse {
    pub topics: Vec<FetchTopicResponse>,
}

wire_struct! { FetchResponse<Bytes>, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(FetchResponse { topics: r.array("topics")? }) }
}

// ---------------------------------------------------------------- ListOffsets

/// `ListOffsetsPartition::timestamp` asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsetsPartition::timestamp` asking for the log end offset.
pub const LATEST_TIMESTAMP: i64 = -1;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsPartition {
    pub partition: u32,
    /// `EARLIEST_TIMESTAMP`, `LATEST_TIMESTAMP`, or a time in ms: the first
    /// offset whose timestamp is at or after it.
    pub timestamp: i64,
}

wire_struct! { ListOffsetsPartition, min = 4 + 8,
    encode(self, out) {
        out.put_u32(self.partition);
        out.put_i64(self.timestamp);
    }
    decode(r) { Ok(ListOffsetsPartition { partition: r.u32()?, timestamp: r.i64()? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsTopic {
    pub topic_id: TopicId,
    pub partitions: Vec<ListOffsetsPartition>,
}

wire_struct! { ListOffsetsTopic, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) { Ok(ListOffsetsTopic { topic_id: topic_id(r)?, partitions: r.array("partitions")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsRequest {
    pub topics: Vec<ListOffsetsTopic>,
}

wire_struct! { ListOffsetsRequest, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(ListOffsetsRequest { topics: r.array("topics")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsPartitionResponse {
    pub partition: u32,
    pub error: ErrorCode,
    /// The timestamp of the record found; -1 for the earliest/latest queries.
    pub timestamp: i64,
    /// The offset found; -1 when none.
    pub offset: i64,
}

wire_struct! { ListOffsetsPartitionResponse, min = 4 + 2 + 8 + 8,
    encode(self, out) {
        out.put_u32(self.partition);
        put_error(out, self.error);
        out.put_i64(self.timestamp);
        out.put_i64(self.offset);
    }
    decode(r) {
        Ok(ListOffsetsPartitionResponse {
            partition: r.u32()?,
            error: error_code(r)?,
            timestamp: r.i64()?,
            offset: r.i64()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsTopicResponse {
    pub topic_id: TopicId,
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

wire_struct! { ListOffsetsTopicResponse, min = 8 + 1,
    encode(self, out) {
        out.put_u64(self.topic_id.0);
        put_array(out, &self.partitions);
    }
    decode(r) {
        Ok(ListOffsetsTopicResponse { topic_id: topic_id(r)?, partitions: r.array("partitions")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsResponse {
    pub topics: Vec<ListOffsetsTopicResponse>,
}

wire_struct! { ListOffsetsResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(ListOffsetsResponse { topics: r.array("topics")? }) }
}

// ------------------------------------------------------------ DescribeConfigs

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeConfigsRequest {
    /// Topic names.
    pub topics: Vec<String>,
}

wire_struct! { DescribeConfigsRequest, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(DescribeConfigsRequest { topics: r.array("topics")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigEntry {
    pub key: String,
    /// `None` for a config with no value (or a sensitive one).
    pub value: Option<String>,
    /// The value is the broker default, not a topic override.
    pub is_default: bool,
}

wire_struct! { ConfigEntry, min = 1 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.key);
        put_nullable_string(out, self.value.as_deref());
        put_bool(out, self.is_default);
    }
    decode(r) {
        Ok(ConfigEntry {
            key: r.string("config key")?,
            value: r.nullable_string("config value")?,
            is_default: r.bool("is_default")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeConfigsResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
    pub configs: Vec<ConfigEntry>,
}

wire_struct! { DescribeConfigsResult, min = 1 + 2 + 1 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
        put_array(out, &self.configs);
    }
    decode(r) {
        Ok(DescribeConfigsResult {
            name: r.string("topic name")?,
            error: error_code(r)?,
            message: r.nullable_string("message")?,
            configs: r.array("configs")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeConfigsResponse {
    pub topics: Vec<DescribeConfigsResult>,
}

wire_struct! { DescribeConfigsResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(DescribeConfigsResponse { topics: r.array("topics")? }) }
}

// --------------------------------------------------------------- AlterConfigs

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterConfigsTopic {
    pub name: String,
    /// Key and new value; `None` returns the key to its default.
    pub configs: Vec<(String, Option<String>)>,
}

wire_struct! { AlterConfigsTopic, min = 1 + 1,
    encode(self, out) {
        put_string(out, &self.name);
        put_array(out, &self.configs);
    }
    decode(r) { Ok(AlterConfigsTopic { name: r.string("topic name")?, configs: r.array("configs")? }) }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterConfigsRequest {
    pub topics: Vec<AlterConfigsTopic>,
    /// Check the request without changing anything.
    pub validate_only: bool,
}

wire_struct! { AlterConfigsRequest, min = 1 + 1,
    encode(self, out) {
        put_array(out, &self.topics);
        put_bool(out, self.validate_only);
    }
    decode(r) {
        Ok(AlterConfigsRequest { topics: r.array("topics")?, validate_only: r.bool("validate_only")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterConfigsResponse {
    pub topics: Vec<TopicResult>,
}

wire_struct! { AlterConfigsResponse, min = 1,
    encode(self, out) { put_array(out, &self.topics); }
    decode(r) { Ok(AlterConfigsResponse { topics: r.array("topics")? }) }
}

// ------------------------------------------------------------ consumer groups

mod cluster;
mod group;
mod quorum;
mod replication;
pub use cluster::*;
pub use group::*;
pub use quorum::*;
pub use replication::*;
