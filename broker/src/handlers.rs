//! Request handlers: each turns one decoded request into the response to
//! write, calling the shards that own the partitions involved.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use borges_net::protocol::{
    encode_error_response, encode_fetch_response_frame, encode_response, ApiKey, ApiVersionRange,
    ApiVersionsResponse, BrokerMeta, ConfigEntry, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeGroupsRequest, DescribeGroupsResponse, DescribedGroup, EpochEndPartition, EpochEndTopic,
    ErrorCode, FetchPartitionHead, FetchRequest, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupResult, ListGroupsResponse, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResponse, MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, PartitionMeta, ProducePartitionResponse, ProduceRequest, ProduceResponse,
    ProduceTopicResponse, ReplicaFetchRequest, Request, RequestHeader, Response, TopicMeta as WireTopicMeta,
};
use borges_net::types::TopicId;
use borges_storage::Chunk;
use bytes::{Bytes, BytesMut};
use glommio::sync::StaticPermit;

use crate::conn::ConnState;
use crate::shard::calls::{
    EpochEnd, Fetch, GroupRequest, ListGroups, ListOffsets, Produce, ReplicaOf, WaitForData,
};
use crate::shard::{Admin, PartKey, SendChunk, Shard, Unavailable};
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
    pub permits: Option<Held>,
}

/// What a request holds from its frame's arrival until its response is
/// written (or dropped): its bytes from the connection's and the shard's
/// in-flight budgets, and its place among the connection's requests.
pub struct Held {
    pub conn_bytes: StaticPermit,
    pub shard_bytes: StaticPermit,
    pub request: StaticPermit,
}

impl Outgoing {
    /// Bytes this response puts on the wire.
    pub fn wire_len(&self) -> usize {
        self.head.len()
            + self
                .pieces
                .iter()
                .flat_map(|(_, p)| p.iter())
                .map(|p| p.len() as usize)
                .sum::<usize>()
    }

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

/// What a handler knows of the request's connection.
pub struct RequestCtx<'a> {
    pub peer_host: &'a str,
    /// Bytes of the request's frame, prefix included.
    pub frame_len: usize,
    pub conn: &'a ConnState,
}

/// Handles one request; `None` for a produce with acks=0, which gets no answer.
pub async fn handle(
    shard: &Rc<Shard>,
    header: RequestHeader,
    request: Request,
    ctx: &RequestCtx<'_>,
) -> Option<Outgoing> {
    let corr = header.correlation_id;
    let peer_host = ctx.peer_host;
    if crate::peer_api::is_for_peers(&header.client_id, &request) {
        return Some(peer(shard, corr, request).await);
    }
    if !shard.serving.get() && request.api_key() != ApiKey::ApiVersions {
        // The port takes connections before the broker has joined its
        // cluster (its peers' raft messages come this way); clients wait.
        return Some(Outgoing::error(
            corr,
            ErrorCode::LeaderNotAvailable,
            "the broker is starting: it has not joined its cluster yet",
        ));
    }
    let resp = match request {
        Request::FindCoordinator(r) => Response::FindCoordinator(find_coordinator(shard, r)),
        Request::DescribeCluster(_) => Response::DescribeCluster(describe_cluster(shard)),
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
        r @ (Request::RaftMessages(_)
        | Request::BrokerRegistration(_)
        | Request::BrokerHeartbeat(_)
        | Request::MetadataFetch(_)
        | Request::AlterPartition(_)) => {
            return Some(peer(shard, corr, r).await);
        }
        Request::CreateTopics(r) => return Some(admin(shard, corr, Admin::Create(r)).await),
        Request::DeleteTopics(r) => return Some(admin(shard, corr, Admin::Delete(r)).await),
        Request::AlterConfigs(r) => return Some(admin(shard, corr, Admin::Alter(r)).await),
        Request::ElectLeaders(r) => return Some(admin(shard, corr, Admin::Elect(r)).await),
        Request::DescribeConfigs(r) => Response::DescribeConfigs(describe_configs(shard, r)),
        Request::Produce(r) => {
            let acks = r.acks;
            if let Some((topic, partition)) = named_twice(&r) {
                // Which of two batches for one partition would be written
                // first is not the client's to guess: refused whole.
                let message =
                    format!("partition {partition} of topic id {topic} is named twice in one produce");
                if acks == 0 {
                    tracing::info!(shard = shard.id, %message, "produce refused");
                    return None;
                }
                return Some(Outgoing::error(corr, ErrorCode::InvalidRequest, &message));
            }
            let resp = produce(shard, r, ctx.frame_len).await;
            if acks == 0 {
                return None;
            }
            Response::Produce(resp)
        }
        Request::ListOffsets(r) => Response::ListOffsets(list_offsets(shard, r).await),
        Request::Fetch(r) => return Some(fetch(shard, corr, r, ctx.conn).await),
        Request::ReplicaFetch(r) => return Some(replica_fetch(shard, corr, r, ctx.conn).await),
        Request::OffsetForLeaderEpoch(r) => Response::OffsetForLeaderEpoch(epoch_ends(shard, r).await),
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
    let key = crate::group::offsets_key(&shard.topics(), group).ok_or((
        ErrorCode::CoordinatorNotAvailable,
        "the offsets topic does not exist yet".to_string(),
    ))?;
    let owner = shard.owner(key);
    let call = GroupRequest {
        req,
        client_id,
        client_host: peer_host.to_string(),
    };
    match shard.call(owner, call).await {
        Ok(resp) => Ok(resp),
        Err(Unavailable) => Err((
            ErrorCode::CoordinatorNotAvailable,
            "the coordinating shard is not available".into(),
        )),
    }
}

/// The coordinator of a group is the leader of its `__consumer_offsets`
/// partition, as the committed image names it.
fn find_coordinator(shard: &Rc<Shard>, r: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let topics = shard.topics();
    let none = |error| FindCoordinatorResponse {
        error,
        node_id: -1,
        host: String::new(),
        port: 0,
    };
    if r.group_id.is_empty() {
        return none(ErrorCode::InvalidGroupId);
    }
    let Some((topic, partition)) = crate::group::offsets_key(&topics, &r.group_id) else {
        return none(ErrorCode::CoordinatorNotAvailable);
    };
    let image = &topics.cluster.image;
    let me = || FindCoordinatorResponse {
        error: ErrorCode::None,
        node_id: shard.config.node_id,
        host: shard.config.advertised_addr().ip().to_string(),
        port: shard.config.advertised_addr().port(),
    };
    let Some(state) = image.partition(topic, partition) else {
        // Topics that come from no image (tests): this node holds all.
        return me();
    };
    if state.leader.0 == shard.config.node_id {
        return me();
    }
    let leader = image.broker(state.leader).filter(|b| !b.fenced).and_then(|b| {
        b.reg
            .address
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| (b.reg.node, a))
    });
    match leader {
        Some((node, addr)) => FindCoordinatorResponse {
            error: ErrorCode::None,
            node_id: node.0,
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        None => none(ErrorCode::CoordinatorNotAvailable),
    }
}

async fn list_groups(shard: &Rc<Shard>) -> ListGroupsResponse {
    let mut groups = Vec::new();
    let mut error = ErrorCode::None;
    for s in 0..shard.count {
        match shard.call(s, ListGroups).await {
            Ok(g) => groups.extend(g),
            Err(Unavailable) => error = ErrorCode::CoordinatorNotAvailable,
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
        match crate::group::offsets_key(&shard.topics(), g) {
            Some(key) if !g.is_empty() => by_owner.entry(shard.owner(key)).or_default().push(g.clone()),
            _ => out.push(failed(g.clone(), ErrorCode::InvalidGroupId)),
        }
    }
    for (owner, ids) in by_owner {
        let call = GroupRequest {
            req: make(ids.clone()),
            client_id: String::new(),
            client_host: String::new(),
        };
        match shard.call(owner, call).await {
            Ok(resp) => match take(resp) {
                Some(v) => out.extend(v),
                None => out.extend(ids.into_iter().map(|g| failed(g, ErrorCode::UnknownServerError))),
            },
            Err(Unavailable) => out.extend(
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

/// A request from another broker, answered on shard 0.
async fn peer(shard: &Rc<Shard>, corr: u32, req: Request) -> Outgoing {
    match shard.call(0, crate::shard::calls::PeerRequest(req)).await {
        Ok(Ok(resp)) => Outgoing::whole(corr, &resp),
        Ok(Err((code, message))) => Outgoing::error(corr, code, &message),
        Err(Unavailable) => Outgoing::error(
            corr,
            ErrorCode::RequestTimedOut,
            "the metadata shard is not available",
        ),
    }
}

async fn admin(shard: &Rc<Shard>, corr: u32, req: Admin) -> Outgoing {
    match shard.call(0, req).await {
        Ok(resp) => Outgoing::whole(corr, &resp),
        Err(Unavailable) => Outgoing::error(
            corr,
            ErrorCode::RequestTimedOut,
            "the metadata shard is not available",
        ),
    }
}

/// The cluster as the committed image this shard follows describes it.
fn describe_cluster(shard: &Rc<Shard>) -> DescribeClusterResponse {
    use borges_net::protocol::{BrokerState, ClusterBroker};
    let topics = shard.topics();
    let cluster = &topics.cluster;
    let image = &cluster.image;
    DescribeClusterResponse {
        controller_id: cluster.controller.0,
        voters: cluster.voters.iter().map(|v| v.0).collect(),
        brokers: image
            .brokers()
            .map(|b| ClusterBroker {
                node_id: b.reg.node.0,
                address: b.reg.address.clone(),
                rack: b.reg.rack.clone(),
                // A broker that finished its controlled shutdown and
                // stopped is fenced: that says more than "shutting down".
                state: if b.fenced {
                    BrokerState::Fenced
                } else if b.shutting_down {
                    BrokerState::ShuttingDown
                } else {
                    BrokerState::Alive
                },
                epoch: b.reg.epoch.0,
                leader_count: image.led_by(b.reg.node) as u32,
            })
            .collect(),
        offline_partitions: image.offline_partitions() as u32,
        under_replicated_partitions: image.under_replicated_partitions() as u32,
        metadata_offset: image.applied,
    }
}

fn metadata(shard: &Rc<Shard>, r: MetadataRequest) -> MetadataResponse {
    let topics = shard.topics();
    let node = shard.config.node_id;
    let image = &topics.cluster.image;
    let describe = |t: &topics::TopicMeta| WireTopicMeta {
        error: ErrorCode::None,
        name: t.name.clone(),
        id: t.topic_id(),
        partitions: (0..t.partitions)
            .map(|p| match image.partition(t.topic_id(), p) {
                Some(s) => PartitionMeta {
                    partition: p,
                    error: if s.has_leader() {
                        ErrorCode::None
                    } else {
                        ErrorCode::LeaderNotAvailable
                    },
                    leader: s.leader.0,
                    leader_epoch: s.leader_epoch.0,
                    replicas: s.replicas.iter().map(|n| n.0).collect(),
                    isr: s.isr.iter().map(|n| n.0).collect(),
                },
                // Topics that come from no image (tests): this node holds all.
                None => PartitionMeta {
                    partition: p,
                    error: ErrorCode::None,
                    leader: node,
                    leader_epoch: 0,
                    replicas: vec![node],
                    isr: vec![node],
                },
            })
            .collect(),
    };
    let list = match r.topics {
        None => topics.topics.values().map(describe).collect(),
        // Each topic is described once however often it is named, so the
        // response is bounded by the topics that exist (plus the unknown
        // names, each once).
        Some(names) => {
            let mut seen = std::collections::HashSet::with_capacity(names.len());
            names
                .iter()
                .filter(|n| seen.insert(n.as_str()))
                .map(|n| match topics.topics.get(n) {
                    Some(t) => describe(t),
                    None => WireTopicMeta {
                        error: ErrorCode::UnknownTopicOrPartition,
                        name: n.clone(),
                        id: TopicId(0),
                        partitions: Vec::new(),
                    },
                })
                .collect()
        }
    };
    let me = BrokerMeta {
        node_id: node,
        host: shard.config.advertised_addr().ip().to_string(),
        port: shard.config.advertised_addr().port(),
    };
    // Brokers that may lead (alive and not fenced), as Kafka lists them.
    let mut brokers: Vec<BrokerMeta> = image
        .brokers()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let addr: std::net::SocketAddr = b.reg.address.parse().ok()?;
            Some(BrokerMeta {
                node_id: b.reg.node.0,
                host: addr.ip().to_string(),
                port: addr.port(),
            })
        })
        .collect();
    if !brokers.iter().any(|b| b.node_id == node) {
        brokers.push(me);
    }
    let controller_id = if image.applied == 0 {
        node
    } else {
        topics.cluster.controller.0
    };
    MetadataResponse {
        brokers,
        controller_id,
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
                    configs: topics::describe(&shard.config.log_defaults(), &t.configs)
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

/// The first partition a produce names twice, if any.
fn named_twice(r: &ProduceRequest) -> Option<(TopicId, u32)> {
    let mut named = std::collections::HashSet::new();
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, p.partition)))
        .find(|k| !named.insert(*k))
}

async fn produce(shard: &Rc<Shard>, r: ProduceRequest, frame_len: usize) -> ProduceResponse {
    // Every partition's append starts at once, on whichever shard owns it.
    // What the whole request may decompress to recompress is one budget.
    let recompress_budget = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
        shard.config.recompress_max_bytes,
    ));
    let mut tasks = Vec::new();
    for t in r.topics {
        let mut parts = Vec::new();
        for mut p in t.partitions {
            // The records are a slice of the request's frame, and the tail
            // cache may keep them long after the rest of it is gone: a small
            // part of a large frame is copied out, so that what the cache
            // counts is at least half of what it pins.
            if p.records.len() * 2 < frame_len {
                p.records = BytesMut::from(&p.records[..]);
            }
            let key: PartKey = (t.topic_id, p.partition);
            let shard = shard.clone();
            let acks = r.acks;
            let timeout = Duration::from_millis(u64::from(r.timeout_ms));
            let recompress_budget = recompress_budget.clone();
            parts.push((
                p.partition,
                glommio::spawn_local(async move {
                    known(&shard, key.0, key.1).map_err(|c| (c, c.description().to_string()))?;
                    let owner = shard.owner(key);
                    match shard
                        .call(
                            owner,
                            Produce {
                                key,
                                records: p.records,
                                acks,
                                timeout,
                                recompress_budget,
                            },
                        )
                        .await
                    {
                        Ok(r) => r,
                        Err(Unavailable) => Err((
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
                        ListOffsets {
                            key,
                            timestamp: p.timestamp,
                        },
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(Unavailable) => Err((ErrorCode::NotLeaderOrFollower, String::new())),
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
    /// The log end the last read saw: the wait is for bytes past it.
    seen_end: i64,
    /// Set for a follower's fetch.
    replica: Option<ReplicaOf>,
}

/// One partition's part of a fetch response.
struct SlotRead {
    error: ErrorCode,
    high_watermark: i64,
    log_start_offset: i64,
    pieces: Vec<Piece>,
}

/// Reads one partition for a fetch, on the shard that owns it.
async fn read_slot(shard: &Rc<Shard>, s: &FetchSlot, max: u32) -> SlotRead {
    let key = (s.topic, s.partition);
    if let Err(c) = known(shard, s.topic, s.partition) {
        return SlotRead {
            error: c,
            high_watermark: -1,
            log_start_offset: -1,
            pieces: Vec::new(),
        };
    }
    let owner = shard.owner(key);
    if owner == shard.id {
        let f = shard.fetch_local(key, s.offset, max, s.replica).await;
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
        return SlotRead {
            error: f.error,
            high_watermark: f.high_watermark,
            log_start_offset: f.log_start_offset,
            pieces,
        };
    }
    let call = Fetch {
        key,
        offset: s.offset,
        max_bytes: max,
        replica: s.replica,
    };
    match shard.call(owner, call).await {
        Ok(f) => SlotRead {
            error: f.error,
            high_watermark: f.high_watermark,
            log_start_offset: f.log_start_offset,
            pieces: f
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
                .collect(),
        },
        Err(Unavailable) => SlotRead {
            error: ErrorCode::NotLeaderOrFollower,
            high_watermark: -1,
            log_start_offset: -1,
            pieces: Vec::new(),
        },
    }
}

/// Long-poll fetch: read every partition; if fewer than `min_bytes` came
/// back, wait until one of them gets bytes past what was read (or the wait
/// passes, or the connection closes) and read again.
///
/// Bounds: a partition may be named once (a request-level
/// `InvalidRequest` otherwise); the records of the whole response are at
/// most `min(max_bytes, fetch_max_bytes)`, except that the first partition
/// with data returns at least one whole batch; the wait is at most
/// `fetch_max_wait`.
async fn fetch(shard: &Rc<Shard>, corr: u32, r: FetchRequest, conn: &ConnState) -> Outgoing {
    let mut slots: Vec<FetchSlot> = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            slots.push(FetchSlot {
                topic: t.topic_id,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                seen_end: p.fetch_offset,
                replica: None,
            });
        }
    }
    let limits = FetchLimits {
        max_wait_ms: r.max_wait_ms,
        min_bytes: r.min_bytes,
        max_bytes: r.max_bytes,
    };
    serve_fetch(shard, corr, slots, limits, conn).await
}

/// A follower's fetch: the same long poll as a consumer's, with each
/// partition checked against the follower's leader epoch and read to the
/// log end. A follower whose broker epoch is not the image's (a restarted
/// broker the image has not registered again yet) is refused whole.
async fn replica_fetch(shard: &Rc<Shard>, corr: u32, r: ReplicaFetchRequest, conn: &ConnState) -> Outgoing {
    let node = borges_meta::NodeId(r.replica);
    let topics = shard.topics();
    match topics.cluster.image.broker(node) {
        None => {
            return Outgoing::error(
                corr,
                ErrorCode::BrokerIdNotRegistered,
                &format!("node {} is not a registered broker", r.replica),
            )
        }
        Some(b) if b.reg.epoch != r.broker_epoch => {
            return Outgoing::error(
                corr,
                ErrorCode::StaleBrokerEpoch,
                &format!(
                    "node {} fetched with broker epoch {}; its registration has {}",
                    r.replica, r.broker_epoch.0, b.reg.epoch.0
                ),
            )
        }
        Some(_) => {}
    }
    drop(topics);
    let mut slots: Vec<FetchSlot> = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            slots.push(FetchSlot {
                topic: t.topic_id,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                seen_end: p.fetch_offset,
                replica: Some(ReplicaOf {
                    node,
                    leader_epoch: p.leader_epoch,
                }),
            });
        }
    }
    let limits = FetchLimits {
        max_wait_ms: r.max_wait_ms,
        min_bytes: r.min_bytes,
        max_bytes: r.max_bytes,
    };
    serve_fetch(shard, corr, slots, limits, conn).await
}

/// The end of each asked partition's leader epoch (OffsetForLeaderEpoch).
async fn epoch_ends(shard: &Rc<Shard>, r: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let key = (t.topic_id, p.partition);
            let result = match known(shard, key.0, key.1) {
                Err(c) => Err(c),
                Ok(()) => {
                    let call = EpochEnd {
                        key,
                        current_epoch: p.current_leader_epoch,
                        epoch: p.leader_epoch,
                    };
                    match shard.call(shard.owner(key), call).await {
                        Ok(r) => r,
                        Err(Unavailable) => Err(ErrorCode::NotLeaderOrFollower),
                    }
                }
            };
            partitions.push(match result {
                Ok((leader_epoch, end_offset)) => EpochEndPartition {
                    partition: p.partition,
                    error: ErrorCode::None,
                    leader_epoch,
                    end_offset,
                },
                Err(error) => EpochEndPartition {
                    partition: p.partition,
                    error,
                    leader_epoch: -1,
                    end_offset: -1,
                },
            });
        }
        topics.push(EpochEndTopic {
            topic_id: t.topic_id,
            partitions,
        });
    }
    OffsetForLeaderEpochResponse { topics }
}

/// What a fetch asks of its response as a whole.
struct FetchLimits {
    max_wait_ms: u32,
    min_bytes: u32,
    max_bytes: u32,
}

async fn serve_fetch(
    shard: &Rc<Shard>,
    corr: u32,
    mut slots: Vec<FetchSlot>,
    r: FetchLimits,
    conn: &ConnState,
) -> Outgoing {
    let wait = Duration::from_millis(r.max_wait_ms as u64).min(shard.config.fetch_max_wait);
    let deadline = Instant::now() + wait;
    let mut named = std::collections::HashSet::new();
    for s in &slots {
        if named.len() % 4096 == 4095 {
            glommio::yield_if_needed().await;
        }
        if !named.insert((s.topic, s.partition)) {
            return Outgoing::error(
                corr,
                ErrorCode::InvalidRequest,
                &format!(
                    "partition {} of topic id {} is named twice in one fetch",
                    s.partition, s.topic
                ),
            );
        }
    }
    drop(named);
    let replica = slots.first().is_some_and(|s| s.replica.is_some());
    let max_bytes = (r.max_bytes as u64).min(shard.config.fetch_max_bytes as u64);
    // A response can never hold more than max_bytes: asking for more
    // would only wait out the deadline.
    let min_bytes = (r.min_bytes as u64).min(max_bytes);
    loop {
        let mut budget = max_bytes;
        let mut heads: Vec<(TopicId, Vec<FetchPartitionHead>)> = Vec::new();
        let mut records: Vec<Vec<Piece>> = Vec::new();
        let mut total = 0u64;
        let mut errors = false;
        let mut full = false;
        for s in slots.iter_mut() {
            // A fetch may name millions of partitions (unknown ones are
            // answered without awaiting anything): the shard turns between.
            glommio::yield_if_needed().await;
            let mut read = if budget == 0 && s.replica.is_some() {
                // A follower's progress counts even when the response is
                // full: the partition is read with no room for records.
                full = true;
                read_slot(shard, s, 0).await
            } else if budget == 0 {
                full = true;
                SlotRead {
                    error: ErrorCode::None,
                    high_watermark: -1,
                    log_start_offset: -1,
                    pieces: Vec::new(),
                }
            } else {
                let max = (s.max_bytes as u64).min(budget) as u32;
                read_slot(shard, s, max).await
            };
            let mut len: u64 = read.pieces.iter().map(Piece::len).sum();
            if len > budget && total > 0 {
                // A read returns at least one whole batch; past the
                // budget, only the first partition with data may do so.
                read.pieces.clear();
                len = 0;
                full = true;
            }
            if !replica {
                // A consumer waits for the high watermark to pass what it
                // saw; a follower for the log end to pass its offset.
                s.seen_end = s.seen_end.max(read.high_watermark);
            }
            budget = budget.saturating_sub(len);
            total += len;
            errors |= read.error != ErrorCode::None;
            let head = FetchPartitionHead {
                partition: s.partition,
                error: read.error,
                high_watermark: read.high_watermark,
                log_start_offset: read.log_start_offset,
                records_len: len as u32,
            };
            match heads.last_mut() {
                Some((t, v)) if *t == s.topic => v.push(head),
                _ => heads.push((s.topic, vec![head])),
            }
            records.push(read.pieces);
        }
        let now = Instant::now();
        if total >= min_bytes || errors || full || now >= deadline || conn.is_closed() {
            let mut head = BytesMut::new();
            let positions = encode_fetch_response_frame(corr, &heads, &mut head);
            return Outgoing {
                head,
                pieces: positions.into_iter().zip(records).collect(),
                permits: None,
            };
        }
        drop(records);
        futures_lite::future::or(
            wait_for_any(shard, &slots, deadline - now, replica),
            conn.closed(),
        )
        .await;
    }
}

/// Waits until one of the partitions has bytes past the log end its last
/// read saw, asking each owning shard at once, or until `wait` passes. The
/// waits still running on shards when this returns (or is dropped, when
/// its connection closes) are cancelled there.
async fn wait_for_any(shard: &Rc<Shard>, slots: &[FetchSlot], wait: Duration, replica: bool) {
    let mut by_owner: std::collections::BTreeMap<usize, Vec<(PartKey, i64)>> = Default::default();
    for s in slots {
        let key = (s.topic, s.partition);
        by_owner
            .entry(shard.owner(key))
            .or_default()
            .push((key, s.seen_end));
    }
    let mut pending = CancelWaits {
        shard,
        ids: Vec::with_capacity(by_owner.len()),
    };
    let mut calls: Vec<_> = by_owner
        .into_iter()
        .map(|(owner, parts)| {
            let id = shard.new_wait_id();
            pending.ids.push((owner, id));
            let req = WaitForData {
                from: shard.id,
                id,
                parts,
                wait,
                replica,
            };
            Box::pin(shard.call(owner, req))
        })
        .collect();
    let first = std::future::poll_fn(|cx| {
        for (i, c) in calls.iter_mut().enumerate() {
            if std::future::Future::poll(c.as_mut(), cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    });
    let answered = futures_lite::future::or(async { Some(first.await) }, async {
        glommio::timer::sleep(wait).await;
        None
    })
    .await;
    if let Some(i) = answered {
        // That shard's wait is over; the others are cancelled on drop.
        pending.ids.swap_remove(i);
    }
}

/// Cancels, when dropped, the waits for data a fetch left on shards.
struct CancelWaits<'a> {
    shard: &'a Rc<Shard>,
    ids: Vec<(usize, u64)>,
}

impl Drop for CancelWaits<'_> {
    fn drop(&mut self) {
        for &(owner, id) in &self.ids {
            self.shard.cancel_wait(owner, id);
        }
    }
}
