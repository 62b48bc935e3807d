//! Helpers of the group fault suite: a broker with short group timings,
//! consumers, producing, raw members, and listeners that record.

// Each test uses some of these (and of the re-exports below).
#![allow(dead_code, unused_imports)]

pub use std::collections::{BTreeMap, BTreeSet};
pub use std::future::Future;
pub use std::sync::atomic::{AtomicBool, Ordering};
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use borges_client::{
    Acks, Assignor, AutoOffsetReset, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord,
    ErrorCode, GroupConfig, NoopListener, Producer, ProducerConfig, ProducerRecord, RebalanceListener,
    Subscription, TopicPartition,
};
pub use borges_net::protocol::{
    JoinGroupProtocol, JoinGroupRequest, LeaveGroupRequest, LeavingMember, Request, Response,
};

pub async fn bounded<F: Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("the test took longer than {secs} s"));
}

/// A broker with group timings short enough for tests.
pub struct GroupBroker {
    pub broker: borges_system_tests::Broker,
    pub _dir: tempfile::TempDir,
}

impl GroupBroker {
    pub fn start() -> GroupBroker {
        GroupBroker::start_with(&[])
    }

    /// `start`, with extra `borges start` arguments.
    pub fn start_with(extra: &[&str]) -> GroupBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            "group_min_session_timeout_ms = 300\n\
             group_initial_rebalance_delay_ms = 100\n\
             offsets_topic_partitions = 4\n",
        )
        .expect("write the config");
        let broker = borges_system_tests::Broker::start(
            &dir.path().join("data"),
            2,
            &[&["--config", path.to_str().expect("utf-8 path")], extra].concat(),
        );
        GroupBroker { broker, _dir: dir }
    }

    pub fn addr(&self) -> String {
        self.broker.addr.to_string()
    }
}

/// `BORGES_TEST_LOG=debug` shows the client's logs.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("BORGES_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

pub async fn connect(addr: &str) -> Client {
    init_logs();
    Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect")
}

pub fn group_config(group: &str) -> GroupConfig {
    let mut g = GroupConfig::new(group);
    g.session_timeout = Duration::from_millis(1500);
    g.heartbeat_interval = Duration::from_millis(200);
    g.rebalance_timeout = Duration::from_secs(5);
    g.auto_commit_interval = Duration::from_millis(200);
    g
}

pub fn consumer_with(client: &Client, request_timeout: Duration) -> Consumer {
    Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            request_timeout,
            ..ConsumerConfig::default()
        },
    )
}

pub fn consumer(client: &Client) -> Consumer {
    consumer_with(client, ConsumerConfig::default().request_timeout)
}

/// Produces records `v{i}` for `i` in `from..from + n` to one partition, acks=all.
pub async fn produce_to(client: &Client, topic: &str, partition: u32, from: usize, n: usize) {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(2),
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    let mut futs = Vec::new();
    for i in from..from + n {
        let rec = ProducerRecord::new(topic)
            .partition(partition)
            .value(format!("v{i}"));
        futs.push(producer.send(rec).await.expect("send"));
    }
    for f in futs {
        f.await.expect("delivered");
    }
    producer.close().await;
}

/// The coordinator's node (the only broker).
pub fn node(client: &Client) -> i32 {
    client.brokers()[0].node_id
}

/// A JoinGroup of a raw member that subscribes to nothing (the leader
/// assigns it nothing) and supports `protocols`.
pub fn raw_join(
    group: &str,
    member: &str,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: &[&str],
) -> Request {
    let sub = Subscription {
        topics: Vec::new(),
        owned: Vec::new(),
        generation: -1,
    }
    .encode();
    Request::JoinGroup(JoinGroupRequest {
        group_id: group.into(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: rebalance_ms,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| JoinGroupProtocol {
                name: (*p).into(),
                metadata: sub.clone(),
            })
            .collect(),
    })
}

pub async fn wait_for_group(
    client: &Client,
    group: &str,
    what: &str,
    ok: impl Fn(&borges_client::GroupDescription) -> bool,
) -> borges_client::GroupDescription {
    let admin = client.admin();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = admin.describe_group(group).await.expect("describe");
        if ok(&d) {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn value_index(r: &ConsumerRecord) -> usize {
    let v = r.value.as_deref().expect("a value");
    std::str::from_utf8(&v[1..])
        .expect("utf-8")
        .parse()
        .expect("v<number>")
}

/// Who owns which partition, as the members' listeners were told, and
/// every moment two members owned one partition.
#[derive(Default)]
pub struct Ownership {
    pub owner: BTreeMap<TopicPartition, String>,
    pub violations: Vec<String>,
}

#[derive(Clone)]
pub struct Tracked {
    pub name: String,
    pub shared: Arc<Mutex<Ownership>>,
    /// How long giving partitions up takes the application (flushing its
    /// state, say): the partitions are its own until the call returns.
    pub revoke_work: Duration,
}

impl RebalanceListener for Tracked {
    fn on_partitions_revoked(&mut self, parts: &[TopicPartition]) {
        std::thread::sleep(self.revoke_work);
        let mut o = self.shared.lock().unwrap();
        for p in parts {
            if o.owner.get(p) == Some(&self.name) {
                o.owner.remove(p);
            }
        }
    }
    fn on_partitions_assigned(&mut self, parts: &[TopicPartition]) {
        let mut o = self.shared.lock().unwrap();
        for p in parts {
            if let Some(other) = o.owner.get(p).cloned() {
                if other != self.name {
                    let v = format!("{p:?} assigned to {} while {other} still owns it", self.name);
                    o.violations.push(v);
                }
            }
            o.owner.insert(p.clone(), self.name.clone());
        }
    }
}

/// Polls a consumer in a task until told to stop; returns it.
pub fn run_member(mut c: Consumer, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            c.poll(Duration::from_millis(100)).await.expect("poll");
        }
        c
    })
}

/// Records what the listener is told.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<Event>>>);

/// A listener call: which, and the partitions.
pub type Event = (&'static str, Vec<TopicPartition>);

impl RebalanceListener for Events {
    fn on_partitions_revoked(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(("revoked", p.to_vec()));
    }
    fn on_partitions_assigned(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(("assigned", p.to_vec()));
    }
    fn on_partitions_lost(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(("lost", p.to_vec()));
    }
}

/// A TCP proxy in front of the broker (which advertises the proxy's
/// address, so every connection of the clients goes through it) that can
/// break the connections carrying OffsetFetch requests for a while, from
/// the first SyncGroup after it is armed.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    upstream: Mutex<Option<std::net::SocketAddr>>,
    /// Set: the next SyncGroup starts a window this long.
    armed: Mutex<Option<Duration>>,
    /// OffsetFetch requests break their connection until then.
    failing_until: Mutex<Option<std::time::Instant>>,
    broken: std::sync::atomic::AtomicUsize,
}

/// The API keys the proxy looks at.
const OFFSET_FETCH: u16 = borges_net::protocol::ApiKey::OffsetFetch as u16;
const SYNC_GROUP: u16 = borges_net::protocol::ApiKey::SyncGroup as u16;

impl FaultProxy {
    pub async fn start() -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(proxy_connection(conn, st.clone()));
            }
        });
        FaultProxy { addr, state }
    }

    /// Where the broker really listens.
    pub fn set_upstream(&self, addr: std::net::SocketAddr) {
        *self.state.upstream.lock().unwrap() = Some(addr);
    }

    /// From the next SyncGroup on, OffsetFetch requests fail for `window`.
    pub fn fail_offset_fetches_after_next_sync(&self, window: Duration) {
        *self.state.armed.lock().unwrap() = Some(window);
    }

    /// How many OffsetFetch requests it broke.
    pub fn broken(&self) -> usize {
        self.state.broken.load(Ordering::SeqCst)
    }
}

async fn proxy_connection(client: tokio::net::TcpStream, st: Arc<ProxyState>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(up) = *st.upstream.lock().unwrap() else {
        return;
    };
    let Ok(server) = tokio::net::TcpStream::connect(up).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    });
    loop {
        let mut len = [0u8; 4];
        if cr.read_exact(&mut len).await.is_err() {
            break;
        }
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        if cr.read_exact(&mut frame).await.is_err() {
            break;
        }
        let api = u16::from_be_bytes([frame[0], frame[1]]);
        if api == SYNC_GROUP {
            if let Some(window) = st.armed.lock().unwrap().take() {
                *st.failing_until.lock().unwrap() = Some(std::time::Instant::now() + window);
            }
        }
        if api == OFFSET_FETCH
            && st
                .failing_until
                .lock()
                .unwrap()
                .is_some_and(|t| std::time::Instant::now() < t)
        {
            st.broken.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if sw.write_all(&len).await.is_err() || sw.write_all(&frame).await.is_err() {
            break;
        }
    }
    // Both directions close: the client sees its connection break.
    down.abort();
}

/// Takes `member` out of `group` on its behalf (as a session expiry would),
/// without the member knowing.
pub async fn expel(client: &Client, group: &str, member: &str) {
    let resp = client
        .send_to(
            node(client),
            &Request::LeaveGroup(LeaveGroupRequest {
                group_id: group.into(),
                members: vec![LeavingMember {
                    member_id: member.to_string(),
                    group_instance_id: None,
                }],
            }),
            Duration::from_secs(5),
        )
        .await
        .expect("leave");
    let Response::LeaveGroup(l) = resp else {
        panic!("answered {:?} to LeaveGroup", resp.api_key())
    };
    assert_eq!(l.members[0].error, ErrorCode::None);
}
