//! Consumer groups against a real broker: membership, rebalances, member
//! crashes, static membership, fencing, committed offsets across a broker
//! restart, the group CLI, and retention as consumers see it.
//!
//! Members that must die without a goodbye are `borges consume --group`
//! processes, SIGKILLed; the others run in this process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use borges_client::{
    Acks, Assignor, AutoOffsetReset, Client, ClientConfig, Consumer, ConsumerConfig, ErrorCode, GroupConfig,
    NoopListener, OffsetSpec, Producer, ProducerConfig, ProducerRecord, RebalanceListener, TopicPartition,
};
use borges_net::protocol::{
    HeartbeatRequest, JoinGroupProtocol, JoinGroupRequest, OffsetCommitPartition, OffsetCommitRequest,
    OffsetCommitTopic, Request, Response, SyncGroupRequest,
};
use bytes::Bytes;
use common::Broker;

async fn bounded<F: Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("the test took longer than {secs} s"));
}

/// A broker with group timings short enough for tests.
struct GroupBroker {
    broker: Broker,
    _config: tempfile::TempDir,
}

impl GroupBroker {
    fn start() -> GroupBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            "group_min_session_timeout_ms = 300\n\
             group_initial_rebalance_delay_ms = 100\n\
             offsets_topic_partitions = 4\n\
             retention_check_interval_ms = 200\n\
             cleaner_interval_ms = 200\n",
        )
        .expect("write the config");
        let broker = Broker::start_with(&["--config", path.to_str().expect("utf-8 path")]);
        GroupBroker { broker, _config: dir }
    }
}

/// `BORGES_TEST_LOG=debug` shows the client's logs.
fn init_logs() {
    if let Ok(filter) = std::env::var("BORGES_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

async fn connect(addr: &str) -> Client {
    init_logs();
    Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect")
}

fn group_config(group: &str) -> GroupConfig {
    let mut g = GroupConfig::new(group);
    g.session_timeout = Duration::from_millis(1500);
    g.heartbeat_interval = Duration::from_millis(200);
    g.rebalance_timeout = Duration::from_secs(5);
    g.auto_commit_interval = Duration::from_millis(200);
    g
}

fn consumer(client: &Client) -> Consumer {
    Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    )
}

/// Produces `n` records `k{i}`/`v{i}` spread by key, acks=all.
async fn produce(client: &Client, topic: &str, from: usize, n: usize) {
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
            .key(format!("k{i}"))
            .value(format!("v{i}"));
        futs.push(producer.send(rec).await.expect("send"));
    }
    for f in futs {
        f.await.expect("delivered");
    }
    producer.close().await;
}

async fn end_offsets(client: &Client, topic: &str, partitions: u32) -> BTreeMap<u32, i64> {
    let admin = client.admin();
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        out.insert(
            p,
            admin
                .list_offsets(topic, p, OffsetSpec::Latest)
                .await
                .expect("offsets")
                .offset,
        );
    }
    out
}

/// A `borges consume --group` process whose printed records are collected.
struct CliMember {
    child: Child,
    seen: Arc<Mutex<Vec<(u32, i64)>>>,
}

impl CliMember {
    fn spawn(addr: &str, topic: &str, group: &str) -> CliMember {
        let mut child = Command::new(borges_system_tests::borges_bin())
            .args(["consume", topic, "--group", group, "--brokers", addr])
            .args(["--format", "{partition} {offset}", "--session-timeout-ms", "1500"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a consumer process");
        let out = child.stdout.take().expect("piped");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split(' ');
                if let (Some(p), Some(o)) = (it.next(), it.next()) {
                    if let (Ok(p), Ok(o)) = (p.parse(), o.parse()) {
                        s.lock().unwrap().push((p, o));
                    }
                }
            }
        });
        CliMember { child, seen }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for CliMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The assignment the coordinator hands out is disjoint within a generation.
fn assert_disjoint(d: &borges_client::GroupDescription) {
    let mut owned = BTreeSet::new();
    for m in &d.members {
        for tp in &m.assignment {
            assert!(
                owned.insert(tp.clone()),
                "{tp:?} assigned twice in generation {}: {d:?}",
                d.generation
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_survive_a_member_kill() {
    let b = GroupBroker::start();
    let addr = b.broker.addr().to_string();
    bounded(120, async move {
        let client = connect(&addr).await;
        client
            .admin()
            .create_topic("events", 6, 1, &[])
            .await
            .expect("create");
        let total = 6000;
        let producing = {
            let client = client.clone();
            tokio::spawn(async move {
                for round in 0..30 {
                    produce(&client, "events", round * 200, 200).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut members: Vec<CliMember> = (0..3).map(|_| CliMember::spawn(&addr, "events", "g1")).collect();
        let admin = client.admin();
        let watch = |admin: borges_client::Admin| async move {
            if let Ok(d) = admin.describe_group("g1").await {
                assert_disjoint(&d);
                return Some(d);
            }
            None
        };
        for _ in 0..15 {
            watch(admin.clone()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        members[0].kill();
        for _ in 0..15 {
            watch(admin.clone()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        members.push(CliMember::spawn(&addr, "events", "g1"));
        producing.await.expect("producer task");
        let ends = end_offsets(&client, "events", 6).await;
        assert_eq!(ends.values().sum::<i64>() as usize, total);
        // Every record is processed at least once, by the members together.
        loop {
            let union: BTreeSet<(u32, i64)> = members
                .iter()
                .flat_map(|m| m.seen.lock().unwrap().clone())
                .collect();
            let missing = ends
                .iter()
                .map(|(p, e)| (0..*e).filter(|o| !union.contains(&(*p, *o))).count())
                .sum::<usize>();
            if missing == 0 {
                break;
            }
            watch(admin.clone()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The three live members own all six partitions.
        loop {
            let d = watch(admin.clone()).await;
            if let Some(d) = d {
                let owned: usize = d.members.iter().map(|m| m.assignment.len()).sum();
                if d.state == "Stable" && d.members.len() == 3 && owned == 6 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Everything printed was committed: the group has no lag.
        loop {
            let committed: BTreeMap<TopicPartition, i64> = admin
                .group_offsets("g1")
                .await
                .expect("offsets")
                .into_iter()
                .collect();
            if ends
                .iter()
                .all(|(p, e)| committed.get(&("events".to_string(), *p)) == Some(e))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for m in members.iter_mut().skip(1) {
            m.terminate();
        }
        // Clean leaves empty the group at once.
        let d = admin.describe_group("g1").await.expect("describe");
        assert_eq!(d.state, "Empty", "{d:?}");
        assert!(d.members.is_empty());
    })
    .await;
}

/// Records what the listener is told.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

/// A listener call: which, and the partitions.
type Event = (&'static str, Vec<TopicPartition>);

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

/// Polls a consumer in a task until told to stop; returns it.
fn run_member(
    mut c: Consumer,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            c.poll(Duration::from_millis(100)).await.expect("poll");
        }
        c
    })
}

async fn rebalance_revocations(assignor: Assignor) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
    let b = GroupBroker::start();
    let client = connect(b.broker.addr()).await;
    let topic = format!("t-{}", assignor.name());
    client
        .admin()
        .create_topic(&topic, 4, 1, &[])
        .await
        .expect("create");
    let group = format!("g-{}", assignor.name());
    let mut cfg = group_config(&group);
    cfg.assignors = vec![assignor];
    let events_a = Events::default();
    let mut a = consumer(&client);
    a.subscribe(cfg.clone(), &[topic.as_str()], Box::new(events_a.clone()))
        .expect("subscribe");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task_a = run_member(a, stop.clone());
    // a alone owns everything (as its listener has been told).
    let admin = client.admin();
    let assigned = |e: &Events| -> Vec<TopicPartition> {
        e.0.lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == "assigned")
            .flat_map(|e| e.1.clone())
            .collect()
    };
    let mut first = assigned(&events_a);
    while first.len() < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        first = assigned(&events_a);
    }
    assert_eq!(first.len(), 4);
    events_a.0.lock().unwrap().clear();
    let mut b2 = consumer(&client);
    b2.subscribe(cfg, &[topic.as_str()], Box::new(NoopListener))
        .expect("subscribe");
    let task_b = run_member(b2, stop.clone());
    loop {
        let d = admin.describe_group(&group).await.expect("describe");
        assert_disjoint(&d);
        if d.state == "Stable" && d.members.len() == 2 && d.members.iter().all(|m| m.assignment.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let a = task_a.await.expect("member a");
    let b2 = task_b.await.expect("member b");
    let kept = a.assignment();
    // What the rebalance revoked (closing revokes the rest).
    let revoked: Vec<TopicPartition> = events_a
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == "revoked")
        .flat_map(|e| e.1.clone())
        .collect();
    a.close().await.expect("close");
    b2.close().await.expect("close");
    (revoked, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalance_revokes_only_what_moves() {
    bounded(60, async {
        let (revoked, kept) = rebalance_revocations(Assignor::CooperativeSticky).await;
        assert_eq!(kept.len(), 2);
        assert_eq!(
            revoked.len(),
            2,
            "only the two partitions that moved: {revoked:?}"
        );
        assert!(revoked.iter().all(|tp| !kept.contains(tp)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_rebalance_revokes_everything() {
    bounded(60, async {
        let (revoked, kept) = rebalance_revocations(Assignor::Range).await;
        assert_eq!(kept.len(), 2);
        assert_eq!(
            revoked.len(),
            4,
            "range revokes all before rejoining: {revoked:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_restart() {
    let mut b = GroupBroker::start();
    let addr = b.broker.addr().to_string();
    let client = connect(&addr).await;
    bounded(60, async {
        client
            .admin()
            .create_topic("orders", 3, 1, &[])
            .await
            .expect("create");
        produce(&client, "orders", 0, 300).await;
        let mut c = consumer(&client);
        let mut cfg = group_config("keep");
        cfg.enable_auto_commit = false;
        c.subscribe(cfg, &["orders"], Box::new(NoopListener))
            .expect("subscribe");
        let mut got = 0;
        while got < 300 {
            got += c.poll(Duration::from_millis(200)).await.expect("poll").len();
        }
        c.commit().await.expect("commit");
        // Metadata is kept with the offset.
        c.close().await.expect("close");
    })
    .await;
    let before = client.admin().group_offsets("keep").await.expect("offsets");
    assert_eq!(before.iter().map(|(_, o)| o).sum::<i64>(), 300);
    drop(client);
    b.broker.restart();
    let client = connect(&addr).await;
    bounded(60, async {
        let after = client
            .admin()
            .group_offsets("keep")
            .await
            .expect("offsets after restart");
        assert_eq!(after, before);
        let groups = client.admin().list_groups().await.expect("list");
        assert!(
            groups.iter().any(|g| g.group_id == "keep" && g.state == "Empty"),
            "{groups:?}"
        );
        // A new member starts at the committed offsets: only new records.
        produce(&client, "orders", 300, 30).await;
        let mut c = consumer(&client);
        c.subscribe(group_config("keep"), &["orders"], Box::new(NoopListener))
            .expect("subscribe");
        let mut got = Vec::new();
        while got.len() < 30 {
            got.extend(c.poll(Duration::from_millis(200)).await.expect("poll"));
        }
        let values: BTreeSet<String> = got
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_ref().unwrap()).into_owned())
            .collect();
        let expected: BTreeSet<String> = (300..330).map(|i| format!("v{i}")).collect();
        assert_eq!(values, expected);
        c.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_returns_without_a_rebalance() {
    let b = GroupBroker::start();
    bounded(60, async {
        let client = connect(b.broker.addr()).await;
        client.admin().create_topic("s", 4, 1, &[]).await.expect("create");
        let mut cfg = group_config("static");
        cfg.instance_id = Some("host-1".into());
        cfg.session_timeout = Duration::from_secs(5);
        let mut other_cfg = group_config("static");
        other_cfg.instance_id = Some("host-2".into());
        other_cfg.session_timeout = Duration::from_secs(5);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut one = consumer(&client);
        one.subscribe(cfg.clone(), &["s"], Box::new(NoopListener))
            .expect("subscribe");
        let mut two = consumer(&client);
        two.subscribe(other_cfg, &["s"], Box::new(NoopListener))
            .expect("subscribe");
        let t1 = run_member(one, stop.clone());
        let t2 = run_member(two, stop.clone());
        let admin = client.admin();
        let stable = loop {
            let d = admin.describe_group("static").await.expect("describe");
            if d.state == "Stable"
                && d.members.len() == 2
                && d.members.iter().all(|m| m.assignment.len() == 2)
            {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let one = t1.await.expect("one");
        let two = t2.await.expect("two");
        let before = one.assignment();
        // A crash-like stop of host-1: no LeaveGroup (static members never send one).
        drop(one);
        let stop2 = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t2 = run_member(two, stop2.clone());
        let mut again = consumer(&client);
        again
            .subscribe(cfg, &["s"], Box::new(NoopListener))
            .expect("subscribe");
        while again.group_member().is_none() {
            again.poll(Duration::from_millis(100)).await.expect("poll");
        }
        let d = admin.describe_group("static").await.expect("describe");
        assert_eq!(d.generation, stable.generation, "no rebalance: {d:?}");
        assert_eq!(d.state, "Stable");
        assert_eq!(again.assignment(), before);
        stop2.store(true, std::sync::atomic::Ordering::SeqCst);
        let two = t2.await.expect("two");
        again.close().await.expect("close");
        two.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_generations_and_unknown_members_are_fenced() {
    let b = GroupBroker::start();
    bounded(60, async {
        let client = connect(b.broker.addr()).await;
        client.admin().create_topic("f", 2, 1, &[]).await.expect("create");
        let node = client.brokers()[0].node_id;
        let t = Duration::from_secs(10);
        let join = |member: &str| {
            Request::JoinGroup(JoinGroupRequest {
                group_id: "fence".into(),
                session_timeout_ms: 3000,
                rebalance_timeout_ms: 3000,
                member_id: member.into(),
                group_instance_id: None,
                protocol_type: "consumer".into(),
                protocols: vec![JoinGroupProtocol {
                    name: "range".into(),
                    metadata: Bytes::new(),
                }],
            })
        };
        let Response::JoinGroup(j1) = client.send_to(node, &join(""), t).await.expect("join") else {
            panic!()
        };
        assert_eq!(j1.error, ErrorCode::None);
        assert_eq!(j1.leader, j1.member_id);
        let sync = |member: &str, generation: i32| {
            Request::SyncGroup(SyncGroupRequest {
                group_id: "fence".into(),
                generation_id: generation,
                member_id: member.into(),
                group_instance_id: None,
                assignments: Vec::new(),
            })
        };
        let Response::SyncGroup(s1) = client
            .send_to(node, &sync(&j1.member_id, j1.generation_id), t)
            .await
            .expect("sync")
        else {
            panic!()
        };
        assert_eq!(s1.error, ErrorCode::None);
        let heartbeat = |member: &str, generation: i32| {
            Request::Heartbeat(HeartbeatRequest {
                group_id: "fence".into(),
                generation_id: generation,
                member_id: member.into(),
                group_instance_id: None,
            })
        };
        let hb = |r: Response| match r {
            Response::Heartbeat(h) => h.error,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            hb(client
                .send_to(node, &heartbeat(&j1.member_id, j1.generation_id), t)
                .await
                .unwrap()),
            ErrorCode::None
        );
        assert_eq!(
            hb(client
                .send_to(node, &heartbeat("nobody", j1.generation_id), t)
                .await
                .unwrap()),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            hb(client
                .send_to(node, &heartbeat(&j1.member_id, j1.generation_id + 5), t)
                .await
                .unwrap()),
            ErrorCode::IllegalGeneration
        );
        // A second member joins: the first is told to rejoin, then both do.
        let c2 = client.clone();
        let second = tokio::spawn(async move { c2.send_to(node, &join(""), Duration::from_secs(10)).await });
        let mut told = false;
        for _ in 0..50 {
            if hb(client
                .send_to(node, &heartbeat(&j1.member_id, j1.generation_id), t)
                .await
                .unwrap())
                == ErrorCode::RebalanceInProgress
            {
                told = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(told, "the first member was not told about the rebalance");
        let Response::JoinGroup(j1b) = client
            .send_to(node, &join(&j1.member_id), t)
            .await
            .expect("rejoin")
        else {
            panic!()
        };
        let Response::JoinGroup(j2) = second.await.unwrap().expect("second join") else {
            panic!()
        };
        assert_eq!(j1b.generation_id, j2.generation_id);
        assert!(j1b.generation_id > j1.generation_id);
        // The old generation is fenced for commits and heartbeats.
        let commit = |member: &str, generation: i32| {
            Request::OffsetCommit(OffsetCommitRequest {
                group_id: "fence".into(),
                generation_id: generation,
                member_id: member.into(),
                group_instance_id: None,
                topics: vec![OffsetCommitTopic {
                    name: "f".into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: 0,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: None,
                    }],
                }],
            })
        };
        let err = |r: Response| match r {
            Response::OffsetCommit(c) => c.topics[0].partitions[0].error,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(client
                .send_to(node, &commit(&j1.member_id, j1.generation_id), t)
                .await
                .unwrap()),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            hb(client
                .send_to(node, &heartbeat(&j1.member_id, j1.generation_id), t)
                .await
                .unwrap()),
            ErrorCode::IllegalGeneration
        );
        // A commit from outside the membership while members exist is refused.
        assert_eq!(
            err(client.send_to(node, &commit("", -1), t).await.unwrap()),
            ErrorCode::UnknownMemberId
        );
        // A rejoin with an empty protocol list, and a bad session timeout, are typed errors.
        let mut bad = join("");
        if let Request::JoinGroup(j) = &mut bad {
            j.session_timeout_ms = 1;
        }
        let Response::JoinGroup(e) = client.send_to(node, &bad, t).await.unwrap() else {
            panic!()
        };
        assert_eq!(e.error, ErrorCode::InvalidSessionTimeout);
        // An empty group id is a typed error for the whole request.
        let mut nameless = join("");
        if let Request::JoinGroup(j) = &mut nameless {
            j.group_id.clear();
        }
        let e = client
            .send_to(node, &nameless, t)
            .await
            .expect_err("empty group id");
        assert_eq!(e.code(), Some(ErrorCode::InvalidGroupId));
        // Member data over the coordinator's cap is refused, not kept.
        let mut big = join("");
        if let Request::JoinGroup(j) = &mut big {
            j.protocols[0].metadata = Bytes::from(vec![0u8; (1 << 20) + 1]);
        }
        let Response::JoinGroup(e) = client.send_to(node, &big, t).await.unwrap() else {
            panic!()
        };
        assert_eq!(e.error, ErrorCode::InvalidRequest);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_cli_lists_describes_resets_and_deletes() {
    let b = GroupBroker::start();
    let addr = b.broker.addr().to_string();
    bounded(90, async move {
        let client = connect(&addr).await;
        client
            .admin()
            .create_topic("cli", 2, 1, &[])
            .await
            .expect("create");
        produce(&client, "cli", 0, 50).await;
        let run = |args: &[&str]| {
            let out = Command::new(borges_system_tests::borges_bin())
                .args(args)
                .args(["--brokers", &addr])
                .output()
                .expect("run borges");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        // A member reads everything and commits it.
        let (ok, out, err) = run(&["consume", "cli", "--group", "tools", "--max-records", "50"]);
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 50);
        let (ok, out, _) = run(&["group", "list"]);
        assert!(ok);
        assert!(out.lines().any(|l| l.starts_with("tools\tEmpty")), "{out}");
        let (ok, out, _) = run(&["group", "describe", "tools"]);
        assert!(ok);
        let lag: i64 = out
            .lines()
            .filter(|l| l.starts_with("cli\t"))
            .map(|l| l.split('\t').nth(4).unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(lag, 0, "{out}");
        // Back to the start: the next member reads everything again.
        let (ok, _, err) = run(&[
            "group",
            "reset-offsets",
            "tools",
            "--topic",
            "cli",
            "--to",
            "earliest",
        ]);
        assert!(ok, "{err}");
        let (ok, out, _) = run(&["group", "describe", "tools"]);
        assert!(ok);
        let lag: i64 = out
            .lines()
            .filter(|l| l.starts_with("cli\t"))
            .map(|l| l.split('\t').nth(4).unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(lag, 50, "{out}");
        let (ok, out, _) = run(&["consume", "cli", "--group", "tools", "--max-records", "10"]);
        assert!(ok);
        assert_eq!(out.lines().count(), 10);
        // Bad arguments are errors, not crashes.
        let (ok, _, err) = run(&[
            "group",
            "reset-offsets",
            "tools",
            "--topic",
            "cli",
            "--to",
            "yesterday",
        ]);
        assert!(!ok);
        assert!(err.contains("--to"), "{err}");
        let (ok, _, err) = run(&["consume", "cli", "--group", "tools", "--from", "5"]);
        assert!(!ok);
        assert!(err.contains("--from"), "{err}");
        let (ok, _, err) = run(&["group", "delete", "nope"]);
        assert!(!ok);
        assert!(err.contains("no group"), "{err}");
        let (ok, _, err) = run(&["group", "delete", "tools"]);
        assert!(ok, "{err}");
        let (_, out, _) = run(&["group", "list"]);
        assert!(!out.contains("tools"), "{out}");
        assert!(client
            .admin()
            .group_offsets("tools")
            .await
            .expect("offsets")
            .is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_the_log_start_and_consumers_reset() {
    let b = GroupBroker::start();
    bounded(60, async {
        let client = connect(b.broker.addr()).await;
        client
            .admin()
            .create_topic(
                "short",
                1,
                1,
                &[("segment.bytes", "16384"), ("retention.bytes", "16384")],
            )
            .await
            .expect("create");
        // Small batches, so that many segments roll.
        for round in 0..40 {
            produce(&client, "short", round * 50, 50).await;
        }
        // The retention task deletes old segments: the start moves up.
        let start = loop {
            let s = client
                .admin()
                .list_offsets("short", 0, OffsetSpec::Earliest)
                .await
                .expect("offsets")
                .offset;
            if s > 0 {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // A consumer positioned below the start is reset per its policy.
        let mut c = consumer(&client);
        c.assign([("short", 0)]);
        c.seek("short", 0, borges_client::SeekTo::Offset(0))
            .await
            .expect("seek");
        let mut first = None;
        while first.is_none() {
            first = c
                .poll(Duration::from_millis(200))
                .await
                .expect("poll")
                .first()
                .map(|r| r.offset);
        }
        assert!(
            first.unwrap() >= start,
            "read {first:?} below the log start {start}"
        );
        // With no reset policy the application is told.
        let mut strict = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::None,
                ..ConsumerConfig::default()
            },
        );
        strict.assign([("short", 0)]);
        strict
            .seek("short", 0, borges_client::SeekTo::Offset(0))
            .await
            .expect("seek");
        let e = strict
            .poll(Duration::from_secs(2))
            .await
            .expect_err("out of range");
        assert!(
            matches!(e, borges_client::ClientError::OffsetOutOfRange { .. }),
            "{e:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_value_of_every_key_at_its_offset() {
    let mut b = GroupBroker::start();
    let addr = b.broker.addr().to_string();
    let client = connect(&addr).await;
    let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
    bounded(60, async {
        client
            .admin()
            .create_topic(
                "table",
                1,
                1,
                &[("cleanup.policy", "compact"), ("segment.bytes", "4096")],
            )
            .await
            .expect("create");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::All,
                batch_size_bytes: 2048,
                ..ProducerConfig::default()
            },
        )
        .expect("producer");
        let mut sent = Vec::new();
        for i in 0..3000 {
            let key = format!("k{}", i % 20);
            let value = format!("v{i}");
            let f = producer
                .send(ProducerRecord::new("table").key(key.clone()).value(value.clone()))
                .await
                .expect("send");
            sent.push((key, value, f));
        }
        for (key, value, f) in sent {
            let md = f.await.expect("delivered");
            latest.insert(key, (md.offset, value));
        }
        producer.close().await;
        // The cleaner rewrites the closed segments.
        let mut records: Vec<borges_client::ConsumerRecord>;
        loop {
            let mut c = consumer(&client);
            c.assign([("table", 0)]);
            records = Vec::new();
            let end = 3000;
            while records.last().is_none_or(|r| r.offset + 1 < end) {
                records.extend(c.poll(Duration::from_millis(200)).await.expect("poll"));
            }
            if records.len() < 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");
        for (key, (offset, value)) in &latest {
            let r = records
                .iter()
                .find(|r| r.offset == *offset)
                .unwrap_or_else(|| panic!("the latest {key} at {offset} is gone"));
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(r.value.as_deref(), Some(value.as_bytes()));
        }
        // The consumer offsets topic is compacted too; commits survive it.
        client
            .admin()
            .alter_configs("__consumer_offsets", &[("segment.bytes", Some("4096"))])
            .await
            .expect("alter the offsets topic");
        for i in 0..400 {
            client
                .admin()
                .set_group_offsets("squash", &[(("table".to_string(), 0), i)])
                .await
                .expect("commit");
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
    })
    .await;
    drop(client);
    b.broker.restart();
    let client = connect(&addr).await;
    bounded(30, async {
        let got = client.admin().group_offsets("squash").await.expect("offsets");
        assert_eq!(got, vec![(("table".to_string(), 0), 399)]);
    })
    .await;
}
