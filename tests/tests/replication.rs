//! Replication across real broker processes on 127.0.0.1-3, each its own
//! address: topics of replication factor 3 lose leaders to SIGKILL and
//! SIGSTOP, followers to SIGKILL and to a deleted partition directory, and
//! nothing acknowledged with acks=all is lost, reordered or seen and then
//! taken back. Each test prints what it checked.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use borges_net::batch::BatchIter;
use borges_net::protocol::{ErrorCode, FetchPartition, FetchRequest, FetchTopic, Request, Response};
use borges_net::types::TopicId;
use borges_system_tests::cluster::*;
use borges_system_tests::{batch, Broker, RawConn};

/// The settings every broker of these tests starts with, beyond its
/// cluster arguments: a lagging follower leaves the ISR within 3 s.
const REPLICATION_ARGS: &[&str] = &["--replica-lag-time-max-ms=3000"];

fn launch_replicating(nodes: &[Node], me: &Node) -> borges_system_tests::Launch {
    let mut a = args(nodes, me);
    a.extend(REPLICATION_ARGS.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    Broker::launch(me.client, &me.dir, 1, &a)
}

fn start_replicating(nodes: &[Node]) -> Vec<Broker> {
    let launches: Vec<_> = nodes.iter().map(|n| launch_replicating(nodes, n)).collect();
    launches
        .into_iter()
        .map(|l| l.wait().expect("a cluster broker starts once a quorum is up"))
        .collect()
}

/// Restarts a stopped broker with the same arguments.
fn restart(nodes: &[Node], i: usize, brokers: &mut [Broker]) {
    brokers[i] = launch_replicating(nodes, &nodes[i])
        .wait()
        .expect("the broker starts again");
}

/// (leader, leader epoch, ISR) of each partition of a topic.
type PartitionStates = Vec<(i32, i32, Vec<i32>)>;

/// Three replicating brokers, all alive, with `topic` created (`rf`
/// replicas, `configs`) and every replica in sync: the nodes, the brokers,
/// the topic's id and its partitions' (leader, epoch, ISR).
fn cluster_with(
    root: &Path,
    topic: &str,
    partitions: u32,
    rf: u16,
    configs: &[(&str, &str)],
) -> (Vec<Node>, Vec<Broker>, TopicId, PartitionStates) {
    let nodes = nodes(root, 3);
    let brokers = start_replicating(&nodes);
    until_all_alive(nodes[0].client, 3);
    let (code, id, message) = create_replicated(nodes[0].client, topic, partitions, rf, configs);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    let state = until_in_sync(&nodes, &[0, 1, 2], topic, rf as usize);
    (nodes, brokers, id, state)
}

/// Every node's address, as a client's bootstrap list.
fn bootstrap_of(nodes: &[Node]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| n.client.to_string()).collect();
    v.join(",")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// (leader, leader epoch, ISR) of every partition of `topic`, as `addr` sees it.
fn partitions(addr: std::net::SocketAddr, topic: &str) -> Option<PartitionStates> {
    let m = metadata(addr, topic)?;
    let t = m.topics.first()?;
    if t.error != ErrorCode::None {
        return None;
    }
    let mut ps: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            let mut isr = p.isr.clone();
            isr.sort();
            (p.partition, (p.leader, p.leader_epoch, isr))
        })
        .collect();
    ps.sort_by_key(|(p, _)| *p);
    Some(ps.into_iter().map(|(_, s)| s).collect())
}

/// Waits until every partition of `topic` has a leader and all `n`
/// replicas in sync, as every node in `ask` sees it.
fn until_in_sync(nodes: &[Node], ask: &[usize], topic: &str, n: usize) -> PartitionStates {
    until(Duration::from_secs(60), "every replica in sync", || {
        let mut seen = None;
        for &i in ask {
            let ps = partitions(nodes[i].client, topic)?;
            if !ps.iter().all(|(l, _, isr)| *l >= 0 && isr.len() == n) {
                return None;
            }
            if seen.as_ref().is_some_and(|s| *s != ps) {
                return None;
            }
            seen = Some(ps);
        }
        seen
    })
    .0
}

/// The batches stored in one replica's partition directory, in offset
/// order: (base offset, last offset, bytes). A segment's tail that does
/// not parse (preallocated zeros after a SIGKILL) ends that segment.
fn stored_batches(dir: &Path) -> Vec<(i64, i64, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    let mut out: Vec<(i64, i64, Vec<u8>)> = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for item in BatchIter::new(&bytes) {
            let Ok((h, range)) = item else { break };
            if out.last().is_some_and(|(_, last, _)| h.base_offset <= *last) {
                break;
            }
            out.push((h.base_offset, h.last_offset(), bytes[range].to_vec()));
        }
    }
    out
}

/// Checks that the replicas of `topic:partition` hold the same batches
/// below `upto` (every record acknowledged lies below it); returns how
/// many batches were compared.
fn replicas_agree(nodes: &[Node], topic: &str, partition: u32, upto: i64) -> usize {
    let logs: Vec<Vec<(i64, i64, Vec<u8>)>> = nodes
        .iter()
        .map(|n| {
            stored_batches(&n.dir.join(format!("{topic}-{partition}")))
                .into_iter()
                .filter(|(base, _, _)| *base < upto)
                .collect()
        })
        .collect();
    for (i, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            log.len(),
            logs[0].len(),
            "{topic}-{partition}: node {} holds {} batches below {upto}, node {} holds {}",
            nodes[i].id,
            log.len(),
            nodes[0].id,
            logs[0].len()
        );
        for (a, b) in logs[0].iter().zip(log) {
            assert!(
                a == b,
                "{topic}-{partition}: the batch at {} differs between node {} and node {}",
                a.0,
                nodes[0].id,
                nodes[i].id
            );
        }
    }
    logs[0].len()
}

/// One partition read from offset 0 through its leader: (offset, value).
fn read_partition(addr: std::net::SocketAddr, topic: TopicId, partition: u32) -> (Vec<(i64, String)>, i64) {
    let mut out = Vec::new();
    let mut next = 0i64;
    loop {
        let resp = call(
            addr,
            Request::Fetch(FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 8 << 20,
                topics: vec![FetchTopic {
                    topic_id: topic,
                    partitions: vec![FetchPartition {
                        partition,
                        fetch_offset: next,
                        partition_max_bytes: 8 << 20,
                    }],
                }],
            }),
        )
        .expect("a fetch answer");
        let Response::Fetch(f) = resp else {
            panic!("wrong response")
        };
        let p = &f.topics[0].partitions[0];
        assert_eq!(p.error, ErrorCode::None, "fetch of {topic}:{partition} at {next}");
        let before = next;
        for (h, range) in BatchIter::new(&p.records).flatten() {
            let records =
                borges_net::batch::decode_records(&p.records[range]).expect("stored batches decode");
            for (i, r) in records.into_iter().enumerate() {
                let offset = h.base_offset + i as i64;
                if offset >= next {
                    out.push((
                        offset,
                        String::from_utf8(r.value.expect("a value").to_vec()).expect("utf-8"),
                    ));
                }
            }
            next = h.last_offset() + 1;
        }
        if next == before || next >= p.high_watermark {
            return (out, p.high_watermark);
        }
    }
}

/// The node that leads `partition` of `topic` now (as `addr` sees it).
fn leader(addr: std::net::SocketAddr, topic: &str, partition: usize) -> Option<i32> {
    let ps = partitions(addr, topic)?;
    let l = ps.get(partition)?.0;
    (l >= 0).then_some(l)
}

#[test]
fn acks_all_survives_the_sigkill_of_every_leader_in_turn() {
    use borges_client::{Acks, Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
    const PARTITIONS: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, mut brokers, topic_id, _) = cluster_with(tmp.path(), "rep", PARTITIONS as u32, 3, &[]);
    let bootstrap = bootstrap_of(&nodes);
    let rt = runtime();
    let done = Arc::new(AtomicBool::new(false));
    let producing = {
        let done = done.clone();
        let bootstrap = bootstrap.clone();
        rt.spawn(async move {
            let client = Client::connect(&bootstrap, ClientConfig::default())
                .await
                .expect("connect");
            let producer = Producer::new(
                client,
                ProducerConfig {
                    acks: Acks::All,
                    linger: Duration::from_millis(2),
                    ..ProducerConfig::default()
                },
            )
            .expect("producer");
            let mut pending = Vec::new();
            let mut i: u64 = 0;
            while !done.load(Ordering::Relaxed) {
                let p = (i % PARTITIONS as u64) as u32;
                let rec = ProducerRecord::new("rep").partition(p).value(format!("{i}"));
                pending.push((i, p, producer.send(rec).await.expect("enqueue")));
                i += 1;
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut acked: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            let mut failed = 0u64;
            for (i, p, f) in pending {
                match tokio::time::timeout(Duration::from_secs(150), f).await {
                    Ok(Ok(_)) => acked.entry(p).or_default().push(i),
                    Ok(Err(e)) => {
                        failed += 1;
                        if failed < 5 {
                            eprintln!("record {i} failed: {e}");
                        }
                    }
                    Err(_) => panic!("record {i} neither delivered nor failed within 150 s"),
                }
            }
            producer.close().await;
            (i, acked, failed)
        })
    };
    // Every partition's leader in turn: SIGKILLed while the producer sends,
    // restarted, and back in every ISR before the next.
    let mut failovers = Vec::new();
    for p in 0..PARTITIONS {
        std::thread::sleep(Duration::from_millis(700));
        let ask = (0..3).find(|&i| brokers[i].is_running()).unwrap();
        let l = leader(nodes[ask].client, "rep", p).expect("a leader") as usize;
        brokers[l].kill();
        let killed = Instant::now();
        let other = (l + 1) % 3;
        let (_, took) = until(Duration::from_secs(30), "a new leader", || {
            leader(nodes[other].client, "rep", p).filter(|&n| n != l as i32)
        });
        failovers.push(took);
        std::thread::sleep(Duration::from_millis(500));
        restart(&nodes, l, &mut brokers);
        until_in_sync(&nodes, &[0, 1, 2], "rep", 3);
        eprintln!(
            "partition {p}: leader {l} killed; a new leader in {took:?}; back in sync after {:?}",
            killed.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Relaxed);
    let (sent, acked, failed) = rt.block_on(producing).expect("the producer task");
    // Read every partition back through its leader.
    let mut lost = 0usize;
    let mut duplicated = 0usize;
    let mut read_total = 0usize;
    let mut hws = HashMap::new();
    for p in 0..PARTITIONS as u32 {
        let l = leader(nodes[0].client, "rep", p as usize).expect("a leader") as usize;
        let (records, hw) = read_partition(nodes[l].client, topic_id, p);
        hws.insert(p, hw);
        read_total += records.len();
        for (k, (offset, _)) in records.iter().enumerate() {
            assert_eq!(*offset, k as i64, "partition {p}: offsets are dense");
        }
        let mut first: HashMap<u64, i64> = HashMap::new();
        for (offset, v) in &records {
            let v: u64 = v.parse().expect("a number");
            if first.insert(v, *offset).is_some() {
                duplicated += 1;
            }
        }
        let mut last_offset = -1i64;
        for i in acked.get(&p).into_iter().flatten() {
            match first.get(i) {
                None => lost += 1,
                Some(&o) => {
                    assert!(
                        o > last_offset,
                        "partition {p}: record {i} is stored before one acknowledged earlier"
                    );
                    last_offset = o;
                }
            }
        }
    }
    let acked_total: usize = acked.values().map(Vec::len).sum();
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
    let mut compared = 0;
    for p in 0..PARTITIONS as u32 {
        compared += replicas_agree(&nodes, "rep", p, hws[&p]);
    }
    println!(
        "{sent} sent with acks=all through {PARTITIONS} leader SIGKILLs (new leaders in {failovers:?}): acknowledged {acked_total}, failed {failed}, read {read_total}, lost {lost}, duplicated {duplicated}; {compared} batches identical on all 3 replicas below the high watermark"
    );
    assert!(acked_total > 0);
    assert_eq!(lost, 0, "an acknowledged record was lost");
}

/// A raw produce of one record to `addr`; the error it got.
fn produce_one(addr: std::net::SocketAddr, topic: TopicId, value: &str, acks: i8) -> (ErrorCode, i64) {
    let mut c = RawConn::connect(addr);
    let r = c.produce_with_acks(topic, 0, batch(&[value]), acks);
    (r.error, r.base_offset)
}

/// As a client would: retried on a retriable error (a new leader whose ISR
/// has not grown back yet) for at most 20 s; the last answer.
fn produce_retrying(addr: std::net::SocketAddr, topic: TopicId, value: &str) -> ErrorCode {
    let began = Instant::now();
    loop {
        let (code, _) = produce_one(addr, topic, value, -1);
        if code == ErrorCode::None || !code.is_retriable() || began.elapsed() > Duration::from_secs(20) {
            return code;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_paused_leader_acknowledges_nothing_after_it_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, mut brokers, topic, before) = cluster_with(tmp.path(), "paused", 1, 3, &[]);
    let old = before[0].0 as usize;
    for i in 0..10 {
        assert_eq!(
            produce_one(nodes[old].client, topic, &format!("before-{i}"), -1).0,
            ErrorCode::None
        );
    }
    // The leader stops (a paused process keeps its sockets and beliefs)
    // for longer than its session; the others elect a new leader.
    let pid = brokers[old].pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let other = (old + 1) % 3;
    let (new, took) = until(Duration::from_secs(30), "a new leader", || {
        leader(nodes[other].client, "paused", 0).filter(|&n| n != old as i32)
    });
    let new = new as usize;
    for i in 0..10 {
        assert_eq!(
            produce_retrying(nodes[new].client, topic, &format!("after-{i}")),
            ErrorCode::None
        );
    }
    // It resumes believing it leads: an acks=all write sent to it at once
    // must not be acknowledged.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let mut c = RawConn::connect(nodes[old].client);
    let stale = c.produce_with_acks(topic, 0, batch(&["stale"]), -1);
    assert_ne!(
        stale.error,
        ErrorCode::None,
        "the replaced leader acknowledged an acks=all write at offset {}",
        stale.base_offset
    );
    // It rejoins as a follower and cuts whatever it appended alone.
    until_in_sync(&nodes, &[0, 1, 2], "paused", 3);
    let (records, hw) = read_partition(nodes[new].client, topic, 0);
    let values: Vec<&str> = records.iter().map(|(_, v)| v.as_str()).collect();
    assert!(
        !values.contains(&"stale"),
        "a write the old leader took alone became visible"
    );
    let befores = values.iter().filter(|v| v.starts_with("before-")).count();
    let afters = values.iter().filter(|v| v.starts_with("after-")).count();
    assert_eq!((befores, afters), (10, 10), "{values:?}");
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
    let compared = replicas_agree(&nodes, "paused", 0, hw);
    println!(
        "leader {old} paused past its session: node {new} led after {took:?}; the paused leader answered {:?} to acks=all; read 10 + 10 acknowledged, lost 0, the stale write visible: no; {compared} batches identical on all 3 replicas",
        stale.error
    );
}

#[test]
fn an_isr_below_min_insync_refuses_acks_all_and_hides_acks_1_until_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, mut brokers, topic, state) =
        cluster_with(tmp.path(), "strict", 1, 3, &[("min.insync.replicas", "3")]);
    let l = state[0].0 as usize;
    for i in 0..5 {
        assert_eq!(
            produce_one(nodes[l].client, topic, &format!("full-{i}"), -1).0,
            ErrorCode::None
        );
    }
    // A follower dies; its data directory for the partition goes with it.
    let f = (l + 1) % 3;
    brokers[f].kill();
    std::fs::remove_dir_all(nodes[f].dir.join("strict-0")).expect("the follower's partition directory");
    until(Duration::from_secs(30), "the ISR shrinks to 2", || {
        partitions(nodes[l].client, "strict").filter(|ps| ps[0].2.len() == 2)
    });
    let (refused, _) = produce_one(nodes[l].client, topic, "refused", -1);
    assert_eq!(refused, ErrorCode::NotEnoughReplicas);
    let (one, offset) = produce_one(nodes[l].client, topic, "acks-1", 1);
    assert_eq!(one, ErrorCode::None);
    assert_eq!(offset, 5);
    let (records, hw) = read_partition(nodes[l].client, topic, 0);
    assert_eq!(
        (records.len(), hw),
        (5, 5),
        "an acks=1 record was visible with the ISR below min.insync.replicas"
    );
    // The follower comes back empty, copies the log, and the ISR is whole.
    restart(&nodes, f, &mut brokers);
    until_in_sync(&nodes, &[0, 1, 2], "strict", 3);
    let (hw, _) = until(
        Duration::from_secs(20),
        "the acks=1 record becomes visible",
        || {
            let (records, hw) = read_partition(nodes[l].client, topic, 0);
            (records.len() == 6).then_some(hw)
        },
    );
    assert_eq!(hw, 6);
    assert_eq!(
        produce_one(nodes[l].client, topic, "whole", -1).0,
        ErrorCode::None
    );
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
    let compared = replicas_agree(&nodes, "strict", 0, 7);
    println!(
        "min.insync.replicas 3 with the ISR at 2: acks=all refused ({refused:?}), acks=1 taken at offset {offset} and hidden (high watermark 5); the follower re-replicated from an empty directory; {compared} batches identical on all 3 replicas"
    );
}

/// A replica fetch of `topic:0` from `addr` as node `replica`.
fn replica_fetch(
    addr: std::net::SocketAddr,
    replica: i32,
    broker_epoch: i64,
    topic: TopicId,
    leader_epoch: i32,
    fetch_offset: i64,
) -> Result<(ErrorCode, i64, usize), ErrorCode> {
    use borges_net::protocol::{ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchTopic};
    let mut c = RawConn::connect(addr);
    let resp = c.call(Request::ReplicaFetch(ReplicaFetchRequest {
        replica,
        broker_epoch: borges_net::types::BrokerEpoch(broker_epoch),
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        topics: vec![ReplicaFetchTopic {
            topic_id: topic,
            partitions: vec![ReplicaFetchPartition {
                partition: 0,
                leader_epoch,
                fetch_offset,
                partition_max_bytes: 1 << 20,
            }],
        }],
    }));
    match resp {
        Err((code, _)) => Err(code),
        Ok(Response::ReplicaFetch(f)) => {
            let p = &f.topics[0].partitions[0];
            Ok((p.error, p.high_watermark, p.records.len()))
        }
        Ok(other) => panic!("answered {:?}", other.api_key()),
    }
}

#[test]
fn bad_replica_fetches_get_typed_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Three brokers, a topic of replication factor 2: one broker is not
    // its replica.
    let (nodes, mut brokers, topic, state) = cluster_with(tmp.path(), "guarded", 1, 2, &[]);
    let (l, epoch) = (state[0].0, state[0].1);
    let leader = nodes[l as usize].client;
    for i in 0..5 {
        assert_eq!(
            produce_one(leader, topic, &format!("kept-{i}"), -1).0,
            ErrorCode::None
        );
    }
    let m = metadata(leader, "guarded").unwrap();
    let replicas = &m.topics[0].partitions[0].replicas;
    let follower = *replicas.iter().find(|&&n| n != l).unwrap();
    let outsider = (0..3).find(|n| !replicas.contains(n)).unwrap();
    let d = describe(leader).unwrap();
    let epoch_of = |n: i32| d.brokers.iter().find(|b| b.node_id == n).unwrap().epoch;
    let mut seen = Vec::new();
    // Not a replica.
    let r = replica_fetch(leader, outsider, epoch_of(outsider), topic, epoch, 0);
    assert_eq!(r.map(|r| r.0), Ok(ErrorCode::ReplicaNotAvailable));
    seen.push("non-replica: ReplicaNotAvailable");
    // A stale and a future leader epoch.
    let r = replica_fetch(leader, follower, epoch_of(follower), topic, epoch - 1, 0);
    if epoch > 0 {
        assert_eq!(r.map(|r| r.0), Ok(ErrorCode::FencedLeaderEpoch));
    }
    let r = replica_fetch(leader, follower, epoch_of(follower), topic, epoch + 1, 0);
    assert_eq!(r.map(|r| r.0), Ok(ErrorCode::UnknownLeaderEpoch));
    seen.push("newer epoch: UnknownLeaderEpoch");
    // Offsets past the log end and negative ones.
    for bad in [1_000_000, -5] {
        let r = replica_fetch(leader, follower, epoch_of(follower), topic, epoch, bad);
        assert_eq!(r.map(|r| r.0), Ok(ErrorCode::OffsetOutOfRange), "offset {bad}");
    }
    seen.push("offsets out of range: OffsetOutOfRange");
    // A broker epoch that is not the registration's; a node nobody registered.
    let r = replica_fetch(leader, follower, epoch_of(follower) + 7, topic, epoch, 0);
    assert_eq!(r.map(|r| r.0), Err(ErrorCode::StaleBrokerEpoch));
    let r = replica_fetch(leader, 77, 1, topic, epoch, 0);
    assert_eq!(r.map(|r| r.0), Err(ErrorCode::BrokerIdNotRegistered));
    seen.push("stale broker epoch, unknown node: refused whole");
    // A fetch to a broker that does not lead the partition.
    let r = replica_fetch(
        nodes[follower as usize].client,
        outsider,
        epoch_of(outsider),
        topic,
        epoch,
        0,
    );
    assert_eq!(r.map(|r| r.0), Ok(ErrorCode::NotLeaderOrFollower));
    // Nothing changed: the records are there, the ISR is whole, acks=all works.
    let (records, hw) = read_partition(leader, topic, 0);
    assert_eq!((records.len(), hw), (5, 5));
    assert_eq!(produce_one(leader, topic, "after", -1).0, ErrorCode::None);
    until_in_sync(&nodes, &[0, 1, 2], "guarded", 2);
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
    println!(
        "bad replica fetches refused, each with its code ({}); 5 records and the ISR untouched",
        seen.join("; ")
    );
}

/// The node that coordinates `group`, as `addr` answers FindCoordinator.
fn coordinator_of(addr: std::net::SocketAddr, group: &str) -> Option<i32> {
    match call(
        addr,
        Request::FindCoordinator(borges_net::protocol::FindCoordinatorRequest {
            group_id: group.into(),
        }),
    )? {
        Response::FindCoordinator(r) if r.error == ErrorCode::None => Some(r.node_id),
        _ => None,
    }
}

#[test]
fn committed_offsets_survive_the_sigkill_of_their_coordinator() {
    use borges_client::{Client, ClientConfig};
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, mut brokers, _, _) = cluster_with(tmp.path(), "orders", 2, 3, &[]);
    // The offsets topic of a cluster has three replicas.
    let offsets = until_in_sync(&nodes, &[0, 1, 2], "__consumer_offsets", 3);
    let bootstrap = bootstrap_of(&nodes);
    let rt = runtime();
    let admin = rt.block_on(async {
        Client::connect(&bootstrap, ClientConfig::default())
            .await
            .expect("connect")
            .admin()
    });
    let tp = |p: u32| ("orders".to_string(), p);
    rt.block_on(admin.set_group_offsets("billing", &[(tp(0), 42), (tp(1), 7)]))
        .expect("commit through the coordinator");
    let (old, _) = until(Duration::from_secs(10), "a coordinator", || {
        coordinator_of(nodes[0].client, "billing")
    });
    brokers[old as usize].kill();
    let other = (old as usize + 1) % 3;
    let (new, took) = until(Duration::from_secs(30), "another coordinator", || {
        coordinator_of(nodes[other].client, "billing").filter(|&n| n != old)
    });
    // The new coordinator has every committed offset, and takes new commits
    // (acks=all on the two replicas left).
    let got = rt.block_on(async {
        let began = Instant::now();
        loop {
            match admin.group_offsets("billing").await {
                Ok(v) if !v.is_empty() => break v,
                r if began.elapsed() > Duration::from_secs(30) => {
                    panic!("no offsets from the new coordinator: {r:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    assert_eq!(got, vec![(tp(0), 42), (tp(1), 7)]);
    rt.block_on(admin.set_group_offsets("billing", &[(tp(0), 43)]))
        .expect("a commit to the new coordinator");
    restart(&nodes, old as usize, &mut brokers);
    until_in_sync(&nodes, &[0, 1, 2], "__consumer_offsets", 3);
    let got = rt.block_on(admin.group_offsets("billing")).expect("offsets");
    assert_eq!(got, vec![(tp(0), 43), (tp(1), 7)]);
    drop(admin);
    drop(rt);
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
    println!(
        "__consumer_offsets has {} partitions of 3 replicas; coordinator {old} SIGKILLed, node {new} coordinates after {took:?} with both committed offsets (42, 7), takes a commit (43), and the restarted broker rejoins every ISR",
        offsets.len()
    );
}
