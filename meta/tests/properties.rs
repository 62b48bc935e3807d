//! Random sequences of requests, ticks, commits and leadership changes:
//! after every step the controller's invariants hold, committed epochs
//! never go back, every proposal applies to the committed image, and the
//! image survives its snapshot. Random bytes never panic the decoders.

use std::collections::BTreeMap;

use borges_meta::controller::*;
use borges_meta::image::{check_partition, MetadataImage};
use borges_meta::record::{decode_batch, decode_record, encode_batch, RecordBatch};
use borges_meta::seams::SplitMix64;
use borges_meta::{BrokerEpoch, NodeId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Register {
        node: i32,
        incarnation: u8,
    },
    Heartbeat {
        node: i32,
        shutdown: bool,
        fence: bool,
    },
    Advance {
        ms: u64,
    },
    Create {
        partitions: i32,
        rf: i16,
    },
    Delete {
        pick: usize,
    },
    ElectPreferred,
    ShrinkOrGrowIsr {
        pick: usize,
        member: i32,
    },
    Commit,
    /// A new Raft term: uncommitted proposals are lost, then this node wins again.
    NewTerm,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..=4i32, 0..3u8).prop_map(|(node, incarnation)| Op::Register { node, incarnation }),
        (1..=4i32, prop::bool::weighted(0.1), prop::bool::weighted(0.05)).prop_map(
            |(node, shutdown, fence)| Op::Heartbeat {
                node,
                shutdown,
                fence
            }
        ),
        (0..12_000u64).prop_map(|ms| Op::Advance { ms }),
        (1..4i32, 1..4i16).prop_map(|(partitions, rf)| Op::Create { partitions, rf }),
        any::<usize>().prop_map(|pick| Op::Delete { pick }),
        Just(Op::ElectPreferred),
        (any::<usize>(), 1..=4i32).prop_map(|(pick, member)| Op::ShrinkOrGrowIsr { pick, member }),
        Just(Op::Commit),
        Just(Op::Commit),
        Just(Op::NewTerm),
    ]
}

struct World {
    c: Controller,
    index: u64,
    now: u64,
    pending: Vec<RecordBatch>,
    rng: SplitMix64,
    names: u32,
    /// Highest committed (leader epoch, partition epoch) per partition.
    epochs: BTreeMap<(u64, u32), (i32, i32)>,
    broker_epochs: BTreeMap<NodeId, BrokerEpoch>,
}

impl World {
    fn epoch_of(&self, node: i32) -> BrokerEpoch {
        self.c
            .view()
            .broker(NodeId(node))
            .map(|b| b.reg.epoch)
            .unwrap_or_default()
    }

    fn step(&mut self, op: &Op) {
        let batch = match op {
            Op::Register { node, incarnation } => {
                let r = Registration {
                    node: NodeId(*node),
                    incarnation: *incarnation as u128,
                    address: format!("127.0.0.{node}:9092"),
                    rack: Some(format!("r{}", node % 2)),
                    shards: 1,
                    log_dirs: vec![*node as u128],
                };
                self.c.register(&r, self.now).map(|(_, b)| b).unwrap_or_default()
            }
            Op::Heartbeat {
                node,
                shutdown,
                fence,
            } => {
                let hb = Heartbeat {
                    node: NodeId(*node),
                    epoch: self.epoch_of(*node),
                    metadata_offset: self.index,
                    want_fence: *fence,
                    want_shutdown: *shutdown,
                };
                self.c
                    .heartbeat(&hb, self.now)
                    .map(|(_, b)| b)
                    .unwrap_or_default()
            }
            Op::Advance { ms } => {
                self.now += ms;
                self.c.tick(self.now)
            }
            Op::Create { partitions, rf } => {
                self.names += 1;
                let t = NewTopic {
                    name: format!("t{}", self.names),
                    partitions: *partitions,
                    replication_factor: *rf,
                    configs: vec![],
                };
                self.c
                    .create_topics(&[t], false, &mut self.rng)
                    .map(|(_, b)| b)
                    .unwrap_or_default()
            }
            Op::Delete { pick } => {
                let names: Vec<String> = self.c.view().topics().map(|t| t.name.clone()).collect();
                if names.is_empty() {
                    return;
                }
                let name = names[pick % names.len()].clone();
                self.c.delete_topics(&[name]).map(|(_, b)| b).unwrap_or_default()
            }
            Op::ElectPreferred => self.c.elect_preferred(None).map(|(_, b)| b).unwrap_or_default(),
            Op::ShrinkOrGrowIsr { pick, member } => {
                let parts: Vec<_> = self
                    .c
                    .view()
                    .partitions()
                    .filter(|(_, _, p)| p.has_leader())
                    .map(|(t, i, p)| (t, i, p.clone()))
                    .collect();
                if parts.is_empty() {
                    return;
                }
                let (topic, partition, p) = parts[pick % parts.len()].clone();
                let m = NodeId(*member);
                let mut isr = p.isr.clone();
                if isr.contains(&m) {
                    isr.retain(|&n| n != m);
                } else {
                    isr.push(m);
                }
                let req = AlterIsr {
                    node: p.leader,
                    broker_epoch: self.epoch_of(p.leader.0),
                    topic,
                    partition,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr,
                };
                self.c.alter_isr(&req).map(|(_, b)| b).unwrap_or_default()
            }
            Op::Commit => {
                self.commit();
                return;
            }
            Op::NewTerm => {
                self.pending.clear();
                self.c.become_inactive();
                self.c.become_active(self.now);
                return;
            }
        };
        self.c
            .check_invariants()
            .unwrap_or_else(|e| panic!("after {op:?}: {e}"));
        if !batch.is_empty() {
            self.pending.push(batch);
        }
    }

    fn commit(&mut self) {
        for batch in std::mem::take(&mut self.pending) {
            self.index += 1;
            let errors = self.c.replay(self.index, &batch);
            assert!(
                errors.is_empty(),
                "a proposal did not apply: {errors:?} in {batch:?}"
            );
        }
        assert_eq!(self.c.view().to_records(), self.c.committed().to_records());
        let img = self.c.committed();
        for (t, i, p) in img.partitions() {
            check_partition(&p.replicas, &p.isr, p.leader).unwrap();
            if p.has_leader() {
                assert!(
                    !img.broker(p.leader).unwrap().fenced,
                    "a fenced broker leads {t}:{i}"
                );
            }
            let now = (p.leader_epoch.0, p.partition_epoch.0);
            if let Some(&(le, pe)) = self.epochs.get(&(t.0, i)) {
                assert!(now.0 >= le && now.1 >= pe, "{t}:{i} epochs went back");
                assert!(now.1 > pe || now == (le, pe));
            }
            self.epochs.insert((t.0, i), now);
        }
        for b in img.brokers() {
            let prev = self.broker_epochs.insert(b.reg.node, b.reg.epoch);
            assert!(prev.is_none_or(|e| e <= b.reg.epoch), "broker epoch went back");
        }
        let back = MetadataImage::decode_snapshot(&img.encode_snapshot()).unwrap();
        assert_eq!(back.to_records(), img.to_records());
        assert_eq!(back.next_topic_id(), img.next_topic_id());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_histories_keep_the_invariants(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..120)) {
        let config = ControllerConfig { max_replication_factor: 3, ..ControllerConfig::default() };
        let mut c = Controller::new(config, MetadataImage::default());
        c.become_active(0);
        let mut w = World {
            c,
            index: 0,
            now: 0,
            pending: Vec::new(),
            rng: SplitMix64::new(seed),
            names: 0,
            epochs: BTreeMap::new(),
            broker_epochs: BTreeMap::new(),
        };
        for op in &ops {
            w.step(op);
        }
        w.commit();
        // Every batch committed round-trips through the codec.
        let records = w.c.committed().to_records();
        prop_assert_eq!(decode_batch(&encode_batch(&records)).unwrap(), records);
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_record(&bytes);
        let _ = decode_batch(&bytes);
        let _ = MetadataImage::decode_snapshot(&bytes);
    }

    #[test]
    fn mutated_batches_never_panic(flip in any::<usize>(), to in any::<u8>()) {
        let mut img = MetadataImage::default();
        let mut c = Controller::new(ControllerConfig { max_replication_factor: 3, ..ControllerConfig::default() }, img.clone());
        c.become_active(0);
        let mut all = Vec::new();
        for n in 1..=3 {
            let r = Registration { node: NodeId(n), incarnation: 1, address: "a:1".into(), rack: None, shards: 1, log_dirs: vec![] };
            all.extend(c.register(&r, 0).unwrap().1);
        }
        img.apply_batch(1, &all);
        let mut bytes = encode_batch(&all);
        let i = flip % bytes.len();
        bytes[i] = to;
        if let Ok(batch) = decode_batch(&bytes) {
            // Whatever decodes applies or is refused; never a panic.
            let _ = MetadataImage::default().apply_batch(1, &batch);
        }
    }
}
