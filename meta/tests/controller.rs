//! The controller state machine with a fake clock and a log that commits
//! what it is given: registration, fencing, elections, epochs.

use borges_meta::controller::*;
use borges_meta::image::MetadataImage;
use borges_meta::record::{MetadataRecord, RecordBatch};
use borges_meta::seams::SplitMix64;
use borges_meta::{BrokerEpoch, LeaderEpoch, NodeId, TopicId};
use borges_net::protocol::ErrorCode;

/// A controller whose proposals commit when `commit` is called, and a clock
/// that moves only when told.
struct Harness {
    c: Controller,
    index: u64,
    now: u64,
    pending: Vec<RecordBatch>,
    rng: SplitMix64,
}

impl Harness {
    fn new(config: ControllerConfig) -> Harness {
        let mut c = Controller::new(config, MetadataImage::default());
        c.become_active(0);
        Harness {
            c,
            index: 0,
            now: 0,
            pending: Vec::new(),
            rng: SplitMix64::new(42),
        }
    }

    fn propose(&mut self, batch: RecordBatch) {
        self.c.check_invariants().unwrap();
        if !batch.is_empty() {
            self.pending.push(batch);
        }
    }

    /// Commits every pending proposal, in order.
    fn commit(&mut self) {
        for batch in std::mem::take(&mut self.pending) {
            self.index += 1;
            assert_eq!(self.c.replay(self.index, &batch), vec![]);
        }
        assert_eq!(self.c.view().to_records(), self.c.committed().to_records());
    }

    fn register(&mut self, node: i32) -> BrokerEpoch {
        self.register_as(node, node as u128, &format!("r{}", node % 3))
    }

    fn register_as(&mut self, node: i32, incarnation: u128, rack: &str) -> BrokerEpoch {
        let (epoch, batch) = self
            .c
            .register(&registration(node, incarnation, rack), self.now)
            .unwrap();
        self.propose(batch);
        epoch
    }

    fn heartbeat(&mut self, node: i32, epoch: BrokerEpoch) -> HeartbeatReply {
        self.beat(node, epoch, false, false)
    }

    fn beat(
        &mut self,
        node: i32,
        epoch: BrokerEpoch,
        want_shutdown: bool,
        want_fence: bool,
    ) -> HeartbeatReply {
        let hb = Heartbeat {
            node: NodeId(node),
            epoch,
            metadata_offset: self.index,
            want_fence,
            want_shutdown,
        };
        let (reply, batch) = self.c.heartbeat(&hb, self.now).unwrap();
        self.propose(batch);
        reply
    }

    /// Registers brokers 1..=n and brings them all to unfenced.
    fn start(&mut self, n: i32) -> Vec<BrokerEpoch> {
        let epochs: Vec<BrokerEpoch> = (1..=n).map(|i| self.register(i)).collect();
        self.commit();
        for (i, &e) in epochs.iter().enumerate() {
            assert!(!self.heartbeat(i as i32 + 1, e).fenced);
        }
        self.commit();
        epochs
    }

    fn create(&mut self, name: &str, partitions: i32, rf: i16) -> Result<TopicId, ControllerError> {
        let t = NewTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: vec![],
        };
        let (mut results, batch) = self.c.create_topics(&[t], false, &mut self.rng).unwrap();
        self.propose(batch);
        self.commit();
        results.remove(0)
    }

    /// Moves the clock, heartbeating for `alive` every second.
    fn advance(&mut self, ms: u64, alive: &[(i32, BrokerEpoch)]) {
        let end = self.now + ms;
        while self.now < end {
            self.now = (self.now + 1000).min(end);
            for &(n, e) in alive {
                self.heartbeat(n, e);
            }
            let batch = self.c.tick(self.now);
            self.propose(batch);
            self.commit();
        }
    }

    fn partitions(&self, topic: TopicId) -> Vec<borges_meta::image::PartitionState> {
        self.c.committed().topic(topic).unwrap().partitions.clone()
    }
}

fn registration(node: i32, incarnation: u128, rack: &str) -> Registration {
    Registration {
        node: NodeId(node),
        incarnation,
        address: format!("127.0.0.{node}:9092"),
        rack: Some(rack.into()),
        shards: 2,
        log_dirs: vec![node as u128 * 1000],
    }
}

fn replicated() -> ControllerConfig {
    ControllerConfig {
        max_replication_factor: 5,
        ..ControllerConfig::default()
    }
}

#[test]
fn a_broker_registers_fenced_and_is_unfenced_once_caught_up() {
    let mut h = Harness::new(ControllerConfig::default());
    let e = h.register(1);
    // Not yet committed: the heartbeat's offset is behind the registration.
    assert!(h.heartbeat(1, e).fenced);
    h.commit();
    assert!(!h.heartbeat(1, e).fenced);
    h.commit();
    let t = h.create("orders", 3, -1).unwrap();
    let parts = h.partitions(t);
    assert!(parts
        .iter()
        .all(|p| p.leader == NodeId(1) && p.isr == vec![NodeId(1)]));
    assert_eq!(h.c.committed().broker(NodeId(1)).unwrap().state_name(), "alive");
}

#[test]
fn a_silent_broker_is_fenced_after_the_session_timeout_and_leads_nothing() {
    let mut h = Harness::new(replicated());
    let e = h.start(3);
    let t = h.create("t", 6, 3).unwrap();
    let before = h.partitions(t);
    let led_by_3: Vec<usize> = (0..6).filter(|&i| before[i].leader == NodeId(3)).collect();
    assert_eq!(led_by_3.len(), 2, "leaders balanced: {before:?}");
    let alive = [(1, e[0]), (2, e[1])];
    h.advance(9_000, &alive);
    assert!(
        !h.c.committed().broker(NodeId(3)).unwrap().fenced,
        "not before the timeout"
    );
    h.advance(1_000, &alive);
    assert!(
        h.c.committed().broker(NodeId(3)).unwrap().fenced,
        "fenced after 9 s of silence"
    );
    let after = h.partitions(t);
    for (i, p) in after.iter().enumerate() {
        assert_ne!(p.leader, NodeId(3));
        assert!(!p.isr.contains(&NodeId(3)), "fenced broker left the ISR");
        if led_by_3.contains(&i) {
            assert_eq!(p.leader_epoch, LeaderEpoch(before[i].leader_epoch.0 + 1));
            assert!(p.partition_epoch > before[i].partition_epoch);
        } else {
            assert_eq!(
                p.leader_epoch, before[i].leader_epoch,
                "leader unchanged, epoch unchanged"
            );
        }
    }
    assert_eq!(h.c.committed().under_replicated_partitions(), 6);
    assert_eq!(h.c.committed().offline_partitions(), 0);
}

#[test]
fn single_replica_partitions_go_offline_and_return_with_their_broker() {
    let mut h = Harness::new(ControllerConfig::default());
    let e = h.start(2);
    let t = h.create("t", 4, 1).unwrap();
    let on_2: Vec<usize> = (0..4)
        .filter(|&i| h.partitions(t)[i].leader == NodeId(2))
        .collect();
    assert!(!on_2.is_empty());
    h.advance(10_000, &[(1, e[0])]);
    let parts = h.partitions(t);
    for &i in &on_2 {
        assert_eq!(parts[i].leader, NodeId::NONE, "offline, no unclean election");
        assert_eq!(parts[i].isr, vec![NodeId(2)], "the last ISR member stays");
    }
    assert_eq!(h.c.committed().offline_partitions(), on_2.len());
    // Restarted: a new incarnation, accepted since the old session expired.
    let e2 = h.register_as(2, 99, "r2");
    assert!(e2 > e[1]);
    h.commit();
    assert!(!h.heartbeat(2, e2).fenced);
    h.commit();
    let parts = h.partitions(t);
    assert!(on_2.iter().all(|&i| parts[i].leader == NodeId(2)));
    assert_eq!(h.c.committed().offline_partitions(), 0);
}

#[test]
fn a_duplicate_node_id_is_refused_while_the_session_lives() {
    let mut h = Harness::new(ControllerConfig::default());
    let e = h.start(1);
    // The same incarnation retrying gets its epoch back and changes nothing.
    let (again, batch) = h.c.register(&registration(1, 1, "r1"), h.now).unwrap();
    assert_eq!((again, batch.len()), (e[0], 0));
    // Another process, other data directory: refused while the session lives.
    let mut other = registration(1, 7, "r1");
    other.log_dirs = vec![5];
    let err = h.c.register(&other, h.now).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DuplicateBrokerRegistration);
    assert!(err.to_string().contains("127.0.0.1:9092"), "{err}");
    h.advance(20_000, &[(1, e[0])]);
    assert!(
        h.c.register(&other, h.now).is_err(),
        "the old one keeps heartbeating"
    );
    // It stops; once its session expires the other process registers.
    h.advance(9_000, &[]);
    assert!(h.c.register(&other, h.now).is_err(), "not before the timeout");
    h.advance(1_000, &[]);
    let (e2, batch) = h.c.register(&other, h.now).unwrap();
    assert!(e2 > e[0]);
    h.propose(batch);
    h.commit();
    // The old epoch is dead.
    let stale = Heartbeat {
        node: NodeId(1),
        epoch: e[0],
        metadata_offset: h.index,
        want_fence: false,
        want_shutdown: false,
    };
    assert_eq!(
        h.c.heartbeat(&stale, h.now).unwrap_err().code(),
        ErrorCode::StaleBrokerEpoch
    );
}

#[test]
fn a_restart_on_the_same_data_directory_replaces_the_old_registration_at_once() {
    let mut h = Harness::new(ControllerConfig::default());
    let e = h.start(1);
    let t = h.create("t", 2, 1).unwrap();
    // SIGKILL and restart: a new incarnation, the same directory, within the session.
    let restarted = registration(1, 8, "r1");
    let (e2, batch) = h.c.register(&restarted, h.now).unwrap();
    assert!(e2 > e[0]);
    h.propose(batch);
    h.commit();
    assert!(
        h.partitions(t).iter().all(|p| p.leader == NodeId::NONE),
        "fenced with the old registration"
    );
    assert!(!h.heartbeat(1, e2).fenced);
    h.commit();
    assert!(
        h.partitions(t).iter().all(|p| p.leader == NodeId(1)),
        "back once unfenced"
    );
}

#[test]
fn a_clean_stop_fences_at_once_and_a_restart_need_not_wait() {
    let mut h = Harness::new(ControllerConfig::default());
    let e = h.start(1);
    let reply = h.beat(1, e[0], false, true);
    assert!(reply.fenced);
    h.commit();
    let (e2, batch) = h.c.register(&registration(1, 2, "r1"), h.now).unwrap();
    assert!(e2 > e[0]);
    h.propose(batch);
}

#[test]
fn controlled_shutdown_moves_leadership_then_says_done() {
    let mut h = Harness::new(replicated());
    let e = h.start(3);
    let t = h.create("t", 9, 3).unwrap();
    let reply = h.beat(2, e[1], true, false);
    assert!(
        reply.shutting_down && !reply.should_shut_down,
        "moves not committed yet"
    );
    h.commit();
    let reply = h.beat(2, e[1], true, false);
    assert!(reply.should_shut_down);
    for p in h.partitions(t) {
        assert_ne!(p.leader, NodeId(2));
        assert!(!p.isr.contains(&NodeId(2)));
    }
    assert_eq!(
        h.c.committed().broker(NodeId(2)).unwrap().state_name(),
        "shutting_down"
    );
    // A shutting-down broker gets no new replicas.
    assert!(h.create("u", 1, 3).is_err());
}

#[test]
fn controlled_shutdown_of_a_sole_replica_keeps_it_leading() {
    let mut h = Harness::new(ControllerConfig::default());
    let e = h.start(1);
    let t = h.create("t", 2, 1).unwrap();
    h.beat(1, e[0], true, false);
    h.commit();
    assert!(h.beat(1, e[0], true, false).should_shut_down, "nothing can move");
    assert!(
        h.partitions(t).iter().all(|p| p.leader == NodeId(1)),
        "serving until it stops"
    );
    h.beat(1, e[0], false, true);
    h.commit();
    assert_eq!(h.c.committed().offline_partitions(), 2);
}

#[test]
fn preferred_leaders_come_back_on_demand_and_automatically() {
    let mut h = Harness::new(replicated());
    let e = h.start(3);
    let t = h.create("t", 3, 3).unwrap();
    // Broker 1 restarts: it loses its leaderships.
    h.beat(1, e[0], false, true);
    h.commit();
    let e1 = h.register_as(1, 50, "r1");
    h.commit();
    h.heartbeat(1, e1);
    h.commit();
    let p = h.partitions(t);
    let preferred_1: Vec<usize> = (0..3).filter(|&i| p[i].replicas[0] == NodeId(1)).collect();
    assert!(preferred_1.iter().all(|&i| p[i].leader != NodeId(1)));
    // Not in the ISR (part 2 brings it back): not available.
    let targets: Vec<(String, u32)> = preferred_1.iter().map(|&i| ("t".to_string(), i as u32)).collect();
    let (results, batch) = h.c.elect_preferred(Some(&targets)).unwrap();
    assert!(batch.is_empty());
    assert!(results
        .iter()
        .all(|(_, r)| r.as_ref().unwrap_err().code() == ErrorCode::PreferredLeaderNotAvailable));
    // The leader adds it back to the ISR (as a caught-up follower would).
    for &i in &preferred_1 {
        let s = &h.partitions(t)[i];
        let mut isr = s.isr.clone();
        isr.push(NodeId(1));
        let leader = s.leader;
        let req = AlterIsr {
            node: leader,
            broker_epoch: h.c.committed().broker(leader).unwrap().reg.epoch,
            topic: t,
            partition: i as u32,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            isr,
        };
        let (_, batch) = h.c.alter_isr(&req).unwrap();
        h.propose(batch);
    }
    h.commit();
    // The automatic check, 5 minutes after becoming active.
    let alive: Vec<(i32, BrokerEpoch)> = vec![(1, e1), (2, e[1]), (3, e[2])];
    h.advance(299_000 - h.now, &alive);
    assert!(preferred_1
        .iter()
        .all(|&i| h.partitions(t)[i].leader != NodeId(1)));
    h.advance(1_000, &alive);
    assert!(
        preferred_1
            .iter()
            .all(|&i| h.partitions(t)[i].leader == NodeId(1)),
        "rebalanced"
    );
    let (results, _) = h.c.elect_preferred(Some(&targets)).unwrap();
    assert!(results
        .iter()
        .all(|(_, r)| r.as_ref().unwrap_err().code() == ErrorCode::ElectionNotNeeded));
    let (results, _) =
        h.c.elect_preferred(Some(&[("nope".into(), 0), ("t".into(), 9)]))
            .unwrap();
    assert!(results
        .iter()
        .all(|(_, r)| r.as_ref().unwrap_err().code() == ErrorCode::UnknownTopicOrPartition));
}

#[test]
fn alter_isr_is_a_compare_and_set() {
    let mut h = Harness::new(replicated());
    let e = h.start(3);
    let t = h.create("t", 1, 3).unwrap();
    let s = h.partitions(t)[0].clone();
    let leader = s.leader;
    let follower = *s.replicas.iter().find(|&&n| n != leader).unwrap();
    let epoch = e[leader.0 as usize - 1];
    let ok = AlterIsr {
        node: leader,
        broker_epoch: epoch,
        topic: t,
        partition: 0,
        leader_epoch: s.leader_epoch,
        partition_epoch: s.partition_epoch,
        isr: vec![leader],
    };
    let bad = |f: &dyn Fn(&mut AlterIsr)| {
        let mut r = ok.clone();
        f(&mut r);
        r
    };
    let code = |h: &mut Harness, r: &AlterIsr| h.c.alter_isr(r).unwrap_err().code();
    assert_eq!(
        code(&mut h, &bad(&|r| r.node = follower)),
        ErrorCode::StaleBrokerEpoch
    );
    let fe = e[follower.0 as usize - 1];
    assert_eq!(
        code(
            &mut h,
            &bad(&|r| {
                r.node = follower;
                r.broker_epoch = fe;
            })
        ),
        ErrorCode::NotLeaderOrFollower
    );
    assert_eq!(
        code(&mut h, &bad(&|r| r.leader_epoch = LeaderEpoch(7))),
        ErrorCode::FencedLeaderEpoch
    );
    assert_eq!(
        code(&mut h, &bad(&|r| r.partition_epoch.0 += 1)),
        ErrorCode::InvalidUpdateVersion
    );
    assert_eq!(
        code(&mut h, &bad(&|r| r.isr = vec![follower])),
        ErrorCode::InvalidRequest,
        "leader not in ISR"
    );
    assert_eq!(
        code(&mut h, &bad(&|r| r.isr = vec![leader, NodeId(9)])),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(&mut h, &bad(&|r| r.node = NodeId(9))),
        ErrorCode::BrokerIdNotRegistered
    );
    let (state, batch) = h.c.alter_isr(&ok).unwrap();
    assert_eq!(state.isr, vec![leader]);
    assert_eq!(state.partition_epoch.0, s.partition_epoch.0 + 1);
    assert_eq!(state.leader_epoch, s.leader_epoch);
    h.propose(batch);
    h.commit();
    // The same request again is now stale.
    assert_eq!(code(&mut h, &ok), ErrorCode::InvalidUpdateVersion);
    // A fenced broker may not be added back.
    let other = *s
        .replicas
        .iter()
        .find(|&&n| n != leader && n != follower)
        .unwrap();
    h.beat(other.0, e[other.0 as usize - 1], false, true);
    h.commit();
    let s = h.partitions(t)[0].clone();
    let add = AlterIsr {
        leader_epoch: s.leader_epoch,
        partition_epoch: s.partition_epoch,
        isr: vec![leader, other],
        ..ok.clone()
    };
    assert_eq!(code(&mut h, &add), ErrorCode::IneligibleReplica);
}

#[test]
fn create_topics_validates_before_it_records() {
    let mut h = Harness::new(ControllerConfig::default());
    h.start(2);
    let topic = |name: &str, partitions, rf| NewTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: vec![("retention.ms".into(), "1000".into())],
    };
    let requests = [
        topic("ok", 2, 1),
        topic("bad name", 1, 1),
        topic("zero", 0, 1),
        topic("huge", 10_001, 1),
        topic("rf0", 1, 0),
        topic("rf2", 1, 2),
        topic("ok", 1, 1),
    ];
    let (results, batch) = h.c.create_topics(&requests, false, &mut h.rng).unwrap();
    let codes: Vec<ErrorCode> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| ErrorCode::None))
        .collect();
    assert_eq!(
        codes,
        [
            ErrorCode::None,
            ErrorCode::InvalidTopicException,
            ErrorCode::InvalidPartitions,
            ErrorCode::InvalidPartitions,
            ErrorCode::InvalidReplicationFactor,
            ErrorCode::InvalidReplicationFactor,
            ErrorCode::TopicAlreadyExists,
        ]
    );
    assert!(results[5]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("until data replication lands"));
    h.propose(batch);
    h.commit();
    let t = h.c.committed().topic_by_name("ok").unwrap();
    assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("1000"));
    // Validate-only records nothing; ids are never reused after deletion.
    let (r, batch) = h.c.create_topics(&[topic("v", 1, 1)], true, &mut h.rng).unwrap();
    assert!(r[0].is_ok() && batch.is_empty());
    let (r, batch) = h.c.delete_topics(&["ok".into(), "missing".into()]).unwrap();
    assert_eq!(
        r[1].as_ref().unwrap_err().code(),
        ErrorCode::UnknownTopicOrPartition
    );
    let old = *r[0].as_ref().unwrap();
    h.propose(batch);
    h.commit();
    assert!(h.create("ok", 1, 1).unwrap() > old);
    // Too few live brokers.
    let mut h = Harness::new(replicated());
    h.start(2);
    let err = h.create("t", 1, 3).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidReplicationFactor);
    assert!(err.to_string().contains("2 are available"), "{err}");
}

#[test]
fn unclean_election_only_when_the_topic_allows_it() {
    let mut h = Harness::new(replicated());
    let e = h.start(3);
    let t = h.create("t", 1, 3).unwrap();
    let s = h.partitions(t)[0].clone();
    let leader = s.leader;
    // Shrink the ISR to the leader, then stop the leader.
    let req = AlterIsr {
        node: leader,
        broker_epoch: e[leader.0 as usize - 1],
        topic: t,
        partition: 0,
        leader_epoch: s.leader_epoch,
        partition_epoch: s.partition_epoch,
        isr: vec![leader],
    };
    let (_, batch) = h.c.alter_isr(&req).unwrap();
    h.propose(batch);
    h.commit();
    h.beat(leader.0, e[leader.0 as usize - 1], false, true);
    h.commit();
    assert_eq!(h.partitions(t)[0].leader, NodeId::NONE);
    let batch =
        h.c.alter_configs("t", &[(UNCLEAN_ELECTION_KEY.into(), Some("true".into()))], false)
            .unwrap();
    h.propose(batch);
    h.commit();
    let p = h.partitions(t)[0].clone();
    assert!(
        p.has_leader() && p.leader != leader,
        "unclean: an out-of-sync replica leads"
    );
    assert_eq!(p.isr, vec![p.leader]);
    assert!(h.c.alter_configs("missing", &[], false).is_err());
}

#[test]
fn losing_leadership_drops_what_was_not_committed() {
    let mut h = Harness::new(ControllerConfig::default());
    h.start(1);
    let (_, _batch) =
        h.c.create_topics(
            &[NewTopic {
                name: "lost".into(),
                partitions: 1,
                replication_factor: 1,
                configs: vec![],
            }],
            false,
            &mut h.rng,
        )
        .unwrap();
    assert!(h.c.view().topic_by_name("lost").is_some());
    h.c.become_inactive();
    assert!(h.c.view().topic_by_name("lost").is_none());
    let err = h.c.delete_topics(&["lost".into()]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotController);
    assert!(
        h.c.tick(1_000_000).is_empty(),
        "an inactive controller fences nobody"
    );
    // A follower applies what is committed.
    let batch = vec![MetadataRecord::Topic {
        id: TopicId(77),
        name: "from-leader".into(),
    }];
    assert!(h.c.replay(10, &batch).is_empty());
    assert!(h.c.view().topic_by_name("from-leader").is_some());
    // A new term gives every broker a fresh session timeout.
    h.c.become_active(2_000_000);
    assert!(h.c.tick(2_000_000 + 9_000).is_empty());
    assert!(!h.c.tick(2_000_000 + 9_001).is_empty());
}

#[test]
fn bad_registrations_and_heartbeats_are_typed_errors() {
    let mut h = Harness::new(ControllerConfig::default());
    let mut r = registration(1, 1, "r1");
    r.shards = 0;
    assert_eq!(h.c.register(&r, 0).unwrap_err().code(), ErrorCode::InvalidRequest);
    let mut r = registration(3, 1, "r1");
    r.node = NodeId(-3);
    assert!(h.c.register(&r, 0).is_err());
    let mut r = registration(1, 1, "r1");
    r.address.clear();
    assert!(h.c.register(&r, 0).is_err());
    let hb = Heartbeat {
        node: NodeId(4),
        epoch: BrokerEpoch(1),
        metadata_offset: 0,
        want_fence: false,
        want_shutdown: false,
    };
    assert_eq!(
        h.c.heartbeat(&hb, 0).unwrap_err().code(),
        ErrorCode::BrokerIdNotRegistered
    );
    assert!(h.c.view().brokers().next().is_none(), "nothing recorded");
}

#[test]
fn an_imported_data_directory_keeps_its_ids() {
    let mut h = Harness::new(ControllerConfig::default());
    h.start(1);
    let imported = [
        ImportedTopic {
            id: TopicId(3),
            name: "orders".into(),
            partitions: 4,
            configs: vec![("retention.ms".into(), "60000".into())],
        },
        ImportedTopic {
            id: TopicId(1),
            name: "__consumer_offsets".into(),
            partitions: 2,
            configs: vec![],
        },
    ];
    let batch = h.c.import_topics(&imported, TopicId(9), NodeId(1)).unwrap();
    h.propose(batch);
    h.commit();
    let img = h.c.committed();
    let t = img.topic_by_name("orders").unwrap();
    assert_eq!((t.id, t.partitions.len()), (TopicId(3), 4));
    assert!(t
        .partitions
        .iter()
        .all(|p| p.leader == NodeId(1) && p.replicas == vec![NodeId(1)]));
    assert_eq!(t.configs["retention.ms"], "60000");
    assert_eq!(
        img.next_topic_id(),
        TopicId(9),
        "ids of deleted topics stay taken"
    );
    assert!(h.create("new", 1, 1).unwrap() >= TopicId(9));
    // Importing again is refused and changes nothing.
    assert_eq!(
        h.c.import_topics(&imported[..1], TopicId(9), NodeId(1))
            .unwrap_err()
            .code(),
        ErrorCode::TopicAlreadyExists
    );
}

#[test]
fn counters_at_their_limit_are_refused_not_overflowed() {
    // The log (that is, peers) can hold counters at their largest value:
    // the controller refuses what would need the next one, with a typed
    // error, and records nothing.
    let mut h = Harness::new(ControllerConfig::default());
    h.start(1);
    let batch = h.c.import_topics(&[], TopicId(u64::MAX), NodeId(1)).unwrap();
    h.propose(batch);
    h.commit();
    assert_eq!(h.c.view().next_topic_id(), TopicId(u64::MAX));
    let err = h.create("late", 1, 1).unwrap_err();
    assert_eq!(err, ControllerError::Exhausted("topic ids"));
    let imported = ImportedTopic {
        id: TopicId(u64::MAX),
        name: "max".into(),
        partitions: 1,
        configs: vec![],
    };
    assert_eq!(
        h.c.import_topics(&[imported], TopicId(1), NodeId(1)),
        Err(ControllerError::Exhausted("topic ids"))
    );

    let mut image = MetadataImage::default();
    let last = borges_meta::record::RegisterBroker {
        node: NodeId(1),
        incarnation: 1,
        epoch: BrokerEpoch(i64::MAX - 1),
        address: "127.0.0.1:9092".into(),
        rack: None,
        shards: 1,
        log_dirs: vec![1],
    };
    assert_eq!(
        image.apply_batch(1, &[MetadataRecord::RegisterBroker(last)]),
        vec![]
    );
    let mut c = Controller::new(ControllerConfig::default(), image);
    c.become_active(0);
    let before = c.view().clone();
    assert_eq!(
        c.register(&registration(2, 2, "r"), 0),
        Err(ControllerError::Exhausted("broker epochs"))
    );
    assert_eq!(c.view(), &before, "a refusal changes nothing");
    // The same incarnation retrying still gets its epoch back.
    let same = Registration {
        node: NodeId(1),
        incarnation: 1,
        address: "127.0.0.1:9092".into(),
        rack: None,
        shards: 1,
        log_dirs: vec![1],
    };
    assert_eq!(c.register(&same, 0).unwrap().0, BrokerEpoch(i64::MAX - 1));
}

#[test]
fn a_decision_stays_within_what_one_entry_can_carry() {
    use borges_meta::quorum::wire::MAX_PAYLOAD;
    use borges_meta::record::decode_batch;
    let config = ControllerConfig {
        max_partitions: 2_000_000,
        ..ControllerConfig::default()
    };
    let mut h = Harness::new(config);
    h.start(1);
    let topic = |name: &str, partitions: i32| NewTopic {
        name: name.into(),
        partitions,
        replication_factor: 1,
        configs: vec![],
    };
    // More partitions than one batch may hold: refused, nothing recorded.
    let (results, batch) =
        h.c.create_topics(&[topic("wide", 1_100_000)], false, &mut h.rng)
            .unwrap();
    assert!(
        matches!(results[0], Err(ControllerError::DecisionTooLarge(_))),
        "{:?}",
        results[0]
    );
    assert_eq!(
        results[0].as_ref().unwrap_err().code(),
        ErrorCode::PolicyViolation
    );
    assert!(batch.is_empty());
    // Several topics: those that fit are created, the rest refused.
    let n = (MAX_DECISION_RECORDS / 20_000) as i32 + 1;
    let requests: Vec<NewTopic> = (0..n).map(|i| topic(&format!("t{i}"), 19_999)).collect();
    let (results, batch) = h.c.create_topics(&requests, false, &mut h.rng).unwrap();
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, MAX_DECISION_RECORDS / 20_000);
    assert!(matches!(
        results.last().unwrap(),
        Err(ControllerError::DecisionTooLarge(_))
    ));
    assert!(batch.len() <= MAX_DECISION_RECORDS);
    let bytes = borges_meta::record::encode_batch(&batch);
    assert!(bytes.len() <= MAX_DECISION_BYTES && MAX_DECISION_BYTES < MAX_PAYLOAD);
    assert_eq!(decode_batch(&bytes).unwrap().len(), batch.len());
    h.propose(batch);
    h.commit();
}

#[test]
fn the_cluster_holds_at_most_its_partition_limit() {
    let config = ControllerConfig {
        max_partitions: 1_000_000,
        ..ControllerConfig::default()
    };
    let mut h = Harness::new(config);
    h.start(1);
    let each = (MAX_DECISION_RECORDS - 10) as i32;
    let mut made = 0;
    let err = loop {
        match h.create(&format!("t{made}"), each, 1) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made * (each as usize) <= MAX_CLUSTER_PARTITIONS);
    };
    assert!(
        matches!(err, ControllerError::ClusterPartitionLimit { .. }),
        "{err:?}"
    );
    assert_eq!(made, MAX_CLUSTER_PARTITIONS / each as usize);
    let total = h.c.committed().partitions().count();
    assert!(total + each as usize > MAX_CLUSTER_PARTITIONS);
    // What still fits is created.
    let room = (MAX_CLUSTER_PARTITIONS - total) as i32;
    h.create("last", room, 1).unwrap();
    assert_eq!(h.c.committed().partitions().count(), MAX_CLUSTER_PARTITIONS);
    assert!(matches!(
        h.create("over", 1, 1),
        Err(ControllerError::ClusterPartitionLimit { .. })
    ));
}

#[test]
fn settings_are_bounded_by_what_one_decision_and_the_image_can_carry() {
    let mut h = Harness::new(ControllerConfig::default());
    h.start(1);
    h.create("t", 1, 1).unwrap();
    let huge: Vec<(String, Option<String>)> = (0..1_000)
        .map(|i| (format!("k{i}"), Some("v".repeat(30_000))))
        .collect();
    let err = match h.c.alter_configs("t", &huge, false) {
        Ok(batch) => panic!("{} records accepted", batch.len()),
        Err(e) => e,
    };
    assert!(matches!(err, ControllerError::DecisionTooLarge(_)), "{err:?}");
    let t = NewTopic {
        name: "u".into(),
        partitions: 1,
        replication_factor: 1,
        configs: huge
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap()))
            .collect(),
    };
    let (results, batch) = h.c.create_topics(&[t], false, &mut h.rng).unwrap();
    assert!(matches!(results[0], Err(ControllerError::DecisionTooLarge(_))));
    assert!(batch.is_empty());
    // Many decisions that each fit still cannot grow the image past what
    // a snapshot may hold.
    let some: Vec<(String, Option<String>)> = huge[..400].to_vec();
    let mut topics = 0;
    let err = loop {
        let name = format!("c{topics}");
        h.create(&name, 1, 1).unwrap();
        match h.c.alter_configs(&name, &some, false) {
            Ok(batch) => {
                h.propose(batch);
                h.commit();
                topics += 1;
            }
            Err(e) => break e,
        }
        assert!(topics < 100, "the image grew without bound");
    };
    assert!(matches!(err, ControllerError::ImageTooLarge { .. }), "{err:?}");
    let snap = h.c.committed().encode_snapshot();
    assert!(snap.len() <= MAX_IMAGE_BYTES + 64, "{} bytes", snap.len());
    MetadataImage::decode_snapshot(&snap).unwrap();
}
