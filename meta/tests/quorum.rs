//! The metadata quorum driven in-process: three or five nodes over a fake
//! network with a fake clock and disks that keep exactly what each node
//! was told is durable. Leader loss, a partitioned voter, restarts from
//! disk, catching up by snapshot, and malformed messages.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use borges_meta::controller::{ControllerConfig, ControllerError, Heartbeat, NewTopic, Registration};
use borges_meta::quorum::journal;
use borges_meta::quorum::log::{SnapshotWrite, Stored};
use borges_meta::quorum::wire::MAX_PAYLOAD;
use borges_meta::quorum::{MetadataNode, Outcome, QuorumConfig, StepError};
use borges_meta::record::{MetadataRecord, MAX_BATCH_RECORDS, MAX_STRING};
use borges_meta::seams::SplitMix64;
use borges_meta::{NodeId, TopicId};

struct Cluster {
    voters: Vec<u64>,
    nodes: BTreeMap<u64, MetadataNode>,
    disks: BTreeMap<u64, Stored>,
    /// The same writes as journal files: a restart replays the journal and
    /// must find exactly `disks`.
    journals: BTreeMap<u64, Vec<u8>>,
    queue: VecDeque<(u64, u64, Vec<u8>)>,
    /// Links that drop everything: (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// How many snapshot messages the network loses next.
    lose_snapshots: usize,
    /// The links snapshots were lost on: (from, to).
    lost_snapshots: Vec<(u64, u64)>,
    now: u64,
    snapshot_every: u64,
    /// Overrides the nodes' bound on uncommitted proposal bytes.
    uncommitted_bytes_max: Option<u64>,
    snapshots_installed: usize,
    rng: SplitMix64,
    names: u32,
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        Cluster::with_snapshots(n, 1000)
    }

    /// The seed of this run's election timeouts: `QUORUM_SEED` replays one.
    fn seed() -> u64 {
        std::env::var("QUORUM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
    }

    fn with_snapshots(n: u64, snapshot_every: u64) -> Cluster {
        let voters: Vec<u64> = (1..=n).collect();
        let mut c = Cluster {
            voters: voters.clone(),
            nodes: BTreeMap::new(),
            disks: voters.iter().map(|&v| (v, Stored::default())).collect(),
            journals: voters.iter().map(|&v| (v, Vec::new())).collect(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            lose_snapshots: 0,
            lost_snapshots: Vec::new(),
            now: 0,
            snapshot_every,
            uncommitted_bytes_max: None,
            snapshots_installed: 0,
            rng: SplitMix64::new(5),
            names: 0,
        };
        for v in voters {
            c.start(v);
        }
        c
    }

    fn start(&mut self, id: u64) {
        let mut q = QuorumConfig::new(id, self.voters.clone());
        q.snapshot_every = self.snapshot_every;
        if let Some(max) = self.uncommitted_bytes_max {
            q.uncommitted_bytes_max = max;
        }
        q.seed = Cluster::seed();
        let replayed = journal::replay(&self.journals[&id]).unwrap();
        assert_eq!(
            replayed.stored, self.disks[&id],
            "the journal replays to what was durable"
        );
        let node = MetadataNode::start(q, ControllerConfig::default(), &replayed.stored).unwrap();
        self.nodes.insert(id, node);
    }

    fn kill(&mut self, id: u64) {
        self.nodes.remove(&id);
        self.queue.retain(|m| m.1 != id);
    }

    fn isolate(&mut self, id: u64) {
        for &v in &self.voters {
            if v != id {
                self.cut.insert((id, v));
                self.cut.insert((v, id));
            }
        }
    }

    /// Moves outputs to disks and the network, and delivers messages,
    /// until nothing is left to do.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                let node = self.nodes.get_mut(&id).unwrap();
                let out = node.take_output();
                for (to, bytes) in out.send {
                    busy = true;
                    self.queue.push_back((id, to, bytes));
                }
                for (write, after) in out.writes {
                    busy = true;
                    if matches!(write.snapshot, Some(SnapshotWrite::Received(_))) {
                        self.snapshots_installed += 1;
                    }
                    self.disks.get_mut(&id).unwrap().apply(&write);
                    self.journals
                        .get_mut(&id)
                        .unwrap()
                        .extend_from_slice(&journal::encode_write(&write));
                    for (to, bytes) in after {
                        self.queue.push_back((id, to, bytes));
                    }
                    if let Some(r) = write.ready {
                        self.nodes.get_mut(&id).unwrap().persisted(r);
                    }
                }
            }
            while let Some((from, to, bytes)) = self.queue.pop_front() {
                busy = true;
                if self.cut.contains(&(from, to)) {
                    continue;
                }
                if self.lose_snapshots > 0
                    && borges_meta::quorum::wire::decode_message(&bytes)
                        .is_ok_and(|m| m.msg_type == raft::prelude::MessageType::MsgSnapshot)
                {
                    self.lose_snapshots -= 1;
                    self.lost_snapshots.push((from, to));
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.step(&bytes).unwrap_or_else(|e| panic!("{from}->{to}: {e}"));
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the cluster never settled");
    }

    /// Runs for `ms` of simulated time in 100 ms steps.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 100;
            let now = self.now;
            for n in self.nodes.values_mut() {
                n.tick(now);
            }
            self.settle();
        }
    }

    fn leaders(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_active())
            .map(|n| n.id())
            .collect()
    }

    /// Runs until exactly one node's controller is active; the time taken.
    fn await_leader(&mut self, limit_ms: u64) -> (u64, u64) {
        let start = self.now;
        while self.now - start < limit_ms {
            self.run(100);
            if let [l] = self.leaders()[..] {
                return (l, self.now - start);
            }
        }
        panic!(
            "no single active controller within {limit_ms} ms: {:?}",
            self.nodes.values().collect::<Vec<_>>()
        );
    }

    /// Creates a topic through the active controller and waits for it to commit.
    fn create_topic(&mut self) -> String {
        let (leader, _) = self.await_leader(10_000);
        if self.nodes[&leader]
            .controller()
            .view()
            .eligible_brokers()
            .next()
            .is_none()
        {
            self.register(1);
        }
        let (leader, _) = self.await_leader(10_000);
        self.names += 1;
        let name = format!("t{}", self.names);
        let t = NewTopic {
            name: name.clone(),
            partitions: 2,
            replication_factor: 1,
            configs: vec![],
        };
        let rng = &mut self.rng;
        let node = self.nodes.get_mut(&leader).unwrap();
        let (result, proposal) = node.decide(|c| c.create_topics(&[t], false, rng)).unwrap();
        assert!(result[0].is_ok(), "{:?}", result[0]);
        let p = proposal.expect("records proposed");
        self.settle();
        assert_eq!(self.nodes[&leader].outcome(p), Outcome::Committed);
        name
    }

    fn register(&mut self, broker: i32) {
        let (leader, _) = self.await_leader(10_000);
        let now = self.now;
        let r = Registration {
            node: NodeId(broker),
            incarnation: 1,
            address: format!("127.0.0.{broker}:9092"),
            rack: None,
            shards: 1,
            log_dirs: vec![broker as u128],
        };
        let node = self.nodes.get_mut(&leader).unwrap();
        let (epoch, _) = node.decide(|c| c.register(&r, now)).unwrap();
        self.settle();
        // Caught up: the heartbeat unfences it.
        let node = self.nodes.get_mut(&leader).unwrap();
        let hb = Heartbeat {
            node: NodeId(broker),
            epoch,
            metadata_offset: node.applied(),
            want_fence: false,
            want_shutdown: false,
        };
        let (reply, _) = node.decide(|c| c.heartbeat(&hb, now)).unwrap();
        assert!(!reply.fenced);
        self.settle();
    }

    /// Every running node's image is the same.
    fn assert_converged(&self) {
        let images: Vec<_> = self.nodes.values().map(|n| n.image()).collect();
        for i in &images[1..] {
            assert!(i.same_as(images[0]), "images differ");
        }
        assert!(self.nodes.values().all(|n| n.apply_errors() == 0));
    }
}

#[test]
fn three_voters_elect_one_controller_and_agree() {
    let mut c = Cluster::new(3);
    let (leader, took) = c.await_leader(5_000);
    assert!(took <= 6_000, "first election took {took} ms");
    println!("3 voters: node {leader} active after {took} simulated ms");
    c.register(1);
    let name = c.create_topic();
    c.run(500);
    c.assert_converged();
    for n in c.nodes.values() {
        assert!(
            n.image().topic_by_name(&name).is_some(),
            "node {} has the topic",
            n.id()
        );
        assert_eq!(n.leader(), leader);
    }
    // Followers refuse decisions.
    let f = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    let err = c
        .nodes
        .get_mut(&f)
        .unwrap()
        .decide(|c| c.delete_topics(std::slice::from_ref(&name)))
        .unwrap_err();
    assert_eq!(err.code(), borges_net::protocol::ErrorCode::NotController);
}

#[test]
fn losing_the_leader_elects_another_within_the_election_timeout() {
    for n in [3, 5] {
        let mut c = Cluster::new(n);
        let (first, _) = c.await_leader(5_000);
        c.create_topic();
        c.kill(first);
        let (second, took) = c.await_leader(10_000);
        assert_ne!(first, second);
        // Election timeout is 1-2 s; a split vote costs another (seeds
        // 1..500 all elect within two splits).
        assert!(took <= 6_000, "{n} voters: failover took {took} ms");
        println!("{n} voters: node {first} lost, node {second} active after {took} simulated ms");
        let name = c.create_topic();
        // The old leader comes back from its disk and catches up.
        c.start(first);
        c.run(3_000);
        c.assert_converged();
        assert!(c.nodes[&first].image().topic_by_name(&name).is_some());
        assert_eq!(
            c.leaders(),
            vec![second],
            "the returning node does not depose the leader"
        );
    }
}

#[test]
fn five_voters_survive_the_loss_of_two() {
    let mut c = Cluster::new(5);
    let (leader, _) = c.await_leader(5_000);
    let others: Vec<u64> = (1..=5).filter(|&v| v != leader).take(2).collect();
    c.kill(leader);
    c.kill(others[0]);
    c.await_leader(10_000);
    c.create_topic();
    c.kill(others[1]);
    // Two of five left: no quorum, no controller.
    c.run(5_000);
    assert!(c.leaders().is_empty(), "a minority elected {:?}", c.leaders());
}

#[test]
fn a_partitioned_voter_does_not_depose_a_healthy_leader() {
    let mut c = Cluster::new(3);
    let (leader, _) = c.await_leader(5_000);
    let term = c.nodes[&leader].term();
    let f = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.isolate(f);
    c.run(10_000);
    assert_eq!(c.leaders(), vec![leader], "the majority side keeps its leader");
    c.create_topic();
    c.cut.clear();
    c.run(3_000);
    assert_eq!(c.leaders(), vec![leader]);
    assert_eq!(
        c.nodes[&leader].term(),
        term,
        "pre-vote kept the term: no needless election"
    );
    c.assert_converged();
}

#[test]
fn an_isolated_leader_steps_down_and_the_majority_moves_on() {
    let mut c = Cluster::new(3);
    let (leader, _) = c.await_leader(5_000);
    c.isolate(leader);
    c.run(5_000);
    let active = c.leaders();
    assert_eq!(active.len(), 1, "{active:?}");
    assert_ne!(
        active[0], leader,
        "check_quorum made the cut-off leader step down"
    );
    c.create_topic();
    c.cut.clear();
    c.run(3_000);
    c.assert_converged();
}

#[test]
fn a_whole_cluster_restart_keeps_the_metadata() {
    let mut c = Cluster::new(3);
    c.register(1);
    let names: Vec<String> = (0..3).map(|_| c.create_topic()).collect();
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.start(id);
    }
    c.await_leader(10_000);
    c.run(1_000);
    c.assert_converged();
    for n in c.nodes.values() {
        for name in &names {
            assert!(
                n.image().topic_by_name(name).is_some(),
                "node {} lost {name}",
                n.id()
            );
        }
        assert!(n.image().broker(NodeId(1)).is_some());
    }
}

#[test]
fn a_lagging_voter_catches_up_from_a_snapshot() {
    let mut c = Cluster::with_snapshots(3, 5);
    let (leader, _) = c.await_leader(5_000);
    let lagging = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.kill(lagging);
    let names: Vec<String> = (0..20).map(|_| c.create_topic()).collect();
    let disk = &c.disks[&leader];
    assert!(
        disk.snapshot.get_metadata().index > 0,
        "the leader compacted its log"
    );
    assert!(disk.entries.len() < 10, "{} entries kept", disk.entries.len());
    c.start(lagging);
    c.run(3_000);
    assert!(c.snapshots_installed >= 1, "caught up by snapshot");
    println!(
        "lagging voter installed {} snapshot(s); leader kept {} entries",
        c.snapshots_installed,
        c.disks[&leader].entries.len()
    );
    c.assert_converged();
    assert!(c.nodes[&lagging]
        .image()
        .topic_by_name(names.last().unwrap())
        .is_some());
    // And it restarts from its own snapshot.
    c.kill(lagging);
    c.start(lagging);
    c.run(2_000);
    c.assert_converged();
}

#[test]
fn a_single_voter_is_its_own_controller() {
    let mut c = Cluster::new(1);
    let (leader, took) = c.await_leader(5_000);
    assert_eq!(leader, 1);
    assert!(took <= 2_500);
    c.register(1);
    c.create_topic();
    c.kill(1);
    c.start(1);
    c.await_leader(5_000);
    assert!(c.nodes[&1].image().topic_by_name("t1").is_some());
}

#[test]
fn malformed_or_misdirected_messages_are_typed_errors() {
    let mut c = Cluster::new(3);
    let (leader, _) = c.await_leader(5_000);
    let f = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    let node = c.nodes.get_mut(&f).unwrap();
    assert!(matches!(node.step(&[]), Err(StepError::Decode(_))));
    assert!(matches!(node.step(&[0, 99, 1, 2]), Err(StepError::Decode(_))));
    let msg = |to: u64, from: u64, ty: raft::prelude::MessageType, commit: u64| {
        let m = raft::prelude::Message {
            msg_type: ty,
            to,
            from,
            term: 1_000,
            commit,
            ..Default::default()
        };
        borges_meta::quorum::wire::encode_message(&m)
    };
    use raft::prelude::MessageType::*;
    assert!(matches!(
        node.step(&msg(9, leader, MsgHeartbeat, 0)),
        Err(StepError::WrongRecipient { .. })
    ));
    assert!(matches!(
        node.step(&msg(f, 42, MsgHeartbeat, 0)),
        Err(StepError::UnknownSender(42))
    ));
    assert!(matches!(
        node.step(&msg(f, f, MsgHeartbeat, 0)),
        Err(StepError::UnknownSender(_))
    ));
    assert!(matches!(
        node.step(&msg(f, leader, MsgHeartbeat, 1 << 40)),
        Err(StepError::Invalid(_))
    ));
    // A message that claims a sender other than the peer it came from.
    let other = *c.nodes.keys().find(|&&id| id != leader && id != f).unwrap();
    let node = c.nodes.get_mut(&f).unwrap();
    assert!(matches!(
        node.step_from(Some(other), &msg(f, leader, MsgHeartbeat, 0)),
        Err(StepError::ForgedSender { claimed, sender }) if claimed == leader && sender == other
    ));
    // An append whose entries do not follow each other, or do not decode.
    let mut m = raft::prelude::Message {
        msg_type: MsgAppend,
        to: f,
        from: leader,
        term: 1_000,
        index: 100,
        log_term: 1,
        ..Default::default()
    };
    m.entries.push(raft::prelude::Entry {
        index: 105,
        term: 1_000,
        ..Default::default()
    });
    let bytes = borges_meta::quorum::wire::encode_message(&m);
    assert!(matches!(node.step(&bytes), Err(StepError::Invalid(_))));
    m.entries[0].index = 101;
    m.entries[0].data = vec![1, 2, 3].into();
    let bytes = borges_meta::quorum::wire::encode_message(&m);
    assert!(matches!(node.step(&bytes), Err(StepError::Decode(_))));
    // The cluster goes on as before.
    c.run(1_000);
    assert_eq!(c.leaders(), vec![leader]);
    c.create_topic();
    c.assert_converged();
}

#[test]
fn indexes_and_terms_at_their_limit_are_typed_errors() {
    // Raft does `index + 1` and `term + 1` throughout; a peer must not be
    // able to hand it values where that overflows.
    use raft::prelude::MessageType::*;
    use raft::prelude::{Entry, Message, Snapshot};
    let mut c = Cluster::new(3);
    let (leader, _) = c.await_leader(5_000);
    let f = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    let term = c.nodes[&f].term();
    let encode = borges_meta::quorum::wire::encode_message;
    let node = c.nodes.get_mut(&f).unwrap();

    let mut append = Message {
        msg_type: MsgAppend,
        to: f,
        from: leader,
        term,
        index: u64::MAX,
        log_term: term,
        ..Default::default()
    };
    append.entries.push(Entry {
        index: 0,
        term,
        ..Default::default()
    });
    assert!(node.step(&encode(&append)).is_err(), "an index past u64::MAX");
    append.index = u64::MAX - 1;
    append.entries[0].index = u64::MAX;
    assert!(node.step(&encode(&append)).is_err(), "the last index");

    let mut snap = Snapshot::default();
    snap.mut_metadata().index = u64::MAX;
    snap.mut_metadata().term = term;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    snap.data = borges_meta::image::MetadataImage::default()
        .encode_snapshot()
        .into();
    let m = Message {
        msg_type: MsgSnapshot,
        to: f,
        from: leader,
        term,
        snapshot: Some(snap).into(),
        ..Default::default()
    };
    assert!(node.step(&encode(&m)).is_err(), "a snapshot at u64::MAX");

    let vote = Message {
        msg_type: MsgRequestPreVote,
        to: f,
        from: leader,
        term: u64::MAX,
        log_term: u64::MAX,
        index: u64::MAX,
        ..Default::default()
    };
    assert!(node.step(&encode(&vote)).is_err(), "a term at u64::MAX");
    // The cluster goes on as before.
    c.run(1_000);
    assert_eq!(c.leaders(), vec![leader]);
    c.create_topic();
    c.assert_converged();
}

#[test]
fn a_voter_that_caught_up_by_snapshot_can_campaign_and_win() {
    // Snapshots after every entry: the leader keeps no log, so the
    // returning voter gets a snapshot at the leader's last index and no
    // entries after it. It must be able to lead from there.
    let mut c = Cluster::with_snapshots(3, 1);
    let (leader, _) = c.await_leader(5_000);
    let lagging = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.kill(lagging);
    let names: Vec<String> = (0..3).map(|_| c.create_topic()).collect();
    c.start(lagging);
    let mut waited = 0;
    while c.snapshots_installed == 0 {
        c.run(100);
        waited += 100;
        assert!(waited < 5_000, "no snapshot reached the lagging voter");
    }
    let last = c.nodes[&leader].applied();
    assert_eq!(c.nodes[&lagging].applied(), last, "caught up by the snapshot");
    c.kill(leader);
    let mut waited = 0;
    while !c.nodes[&lagging].is_active() {
        c.nodes.get_mut(&lagging).unwrap().campaign();
        c.run(100);
        waited += 100;
        assert!(waited < 10_000, "the voter that caught up by snapshot never led");
    }
    let name = c.create_topic();
    c.start(leader);
    c.run(2_000);
    c.assert_converged();
    for n in c.nodes.values() {
        for t in names.iter().chain([&name]) {
            assert!(n.image().topic_by_name(t).is_some(), "node {} lacks {t}", n.id());
        }
    }
}

#[test]
fn a_lost_snapshot_is_sent_again() {
    // The leader waits in raft's snapshot state until the follower answers;
    // if the snapshot (or the answer) is lost, it must try again rather
    // than stall that follower for the rest of its term.
    let mut c = Cluster::with_snapshots(3, 5);
    let (leader, _) = c.await_leader(5_000);
    let lagging = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.kill(lagging);
    let names: Vec<String> = (0..10).map(|_| c.create_topic()).collect();
    c.lose_snapshots = 1;
    c.start(lagging);
    let mut waited = 0;
    while c.nodes[&lagging].applied() < c.nodes[&leader].applied() {
        c.run(100);
        waited += 100;
        assert!(
            waited < 15_000,
            "the lagging voter stalled at {} (leader at {})",
            c.nodes[&lagging].applied(),
            c.nodes[&leader].applied()
        );
    }
    assert_eq!(c.lose_snapshots, 0, "a snapshot was lost");
    println!("caught up {waited} ms after a lost snapshot");
    assert_eq!(c.leaders(), vec![leader]);
    c.assert_converged();
    assert!(c.nodes[&lagging]
        .image()
        .topic_by_name(names.last().unwrap())
        .is_some());
}

#[test]
fn a_snapshot_the_transport_failed_to_send_is_sent_again_at_once() {
    let mut c = Cluster::with_snapshots(3, 5);
    let (leader, _) = c.await_leader(5_000);
    let lagging = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.kill(lagging);
    for _ in 0..10 {
        c.create_topic();
    }
    c.lose_snapshots = 1;
    c.start(lagging);
    let mut waited = 0;
    while c.lost_snapshots.is_empty() {
        c.run(100);
        waited += 100;
        assert!(waited < 5_000, "no snapshot was sent");
    }
    assert_eq!(c.lost_snapshots, vec![(leader, lagging)]);
    // The transport knows the send failed and says so.
    c.nodes.get_mut(&leader).unwrap().send_failed(lagging);
    let mut waited = 0;
    while c.nodes[&lagging].applied() < c.nodes[&leader].applied() {
        c.run(100);
        waited += 100;
        assert!(waited <= 1_000, "not sent again at once");
    }
    c.assert_converged();
}

#[test]
fn a_dropped_proposal_keeps_the_controller_inactive_until_the_log_is_applied() {
    // Raft drops a proposal past the bound on uncommitted bytes. The
    // controller then forgets its uncommitted view; it must not decide
    // again in the same term before what is already in its log (its own
    // earlier proposals) is applied, or it decides from a view that lacks
    // them.
    let mut c = Cluster::new(3);
    c.uncommitted_bytes_max = Some(1 << 20);
    for id in 1..=3 {
        c.kill(id);
        c.start(id);
    }
    c.register(1);
    let (leader, _) = c.await_leader(5_000);
    for &v in &c.voters.clone() {
        if v != leader {
            c.cut.insert((leader, v));
        }
    }
    let big = |name: &str| NewTopic {
        name: name.into(),
        partitions: 1,
        replication_factor: 1,
        configs: (0..20).map(|i| (format!("k{i}"), "v".repeat(30_000))).collect(),
    };
    let rng = &mut c.rng;
    let node = c.nodes.get_mut(&leader).unwrap();
    let (r, first) = node.decide(|c| c.create_topics(&[big("a")], false, rng)).unwrap();
    assert!(r[0].is_ok());
    let first = first.expect("proposed");
    let dropped = node.decide(|c| c.create_topics(&[big("b")], false, rng));
    assert_eq!(dropped.unwrap_err(), ControllerError::NotActive, "over the bound");
    c.settle();
    let rng = &mut c.rng;
    let node = c.nodes.get_mut(&leader).unwrap();
    assert!(node.is_leader());
    assert!(!node.is_active(), "topic a is in the log, not yet applied");
    assert_eq!(
        node.decide(|c| c.create_topics(&[big("a")], false, rng))
            .unwrap_err(),
        ControllerError::NotActive,
        "no decision from a view that lacks topic a"
    );
    c.cut.clear();
    c.settle();
    c.run(200);
    let node = c.nodes.get_mut(&leader).unwrap();
    assert!(node.is_active(), "active again once the log is applied");
    assert_eq!(node.outcome(first), Outcome::Committed);
    let rng = &mut c.rng;
    let (r, _) = node.decide(|c| c.create_topics(&[big("a")], false, rng)).unwrap();
    assert_eq!(r[0], Err(ControllerError::TopicExists("a".into())));
    c.run(500);
    c.assert_converged();
}

#[test]
fn answers_without_records_wait_for_what_they_were_read_from() {
    // An answer that proposes nothing is read from the controller's view,
    // which holds its uncommitted proposals: it may be given only once
    // those are applied, or a client learns of a change that may be lost.
    let mut c = Cluster::new(3);
    c.register(1);
    let (leader, _) = c.await_leader(5_000);
    for &v in &c.voters.clone() {
        if v != leader {
            c.cut.insert((leader, v));
        }
    }
    let topic = NewTopic {
        name: "a".into(),
        partitions: 1,
        replication_factor: 1,
        configs: vec![],
    };
    let rng = &mut c.rng;
    let node = c.nodes.get_mut(&leader).unwrap();
    let (_, created) = node
        .decide(|c| c.create_topics(std::slice::from_ref(&topic), false, rng))
        .unwrap();
    let created = created.expect("proposed");
    // Asked again: "exists", from the view, while the creation is pending.
    let (r, wait) = node
        .decide(|c| c.create_topics(std::slice::from_ref(&topic), false, rng))
        .unwrap();
    assert_eq!(r[0], Err(ControllerError::TopicExists("a".into())));
    let wait = wait.expect("the answer waits for the log it was read from");
    assert!(wait.index >= created.index);
    assert_eq!(node.outcome(wait), Outcome::Pending);
    // Nothing pending: the answer is given at once.
    c.cut.clear();
    c.settle();
    let rng = &mut c.rng;
    let node = c.nodes.get_mut(&leader).unwrap();
    assert_eq!(node.outcome(wait), Outcome::Committed);
    let (r, wait) = node
        .decide(|c| c.create_topics(std::slice::from_ref(&topic), false, rng))
        .unwrap();
    assert_eq!(r[0], Err(ControllerError::TopicExists("a".into())));
    assert_eq!(wait, None);

    // A creation the leader loses: the answer read from it is not given.
    let (leader, _) = c.await_leader(5_000);
    for &v in &c.voters.clone() {
        if v != leader {
            c.cut.insert((leader, v));
        }
    }
    let b = NewTopic {
        name: "b".into(),
        ..topic.clone()
    };
    let rng = &mut c.rng;
    let node = c.nodes.get_mut(&leader).unwrap();
    node.decide(|c| c.create_topics(std::slice::from_ref(&b), false, rng))
        .unwrap();
    let (_, wait) = node
        .decide(|c| c.create_topics(std::slice::from_ref(&b), false, rng))
        .unwrap();
    let wait = wait.expect("waits");
    c.run(5_000);
    assert_eq!(c.nodes[&leader].outcome(wait), Outcome::Unknown);
}

#[test]
fn an_entry_peers_could_not_decode_is_never_proposed() {
    // The controller bounds its decisions; the node refuses, as a last
    // line, a batch that would not decode or not travel, rather than put
    // into the log an entry every follower must refuse.
    let mut c = Cluster::new(3);
    let (leader, _) = c.await_leader(5_000);
    let too_many: Vec<MetadataRecord> = (0..=MAX_BATCH_RECORDS as u64)
        .map(|i| MetadataRecord::ReserveTopicIds { next: TopicId(i) })
        .collect();
    let node = c.nodes.get_mut(&leader).unwrap();
    let err = node.decide(|_| Ok(((), too_many))).unwrap_err();
    assert!(matches!(err, ControllerError::DecisionTooLarge(_)), "{err:?}");
    assert!(node.is_active(), "nothing else was pending: active again");
    let name = "x".repeat(MAX_STRING);
    let too_big: Vec<MetadataRecord> = (0..(MAX_PAYLOAD / MAX_STRING) as u64 + 1)
        .map(|i| MetadataRecord::Topic {
            id: TopicId(i + 1),
            name: name.clone(),
        })
        .collect();
    let err = node.decide(|_| Ok(((), too_big))).unwrap_err();
    assert!(matches!(err, ControllerError::DecisionTooLarge(_)), "{err:?}");
    c.settle();
    c.create_topic();
    c.assert_converged();
}

#[test]
fn settings_that_would_resend_snapshots_every_tick_are_refused() {
    let mut q = QuorumConfig::new(1, vec![1, 2, 3]);
    q.snapshot_ack_ticks = 0;
    assert!(MetadataNode::start(q, ControllerConfig::default(), &Stored::default()).is_err());
    let mut q = QuorumConfig::new(1, vec![1, 2, 3]);
    q.uncommitted_bytes_max = 1000;
    assert!(
        MetadataNode::start(q, ControllerConfig::default(), &Stored::default()).is_err(),
        "below one message's size"
    );
}
