//! Request handlers: each turns one decoded request into the response to
//! write, calling the shards that own the partitions involved.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use borges_net::protocol::{
    encode_error_response, encode_fetch_response_frame, encode_response, ApiKey, ApiVersionRange,
    ApiVersionsResponse, BrokerMeta, ConfigEntry, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeConfigsResult, DescribeGroupsRequest,
    DescribeGroupsResponse, DescribedGroup, ErrorCode, FetchPartitionHead, FetchRequest,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupResult, ListGroupsResponse,
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
    MetadataRequest, MetadataResponse, PartitionMeta, ProducePartitionResponse, ProduceRequest,
    ProduceResponse, ProduceTopicResponse, Request, RequestHeader, Response, TopicMeta as WireTopicMeta,
};
use borges_net::types::TopicId;
use borges_storage::Chunk;
use bytes::{Bytes, BytesMut};
use glommio::sync::StaticPermit;

use crate::shard::{AdminRequest, PartKey, SendChunk, Shard, ShardRequest, ShardResponse};
use crate::topics;

/// A segment file to send from: the owning shard's descriptor, or a
/// duplicate that came over the mesh from another shard.
pub enum FileHandle {
    Shared(Rc<File>),
    Owned(File),
}

impl AsRawFd for FileHandle {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            FileHandle::Shared(f) => f.as_raw_fd(),
            FileHandle::Owned(f) => f.as_raw_fd(),
        }
    }
}

/// Bytes that go into a response where the encoder left a hole for records.
pub enum Piece {
    Memory(Bytes),
    File {
        file: FileHandle,
        position: u64,
        len: u64,
    },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Memory(b) => b.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

/// A response ready to write: the encoded frame, the pieces to insert at
/// positions of it, and the in-flight permits held until it is written.
pub struct Outgoing {
    pub head: BytesMut,
    pub pieces: Vec<(usize, Vec<Piece>)>,
    pub permits: Option<(StaticPermit, StaticPermit)>,
}

impl Outgoing {
    fn whole(correlation_id: u32, resp: &Response) -> Outgoing {
        let mut head = BytesMut::new();
        encode_response(correlation_id, resp, &mut head);
        Outgoing {
            head,
            pieces: Vec::new(),
            permits: None,
        }
    }

    fn error(correlation_id: u32, code: ErrorCode, message: &str) -> Outgoing {
        let mut head = BytesMut::new();
        encode_error_response(correlation_id, code, message, &mut head);
        Outgoing {
            head,
            pieces: Vec::new(),
            permits: None,
        }
    }
}

/// Handles one request; `None` for a produce with acks=0, which gets no answer.
pub async fn handle(
    shard: &Rc<Shard>,
    header: RequestHeader,
    request: Request,
    peer_host: &str,
) -> Option<Outgoing> {
    let corr = header.correlation_id;
    let resp = match request {
        Request::FindCoordinator(r) => Response::FindCoordinator(find_coordinator(shard, r)),
        Request::ListGroups(_) => Response::ListGroups(list_groups(shard).await),
        Request::DescribeGroups(r) => Response::DescribeGroups(describe_groups(shard, r).await),
        Request::DeleteGroups(r) => Response::DeleteGroups(delete_groups(shard, r).await),
        r @ (Request::JoinGroup(_)
        | Request::SyncGroup(_)
        | Request::Heartbeat(_)
        | Request::LeaveGroup(_)
        | Request::OffsetCommit(_)
        | Request::OffsetFetch(_)) => {
            let group = crate::group::group_of(&r).unwrap_or_default().to_string();
            match group_call(shard, &group, r, header.client_id.clone(), peer_host).await {
                Ok(resp) => resp,
                Err((code, msg)) => return Some(Outgoing::error(corr, code, &msg)),
            }
        }
        Request::ApiVersions(_) => Response::ApiVersions(ApiVersionsResponse {
            apis: ApiKey::ALL
                .iter()
                .map(|k| ApiVersionRange {
                    api_key: *k as u16,
                    min_version: 0,
                    max_version: k.max_version(),
                })
                .collect(),
        }),
        Request::Metadata(r) => Response::Metadata(metadata(shard, r)),
        Request::CreateTopics(r) => return Some(admin(shard, corr, AdminRequest::Create(r)).await),
        Request::DeleteTopics(r) => return Some(admin(shard, corr, AdminRequest::Delete(r)).await),
        Request::AlterConfigs(r) => return Some(admin(shard, corr, AdminRequest::Alter(r)).await),
        Request::DescribeConfigs(r) => Response::DescribeConfigs(describe_configs(shard, r)),
        Request::Produce(r) => {
            let acks = r.acks;
            let resp = produce(shard, r).await;
            if acks == 0 {
                return None;
            }
            Response::Produce(resp)
        }
        Request::ListOffsets(r) => Response::ListOffsets(list_offsets(shard, r).await),
        Request::Fetch(r) => return Some(fetch(shard, corr, r).await),
    };
    Some(Outgoing::whole(corr, &resp))
}

/// Passes a group request to the shard that coordinates the group.
async fn group_call(
    shard: &Rc<Shard>,
    group: &str,
    req: Request,
    client_id: String,
    peer_host: &str,
) -> Result<Response, (ErrorCode, String)> {
    if group.is_empty() {
        return Err((ErrorCode::InvalidGroupId, "the group id is empty".into()));
    }
    let key = crate::group::offsets_key(shard, group).ok_or((
        ErrorCode::CoordinatorNotAvailable,
        "the offsets topic does not exist yet".to_string(),
    ))?;
    let owner = shard.owner(key);
    let call = ShardRequest::Group {
        req,
        client_id,
        client_host: peer_host.to_string(),
    };
    match shard.call(owner, call).await {
        ShardResponse::Group(resp) => Ok(resp),
        _ => Err((
            ErrorCode::CoordinatorNotAvailable,
            "the coordinating shard is not available".into(),
        )),
    }
}

fn find_coordinator(shard: &Rc<Shard>, r: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let error = if r.group_id.is_empty() {
        ErrorCode::InvalidGroupId
    } else if crate::group::offsets_key(shard, &r.group_id).is_none() {
        ErrorCode::CoordinatorNotAvailable
    } else {
        ErrorCode::None
    };
    FindCoordinatorResponse {
        error,
        node_id: shard.config.node_id,
        host: shard.config.advertised.ip().to_string(),
        port: shard.config.advertised.port(),
    }
}

async fn list_groups(shard: &Rc<Shard>) -> ListGroupsResponse {
    let mut groups = Vec::new();
    let mut error = ErrorCode::None;
    for s in 0..shard.count {
        match shard.call(s, ShardRequest::ListGroups).await {
            ShardResponse::Groups(g) => groups.extend(g),
            _ => error = ErrorCode::CoordinatorNotAvailable,
        }
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse { error, groups }
}

/// Asks each group's coordinating shard; the answers keep the request's order.
async fn per_group<T>(
    shard: &Rc<Shard>,
    groups: Vec<String>,
    make: impl Fn(Vec<String>) -> Request,
    take: impl Fn(Response) -> Option<Vec<T>>,
    failed: impl Fn(String, ErrorCode) -> T,
    id_of: impl Fn(&T) -> &str,
) -> Vec<T> {
    let mut by_owner: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    let mut out: Vec<T> = Vec::new();
    for g in &groups {
        match crate::group::offsets_key(shard, g) {
            Some(key) if !g.is_empty() => by_owner.entry(shard.owner(key)).or_default().push(g.clone()),
            _ => out.push(failed(g.clone(), ErrorCode::InvalidGroupId)),
        }
    }
    for (owner, ids) in by_owner {
        let call = ShardRequest::Group {
            req: make(ids.clone()),
            client_id: String::new(),
            client_host: String::new(),
        };
        match shard.call(owner, call).await {
            ShardResponse::Group(resp) => match take(resp) {
                Some(v) => out.extend(v),
                None => out.extend(ids.into_iter().map(|g| failed(g, ErrorCode::UnknownServerError))),
            },
            _ => out.extend(
                ids.into_iter()
                    .map(|g| failed(g, ErrorCode::CoordinatorNotAvailable)),
            ),
        }
    }
    let pos = |id: &str| groups.iter().position(|g| g == id).unwrap_or(usize::MAX);
    out.sort_by_key(|t| pos(id_of(t)));
    out
}

async fn describe_groups(shard: &Rc<Shard>, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = per_group(
        shard,
        r.groups,
        |groups| Request::DescribeGroups(DescribeGroupsRequest { groups }),
        |resp| match resp {
            Response::DescribeGroups(d) => Some(d.groups),
            _ => None,
        },
        |group_id, error| DescribedGroup {
            error,
            group_id,
            ..DescribedGroup::default()
        },
        |g| &g.group_id,
    )
    .await;
    DescribeGroupsResponse { groups }
}

async fn delete_groups(shard: &Rc<Shard>, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = per_group(
        shard,
        r.groups,
        |groups| Request::DeleteGroups(DeleteGroupsRequest { groups }),
        |resp| match resp {
            Response::DeleteGroups(d) => Some(d.results),
            _ => None,
        },
        |group_id, error| GroupResult { group_id, error },
        |g| &g.group_id,
    )
    .await;
    DeleteGroupsResponse { results }
}

async fn admin(shard: &Rc<Shard>, corr: u32, req: AdminRequest) -> Outgoing {
    match shard.call(0, ShardRequest::Admin(req)).await {
        ShardResponse::Admin(resp) => Outgoing::whole(corr, &resp),
        _ => Outgoing::error(
            corr,
            ErrorCode::RequestTimedOut,
            "the metadata shard is not available",
        ),
    }
}

fn metadata(shard: &Rc<Shard>, r: MetadataRequest) -> MetadataResponse {
    let topics = shard.topics();
    let node = shard.config.node_id;
    let describe = |t: &topics::TopicMeta| WireTopicMeta {
        error: ErrorCode::None,
        name: t.name.clone(),
        id: t.topic_id(),
        partitions: (0..t.partitions)
            .map(|p| PartitionMeta {
                partition: p,
                error: ErrorCode::None,
                leader: node,
                leader_epoch: 0,
                replicas: vec![node],
            })
            .collect(),
    };
    let list = match r.topics {
        None => topics.topics.values().map(describe).collect(),
        Some(names) => names
            .iter()
            .map(|n| match topics.topics.get(n) {
                Some(t) => describe(t),
                None => WireTopicMeta {
                    error: ErrorCode::UnknownTopicOrPartition,
                    name: n.clone(),
                    id: TopicId(0),
                    partitions: Vec::new(),
                },
            })
            .collect(),
    };
    MetadataResponse {
        brokers: vec![BrokerMeta {
            node_id: node,
            host: shard.config.advertised.ip().to_string(),
            port: shard.config.advertised.port(),
        }],
        controller_id: node,
        topics: list,
    }
}

fn describe_configs(shard: &Rc<Shard>, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let topics = shard.topics();
    DescribeConfigsResponse {
        topics: r
            .topics
            .into_iter()
            .map(|name| match topics.topics.get(&name) {
                Some(t) => DescribeConfigsResult {
                    name,
                    error: ErrorCode::None,
                    message: None,
                    configs: topics::describe(&shard.config.log, &t.configs)
                        .into_iter()
                        .map(|(key, value, is_default)| ConfigEntry {
                            key,
                            value: Some(value),
                            is_default,
                        })
                        .collect(),
                },
                None => DescribeConfigsResult {
                    message: Some(format!("no topic {name}")),
                    name,
                    error: ErrorCode::UnknownTopicOrPartition,
                    configs: Vec::new(),
                },
            })
            .collect(),
    }
}

/// Checks a partition exists in the current metadata.
fn known(shard: &Shard, topic: TopicId, partition: u32) -> Result<(), ErrorCode> {
    match shard.topics().by_id(topic) {
        None => Err(ErrorCode::UnknownTopicId),
        Some(t) if partition >= t.partitions => Err(ErrorCode::UnknownTopicOrPartition),
        Some(_) => Ok(()),
    }
}

async fn produce(shard: &Rc<Shard>, r: ProduceRequest) -> ProduceResponse {
    // Every partition's append starts at once, on whichever shard owns it.
    let mut tasks = Vec::new();
    for t in r.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let key: PartKey = (t.topic_id, p.partition);
            let shard = shard.clone();
            let acks = r.acks;
            parts.push((
                p.partition,
                glommio::spawn_local(async move {
                    known(&shard, key.0, key.1).map_err(|c| (c, c.description().to_string()))?;
                    let owner = shard.owner(key);
                    match shard
                        .call(
                            owner,
                            ShardRequest::Produce {
                                key,
                                records: p.records,
                                acks,
                            },
                        )
                        .await
                    {
                        ShardResponse::Produce(r) => r,
                        _ => Err((
                            ErrorCode::NotLeaderOrFollower,
                            "the owning shard is not available".into(),
                        )),
                    }
                })
                .detach(),
            ));
        }
        tasks.push((t.topic_id, parts));
    }
    let mut topics = Vec::new();
    for (topic_id, parts) in tasks {
        let mut partitions = Vec::new();
        for (partition, task) in parts {
            let result = task
                .await
                .unwrap_or(Err((ErrorCode::UnknownServerError, "task lost".into())));
            partitions.push(match result {
                Ok(ok) => ProducePartitionResponse {
                    partition,
                    error: ErrorCode::None,
                    base_offset: ok.base_offset,
                    log_start_offset: ok.log_start_offset,
                    message: None,
                },
                Err((error, message)) => {
                    crate::shard::ShardProbe::bump(&shard.probe.produce_errors);
                    ProducePartitionResponse {
                        partition,
                        error,
                        base_offset: -1,
                        log_start_offset: -1,
                        message: Some(message),
                    }
                }
            });
        }
        topics.push(ProduceTopicResponse { topic_id, partitions });
    }
    ProduceResponse { topics }
}

async fn list_offsets(shard: &Rc<Shard>, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in r.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let key = (t.topic_id, p.partition);
            let result = match known(shard, key.0, key.1) {
                Err(c) => Err((c, String::new())),
                Ok(()) => match shard
                    .call(
                        shard.owner(key),
                        ShardRequest::ListOffsets {
                            key,
                            timestamp: p.timestamp,
                        },
                    )
                    .await
                {
                    ShardResponse::ListOffsets(r) => r,
                    _ => Err((ErrorCode::NotLeaderOrFollower, String::new())),
                },
            };
            partitions.push(match result {
                Ok((timestamp, offset)) => ListOffsetsPartitionResponse {
                    partition: p.partition,
                    error: ErrorCode::None,
                    timestamp,
                    offset,
                },
                Err((error, _)) => ListOffsetsPartitionResponse {
                    partition: p.partition,
                    error,
                    timestamp: -1,
                    offset: -1,
                },
            });
        }
        topics.push(ListOffsetsTopicResponse {
            topic_id: t.topic_id,
            partitions,
        });
    }
    ListOffsetsResponse { topics }
}

struct FetchSlot {
    topic: TopicId,
    partition: u32,
    offset: i64,
    max_bytes: u32,
}

/// Long-poll fetch: read every partition; if fewer than `min_bytes` came
/// back, wait until one of them gets data (or `max_wait` passes) and read
/// again.
async fn fetch(shard: &Rc<Shard>, corr: u32, r: FetchRequest) -> Outgoing {
    let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms as u64);
    let slots: Vec<FetchSlot> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| FetchSlot {
                topic: t.topic_id,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            })
        })
        .collect();
    loop {
        let mut budget = r.max_bytes as u64;
        let mut heads: Vec<(TopicId, Vec<FetchPartitionHead>)> = Vec::new();
        let mut records: Vec<Vec<Piece>> = Vec::new();
        let mut total = 0u64;
        let mut errors = false;
        for s in &slots {
            let key = (s.topic, s.partition);
            let (error, hw, lso, pieces) = if let Err(c) = known(shard, s.topic, s.partition) {
                (c, -1, -1, Vec::new())
            } else if budget == 0 {
                (ErrorCode::None, -1, -1, Vec::new())
            } else {
                let max = (s.max_bytes as u64).min(budget) as u32;
                let owner = shard.owner(key);
                if owner == shard.id {
                    let f = shard.fetch_local(key, s.offset, max).await;
                    let pieces = f
                        .chunks
                        .into_iter()
                        .map(|c| match c {
                            Chunk::Memory(b) => Piece::Memory(b),
                            Chunk::File(f) => Piece::File {
                                file: FileHandle::Shared(f.file),
                                position: f.position,
                                len: f.len,
                            },
                        })
                        .collect();
                    (f.error, f.high_watermark, f.log_start_offset, pieces)
                } else {
                    match shard
                        .call(
                            owner,
                            ShardRequest::Fetch {
                                key,
                                offset: s.offset,
                                max_bytes: max,
                            },
                        )
                        .await
                    {
                        ShardResponse::Fetch(f) => {
                            let pieces = f
                                .chunks
                                .into_iter()
                                .map(|c| match c {
                                    SendChunk::Memory(b) => Piece::Memory(b),
                                    SendChunk::File { file, position, len } => Piece::File {
                                        file: FileHandle::Owned(file),
                                        position,
                                        len,
                                    },
                                })
                                .collect();
                            (f.error, f.high_watermark, f.log_start_offset, pieces)
                        }
                        _ => (ErrorCode::NotLeaderOrFollower, -1, -1, Vec::new()),
                    }
                }
            };
            let len: u64 = pieces.iter().map(Piece::len).sum();
            budget = budget.saturating_sub(len);
            total += len;
            errors |= error != ErrorCode::None;
            let head = FetchPartitionHead {
                partition: s.partition,
                error,
                high_watermark: hw,
                log_start_offset: lso,
                records_len: len as u32,
            };
            match heads.last_mut() {
                Some((t, v)) if *t == s.topic => v.push(head),
                _ => heads.push((s.topic, vec![head])),
            }
            records.push(pieces);
        }
        let now = Instant::now();
        if total >= r.min_bytes as u64 || errors || now >= deadline {
            let mut head = BytesMut::new();
            let positions = encode_fetch_response_frame(corr, &heads, &mut head);
            return Outgoing {
                head,
                pieces: positions.into_iter().zip(records).collect(),
                permits: None,
            };
        }
        drop(records);
        wait_for_any(shard, &slots, deadline - now).await;
    }
}

/// Waits until one of the partitions has data past its fetch offset, asking
/// each owning shard at once, or until `wait` passes.
async fn wait_for_any(shard: &Rc<Shard>, slots: &[FetchSlot], wait: Duration) {
    let mut by_owner: std::collections::BTreeMap<usize, Vec<(PartKey, i64)>> = Default::default();
    for s in slots {
        let key = (s.topic, s.partition);
        by_owner
            .entry(shard.owner(key))
            .or_default()
            .push((key, s.offset));
    }
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<()>(by_owner.len().max(1));
    let tx = Rc::new(tx);
    for (owner, parts) in by_owner {
        let shard = shard.clone();
        let tx = tx.clone();
        glommio::spawn_local(async move {
            shard.call(owner, ShardRequest::WaitForData { parts, wait }).await;
            let _ = tx.try_send(());
        })
        .detach();
    }
    futures_lite::future::or(
        async {
            rx.recv().await;
        },
        glommio::timer::sleep(wait),
    )
    .await;
}
