//! A cluster of real broker processes on 127.0.0.1-3 (each its own
//! address), every one a voter of the metadata quorum: they elect a
//! controller, register, spread a topic's partitions over each other,
//! answer for the partitions they hold and send clients to the broker that
//! holds the others; the controller is SIGKILLed and another takes over,
//! fences the dead broker, and takes topic changes; the dead broker comes
//! back with its data. Each test prints what it checked.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use borges_net::protocol::{
    BrokerState, DescribeClusterResponse, ErrorCode, RaftMessage, RaftMessagesRequest, Request, Response,
};
use borges_system_tests::cluster::*;
use borges_system_tests::{batch, Broker, RawConn};

#[test]
fn three_brokers_elect_a_controller_spread_partitions_and_survive_losing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = nodes(tmp.path(), 3);
    let began = Instant::now();
    let mut brokers = start_all(&nodes);
    println!("3 brokers listening after {:?}", began.elapsed());

    // One cluster: every broker names the same controller and sees all
    // three alive.
    let (controller, took) = until(Duration::from_secs(20), "three alive brokers", || {
        let ds: Vec<DescribeClusterResponse> = nodes.iter().filter_map(|n| describe(n.client)).collect();
        let agreed = ds.len() == 3
            && ds
                .iter()
                .all(|d| d.controller_id >= 0 && d.controller_id == ds[0].controller_id)
            && ds.iter().all(|d| {
                states(d)
                    == vec![
                        (0, BrokerState::Alive),
                        (1, BrokerState::Alive),
                        (2, BrokerState::Alive),
                    ]
            });
        agreed.then(|| ds[0].controller_id)
    });
    assert_eq!(describe(nodes[0].client).unwrap().voters, vec![0, 1, 2]);
    println!("controller {controller}; all three brokers alive and agreed after {took:?}");

    // A topic created through a broker that is not the controller (it is
    // forwarded), with partitions on every broker.
    let via = nodes.iter().find(|n| n.id != controller).unwrap();
    let (code, topic, message) = create(via.client, "spread", 6);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    let m = metadata(via.client, "spread").unwrap();
    let leaders: Vec<i32> = m.topics[0].partitions.iter().map(|p| p.leader).collect();
    let mut distinct = leaders.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct,
        vec![0, 1, 2],
        "six partitions spread over three brokers: {leaders:?}"
    );
    // The other brokers learn of it from the metadata log (Kafka's
    // brokers likewise answer UNKNOWN_TOPIC_OR_PARTITION until they do).
    let (_, spread) = until(Duration::from_secs(10), "every broker knows the topic", || {
        nodes
            .iter()
            .all(|n| metadata(n.client, "spread").is_some_and(|m| m.topics[0].partitions.len() == 6))
            .then_some(())
    });
    println!(
        "topic spread created via node {}: leaders {leaders:?}; every broker knew it {spread:?} later",
        via.id
    );

    // Each partition takes records at its leader; any other broker sends
    // the client there.
    let mut acked = 0;
    for (p, leader) in leaders.iter().enumerate() {
        let p = p as u32;
        let at = nodes[*leader as usize].client;
        let values: Vec<String> = (0..10).map(|i| format!("p{p}-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let r = RawConn::connect(at).produce(topic, p, batch(&refs));
        assert_eq!(r.error, ErrorCode::None, "produce to partition {p} at its leader");
        acked += 10;
        let other = nodes[(*leader as usize + 1) % 3].client;
        let r = RawConn::connect(other).produce(topic, p, batch(&["misrouted"]));
        assert_eq!(
            r.error,
            ErrorCode::NotLeaderOrFollower,
            "partition {p} at a broker that does not hold it"
        );
    }
    println!("{acked} records acknowledged by their leaders; 6 misrouted produces refused with NOT_LEADER_OR_FOLLOWER");

    // SIGKILL the controller: another voter takes over, fences it after
    // its session times out (3 s), and takes topic changes.
    let dead = controller as usize;
    let killed = Instant::now();
    brokers[dead].kill();
    let live: Vec<&Node> = nodes.iter().filter(|n| n.id != controller).collect();
    let (new_controller, failover) = until(Duration::from_secs(15), "a new controller", || {
        let d = describe(live[0].client)?;
        (d.controller_id >= 0 && d.controller_id != controller).then_some(d.controller_id)
    });
    let (_, fenced) = until(Duration::from_secs(20), "the dead broker fenced", || {
        let d = describe(live[1].client)?;
        let s = states(&d);
        s.iter()
            .all(|(id, st)| {
                if *id == controller {
                    *st == BrokerState::Fenced
                } else {
                    *st == BrokerState::Alive
                }
            })
            .then_some(())
    });
    let fenced = fenced + failover;
    println!(
        "controller {controller} SIGKILLed: controller {new_controller} active after {failover:?}, broker {controller} fenced after {:?} (session timeout 3 s)",
        killed.elapsed().min(fenced)
    );
    // Every broker follows: partitions whose only replica died are
    // offline, the others keep their leaders.
    let want: Vec<i32> = leaders
        .iter()
        .map(|l| if *l == controller { -1 } else { *l })
        .collect();
    until(
        Duration::from_secs(5),
        "the survivors' metadata shows the fencing",
        || {
            live.iter()
                .all(|n| {
                    metadata(n.client, "spread").is_some_and(|m| {
                        m.topics[0]
                            .partitions
                            .iter()
                            .map(|p| p.leader)
                            .collect::<Vec<_>>()
                            == want
                    })
                })
                .then_some(())
        },
    );
    println!("leaders now {want:?}: the dead broker's partitions are offline, the others keep their leaders");
    // Every partition the dead broker did not hold keeps serving writes.
    for (p, leader) in want.iter().enumerate() {
        if *leader < 0 {
            continue;
        }
        let values: Vec<String> = (10..15).map(|i| format!("p{p}-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let r = RawConn::connect(nodes[*leader as usize].client).produce(topic, p as u32, batch(&refs));
        assert_eq!(
            r.error,
            ErrorCode::None,
            "partition {p} on a live broker takes writes"
        );
        acked += 5;
    }
    println!("the partitions on live brokers took 5 more records each while broker {controller} was down");
    let (code, _, message) = create(live[1].client, "after", 2);
    assert_eq!(
        code,
        ErrorCode::None,
        "two of three voters take a topic change: {message:?}"
    );
    println!("two of three voters committed a new topic");

    // The dead broker comes back with its data and its partitions lead
    // again.
    brokers[dead].restart();
    until(Duration::from_secs(20), "three alive again", || {
        let d = describe(nodes[dead].client)?;
        (states(&d)
            == vec![
                (0, BrokerState::Alive),
                (1, BrokerState::Alive),
                (2, BrokerState::Alive),
            ])
        .then_some(())
    });
    let (_, back) = until(Duration::from_secs(20), "every partition led again", || {
        let m = metadata(nodes[0].client, "spread")?;
        m.topics[0].partitions.iter().all(|p| p.leader >= 0).then_some(())
    });
    let mut read = 0;
    let mut lost = 0;
    for (p, _) in leaders.iter().enumerate() {
        let m = metadata(nodes[0].client, "spread").unwrap();
        let leader = m.topics[0].partitions[p].leader as usize;
        let values = read_all(nodes[leader].client, topic, p as u32).expect("a readable partition");
        let written = if leaders[p] == controller { 10 } else { 15 };
        let want: Vec<String> = (0..written).map(|i| format!("p{p}-{i}")).collect();
        read += values.len();
        lost += want.iter().filter(|w| !values.contains(w)).count();
        assert_eq!(values, want, "partition {p} holds exactly what was acknowledged");
    }
    println!(
        "broker {controller} restarted, every partition led again after {back:?}: acknowledged {acked}, read {read}, lost {lost}, duplicated {}",
        read - (acked - lost)
    );
    // SIGTERM: a controlled shutdown, then fenced at once (no session
    // timeout to wait out); the last broker, with no quorum left, gives up
    // on the controlled shutdown and stops anyway.
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by_key(|i| *i == dead);
    for (k, &i) in order.iter().enumerate() {
        let t = Instant::now();
        assert!(brokers[i].terminate().success(), "a cluster broker stops cleanly");
        let took = t.elapsed();
        if k == 0 {
            let watcher = nodes[order[1]].client;
            let (_, seen) = until(
                Duration::from_secs(2),
                "the stopped broker fenced at once",
                || {
                    let d = describe(watcher)?;
                    states(&d)
                        .iter()
                        .any(|(id, st)| *id == i as i32 && *st == BrokerState::Fenced)
                        .then_some(())
                },
            );
            println!("broker {i} stopped by SIGTERM in {took:?}, fenced {seen:?} later");
        } else {
            println!("broker {i} stopped by SIGTERM in {took:?}");
        }
    }
}

#[test]
fn malformed_peer_messages_are_refused_and_a_duplicate_node_cannot_join() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = nodes(tmp.path(), 3);
    let mut brokers = start_all(&nodes);
    // Raft messages from a node that is not a voter, and garbage from one
    // that is, are refused; the quorum goes on.
    let mut c = RawConn::connect(nodes[0].client);
    let r = c.call(Request::RaftMessages(RaftMessagesRequest {
        from: 7,
        messages: vec![RaftMessage {
            bytes: bytes::Bytes::from_static(b"\x00\x01garbage"),
        }],
    }));
    assert!(
        matches!(&r, Err((ErrorCode::InvalidRequest, m)) if m.contains("not a peer")),
        "{r:?}"
    );
    let r = c.call(Request::RaftMessages(RaftMessagesRequest {
        from: 1,
        messages: vec![
            RaftMessage {
                bytes: bytes::Bytes::from_static(b"\xff\xffnot a raft message"),
            },
            RaftMessage::default(),
        ],
    }));
    let Ok(Response::RaftMessages(r)) = r else {
        panic!("an answer to raft messages: {r:?}")
    };
    assert_eq!(r.refused, 2, "both malformed messages are refused");
    let (code, _, message) = create(nodes[2].client, "still-works", 1);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    println!("raft messages from a non-voter refused; 2 malformed ones refused one by one; the quorum still commits");

    // A second process with node 1's id cannot take node 1's place: on
    // another address its own settings refuse it, on node 1's address the
    // port check does.
    for (what, client) in [
        (
            "another address",
            SocketAddr::from(([127, 0, 0, 9], nodes[0].client.port())),
        ),
        ("node 1's address", nodes[1].client),
    ] {
        let dup = Node {
            id: 1,
            client,
            dir: tmp.path().join(format!("duplicate-{}", client.ip())),
        };
        let a = args(&nodes, &dup);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let status = Broker::launch(dup.client, &dup.dir, 1, &a).exit_status(Duration::from_secs(40));
        assert!(
            matches!(status, Some(s) if !s.success()),
            "a duplicate node id on {what} must not start: {status:?}"
        );
        println!("a second node 1 on {what} exited with {status:?}");
    }
    let (_, took) = until(Duration::from_secs(20), "the cluster as it was", || {
        let d = describe(nodes[0].client)?;
        (states(&d)
            == vec![
                (0, BrokerState::Alive),
                (1, BrokerState::Alive),
                (2, BrokerState::Alive),
            ])
        .then_some(())
    });
    let (code, _, message) = create(nodes[1].client, "after-duplicates", 1);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    println!("the cluster is unchanged ({took:?}) and takes topic changes through node 1");
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
}

#[test]
fn five_voters_survive_losing_two_and_refuse_changes_without_a_majority() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = nodes(tmp.path(), 5);
    let mut brokers = start_all(&nodes);
    let controller = until_all_alive(nodes[0].client, 5);
    println!("5 voters, controller {controller}");

    // Lose the controller and one more: three of five are a majority.
    let second = (controller as usize + 1) % 5;
    let killed = Instant::now();
    brokers[controller as usize].kill();
    brokers[second].kill();
    let live: Vec<usize> = (0..5)
        .filter(|i| *i != controller as usize && *i != second)
        .collect();
    let (new_controller, failover) = until(Duration::from_secs(15), "a controller among three", || {
        let d = describe(nodes[live[0]].client)?;
        (d.controller_id >= 0 && live.contains(&(d.controller_id as usize))).then_some(d.controller_id)
    });
    let (code, _, message) = create(nodes[live[1]].client, "three-of-five", 3);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    let after = killed.elapsed();
    println!(
        "brokers {controller} and {second} SIGKILLed: controller {new_controller} after {failover:?}; first topic created {after:?} after the kill"
    );

    // Lose a third: two of five cannot commit; the answer is a typed
    // error, in bounded time.
    let third = live[2];
    brokers[third].kill();
    let asked = Instant::now();
    let (code, _, message) = create(nodes[live[0]].client, "two-of-five", 1);
    assert!(
        matches!(code, ErrorCode::NotController | ErrorCode::RequestTimedOut),
        "no majority: {code:?} {message:?}"
    );
    println!(
        "two of five left: CreateTopics answered {code:?} after {:?}",
        asked.elapsed()
    );

    // One back: a majority again, and changes commit.
    brokers[third].restart();
    let (_, again) = until(Duration::from_secs(20), "a majority again", || {
        let (code, _, _) = create(nodes[live[1]].client, "three-again", 1);
        (code == ErrorCode::None || code == ErrorCode::TopicAlreadyExists).then_some(())
    });
    println!("broker {third} restarted: topic changes commit again after {again:?}");
    for i in live {
        assert!(brokers[i].terminate().success());
    }
}

#[test]
fn brokers_that_are_not_voters_observe_the_metadata_and_host_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = nodes(tmp.path(), 5);
    let launches: Vec<_> = nodes
        .iter()
        .map(|n| {
            let a = args_voters(&nodes, 3, n);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            Broker::launch(n.client, &n.dir, 1, &a)
        })
        .collect();
    let mut brokers: Vec<Broker> = launches.into_iter().map(|l| l.wait().expect("starts")).collect();
    let all_alive = alive(5);
    let (controller, took) = until(Duration::from_secs(20), "five alive brokers", || {
        let d = describe(nodes[4].client)?;
        (d.controller_id >= 0 && states(&d) == all_alive && d.voters == vec![0, 1, 2])
            .then_some(d.controller_id)
    });
    assert!(controller < 3, "the controller is a voter");
    println!("3 voters and 2 observers alive after {took:?}; controller {controller}");

    // A topic created through an observer spreads over all five.
    let (code, topic, message) = create(nodes[3].client, "observed", 10);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    until(Duration::from_secs(10), "every broker knows the topic", || {
        nodes
            .iter()
            .all(|n| metadata(n.client, "observed").is_some_and(|m| m.topics[0].partitions.len() == 10))
            .then_some(())
    });
    let m = metadata(nodes[4].client, "observed").unwrap();
    let leaders: Vec<i32> = m.topics[0].partitions.iter().map(|p| p.leader).collect();
    let mut distinct = leaders.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, vec![0, 1, 2, 3, 4], "{leaders:?}");
    for (p, leader) in leaders.iter().enumerate() {
        let r = RawConn::connect(nodes[*leader as usize].client).produce(topic, p as u32, batch(&["x"]));
        assert_eq!(r.error, ErrorCode::None, "partition {p} at broker {leader}");
    }
    println!("topic created through observer 3: leaders {leaders:?}; one record acknowledged by each");

    // An observer that dies is fenced like any broker; the voters do not
    // notice otherwise.
    brokers[4].kill();
    until(Duration::from_secs(20), "the observer fenced", || {
        let d = describe(nodes[0].client)?;
        states(&d)
            .iter()
            .any(|(id, st)| *id == 4 && *st == BrokerState::Fenced)
            .then_some(())
    });
    let (code, _, message) = create(nodes[3].client, "after-observer", 1);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    brokers[4].restart();
    until(Duration::from_secs(20), "the observer back", || {
        let d = describe(nodes[4].client)?;
        (states(&d) == all_alive).then_some(())
    });
    let values = read_all(
        nodes[4].client,
        topic,
        leaders.iter().position(|l| *l == 4).unwrap() as u32,
    )
    .expect("the observer's partition reads");
    assert_eq!(values, vec!["x".to_string()]);
    println!("observer 4 SIGKILLed: fenced, topic changes go on; restarted, it serves its partition again");
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
}

fn leader_of(addr: SocketAddr, topic: &str) -> Option<i32> {
    let m = metadata(addr, topic)?;
    let t = m.topics.first()?;
    if t.error != ErrorCode::None {
        return None;
    }
    t.partitions.first().map(|p| p.leader).filter(|l| *l >= 0)
}

fn delete(addr: SocketAddr, topic: &str) -> ErrorCode {
    let r = call(
        addr,
        Request::DeleteTopics(borges_net::protocol::DeleteTopicsRequest {
            names: vec![topic.to_string()],
            timeout_ms: 10_000,
        }),
    );
    match r {
        Some(Response::DeleteTopics(d)) => d.topics[0].error,
        _ => ErrorCode::RequestTimedOut,
    }
}

#[test]
fn a_recreated_topic_does_not_inherit_a_deleted_topics_records() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = nodes(tmp.path(), 3);
    let mut brokers = start_all(&nodes);
    let all_alive = alive(3);
    let controller = until_all_alive(nodes[0].client, 3);
    let via = nodes[controller as usize].client;
    // A one-partition topic on a broker that is not the controller.
    let mut victim = None;
    for k in 0..30 {
        let name = format!("t{k}");
        let (code, id, message) = create(via, &name, 1);
        assert_eq!(code, ErrorCode::None, "{message:?}");
        let (leader, _) = until(Duration::from_secs(10), "a leader", || leader_of(via, &name));
        if leader != controller {
            victim = Some((name, id, leader));
            break;
        }
    }
    let (name, old_id, x) = victim.expect("a topic on another broker");
    let at = nodes[x as usize].client;
    until(Duration::from_secs(10), "the holder knows the topic", || {
        leader_of(at, &name).filter(|l| *l == x)
    });
    let r = RawConn::connect(at).produce(old_id, 0, batch(&["old-1", "old-2", "old-3"]));
    assert_eq!(r.error, ErrorCode::None);

    // Broker x goes down; the topic is deleted meanwhile; x comes back.
    brokers[x as usize].kill();
    until(Duration::from_secs(20), "the deletion", || {
        (delete(via, &name) == ErrorCode::None).then_some(())
    });
    brokers[x as usize].restart();
    until(Duration::from_secs(20), "three alive again", || {
        let d = describe(nodes[0].client)?;
        (states(&d) == all_alive).then_some(())
    });

    // A new topic of the same name, until it lands on x again.
    let mut new_id = None;
    for _ in 0..30 {
        let (code, id, message) = create(via, &name, 1);
        assert_eq!(code, ErrorCode::None, "{message:?}");
        let (leader, _) = until(Duration::from_secs(10), "a leader", || leader_of(via, &name));
        if leader == x {
            new_id = Some(id);
            break;
        }
        assert_eq!(delete(via, &name), ErrorCode::None);
    }
    let new_id = new_id.expect("the new topic placed on broker x");
    assert_ne!(new_id, old_id);
    let (values, _) = until(Duration::from_secs(10), "the new partition readable on x", || {
        read_all(at, new_id, 0).ok()
    });
    assert!(
        values.is_empty(),
        "a new topic holds the deleted topic's records: {values:?}"
    );
    println!(
        "{name} (3 records on broker {x}) deleted while broker {x} was down; recreated on broker {x}: it reads {} records",
        values.len()
    );
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
}

#[test]
fn a_producer_and_a_consumer_ride_through_losing_the_controller() {
    use borges_client::{
        Acks, AutoOffsetReset, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
        ProducerRecord,
    };
    use std::collections::{HashMap, HashSet};
    const RECORDS: u32 = 2000;
    let tmp = tempfile::tempdir().unwrap();
    let nodes = nodes(tmp.path(), 3);
    let mut brokers = start_all(&nodes);
    let controller = until_all_alive(nodes[0].client, 3);
    let (code, _, message) = create(nodes[0].client, "live", 6);
    assert_eq!(code, ErrorCode::None, "{message:?}");
    until(Duration::from_secs(10), "every broker knows the topic", || {
        nodes
            .iter()
            .all(|n| metadata(n.client, "live").is_some_and(|m| m.topics[0].partitions.len() == 6))
            .then_some(())
    });
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.client.to_string()).collect();
    let bootstrap = bootstrap.join(",");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dead = controller as usize;
    let (acked, failed, down_for) = rt.block_on(async {
        let client = Client::connect(&bootstrap, ClientConfig::default())
            .await
            .expect("connect");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::All,
                ..ProducerConfig::default()
            },
        )
        .expect("producer");
        let mut pending = Vec::new();
        let mut down_for = Duration::ZERO;
        let mut killed_at = None;
        for i in 0..RECORDS {
            if i == RECORDS / 3 {
                // The controller dies with a third sent.
                brokers[dead].kill();
                killed_at = Some(Instant::now());
            }
            if i == 2 * RECORDS / 3 {
                // It comes back with two thirds sent (its partitions were
                // offline meanwhile: replication factor 1).
                brokers[dead].restart();
                down_for = killed_at.expect("killed").elapsed();
            }
            let rec = ProducerRecord::new("live").partition(i % 6).value(i.to_string());
            pending.push((i, producer.send(rec).await.expect("enqueue")));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut acked = HashSet::new();
        let mut failed = 0;
        for (i, f) in pending {
            match tokio::time::timeout(Duration::from_secs(150), f).await {
                Ok(Ok(_)) => {
                    acked.insert(i);
                }
                Ok(Err(e)) => {
                    failed += 1;
                    eprintln!("record {i} failed: {e}");
                }
                Err(_) => panic!("record {i} neither delivered nor failed within 150 s"),
            }
        }
        (acked, failed, down_for)
    });
    let (read, duplicated) = rt.block_on(async {
        let client = Client::connect(&bootstrap, ClientConfig::default())
            .await
            .expect("connect");
        let mut consumer = Consumer::new(
            client,
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                fetch_max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer.assign((0..6).map(|p| ("live".to_string(), p)));
        let mut seen: HashMap<u32, u32> = HashMap::new();
        let mut idle = 0;
        while acked.iter().any(|i| !seen.contains_key(i)) && idle < 10 {
            let batch = consumer.poll(Duration::from_secs(1)).await.expect("poll");
            if batch.is_empty() {
                idle += 1;
            }
            for r in batch {
                let v: u32 = String::from_utf8(r.value.expect("a value").to_vec())
                    .expect("utf-8")
                    .parse()
                    .expect("a number");
                *seen.entry(v).or_default() += 1;
            }
        }
        let duplicated: u32 = seen.values().map(|n| n - 1).sum();
        (seen, duplicated)
    });
    let lost = acked.iter().filter(|i| !read.contains_key(i)).count();
    println!(
        "{RECORDS} sent through a controller SIGKILL (down {down_for:?}): acknowledged {}, failed {failed}, read {}, lost {lost}, duplicated {duplicated}",
        acked.len(),
        read.len()
    );
    assert_eq!(lost, 0, "an acknowledged record was lost");
    assert_eq!(
        failed, 0,
        "the producer gave up on records within its delivery timeout"
    );
    for b in &mut brokers {
        assert!(b.terminate().success());
    }
}
