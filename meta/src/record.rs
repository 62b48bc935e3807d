//! The metadata log's records and their binary codec.
//!
//! As in KRaft, the log holds the cluster's facts as small typed records:
//! brokers registering, being fenced, unfenced and shutting down; topics,
//! their settings and partitions; changes to a partition's leader and ISR.
//! Heartbeats are not in the log (they live in the active controller's
//! memory). One Raft entry carries a [`RecordBatch`]: the records of one
//! controller decision, applied together.
//!
//! Encoding: each record is `kind: u8, version: u8, fields`, integers big
//! endian, strings and lists with a `u16`/`u32` length. A decoder that meets
//! anything unexpected (a short buffer, an unknown kind or version, bad
//! UTF-8, a list longer than its limit, trailing bytes) returns a
//! [`DecodeError`]; it never panics and never allocates more than the input
//! could justify.

use borges_net::types::{BrokerEpoch, NodeId, TopicId};

use thiserror::Error;

/// Longest string a record carries (names, addresses, config values).
pub const MAX_STRING: usize = 32 * 1024;
/// Most replicas one partition may list.
pub const MAX_REPLICAS: usize = 64;
/// Most records one batch may hold.
pub const MAX_BATCH_RECORDS: usize = 1 << 20;

/// A broker's registration, as the controller accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBroker {
    pub node: NodeId,
    /// Random per process start: tells a restarted process (or a second one
    /// with the same node id) from a retry of the same registration.
    pub incarnation: u128,
    pub epoch: BrokerEpoch,
    /// `host:port` clients and other brokers connect to.
    pub address: String,
    pub rack: Option<String>,
    /// Cores (shards) the broker runs.
    pub shards: u16,
    /// The ids of its data directories (stable across restarts).
    pub log_dirs: Vec<u128>,
}

/// A partition's whole state, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic: TopicId,
    pub partition: u32,
    /// Preferred order: the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// `NodeId::NONE` when offline.
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// What a [`PartitionChange`] does to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderChange {
    Unchanged,
    /// `NodeId::NONE` makes the partition offline.
    To(NodeId),
}

/// A change to a partition's leader, ISR or replicas. Applying it bumps the
/// partition epoch, and the leader epoch when the leader changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic: TopicId,
    pub partition: u32,
    pub leader: LeaderChange,
    pub isr: Option<Vec<NodeId>>,
    pub replicas: Option<Vec<NodeId>>,
}

/// One fact in the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker(RegisterBroker),
    /// The broker leads nothing and is not eligible for ISR until unfenced.
    FenceBroker {
        node: NodeId,
        epoch: BrokerEpoch,
    },
    UnfenceBroker {
        node: NodeId,
        epoch: BrokerEpoch,
    },
    /// The broker asked for a controlled shutdown: no new leaderships.
    BrokerShuttingDown {
        node: NodeId,
        epoch: BrokerEpoch,
    },
    Topic {
        id: TopicId,
        name: String,
    },
    /// A topic setting; `None` removes it (back to the broker default).
    Config {
        topic: TopicId,
        key: String,
        value: Option<String>,
    },
    Partition(PartitionRecord),
    PartitionChange(PartitionChange),
    RemoveTopic {
        id: TopicId,
    },
    /// Topic ids below `next` are taken (an import from a single-node
    /// broker whose deleted topics used them): none is handed out again.
    ReserveTopicIds {
        next: TopicId,
    },
}

impl MetadataRecord {
    /// The record's kind byte on the wire.
    pub fn kind(&self) -> u8 {
        match self {
            MetadataRecord::RegisterBroker(_) => 1,
            MetadataRecord::FenceBroker { .. } => 2,
            MetadataRecord::UnfenceBroker { .. } => 3,
            MetadataRecord::BrokerShuttingDown { .. } => 4,
            MetadataRecord::Topic { .. } => 5,
            MetadataRecord::Config { .. } => 6,
            MetadataRecord::Partition(_) => 7,
            MetadataRecord::PartitionChange(_) => 8,
            MetadataRecord::RemoveTopic { .. } => 9,
            MetadataRecord::ReserveTopicIds { .. } => 10,
        }
    }
}

/// The records of one controller decision: one Raft entry, applied whole.
pub type RecordBatch = Vec<MetadataRecord>;

/// Why bytes did not decode as metadata.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("metadata truncated: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("unknown metadata record kind {0}")]
    UnknownKind(u8),
    #[error("metadata record kind {kind} has unsupported version {version}")]
    UnsupportedVersion { kind: u8, version: u8 },
    #[error("metadata string at offset {at} is not UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("metadata {what} of length {len} exceeds the limit {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} bytes left over after the metadata")]
    TrailingBytes(usize),
    #[error("invalid metadata value: {0}")]
    Invalid(&'static str),
    #[error("metadata checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    /// A raft message type that exists but must not come from a peer
    /// (leadership transfer, timeout-now, read index).
    #[error("raft message type {0} is not accepted from a peer")]
    RefusedRaftMessage(u8),
}

const VERSION: u8 = 0;

/// Appends the encoding of `rec` to `out`.
pub fn encode_record(rec: &MetadataRecord, out: &mut Vec<u8>) {
    out.push(rec.kind());
    out.push(VERSION);
    match rec {
        MetadataRecord::RegisterBroker(r) => {
            put_i32(out, r.node.0);
            out.extend_from_slice(&r.incarnation.to_be_bytes());
            put_i64(out, r.epoch.0);
            put_str(out, &r.address);
            put_opt_str(out, r.rack.as_deref());
            out.extend_from_slice(&r.shards.to_be_bytes());
            out.extend_from_slice(&(r.log_dirs.len() as u16).to_be_bytes());
            for d in &r.log_dirs {
                out.extend_from_slice(&d.to_be_bytes());
            }
        }
        MetadataRecord::FenceBroker { node, epoch }
        | MetadataRecord::UnfenceBroker { node, epoch }
        | MetadataRecord::BrokerShuttingDown { node, epoch } => {
            put_i32(out, node.0);
            put_i64(out, epoch.0);
        }
        MetadataRecord::Topic { id, name } => {
            put_u64(out, id.0);
            put_str(out, name);
        }
        MetadataRecord::Config { topic, key, value } => {
            put_u64(out, topic.0);
            put_str(out, key);
            put_opt_str(out, value.as_deref());
        }
        MetadataRecord::Partition(p) => {
            put_u64(out, p.topic.0);
            put_u32(out, p.partition);
            put_nodes(out, &p.replicas);
            put_nodes(out, &p.isr);
            put_i32(out, p.leader.0);
            put_i32(out, p.leader_epoch);
            put_i32(out, p.partition_epoch);
        }
        MetadataRecord::PartitionChange(c) => {
            put_u64(out, c.topic.0);
            put_u32(out, c.partition);
            match c.leader {
                LeaderChange::Unchanged => out.push(0),
                LeaderChange::To(n) => {
                    out.push(1);
                    put_i32(out, n.0);
                }
            }
            put_opt_nodes(out, c.isr.as_deref());
            put_opt_nodes(out, c.replicas.as_deref());
        }
        MetadataRecord::RemoveTopic { id } => put_u64(out, id.0),
        MetadataRecord::ReserveTopicIds { next } => put_u64(out, next.0),
    }
}

/// Encodes a batch: a record count, then each record with its length.
pub fn encode_batch(batch: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * batch.len() + 4);
    put_u32(&mut out, batch.len() as u32);
    let mut rec = Vec::new();
    for r in batch {
        rec.clear();
        encode_record(r, &mut rec);
        put_u32(&mut out, rec.len() as u32);
        out.extend_from_slice(&rec);
    }
    out
}

/// Decodes one record that fills `buf` exactly.
pub fn decode_record(buf: &[u8]) -> Result<MetadataRecord, DecodeError> {
    let mut r = Reader::new(buf);
    let rec = r.record()?;
    r.finish()?;
    Ok(rec)
}

/// Decodes a batch written by [`encode_batch`].
pub fn decode_batch(buf: &[u8]) -> Result<RecordBatch, DecodeError> {
    let mut r = Reader::new(buf);
    let batch = r.batch()?;
    r.finish()?;
    Ok(batch)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() <= MAX_STRING, "string too long to encode");
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}
fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}
fn put_nodes(out: &mut Vec<u8>, nodes: &[NodeId]) {
    debug_assert!(nodes.len() <= MAX_REPLICAS, "replica list too long to encode");
    out.extend_from_slice(&(nodes.len() as u16).to_be_bytes());
    for n in nodes {
        put_i32(out, n.0);
    }
}
fn put_opt_nodes(out: &mut Vec<u8>, nodes: Option<&[NodeId]>) {
    match nodes {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            put_nodes(out, n);
        }
    }
}

/// A bounds-checked cursor over metadata bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(DecodeError::Truncated {
                at: self.pos,
                needed: n - left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("a presence flag is neither 0 nor 1")),
        }
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        if len > MAX_STRING {
            return Err(DecodeError::TooLong {
                what: "string",
                len,
                max: MAX_STRING,
            });
        }
        let at = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { at })
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        if self.bool()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    fn nodes(&mut self) -> Result<Vec<NodeId>, DecodeError> {
        let len = self.u16()? as usize;
        if len > MAX_REPLICAS {
            return Err(DecodeError::TooLong {
                what: "replica list",
                len,
                max: MAX_REPLICAS,
            });
        }
        (0..len).map(|_| self.i32().map(NodeId)).collect()
    }

    fn opt_nodes(&mut self) -> Result<Option<Vec<NodeId>>, DecodeError> {
        if self.bool()? {
            self.nodes().map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn record(&mut self) -> Result<MetadataRecord, DecodeError> {
        let kind = self.u8()?;
        let version = self.u8()?;
        if !(1..=10).contains(&kind) {
            return Err(DecodeError::UnknownKind(kind));
        }
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { kind, version });
        }
        Ok(match kind {
            1 => {
                let node = NodeId(self.i32()?);
                let incarnation = self.u128()?;
                let epoch = BrokerEpoch(self.i64()?);
                let address = self.string()?;
                let rack = self.opt_string()?;
                let shards = self.u16()?;
                let dirs = self.u16()? as usize;
                if dirs > MAX_REPLICAS {
                    return Err(DecodeError::TooLong {
                        what: "data directory list",
                        len: dirs,
                        max: MAX_REPLICAS,
                    });
                }
                let log_dirs = (0..dirs).map(|_| self.u128()).collect::<Result<_, _>>()?;
                MetadataRecord::RegisterBroker(RegisterBroker {
                    node,
                    incarnation,
                    epoch,
                    address,
                    rack,
                    shards,
                    log_dirs,
                })
            }
            2..=4 => {
                let node = NodeId(self.i32()?);
                let epoch = BrokerEpoch(self.i64()?);
                match kind {
                    2 => MetadataRecord::FenceBroker { node, epoch },
                    3 => MetadataRecord::UnfenceBroker { node, epoch },
                    _ => MetadataRecord::BrokerShuttingDown { node, epoch },
                }
            }
            5 => MetadataRecord::Topic {
                id: TopicId(self.u64()?),
                name: self.string()?,
            },
            6 => MetadataRecord::Config {
                topic: TopicId(self.u64()?),
                key: self.string()?,
                value: self.opt_string()?,
            },
            7 => MetadataRecord::Partition(PartitionRecord {
                topic: TopicId(self.u64()?),
                partition: self.u32()?,
                replicas: self.nodes()?,
                isr: self.nodes()?,
                leader: NodeId(self.i32()?),
                leader_epoch: self.i32()?,
                partition_epoch: self.i32()?,
            }),
            8 => {
                let topic = TopicId(self.u64()?);
                let partition = self.u32()?;
                let leader = if self.bool()? {
                    LeaderChange::To(NodeId(self.i32()?))
                } else {
                    LeaderChange::Unchanged
                };
                MetadataRecord::PartitionChange(PartitionChange {
                    topic,
                    partition,
                    leader,
                    isr: self.opt_nodes()?,
                    replicas: self.opt_nodes()?,
                })
            }
            9 => MetadataRecord::RemoveTopic {
                id: TopicId(self.u64()?),
            },
            10 => MetadataRecord::ReserveTopicIds {
                next: TopicId(self.u64()?),
            },
            _ => unreachable!("kind checked above"),
        })
    }

    pub(crate) fn batch(&mut self) -> Result<RecordBatch, DecodeError> {
        self.records("record batch", MAX_BATCH_RECORDS)
    }

    /// A record count, at most `max`, then the records (a batch's layout,
    /// which a snapshot shares with its own limit).
    pub(crate) fn records(&mut self, what: &'static str, max: usize) -> Result<RecordBatch, DecodeError> {
        let count = self.u32()? as usize;
        if count > max {
            return Err(DecodeError::TooLong {
                what,
                len: count,
                max,
            });
        }
        // Each record takes at least its 4-byte length and 2-byte header,
        // so a count the input cannot hold fails before anything allocates.
        let left = self.buf.len() - self.pos;
        if count > left / 6 {
            return Err(DecodeError::Truncated {
                at: self.pos,
                needed: count * 6 - left,
            });
        }
        // Grown as records decode: a large count is only as good as the
        // records that follow it.
        let mut out = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let len = self.u32()? as usize;
            let bytes = self.take(len)?;
            out.push(decode_record(bytes)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker(RegisterBroker {
                node: NodeId(3),
                incarnation: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
                epoch: BrokerEpoch(12),
                address: "127.0.0.3:9092".into(),
                rack: Some("r1".into()),
                shards: 16,
                log_dirs: vec![1, 2],
            }),
            MetadataRecord::FenceBroker {
                node: NodeId(3),
                epoch: BrokerEpoch(12),
            },
            MetadataRecord::UnfenceBroker {
                node: NodeId(3),
                epoch: BrokerEpoch(12),
            },
            MetadataRecord::BrokerShuttingDown {
                node: NodeId(3),
                epoch: BrokerEpoch(12),
            },
            MetadataRecord::Topic {
                id: TopicId(7),
                name: "orders".into(),
            },
            MetadataRecord::Config {
                topic: TopicId(7),
                key: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::Config {
                topic: TopicId(7),
                key: "retention.ms".into(),
                value: None,
            },
            MetadataRecord::Partition(PartitionRecord {
                topic: TopicId(7),
                partition: 2,
                replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
                isr: vec![NodeId(1), NodeId(3)],
                leader: NodeId(1),
                leader_epoch: 4,
                partition_epoch: 9,
            }),
            MetadataRecord::PartitionChange(PartitionChange {
                topic: TopicId(7),
                partition: 2,
                leader: LeaderChange::To(NodeId::NONE),
                isr: Some(vec![NodeId(3)]),
                replicas: None,
            }),
            MetadataRecord::PartitionChange(PartitionChange {
                topic: TopicId(7),
                partition: 0,
                leader: LeaderChange::Unchanged,
                isr: None,
                replicas: Some(vec![NodeId(2)]),
            }),
            MetadataRecord::RemoveTopic { id: TopicId(7) },
            MetadataRecord::ReserveTopicIds { next: TopicId(40) },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for rec in samples() {
            let mut buf = Vec::new();
            encode_record(&rec, &mut buf);
            assert_eq!(decode_record(&buf).unwrap(), rec);
        }
        let batch = samples();
        assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let buf = encode_batch(&samples());
        for cut in 0..buf.len() {
            assert!(decode_batch(&buf[..cut]).is_err(), "cut at {cut} decoded");
        }
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(decode_batch(&long), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn unknown_kinds_versions_and_flags_are_refused() {
        assert_eq!(decode_record(&[0, 0]), Err(DecodeError::UnknownKind(0)));
        assert_eq!(decode_record(&[42, 0]), Err(DecodeError::UnknownKind(42)));
        assert_eq!(
            decode_record(&[9, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::UnsupportedVersion { kind: 9, version: 1 })
        );
        let mut buf = Vec::new();
        encode_record(
            &MetadataRecord::Config {
                topic: TopicId(1),
                key: "k".into(),
                value: None,
            },
            &mut buf,
        );
        *buf.last_mut().unwrap() = 2;
        assert!(matches!(decode_record(&buf), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn huge_lengths_fail_without_allocating() {
        // A batch claiming 2^20 records in 10 bytes.
        let mut buf = vec![0, 16, 0, 0];
        buf.extend_from_slice(&[0; 6]);
        assert!(matches!(decode_batch(&buf), Err(DecodeError::Truncated { .. })));
        // A string claiming 4 GiB.
        let buf = [5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(decode_record(&buf), Err(DecodeError::TooLong { .. })));
        // Bad UTF-8 in a topic name.
        let buf = [5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xff];
        assert!(matches!(
            decode_record(&buf),
            Err(DecodeError::InvalidUtf8 { .. })
        ));
    }
}
