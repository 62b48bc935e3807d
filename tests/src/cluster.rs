//! Helpers for cluster tests: brokers on 127.0.0.1, 127.0.0.2, ... (each
//! its own address, one port), every one a voter of the metadata quorum
//! unless a test says otherwise, and blocking calls to ask them what they
//! know.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use borges_net::batch::decode_records;
use borges_net::protocol::{
    BrokerState, CreatableTopic, CreateTopicsRequest, DescribeClusterRequest, DescribeClusterResponse,
    ErrorCode, FetchPartition, FetchRequest, FetchTopic, MetadataRequest, MetadataResponse, Request,
    Response,
};
use borges_net::types::TopicId;

use crate::{broker_port, Broker, Launch, RawConn};

/// One broker of a test cluster: its node id, its own address, its data directory.
pub struct Node {
    pub id: i32,
    pub client: SocketAddr,
    pub dir: PathBuf,
}

/// Nodes 0..n on 127.0.0.(i+1), one port, the same on every address.
pub fn nodes(root: &std::path::Path, n: usize) -> Vec<Node> {
    let port = broker_port();
    (0..n)
        .map(|i| Node {
            id: i as i32,
            client: SocketAddr::from(([127, 0, 0, i as u8 + 1], port)),
            dir: root.join(format!("node{i}")),
        })
        .collect()
}

pub fn args(nodes: &[Node], me: &Node) -> Vec<String> {
    args_voters(nodes, nodes.len(), me)
}

/// The first `voters` nodes are the quorum's voters; the others observe.
pub fn args_voters(nodes: &[Node], voters: usize, me: &Node) -> Vec<String> {
    let voters: Vec<String> = nodes[..voters]
        .iter()
        .map(|n| format!("{}@{}", n.id, n.client))
        .collect();
    vec![
        format!("--node-id={}", me.id),
        format!("--controllers={}", voters.join(",")),
        "--broker-session-timeout-ms=3000".into(),
        "--broker-heartbeat-interval-ms=500".into(),
    ]
}

pub fn launch(nodes: &[Node], me: &Node) -> Launch {
    let a = args(nodes, me);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    Broker::launch(me.client, &me.dir, 1, &a)
}

pub fn start_all(nodes: &[Node]) -> Vec<Broker> {
    let launches: Vec<_> = nodes.iter().map(|n| launch(nodes, n)).collect();
    launches
        .into_iter()
        .map(|l| l.wait().expect("a cluster broker starts once a quorum is up"))
        .collect()
}

pub fn call(addr: SocketAddr, req: Request) -> Option<Response> {
    let mut c = RawConn::try_connect(addr, Duration::from_secs(15)).ok()?;
    c.try_call(req)?.ok()
}

pub fn describe(addr: SocketAddr) -> Option<DescribeClusterResponse> {
    match call(addr, Request::DescribeCluster(DescribeClusterRequest {}))? {
        Response::DescribeCluster(d) => Some(d),
        _ => None,
    }
}

pub fn metadata(addr: SocketAddr, topic: &str) -> Option<MetadataResponse> {
    match call(
        addr,
        Request::Metadata(MetadataRequest {
            topics: Some(vec![topic.to_string()]),
        }),
    )? {
        Response::Metadata(m) => Some(m),
        _ => None,
    }
}

/// Polls `f` every 50 ms until it gives `Some`, at most `limit`.
pub fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let began = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, began.elapsed());
        }
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn states(d: &DescribeClusterResponse) -> Vec<(i32, BrokerState)> {
    let mut s: Vec<(i32, BrokerState)> = d.brokers.iter().map(|b| (b.node_id, b.state)).collect();
    s.sort_by_key(|(id, _)| *id);
    s
}

/// Every broker of `n` alive.
pub fn alive(n: usize) -> Vec<(i32, BrokerState)> {
    (0..n as i32).map(|i| (i, BrokerState::Alive)).collect()
}

/// Waits until `addr` describes `n` alive brokers and a controller; the
/// controller.
pub fn until_all_alive(addr: SocketAddr, n: usize) -> i32 {
    let want = alive(n);
    let (controller, _) = until(Duration::from_secs(20), "every broker alive", || {
        let d = describe(addr)?;
        (d.controller_id >= 0 && states(&d) == want).then_some(d.controller_id)
    });
    controller
}

pub fn create(addr: SocketAddr, name: &str, partitions: u32) -> (ErrorCode, TopicId, Option<String>) {
    create_replicated(addr, name, partitions, 1, &[])
}

/// Creates a topic of `rf` replicas with settings `configs`.
pub fn create_replicated(
    addr: SocketAddr,
    name: &str,
    partitions: u32,
    rf: u16,
    configs: &[(&str, &str)],
) -> (ErrorCode, TopicId, Option<String>) {
    let resp = call(
        addr,
        Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.into(),
                partitions,
                replication_factor: rf,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
            timeout_ms: 10_000,
            validate_only: false,
        }),
    )
    .expect("an answer to CreateTopics");
    let Response::CreateTopics(r) = resp else {
        panic!("wrong response")
    };
    let t = &r.topics[0];
    (t.error, t.id, t.message.clone())
}

/// The values stored in one partition, read from `addr` from offset 0.
pub fn read_all(addr: SocketAddr, topic: TopicId, partition: u32) -> Result<Vec<String>, ErrorCode> {
    let resp = call(
        addr,
        Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                topic_id: topic,
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: 0,
                    partition_max_bytes: 1 << 20,
                }],
            }],
        }),
    )
    .ok_or(ErrorCode::RequestTimedOut)?;
    let Response::Fetch(f) = resp else {
        panic!("wrong response")
    };
    let p = &f.topics[0].partitions[0];
    if p.error != ErrorCode::None {
        return Err(p.error);
    }
    let mut values = Vec::new();
    for (_, range) in borges_net::batch::BatchIter::new(&p.records).flatten() {
        for r in decode_records(&p.records[range]).expect("stored batches decode") {
            values.push(String::from_utf8(r.value.expect("a value").to_vec()).expect("utf-8"));
        }
    }
    Ok(values)
}
