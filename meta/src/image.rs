//! The metadata image: what every broker knows of the cluster, built by
//! applying the committed records in log order.
//!
//! Applying is check-then-change: a record that does not fit the image (a
//! partition of an unknown topic, a leader outside the ISR, a stale broker
//! epoch) is refused with an [`ApplyError`] and changes nothing. The
//! controller only proposes records that apply, so an error here means a
//! bug or a damaged log; the broker counts and logs it and goes on, as
//! KRaft's metadata loader does.
//!
//! The image snapshots itself as the records that rebuild it (as KRaft's
//! snapshots do), framed with the counters and a CRC32C, so that a lagging
//! or new node catches up without the whole log.

use std::collections::BTreeMap;

use borges_net::types::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, TopicId};
use thiserror::Error;

use crate::record::{
    encode_batch, encode_record, DecodeError, LeaderChange, MetadataRecord, PartitionChange, PartitionRecord,
    Reader, RegisterBroker, MAX_REPLICAS,
};

/// A broker as the image knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub reg: RegisterBroker,
    /// Fenced brokers lead nothing; a broker registers fenced and is
    /// unfenced once it has caught up with the metadata log.
    pub fenced: bool,
    pub shutting_down: bool,
    /// The log index the registration was applied at: the broker must have
    /// applied the log this far before it is unfenced.
    pub registered_at: u64,
}

impl BrokerInfo {
    /// Whether the broker may lead and be in an ISR.
    pub fn eligible(&self) -> bool {
        !self.fenced && !self.shutting_down
    }

    /// The state name `borges cluster describe` prints.
    pub fn state_name(&self) -> &'static str {
        if self.shutting_down {
            "shutting_down"
        } else if self.fenced {
            "fenced"
        } else {
            "alive"
        }
    }
}

/// One partition's replicas, leader and ISR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// `NodeId::NONE` when offline.
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

impl PartitionState {
    pub fn has_leader(&self) -> bool {
        self.leader != NodeId::NONE
    }

    pub fn preferred(&self) -> NodeId {
        self.replicas[0]
    }
}

/// A topic: its name, settings that differ from the defaults, partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub id: TopicId,
    pub name: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

/// Why a record did not apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    #[error("record for broker {node} names epoch {record}, the broker's is {current}")]
    StaleBrokerEpoch {
        node: NodeId,
        record: BrokerEpoch,
        current: BrokerEpoch,
    },
    #[error("no topic has id {0}")]
    UnknownTopic(TopicId),
    #[error("topic id {0} is already in use")]
    DuplicateTopicId(TopicId),
    #[error("a topic named {0:?} already exists")]
    DuplicateTopicName(String),
    #[error(
        "topic {topic} has {count} partitions; partition {partition} is not the next or an existing one"
    )]
    PartitionGap {
        topic: TopicId,
        partition: u32,
        count: u32,
    },
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: TopicId, partition: u32 },
    #[error("partition {topic}:{partition}: {why}")]
    InvalidPartition {
        topic: TopicId,
        partition: u32,
        why: &'static str,
    },
    #[error("invalid topic name {0:?}")]
    InvalidTopicName(String),
    /// A counter the record would move past its largest value.
    #[error("{0} out of range")]
    Overflow(&'static str),
}

/// Why a snapshot did not load.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnapshotError {
    #[error("snapshot does not start with the metadata magic")]
    BadMagic,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("snapshot record does not apply: {0}")]
    Apply(#[from] ApplyError),
}

/// Most records a snapshot may hold. Not [`crate::record::MAX_BATCH_RECORDS`]:
/// the image is the sum of every decision, and a node must be able to load
/// any snapshot it took. What bounds a snapshot's size is the controller's
/// cluster-wide limits and the bytes a snapshot may take on the wire and
/// in the journal.
pub const MAX_SNAPSHOT_RECORDS: usize = 1 << 26;

const SNAPSHOT_MAGIC: &[u8; 4] = b"BGMI";
const SNAPSHOT_VERSION: u8 = 0;

/// The cluster's metadata at one point of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    /// The log index of the last batch applied (0: none).
    pub applied: u64,
    brokers: BTreeMap<NodeId, BrokerInfo>,
    topics: BTreeMap<TopicId, TopicImage>,
    names: BTreeMap<String, TopicId>,
    /// Topic ids are never reused, even after the topic is deleted.
    next_topic_id: u64,
    /// Broker epochs only grow, across all brokers.
    next_broker_epoch: i64,
}

impl Default for MetadataImage {
    fn default() -> Self {
        MetadataImage {
            applied: 0,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            names: BTreeMap::new(),
            next_topic_id: 1,
            next_broker_epoch: 1,
        }
    }
}

/// Checks what must hold of every partition: replicas distinct and
/// non-empty, the ISR a non-empty subset of them, the leader in the ISR or
/// none.
pub fn check_partition(replicas: &[NodeId], isr: &[NodeId], leader: NodeId) -> Result<(), &'static str> {
    if replicas.is_empty() {
        return Err("no replicas");
    }
    if replicas.len() > MAX_REPLICAS {
        return Err("too many replicas");
    }
    if has_duplicates(replicas) {
        return Err("a replica is listed twice");
    }
    if replicas.contains(&NodeId::NONE) {
        return Err("a replica is node -1");
    }
    if isr.is_empty() {
        return Err("empty ISR");
    }
    if has_duplicates(isr) {
        return Err("an ISR member is listed twice");
    }
    if !isr.iter().all(|n| replicas.contains(n)) {
        return Err("an ISR member is not a replica");
    }
    if leader != NodeId::NONE && !isr.contains(&leader) {
        return Err("the leader is not in the ISR");
    }
    Ok(())
}

fn has_duplicates(nodes: &[NodeId]) -> bool {
    nodes.iter().enumerate().any(|(i, n)| nodes[..i].contains(n))
}

/// Kafka's rules for a topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.`
/// or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl MetadataImage {
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values()
    }

    pub fn broker(&self, node: NodeId) -> Option<&BrokerInfo> {
        self.brokers.get(&node)
    }

    /// Brokers that may lead and host new replicas: unfenced and not
    /// shutting down, in node id order.
    pub fn eligible_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| b.eligible())
    }

    pub fn is_eligible(&self, node: NodeId) -> bool {
        self.brokers.get(&node).is_some_and(BrokerInfo::eligible)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn topic(&self, id: TopicId) -> Option<&TopicImage> {
        self.topics.get(&id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.names.get(name).and_then(|id| self.topics.get(id))
    }

    pub fn partition(&self, topic: TopicId, partition: u32) -> Option<&PartitionState> {
        self.topics.get(&topic)?.partitions.get(partition as usize)
    }

    /// Every partition, in topic id then index order.
    pub fn partitions(&self) -> impl Iterator<Item = (TopicId, u32, &PartitionState)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (t.id, i as u32, p))
        })
    }

    /// The id the next topic gets.
    pub fn next_topic_id(&self) -> TopicId {
        TopicId(self.next_topic_id)
    }

    /// The epoch the next registration gets.
    pub fn next_broker_epoch(&self) -> BrokerEpoch {
        BrokerEpoch(self.next_broker_epoch)
    }

    /// Partitions led by `node`.
    pub fn led_by(&self, node: NodeId) -> usize {
        self.partitions().filter(|(_, _, p)| p.leader == node).count()
    }

    pub fn offline_partitions(&self) -> usize {
        self.partitions().filter(|(_, _, p)| !p.has_leader()).count()
    }

    pub fn under_replicated_partitions(&self) -> usize {
        self.partitions()
            .filter(|(_, _, p)| p.isr.len() < p.replicas.len())
            .count()
    }

    /// Applies the records of the batch at log `index`, in order. A record
    /// that does not apply is skipped (and reported); the rest still apply.
    pub fn apply_batch(&mut self, index: u64, batch: &[MetadataRecord]) -> Vec<ApplyError> {
        let errors = batch.iter().filter_map(|r| self.apply(index, r).err()).collect();
        self.applied = self.applied.max(index);
        errors
    }

    /// Applies one record from the batch at log `index`; on error nothing
    /// changes.
    pub fn apply(&mut self, index: u64, rec: &MetadataRecord) -> Result<(), ApplyError> {
        match rec {
            MetadataRecord::RegisterBroker(r) => {
                let next = r
                    .epoch
                    .0
                    .checked_add(1)
                    .ok_or(ApplyError::Overflow("broker epoch"))?;
                self.next_broker_epoch = self.next_broker_epoch.max(next);
                self.brokers.insert(
                    r.node,
                    BrokerInfo {
                        reg: r.clone(),
                        fenced: true,
                        shutting_down: false,
                        registered_at: index,
                    },
                );
            }
            MetadataRecord::FenceBroker { node, epoch } => self.broker_mut(*node, *epoch)?.fenced = true,
            MetadataRecord::UnfenceBroker { node, epoch } => {
                let b = self.broker_mut(*node, *epoch)?;
                b.fenced = false;
                b.shutting_down = false;
            }
            MetadataRecord::BrokerShuttingDown { node, epoch } => {
                self.broker_mut(*node, *epoch)?.shutting_down = true
            }
            MetadataRecord::Topic { id, name } => {
                if !valid_topic_name(name) {
                    return Err(ApplyError::InvalidTopicName(name.clone()));
                }
                if self.topics.contains_key(id) {
                    return Err(ApplyError::DuplicateTopicId(*id));
                }
                if self.names.contains_key(name) {
                    return Err(ApplyError::DuplicateTopicName(name.clone()));
                }
                let next = id.0.checked_add(1).ok_or(ApplyError::Overflow("topic id"))?;
                self.next_topic_id = self.next_topic_id.max(next);
                self.names.insert(name.clone(), *id);
                self.topics.insert(
                    *id,
                    TopicImage {
                        id: *id,
                        name: name.clone(),
                        configs: BTreeMap::new(),
                        partitions: Vec::new(),
                    },
                );
            }
            MetadataRecord::Config { topic, key, value } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::UnknownTopic(*topic))?;
                match value {
                    Some(v) => t.configs.insert(key.clone(), v.clone()),
                    None => t.configs.remove(key),
                };
            }
            MetadataRecord::Partition(p) => self.apply_partition(p)?,
            MetadataRecord::PartitionChange(c) => self.apply_change(c)?,
            MetadataRecord::RemoveTopic { id } => {
                let t = self.topics.remove(id).ok_or(ApplyError::UnknownTopic(*id))?;
                self.names.remove(&t.name);
            }
            MetadataRecord::ReserveTopicIds { next } => self.next_topic_id = self.next_topic_id.max(next.0),
        }
        Ok(())
    }

    fn broker_mut(&mut self, node: NodeId, epoch: BrokerEpoch) -> Result<&mut BrokerInfo, ApplyError> {
        let b = self
            .brokers
            .get_mut(&node)
            .ok_or(ApplyError::UnknownBroker(node))?;
        if b.reg.epoch != epoch {
            return Err(ApplyError::StaleBrokerEpoch {
                node,
                record: epoch,
                current: b.reg.epoch,
            });
        }
        Ok(b)
    }

    fn apply_partition(&mut self, p: &PartitionRecord) -> Result<(), ApplyError> {
        let t = self
            .topics
            .get_mut(&p.topic)
            .ok_or(ApplyError::UnknownTopic(p.topic))?;
        let count = t.partitions.len() as u32;
        if p.partition > count {
            return Err(ApplyError::PartitionGap {
                topic: p.topic,
                partition: p.partition,
                count,
            });
        }
        check_partition(&p.replicas, &p.isr, p.leader).map_err(|why| ApplyError::InvalidPartition {
            topic: p.topic,
            partition: p.partition,
            why,
        })?;
        let state = PartitionState {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: LeaderEpoch(p.leader_epoch),
            partition_epoch: PartitionEpoch(p.partition_epoch),
        };
        if p.partition == count {
            t.partitions.push(state);
        } else {
            t.partitions[p.partition as usize] = state;
        }
        Ok(())
    }

    fn apply_change(&mut self, c: &PartitionChange) -> Result<(), ApplyError> {
        let p = self
            .topics
            .get_mut(&c.topic)
            .ok_or(ApplyError::UnknownTopic(c.topic))?
            .partitions
            .get_mut(c.partition as usize)
            .ok_or(ApplyError::UnknownPartition {
                topic: c.topic,
                partition: c.partition,
            })?;
        let replicas = c.replicas.as_ref().unwrap_or(&p.replicas);
        let isr = c.isr.as_ref().unwrap_or(&p.isr);
        let leader = match c.leader {
            LeaderChange::Unchanged => p.leader,
            LeaderChange::To(n) => n,
        };
        check_partition(replicas, isr, leader).map_err(|why| ApplyError::InvalidPartition {
            topic: c.topic,
            partition: c.partition,
            why,
        })?;
        let leader_epoch = if leader != p.leader {
            p.leader_epoch
                .0
                .checked_add(1)
                .ok_or(ApplyError::Overflow("leader epoch"))?
        } else {
            p.leader_epoch.0
        };
        let partition_epoch = p
            .partition_epoch
            .0
            .checked_add(1)
            .ok_or(ApplyError::Overflow("partition epoch"))?;
        p.leader_epoch = LeaderEpoch(leader_epoch);
        p.partition_epoch = PartitionEpoch(partition_epoch);
        p.leader = leader;
        if let Some(r) = &c.replicas {
            p.replicas = r.clone();
        }
        if let Some(i) = &c.isr {
            p.isr = i.clone();
        }
        Ok(())
    }

    /// The records that rebuild this image from an empty one.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        self.for_each_record(|r| out.push(r));
        out
    }

    /// The bytes [`MetadataImage::encode_snapshot`] would write, without
    /// writing them.
    pub fn snapshot_len(&self) -> usize {
        let mut scratch = Vec::new();
        let mut len = SNAPSHOT_MAGIC.len() + 1 + 24 + 4 + 4;
        self.for_each_record(|r| {
            scratch.clear();
            encode_record(&r, &mut scratch);
            len += 4 + scratch.len();
        });
        len
    }

    /// Calls `f` with each record of [`MetadataImage::to_records`], in order.
    fn for_each_record(&self, mut f: impl FnMut(MetadataRecord)) {
        for b in self.brokers.values() {
            f(MetadataRecord::RegisterBroker(b.reg.clone()));
            let (node, epoch) = (b.reg.node, b.reg.epoch);
            if !b.fenced {
                f(MetadataRecord::UnfenceBroker { node, epoch });
            }
            if b.shutting_down {
                f(MetadataRecord::BrokerShuttingDown { node, epoch });
            }
        }
        for t in self.topics.values() {
            f(MetadataRecord::Topic {
                id: t.id,
                name: t.name.clone(),
            });
            for (key, value) in &t.configs {
                f(MetadataRecord::Config {
                    topic: t.id,
                    key: key.clone(),
                    value: Some(value.clone()),
                });
            }
            for (i, p) in t.partitions.iter().enumerate() {
                f(MetadataRecord::Partition(PartitionRecord {
                    topic: t.id,
                    partition: i as u32,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch.0,
                    partition_epoch: p.partition_epoch.0,
                }));
            }
        }
    }

    /// The snapshot: magic, version, the applied index and counters, the
    /// records, and a CRC32C of all that precedes it.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&self.applied.to_be_bytes());
        out.extend_from_slice(&self.next_topic_id.to_be_bytes());
        out.extend_from_slice(&self.next_broker_epoch.to_be_bytes());
        out.extend_from_slice(&encode_batch(&self.to_records()));
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Loads a snapshot written by [`MetadataImage::encode_snapshot`].
    /// Registrations come back as applied at the snapshot's index.
    pub fn decode_snapshot(buf: &[u8]) -> Result<MetadataImage, SnapshotError> {
        if buf.len() < SNAPSHOT_MAGIC.len() || &buf[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        if buf.len() < 4 + 1 + 24 + 4 + 4 {
            return Err(DecodeError::Truncated {
                at: buf.len(),
                needed: 37 - buf.len(),
            }
            .into());
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        let stored = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed }.into());
        }
        let mut r = Reader::new(&body[4..]);
        let version = r.u8()?;
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError::UnsupportedVersion { kind: 0, version }.into());
        }
        let applied = r.u64()?;
        let next_topic_id = r.u64()?;
        let next_broker_epoch = r.i64()?;
        let records = r.records("snapshot", MAX_SNAPSHOT_RECORDS)?;
        r.finish()?;
        let mut image = MetadataImage::default();
        for rec in &records {
            image.apply(applied, rec)?;
        }
        image.applied = applied;
        image.next_topic_id = image.next_topic_id.max(next_topic_id);
        image.next_broker_epoch = image.next_broker_epoch.max(next_broker_epoch);
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(node: i32, epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker(RegisterBroker {
            node: NodeId(node),
            incarnation: node as u128,
            epoch: BrokerEpoch(epoch),
            address: format!("127.0.0.{node}:9092"),
            rack: None,
            shards: 2,
            log_dirs: vec![node as u128],
        })
    }

    fn part(topic: u64, partition: u32, replicas: &[i32], leader: i32) -> MetadataRecord {
        let replicas: Vec<NodeId> = replicas.iter().map(|&n| NodeId(n)).collect();
        MetadataRecord::Partition(PartitionRecord {
            topic: TopicId(topic),
            partition,
            isr: replicas.clone(),
            replicas,
            leader: NodeId(leader),
            leader_epoch: 0,
            partition_epoch: 0,
        })
    }

    fn sample() -> MetadataImage {
        let mut img = MetadataImage::default();
        let batch = vec![
            reg(1, 1),
            reg(2, 2),
            MetadataRecord::UnfenceBroker {
                node: NodeId(1),
                epoch: BrokerEpoch(1),
            },
            MetadataRecord::Topic {
                id: TopicId(5),
                name: "t".into(),
            },
            MetadataRecord::Config {
                topic: TopicId(5),
                key: "retention.ms".into(),
                value: Some("10".into()),
            },
            part(5, 0, &[1, 2], 1),
            part(5, 1, &[2, 1], 2),
        ];
        assert_eq!(img.apply_batch(3, &batch), vec![]);
        img
    }

    #[test]
    fn applies_registrations_topics_and_partitions() {
        let img = sample();
        assert_eq!(img.applied, 3);
        assert!(!img.broker(NodeId(1)).unwrap().fenced);
        assert!(img.broker(NodeId(2)).unwrap().fenced);
        assert_eq!(img.broker(NodeId(2)).unwrap().registered_at, 3);
        assert_eq!(img.next_broker_epoch(), BrokerEpoch(3));
        assert_eq!(img.next_topic_id(), TopicId(6));
        assert_eq!(img.topic_by_name("t").unwrap().partitions.len(), 2);
        assert_eq!(img.led_by(NodeId(2)), 1);
    }

    #[test]
    fn a_change_bumps_epochs_and_a_bad_one_changes_nothing() {
        let mut img = sample();
        let change = |leader, isr: Option<Vec<i32>>| {
            MetadataRecord::PartitionChange(PartitionChange {
                topic: TopicId(5),
                partition: 0,
                leader,
                isr: isr.map(|v| v.into_iter().map(NodeId).collect()),
                replicas: None,
            })
        };
        img.apply(4, &change(LeaderChange::Unchanged, Some(vec![1])))
            .unwrap();
        let p = img.partition(TopicId(5), 0).unwrap();
        assert_eq!((p.leader_epoch.0, p.partition_epoch.0), (0, 1));
        img.apply(5, &change(LeaderChange::To(NodeId::NONE), None))
            .unwrap();
        let p = img.partition(TopicId(5), 0).unwrap();
        assert_eq!((p.leader_epoch.0, p.partition_epoch.0), (1, 2));

        let before = img.clone();
        // The leader must be in the ISR.
        assert!(matches!(
            img.apply(6, &change(LeaderChange::To(NodeId(2)), None)),
            Err(ApplyError::InvalidPartition { .. })
        ));
        // The ISR must be within the replicas.
        assert!(img
            .apply(6, &change(LeaderChange::Unchanged, Some(vec![3])))
            .is_err());
        assert!(img
            .apply(6, &change(LeaderChange::Unchanged, Some(vec![])))
            .is_err());
        assert!(img.apply(6, &part(5, 3, &[1], 1)).is_err(), "gap");
        assert!(img.apply(6, &part(9, 0, &[1], 1)).is_err(), "no such topic");
        assert!(
            img.apply(6, &part(5, 2, &[1, 1], 1)).is_err(),
            "duplicate replica"
        );
        let stale = MetadataRecord::FenceBroker {
            node: NodeId(1),
            epoch: BrokerEpoch(9),
        };
        assert!(matches!(
            img.apply(6, &stale),
            Err(ApplyError::StaleBrokerEpoch { .. })
        ));
        let dup = MetadataRecord::Topic {
            id: TopicId(8),
            name: "t".into(),
        };
        assert_eq!(
            img.apply(6, &dup),
            Err(ApplyError::DuplicateTopicName("t".into()))
        );
        assert_eq!(img, before);
    }

    #[test]
    fn snapshot_round_trips_and_keeps_counters() {
        let mut img = sample();
        img.apply(4, &MetadataRecord::RemoveTopic { id: TopicId(5) })
            .unwrap();
        img.applied = 4;
        let snap = img.encode_snapshot();
        let back = MetadataImage::decode_snapshot(&snap).unwrap();
        assert_eq!(
            back.next_topic_id(),
            TopicId(6),
            "a deleted topic's id is not reused"
        );
        assert_eq!(back.to_records(), img.to_records());
        let full = sample();
        let back = MetadataImage::decode_snapshot(&full.encode_snapshot()).unwrap();
        assert_eq!(back, full);
    }

    #[test]
    fn a_snapshot_of_more_records_than_one_batch_holds_loads() {
        // A snapshot is not a batch: an image of more records than one
        // controller decision may carry must still load, or a node that
        // took the snapshot cannot restart from it.
        let mut img = MetadataImage::default();
        let mut batch = vec![
            reg(1, 1),
            MetadataRecord::Topic {
                id: TopicId(1),
                name: "wide".into(),
            },
        ];
        batch.extend((0..crate::record::MAX_BATCH_RECORDS as u32 + 10).map(|i| {
            MetadataRecord::Partition(PartitionRecord {
                topic: TopicId(1),
                partition: i,
                replicas: vec![NodeId(1)],
                isr: vec![NodeId(1)],
                leader: NodeId(1),
                leader_epoch: 0,
                partition_epoch: 0,
            })
        }));
        assert_eq!(img.apply_batch(2, &batch), vec![]);
        drop(batch);
        let snap = img.encode_snapshot();
        let back = MetadataImage::decode_snapshot(&snap).expect("the snapshot loads");
        assert_eq!(
            back.topic(TopicId(1)).unwrap().partitions.len(),
            crate::record::MAX_BATCH_RECORDS + 10
        );
    }

    #[test]
    fn damaged_snapshots_are_typed_errors() {
        let snap = sample().encode_snapshot();
        for cut in 0..snap.len() {
            assert!(MetadataImage::decode_snapshot(&snap[..cut]).is_err());
        }
        for i in 0..snap.len() {
            let mut bad = snap.clone();
            bad[i] ^= 0x40;
            assert!(
                MetadataImage::decode_snapshot(&bad).is_err(),
                "flip at {i} loaded"
            );
        }
    }

    #[test]
    fn epochs_and_ids_at_their_limit_are_typed_errors_not_overflows() {
        // Records come from the log, that is from peers: a counter already
        // at its largest value must be refused, not wrapped or panicked on.
        let mut img = sample();
        let before = img.clone();
        assert_eq!(
            img.apply(4, &reg(3, i64::MAX)),
            Err(ApplyError::Overflow("broker epoch"))
        );
        let topic = MetadataRecord::Topic {
            id: TopicId(u64::MAX),
            name: "max".into(),
        };
        assert_eq!(img.apply(4, &topic), Err(ApplyError::Overflow("topic id")));
        assert_eq!(img, before, "refused records change nothing");

        let mut at_max = PartitionRecord {
            topic: TopicId(5),
            partition: 2,
            replicas: vec![NodeId(1), NodeId(2)],
            isr: vec![NodeId(1), NodeId(2)],
            leader: NodeId(1),
            leader_epoch: i32::MAX,
            partition_epoch: 0,
        };
        img.apply(4, &MetadataRecord::Partition(at_max.clone())).unwrap();
        let to_two = MetadataRecord::PartitionChange(PartitionChange {
            topic: TopicId(5),
            partition: 2,
            leader: LeaderChange::To(NodeId(2)),
            isr: None,
            replicas: None,
        });
        let before = img.clone();
        assert_eq!(img.apply(5, &to_two), Err(ApplyError::Overflow("leader epoch")));
        at_max.leader_epoch = 0;
        at_max.partition_epoch = i32::MAX;
        img.apply(5, &MetadataRecord::Partition(at_max)).unwrap();
        let before_isr = img.clone();
        let shrink = MetadataRecord::PartitionChange(PartitionChange {
            topic: TopicId(5),
            partition: 2,
            leader: LeaderChange::Unchanged,
            isr: Some(vec![NodeId(1)]),
            replicas: None,
        });
        assert_eq!(
            img.apply(6, &shrink),
            Err(ApplyError::Overflow("partition epoch"))
        );
        assert_eq!(img, before_isr);
        assert_ne!(img, before);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("a.b_c-9"));
        for bad in ["", ".", "..", "a b", "é", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
    }
}
