//! The records the coordinator keeps in `__consumer_offsets`.
//!
//! Every record's key says what it is about, so that compaction keeps the
//! latest record per committed partition and per group; a record with no
//! value (a tombstone) deletes what its key names.
//!
//! Key, version 0, big-endian, strings as a `u16` length and UTF-8:
//! - `u16 0`, group, topic, `u32` partition: a committed offset;
//! - `u16 1`, group: the group's metadata.
//!
//! Offset value: `u16 0` (version), `i64` offset, `i32` leader epoch,
//! nullable string metadata (`u16` length, `0xffff` for null), `i64` commit
//! time in ms.
//!
//! Group value: `u16 0` (version), protocol type, `i32` generation, nullable
//! protocol, nullable leader, `u32` member count, then per member: id,
//! nullable instance id, client id, client host, `i32` session timeout ms,
//! `i32` rebalance timeout ms, `u32`-length subscription metadata (of the
//! chosen protocol), `u32`-length assignment.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const KEY_OFFSET: u16 = 0;
const KEY_GROUP: u16 = 1;
const VALUE_VERSION: u16 = 0;

/// What a record of `__consumer_offsets` is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: u32,
    },
    Group {
        group: String,
    },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// A member as persisted with its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberValue>,
}

/// A record that could not be read: the coordinator skips it and says so.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown record key type {0}")]
    UnknownKey(u16),
    #[error("unknown value version {0}")]
    UnknownVersion(u16),
    #[error("a string is not UTF-8")]
    Utf8,
    #[error("{0} bytes left over")]
    Trailing(usize),
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Strings here are bounded by the protocol's limits (32767 bytes).
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX - 1).min(u16::MAX - 1);
    out.put_u16(len);
    out.put_slice(&s.as_bytes()[..len as usize]);
}

fn put_opt_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => out.put_u16(u16::MAX),
        Some(s) => put_str(out, s),
    }
}

fn put_blob(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

struct In(Bytes);

impl In {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.0.remaining() < n {
            return Err(RecordError::Truncated);
        }
        Ok(())
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn str_of(&mut self, len: usize) -> Result<String, RecordError> {
        self.need(len)?;
        let b = self.0.split_to(len);
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::Utf8)
    }
    fn str(&mut self) -> Result<String, RecordError> {
        let len = self.u16()? as usize;
        self.str_of(len)
    }
    fn opt_str(&mut self) -> Result<Option<String>, RecordError> {
        match self.u16()? {
            u16::MAX => Ok(None),
            len => self.str_of(len as usize).map(Some),
        }
    }
    fn blob(&mut self) -> Result<Bytes, RecordError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
    fn finish(self) -> Result<(), RecordError> {
        match self.0.remaining() {
            0 => Ok(()),
            n => Err(RecordError::Trailing(n)),
        }
    }
}

impl RecordKey {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        match self {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_u16(KEY_OFFSET);
                put_str(&mut out, group);
                put_str(&mut out, topic);
                out.put_u32(*partition);
            }
            RecordKey::Group { group } => {
                out.put_u16(KEY_GROUP);
                put_str(&mut out, group);
            }
        }
        out.freeze()
    }

    pub fn decode(b: Bytes) -> Result<RecordKey, RecordError> {
        let mut r = In(b);
        let key = match r.u16()? {
            KEY_OFFSET => RecordKey::Offset {
                group: r.str()?,
                topic: r.str()?,
                partition: r.u32()?,
            },
            KEY_GROUP => RecordKey::Group { group: r.str()? },
            other => return Err(RecordError::UnknownKey(other)),
        };
        r.finish()?;
        Ok(key)
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32);
        out.put_u16(VALUE_VERSION);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_opt_str(&mut out, self.metadata.as_deref());
        out.put_i64(self.commit_timestamp);
        out.freeze()
    }

    pub fn decode(b: Bytes) -> Result<OffsetValue, RecordError> {
        let mut r = In(b);
        match r.u16()? {
            VALUE_VERSION => {}
            v => return Err(RecordError::UnknownVersion(v)),
        }
        let v = OffsetValue {
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            metadata: r.opt_str()?,
            commit_timestamp: r.i64()?,
        };
        r.finish()?;
        Ok(v)
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(128);
        out.put_u16(VALUE_VERSION);
        put_str(&mut out, &self.protocol_type);
        out.put_i32(self.generation);
        put_opt_str(&mut out, self.protocol.as_deref());
        put_opt_str(&mut out, self.leader.as_deref());
        out.put_u32(self.members.len() as u32);
        for m in &self.members {
            put_str(&mut out, &m.member_id);
            put_opt_str(&mut out, m.instance_id.as_deref());
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            out.put_i32(m.session_timeout_ms);
            out.put_i32(m.rebalance_timeout_ms);
            put_blob(&mut out, &m.metadata);
            put_blob(&mut out, &m.assignment);
        }
        out.freeze()
    }

    pub fn decode(b: Bytes) -> Result<GroupValue, RecordError> {
        let mut r = In(b);
        match r.u16()? {
            VALUE_VERSION => {}
            v => return Err(RecordError::UnknownVersion(v)),
        }
        let protocol_type = r.str()?;
        let generation = r.i32()?;
        let protocol = r.opt_str()?;
        let leader = r.opt_str()?;
        let count = r.u32()? as usize;
        // Each member takes at least 24 bytes: no allocation beyond what is there.
        r.need(count.saturating_mul(24))?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(MemberValue {
                member_id: r.str()?,
                instance_id: r.opt_str()?,
                client_id: r.str()?,
                client_host: r.str()?,
                session_timeout_ms: r.i32()?,
                rebalance_timeout_ms: r.i32()?,
                metadata: r.blob()?,
                assignment: r.blob()?,
            });
        }
        r.finish()?;
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_and_prefixes_fail() {
        let keys = [
            RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
            },
            RecordKey::Group { group: "grp".into() },
        ];
        for k in keys {
            let b = k.encode();
            assert_eq!(RecordKey::decode(b.clone()), Ok(k));
            for cut in 0..b.len() {
                assert!(RecordKey::decode(b.slice(..cut)).is_err());
            }
        }
        let o = OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(o.encode()), Ok(o));
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                metadata: Bytes::from_static(b"meta"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let b = g.encode();
        assert_eq!(GroupValue::decode(b.clone()), Ok(g));
        for cut in 0..b.len() {
            assert!(GroupValue::decode(b.slice(..cut)).is_err());
        }
        assert_eq!(
            RecordKey::decode(Bytes::from_static(b"\x00\x09")),
            Err(RecordError::UnknownKey(9))
        );
    }
}
