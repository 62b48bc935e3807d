//! Frames, and whole requests and responses in and out of them.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{encode_response_header, RawRequestHeader, RESPONSE_HEADER_LEN};
use super::messages::*;
use super::wire::{put_len, put_string, Decode, Encode, Reader};
use super::{ApiKey, DecodeError, ErrorCode, Limits, RequestError, RequestHeader};
use crate::types::TopicId;

/// Bytes of the length prefix in front of every frame.
pub const FRAME_PREFIX_LEN: usize = 4;

/// Cheap check before any allocation: `Ok(Some(total))` when a whole frame
/// (4-byte prefix + payload, `total` bytes) is at the start of `buf`;
/// `Ok(None)` when more bytes are needed; `Err(FrameTooLarge)` when the prefix
/// announces more than `max_frame_bytes`; `Err(EmptyFrame)` for a zero length.
/// Both errors mean the stream cannot be resynchronised: close the connection.
pub fn frame_length(buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.first_chunk::<FRAME_PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    if len > limits.max_frame_bytes {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: limits.max_frame_bytes,
        });
    }
    let total = FRAME_PREFIX_LEN + len;
    Ok((buf.len() >= total).then_some(total))
}

/// Reserves the length prefix; returns where it is, for `end_frame`.
fn begin_frame(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_u32(0);
    start
}

/// Writes the length prefix at `start`, counting `extra` bytes the caller
/// will send after those in `out` (fetch records sent from files).
///
/// # Panics
/// If the payload exceeds `u32::MAX` bytes, which no frame can carry.
fn end_frame(out: &mut BytesMut, start: usize, extra: usize) {
    let len = out.len() - start - FRAME_PREFIX_LEN + extra;
    let len = u32::try_from(len).expect("frame exceeds u32::MAX bytes");
    out[start..start + FRAME_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
}

/// A request body, one variant per api.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    AlterConfigs(AlterConfigsRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    DescribeCluster(DescribeClusterRequest),
    ElectLeaders(ElectLeadersRequest),
    RaftMessages(RaftMessagesRequest),
    BrokerRegistration(BrokerRegistrationRequest),
    BrokerHeartbeat(BrokerHeartbeatRequest),
    MetadataFetch(MetadataFetchRequest),
    ReplicaFetch(ReplicaFetchRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    AlterPartition(AlterPartitionRequest),
}

impl Request {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::ApiVersions(_) => ApiKey::ApiVersions,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::CreateTopics(_) => ApiKey::CreateTopics,
            Request::DeleteTopics(_) => ApiKey::DeleteTopics,
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::DescribeConfigs(_) => ApiKey::DescribeConfigs,
            Request::AlterConfigs(_) => ApiKey::AlterConfigs,
            Request::FindCoordinator(_) => ApiKey::FindCoordinator,
            Request::JoinGroup(_) => ApiKey::JoinGroup,
            Request::SyncGroup(_) => ApiKey::SyncGroup,
            Request::Heartbeat(_) => ApiKey::Heartbeat,
            Request::LeaveGroup(_) => ApiKey::LeaveGroup,
            Request::OffsetCommit(_) => ApiKey::OffsetCommit,
            Request::OffsetFetch(_) => ApiKey::OffsetFetch,
            Request::ListGroups(_) => ApiKey::ListGroups,
            Request::DescribeGroups(_) => ApiKey::DescribeGroups,
            Request::DeleteGroups(_) => ApiKey::DeleteGroups,
            Request::DescribeCluster(_) => ApiKey::DescribeCluster,
            Request::ElectLeaders(_) => ApiKey::ElectLeaders,
            Request::RaftMessages(_) => ApiKey::RaftMessages,
            Request::BrokerRegistration(_) => ApiKey::BrokerRegistration,
            Request::BrokerHeartbeat(_) => ApiKey::BrokerHeartbeat,
            Request::MetadataFetch(_) => ApiKey::MetadataFetch,
            Request::ReplicaFetch(_) => ApiKey::ReplicaFetch,
            Request::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
            Request::AlterPartition(_) => ApiKey::AlterPartition,
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            Request::ApiVersions(m) => m.encode(out),
            Request::Metadata(m) => m.encode(out),
            Request::CreateTopics(m) => m.encode(out),
            Request::DeleteTopics(m) => m.encode(out),
            Request::Produce(m) => m.encode(out),
            Request::Fetch(m) => m.encode(out),
            Request::ListOffsets(m) => m.encode(out),
            Request::DescribeConfigs(m) => m.encode(out),
            Request::AlterConfigs(m) => m.encode(out),
            Request::FindCoordinator(m) => m.encode(out),
            Request::JoinGroup(m) => m.encode(out),
            Request::SyncGroup(m) => m.encode(out),
            Request::Heartbeat(m) => m.encode(out),
            Request::LeaveGroup(m) => m.encode(out),
            Request::OffsetCommit(m) => m.encode(out),
            Request::OffsetFetch(m) => m.encode(out),
            Request::ListGroups(m) => m.encode(out),
            Request::DescribeGroups(m) => m.encode(out),
            Request::DeleteGroups(m) => m.encode(out),
            Request::DescribeCluster(m) => m.encode(out),
            Request::ElectLeaders(m) => m.encode(out),
            Request::RaftMessages(m) => m.encode(out),
            Request::BrokerRegistration(m) => m.encode(out),
            Request::BrokerHeartbeat(m) => m.encode(out),
            Request::MetadataFetch(m) => m.encode(out),
            Request::ReplicaFetch(m) => m.encode(out),
            Request::OffsetForLeaderEpoch(m) => m.encode(out),
            Request::AlterPartition(m) => m.encode(out),
        }
    }

    fn decode_body(api_key: ApiKey, r: &mut Reader<'_, BytesMut>) -> Result<Request, DecodeError> {
        Ok(match api_key {
            ApiKey::ApiVersions => Request::ApiVersions(Decode::decode(r)?),
            ApiKey::Metadata => Request::Metadata(Decode::decode(r)?),
            ApiKey::CreateTopics => Request::CreateTopics(Decode::decode(r)?),
            ApiKey::DeleteTopics => Request::DeleteTopics(Decode::decode(r)?),
            ApiKey::Produce => Request::Produce(Decode::decode(r)?),
            ApiKey::Fetch => Request::Fetch(Decode::decode(r)?),
            ApiKey::ListOffsets => Request::ListOffsets(Decode::decode(r)?),
            ApiKey::DescribeConfigs => Request::DescribeConfigs(Decode::decode(r)?),
            ApiKey::AlterConfigs => Request::AlterConfigs(Decode::decode(r)?),
            ApiKey::FindCoordinator => Request::FindCoordinator(Decode::decode(r)?),
            ApiKey::JoinGroup => Request::JoinGroup(Decode::decode(r)?),
            ApiKey::SyncGroup => Request::SyncGroup(Decode::decode(r)?),
            ApiKey::Heartbeat => Request::Heartbeat(Decode::decode(r)?),
            ApiKey::LeaveGroup => Request::LeaveGroup(Decode::decode(r)?),
            ApiKey::OffsetCommit => Request::OffsetCommit(Decode::decode(r)?),
            ApiKey::OffsetFetch => Request::OffsetFetch(Decode::decode(r)?),
            ApiKey::ListGroups => Request::ListGroups(Decode::decode(r)?),
            ApiKey::DescribeGroups => Request::DescribeGroups(Decode::decode(r)?),
            ApiKey::DeleteGroups => Request::DeleteGroups(Decode::decode(r)?),
            ApiKey::DescribeCluster => Request::DescribeCluster(Decode::decode(r)?),
            ApiKey::ElectLeaders => Request::ElectLeaders(Decode::decode(r)?),
            ApiKey::RaftMessages => Request::RaftMessages(Decode::decode(r)?),
            ApiKey::BrokerRegistration => Request::BrokerRegistration(Decode::decode(r)?),
            ApiKey::BrokerHeartbeat => Request::BrokerHeartbeat(Decode::decode(r)?),
            ApiKey::MetadataFetch => Request::MetadataFetch(Decode::decode(r)?),
            ApiKey::ReplicaFetch => Request::ReplicaFetch(Decode::decode(r)?),
            ApiKey::OffsetForLeaderEpoch => Request::OffsetForLeaderEpoch(Decode::decode(r)?),
            ApiKey::AlterPartition => Request::AlterPartition(Decode::decode(r)?),
        })
    }
}

/// A successful response body, one variant per api.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    CreateTopics(CreateTopicsResponse),
    DeleteTopics(DeleteTopicsResponse),
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    DescribeConfigs(DescribeConfigsResponse),
    AlterConfigs(AlterConfigsResponse),
    FindCoordinator(FindCoordinatorResponse),
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    ListGroups(ListGroupsResponse),
    DescribeGroups(DescribeGroupsResponse),
    DeleteGroups(DeleteGroupsResponse),
    DescribeCluster(DescribeClusterResponse),
    ElectLeaders(ElectLeadersResponse),
    RaftMessages(RaftMessagesResponse),
    BrokerRegistration(BrokerRegistrationResponse),
    BrokerHeartbeat(BrokerHeartbeatResponse),
    MetadataFetch(MetadataFetchResponse),
    /// A replica fetch is answered with a fetch response's body.
    ReplicaFetch(FetchResponse),
    OffsetForLeaderEpoch(OffsetForLeaderEpochResponse),
    AlterPartition(AlterPartitionResponse),
}

impl Response {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Response::ApiVersions(_) => ApiKey::ApiVersions,
            Response::Metadata(_) => ApiKey::Metadata,
            Response::CreateTopics(_) => ApiKey::CreateTopics,
            Response::DeleteTopics(_) => ApiKey::DeleteTopics,
            Response::Produce(_) => ApiKey::Produce,
            Response::Fetch(_) => ApiKey::Fetch,
            Response::ListOffsets(_) => ApiKey::ListOffsets,
            Response::DescribeConfigs(_) => ApiKey::DescribeConfigs,
            Response::AlterConfigs(_) => ApiKey::AlterConfigs,
            Response::FindCoordinator(_) => ApiKey::FindCoordinator,
            Response::JoinGroup(_) => ApiKey::JoinGroup,
            Response::SyncGroup(_) => ApiKey::SyncGroup,
            Response::Heartbeat(_) => ApiKey::Heartbeat,
            Response::LeaveGroup(_) => ApiKey::LeaveGroup,
            Response::OffsetCommit(_) => ApiKey::OffsetCommit,
            Response::OffsetFetch(_) => ApiKey::OffsetFetch,
            Response::ListGroups(_) => ApiKey::ListGroups,
            Response::DescribeGroups(_) => ApiKey::DescribeGroups,
            Response::DeleteGroups(_) => ApiKey::DeleteGroups,
            Response::DescribeCluster(_) => ApiKey::DescribeCluster,
            Response::ElectLeaders(_) => ApiKey::ElectLeaders,
            Response::RaftMessages(_) => ApiKey::RaftMessages,
            Response::BrokerRegistration(_) => ApiKey::BrokerRegistration,
            Response::BrokerHeartbeat(_) => ApiKey::BrokerHeartbeat,
            Response::MetadataFetch(_) => ApiKey::MetadataFetch,
            Response::ReplicaFetch(_) => ApiKey::ReplicaFetch,
            Response::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
            Response::AlterPartition(_) => ApiKey::AlterPartition,
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            Response::ApiVersions(m) => m.encode(out),
            Response::Metadata(m) => m.encode(out),
            Response::CreateTopics(m) => m.encode(out),
            Response::DeleteTopics(m) => m.encode(out),
            Response::Produce(m) => m.encode(out),
            Response::Fetch(m) => m.encode(out),
            Response::ListOffsets(m) => m.encode(out),
            Response::DescribeConfigs(m) => m.encode(out),
            Response::AlterConfigs(m) => m.encode(out),
            Response::FindCoordinator(m) => m.encode(out),
            Response::JoinGroup(m) => m.encode(out),
            Response::SyncGroup(m) => m.encode(out),
            Response::Heartbeat(m) => m.encode(out),
            Response::LeaveGroup(m) => m.encode(out),
            Response::OffsetCommit(m) => m.encode(out),
            Response::OffsetFetch(m) => m.encode(out),
            Response::ListGroups(m) => m.encode(out),
            Response::DescribeGroups(m) => m.encode(out),
            Response::DeleteGroups(m) => m.encode(out),
            Response::DescribeCluster(m) => m.encode(out),
            Response::ElectLeaders(m) => m.encode(out),
            Response::RaftMessages(m) => m.encode(out),
            Response::BrokerRegistration(m) => m.encode(out),
            Response::BrokerHeartbeat(m) => m.encode(out),
            Response::MetadataFetch(m) => m.encode(out),
            Response::ReplicaFetch(m) => m.encode(out),
            Response::OffsetForLeaderEpoch(m) => m.encode(out),
            Response::AlterPartition(m) => m.encode(out),
        }
    }

    fn decode_body(api_key: ApiKey, r: &mut Reader<'_, Bytes>) -> Result<Response, DecodeError> {
        Ok(match api_key {
            ApiKey::ApiVersions => Response::ApiVersions(Decode::decode(r)?),
            ApiKey::Metadata => Response::Metadata(Decode::decode(r)?),
            ApiKey::CreateTopics => Response::CreateTopics(Decode::decode(r)?),
            ApiKey::DeleteTopics => Response::DeleteTopics(Decode::decode(r)?),
            ApiKey::Produce => Response::Produce(Decode::decode(r)?),
            ApiKey::Fetch => Response::Fetch(Decode::decode(r)?),
            ApiKey::ListOffsets => Response::ListOffsets(Decode::decode(r)?),
            ApiKey::DescribeConfigs => Response::DescribeConfigs(Decode::decode(r)?),
            ApiKey::AlterConfigs => Response::AlterConfigs(Decode::decode(r)?),
            ApiKey::FindCoordinator => Response::FindCoordinator(Decode::decode(r)?),
            ApiKey::JoinGroup => Response::JoinGroup(Decode::decode(r)?),
            ApiKey::SyncGroup => Response::SyncGroup(Decode::decode(r)?),
            ApiKey::Heartbeat => Response::Heartbeat(Decode::decode(r)?),
            ApiKey::LeaveGroup => Response::LeaveGroup(Decode::decode(r)?),
            ApiKey::OffsetCommit => Response::OffsetCommit(Decode::decode(r)?),
            ApiKey::OffsetFetch => Response::OffsetFetch(Decode::decode(r)?),
            ApiKey::ListGroups => Response::ListGroups(Decode::decode(r)?),
            ApiKey::DescribeGroups => Response::DescribeGroups(Decode::decode(r)?),
            ApiKey::DeleteGroups => Response::DeleteGroups(Decode::decode(r)?),
            ApiKey::DescribeCluster => Response::DescribeCluster(Decode::decode(r)?),
            ApiKey::ElectLeaders => Response::ElectLeaders(Decode::decode(r)?),
            ApiKey::RaftMessages => Response::RaftMessages(Decode::decode(r)?),
            ApiKey::BrokerRegistration => Response::BrokerRegistration(Decode::decode(r)?),
            ApiKey::BrokerHeartbeat => Response::BrokerHeartbeat(Decode::decode(r)?),
            ApiKey::MetadataFetch => Response::MetadataFetch(Decode::decode(r)?),
            ApiKey::ReplicaFetch => Response::ReplicaFetch(Decode::decode(r)?),
            ApiKey::OffsetForLeaderEpoch => Response::OffsetForLeaderEpoch(Decode::decode(r)?),
            ApiKey::AlterPartition => Response::AlterPartition(Decode::decode(r)?),
        })
    }
}

/// Writes a whole request frame (length prefix included) at the end of `out`.
///
/// Limits are not checked here: a caller that sends more than the broker's
/// `Limits` allow gets a request-level error (or, for the frame size, a
/// closed connection).
///
/// # Panics
/// If `header.api_key != req.api_key()`, a caller bug; or if the frame would
/// exceed `u32::MAX` bytes.
pub fn encode_request(header: &RequestHeader, req: &Request, out: &mut BytesMut) {
    assert_eq!(
        header.api_key,
        req.api_key(),
        "request header names a different api than the body"
    );
    let start = begin_frame(out);
    header.encode(out);
    req.encode_body(out);
    end_frame(out, start, 0);
}

/// Decodes a request payload (the frame WITHOUT its 4-byte length prefix).
///
/// Takes `BytesMut` so that produce records come out as disjoint `BytesMut`
/// pieces of the same allocation (`split_to`), with no copy: the broker
/// patches offsets in them in place.
///
/// A header that cannot be read (or a payload over `max_frame_bytes`) gives
/// `RequestError::Header`: close the connection. Once the header is read,
/// every failure gives `RequestError::Request` with the correlation id and
/// the code to answer with: `InvalidRequest` for an unknown api key or a bad
/// body, `UnsupportedVersion` for a version above `ApiKey::max_version`.
pub fn decode_request(payload: BytesMut, limits: &Limits) -> Result<(RequestHeader, Request), RequestError> {
    if payload.len() > limits.max_frame_bytes {
        return Err(RequestError::Header(DecodeError::FrameTooLarge {
            len: payload.len(),
            max: limits.max_frame_bytes,
        }));
    }
    let mut r = Reader::new(payload, limits);
    let raw = RawRequestHeader::decode(&mut r).map_err(RequestError::Header)?;
    let reject = |code, error| RequestError::Request {
        correlation_id: raw.correlation_id,
        api_key: raw.api_key,
        code,
        error,
    };
    let Some(api_key) = ApiKey::from_u16(raw.api_key) else {
        return Err(reject(
            ErrorCode::InvalidRequest,
            DecodeError::UnknownApiKey(raw.api_key),
        ));
    };
    if raw.api_version < api_key.min_version() || raw.api_version > api_key.max_version() {
        return Err(reject(
            ErrorCode::UnsupportedVersion,
            DecodeError::UnsupportedVersion {
                api_key: raw.api_key,
                version: raw.api_version,
            },
        ));
    }
    let body = Request::decode_body(api_key, &mut r)
        .and_then(|req| r.finish().map(|()| req))
        .map_err(|e| reject(ErrorCode::InvalidRequest, e))?;
    let header = RequestHeader {
        api_key,
        api_version: raw.api_version,
        correlation_id: raw.correlation_id,
        client_id: raw.client_id,
    };
    Ok((header, body))
}

/// Writes a whole successful response frame (length prefix included) at the
/// end of `out`.
///
/// # Panics
/// If the frame would exceed `u32::MAX` bytes.
pub fn encode_response(correlation_id: u32, resp: &Response, out: &mut BytesMut) {
    let start = begin_frame(out);
    encode_response_header(out, correlation_id, ErrorCode::None);
    resp.encode_body(out);
    end_frame(out, start, 0);
}

/// Writes a whole request-level error response frame at the end of `out`:
/// the request as a whole failed (unknown api, unsupported version,
/// undecodable body), so there is no body, only `code` and `message`.
///
/// # Panics
/// If `code` is `ErrorCode::None`, which would read back as a success.
pub fn encode_error_response(correlation_id: u32, code: ErrorCode, message: &str, out: &mut BytesMut) {
    assert_ne!(code, ErrorCode::None, "an error response needs an error code");
    let start = begin_frame(out);
    encode_response_header(out, correlation_id, code);
    put_string(out, message);
    end_frame(out, start, 0);
}

/// The correlation id of a response payload (after the length prefix), so the
/// client can look up which api it asked.
pub fn peek_correlation_id(payload: &[u8]) -> Option<u32> {
    payload.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
}

/// The outcome a response carries: the body, or a request-level error code and message.
pub type ResponseResult = Result<Response, (ErrorCode, String)>;

/// Decodes a response payload (after the length prefix) for a request of
/// `api_key`: `Ok((correlation_id, Ok(resp)))`, or
/// `Ok((correlation_id, Err((code, message))))` for a request-level error.
/// Fetch records come out as `Bytes` slices of `payload` (no copy).
///
/// An error code this build does not know reads as `UnknownServerError`.
pub fn decode_response(
    api_key: ApiKey,
    payload: Bytes,
    limits: &Limits,
) -> Result<(u32, ResponseResult), DecodeError> {
    if payload.len() > limits.max_frame_bytes {
        return Err(DecodeError::FrameTooLarge {
            len: payload.len(),
            max: limits.max_frame_bytes,
        });
    }
    let mut r = Reader::new(payload, limits);
    let correlation_id = r.u32()?;
    let code = r.i16()?;
    let result = if code == 0 {
        Ok(Response::decode_body(api_key, &mut r)?)
    } else {
        Err((ErrorCode::from_i16(code), r.string("message")?))
    };
    r.finish()?;
    Ok((correlation_id, result))
}

/// A fetch partition's response without its records: what
/// `encode_fetch_response_frame` writes in front of each hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchPartitionHead {
    pub partition: u32,
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Bytes of records the sender will insert at this partition's hole.
    pub records_len: u32,
}

/// Encodes a whole fetch response frame (length prefix counting the records)
/// at the end of `out` WITHOUT the records bytes; returns, for each partition
/// in order, the position in `out` where its `records_len` bytes must be
/// inserted when sending. Sending `out[..p0]`, records0, `out[p0..p1]`,
/// records1, ... produces exactly the bytes `encode_response(correlation_id,
/// &Response::Fetch(..))` produces with the records inline, so the broker can
/// send records straight from its files.
///
/// Positions are absolute indexes into `out`, counting whatever it already held.
///
/// # Panics
/// If the frame, records included, would exceed `u32::MAX` bytes.
pub fn encode_fetch_response_frame(
    correlation_id: u32,
    topics: &[(TopicId, Vec<FetchPartitionHead>)],
    out: &mut BytesMut,
) -> Vec<usize> {
    let partitions: usize = topics.iter().map(|(_, p)| p.len()).sum();
    out.reserve(
        FRAME_PREFIX_LEN
            + RESPONSE_HEADER_LEN
            + 5
            + topics.len() * (8 + 5)
            + partitions * FETCH_PARTITION_HEAD_LEN,
    );
    let mut holes = Vec::with_capacity(partitions);
    let mut records_total: usize = 0;
    let start = begin_frame(out);
    encode_response_header(out, correlation_id, ErrorCode::None);
    put_len(out, topics.len());
    for (topic_id, heads) in topics {
        out.put_u64(topic_id.0);
        put_len(out, heads.len());
        for h in heads {
            out.put_u32(h.partition);
            out.put_i16(h.error.code());
            out.put_i64(h.high_watermark);
            out.put_i64(h.log_start_offset);
            out.put_u32(h.records_len);
            holes.push(out.len());
            records_total += h.records_len as usize;
        }
    }
    end_frame(out, start, records_total);
    holes
}

impl FetchPartitionHead {
    /// The head of a partition response whose records are in memory.
    pub fn of(p: &FetchPartitionResponse) -> FetchPartitionHead {
        FetchPartitionHead {
            partition: p.partition,
            error: p.error,
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records_len: u32::try_from(p.records.len()).expect("records exceed u32::MAX bytes"),
        }
    }
}
