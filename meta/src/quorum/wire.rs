//! Raft messages in our own binary codec, so that what a peer sends is
//! checked by code we own (typed errors, bounded allocation) and never
//! reaches a protobuf parser. The controller's messages travel inside the
//! broker protocol as these bytes.
//!
//! Only the message types Borges sends between voters decode; local ones
//! (Hup, Beat, Propose, Unreachable, SnapStatus, CheckQuorum) are refused,
//! and so are leadership transfer, timeout-now and read index (typed
//! [`DecodeError::RefusedRaftMessage`]: nothing here sends them), as are
//! entries of any type but normal (the voters are fixed by configuration:
//! no membership changes travel).

use bytes::Bytes;
use raft::prelude::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

use crate::record::{DecodeError, Reader};

/// Largest entry or snapshot payload a message may carry.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Most entries one message may carry.
pub const MAX_ENTRIES: usize = 1 << 16;
/// Most members a configuration may list.
pub const MAX_MEMBERS: usize = 64;
/// Largest log index or term a message may name. Raft adds one to these
/// throughout; an honest log grows by one per entry or election and never
/// comes near, so anything above is refused before Raft could overflow.
pub const MAX_INDEX: u64 = 1 << 62;

const VERSION: u8 = 0;

/// Raft message types that cross the network in raft-rs but that Borges
/// never sends, refused from peers: MsgTransferLeader (13) would move
/// leadership and, while pending, drop every proposal; MsgTimeoutNow (14)
/// makes a voter campaign at once, skipping pre-vote, so any voter could
/// depose a healthy leader; MsgReadIndex and MsgReadIndexResp (15, 16)
/// serve reads this quorum does not offer.
const REFUSED_TYPES: [u8; 4] = [13, 14, 15, 16];

fn network_type(t: i32) -> Option<MessageType> {
    use MessageType::*;
    let ty = match t {
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return None,
    };
    Some(ty)
}

/// Encodes a message for the network.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + m.entries.iter().map(|e| e.data.len() + 32).sum::<usize>());
    out.push(VERSION);
    out.push(m.msg_type as i32 as u8);
    for v in [
        m.to,
        m.from,
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.commit_term,
        m.request_snapshot,
        m.reject_hint,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.push(m.reject as u8);
    out.extend_from_slice(&m.priority.to_be_bytes());
    put_bytes(&mut out, &m.context);
    out.extend_from_slice(&(m.entries.len() as u32).to_be_bytes());
    for e in m.entries.iter() {
        put_entry(&mut out, e);
    }
    match m.snapshot.as_ref() {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_snapshot(&mut out, s);
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

pub(crate) fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    out.push(e.entry_type as i32 as u8);
    out.extend_from_slice(&e.term.to_be_bytes());
    out.extend_from_slice(&e.index.to_be_bytes());
    put_bytes(out, &e.data);
    put_bytes(out, &e.context);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

/// Encodes a snapshot (for the network and for the disk).
pub fn put_snapshot(out: &mut Vec<u8>, s: &Snapshot) {
    let meta = s.get_metadata();
    out.extend_from_slice(&meta.index.to_be_bytes());
    out.extend_from_slice(&meta.term.to_be_bytes());
    let cs = meta.get_conf_state();
    put_ids(out, &cs.voters);
    put_ids(out, &cs.learners);
    put_ids(out, &cs.voters_outgoing);
    put_ids(out, &cs.learners_next);
    out.push(cs.auto_leave as u8);
    put_bytes(out, &s.data);
}

/// Decodes a message from a peer.
pub fn decode_message(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(buf);
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion { kind: 0, version });
    }
    let t = r.u8()?;
    if REFUSED_TYPES.contains(&t) {
        return Err(DecodeError::RefusedRaftMessage(t));
    }
    let msg_type = network_type(t as i32).ok_or(DecodeError::Invalid("not a network raft message type"))?;
    let mut m = Message {
        msg_type,
        to: r.u64()?,
        from: r.u64()?,
        term: index(&mut r)?,
        log_term: index(&mut r)?,
        index: index(&mut r)?,
        commit: index(&mut r)?,
        commit_term: index(&mut r)?,
        request_snapshot: index(&mut r)?,
        reject_hint: index(&mut r)?,
        ..Message::default()
    };
    m.reject = flag(&mut r)?;
    m.priority = r.i64()?;
    m.context = bytes(&mut r)?;
    let n = r.u32()? as usize;
    if n > MAX_ENTRIES {
        return Err(DecodeError::TooLong {
            what: "raft entries",
            len: n,
            max: MAX_ENTRIES,
        });
    }
    for _ in 0..n {
        m.entries.push(entry(&mut r)?);
    }
    if flag(&mut r)? {
        m.snapshot = Some(snapshot(&mut r)?).into();
    }
    r.finish()?;
    Ok(m)
}

/// A log index or term: at most [`MAX_INDEX`].
fn index(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let v = r.u64()?;
    if v > MAX_INDEX {
        return Err(DecodeError::Invalid("raft index or term beyond 2^62"));
    }
    Ok(v)
}

pub(crate) fn flag(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid("a flag is neither 0 nor 1")),
    }
}

fn bytes(r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
    let len = r.u32()? as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLong {
            what: "raft payload",
            len,
            max: MAX_PAYLOAD,
        });
    }
    Ok(Bytes::copy_from_slice(r.take(len)?))
}

pub(crate) fn entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    if r.u8()? != EntryType::EntryNormal as i32 as u8 {
        return Err(DecodeError::Invalid("raft entry is not a normal entry"));
    }
    Ok(Entry {
        entry_type: EntryType::EntryNormal,
        term: index(r)?,
        index: index(r)?,
        data: bytes(r)?,
        context: bytes(r)?,
        ..Entry::default()
    })
}

fn ids(r: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let n = r.u16()? as usize;
    if n > MAX_MEMBERS {
        return Err(DecodeError::TooLong {
            what: "raft configuration",
            len: n,
            max: MAX_MEMBERS,
        });
    }
    (0..n).map(|_| r.u64()).collect()
}

/// Decodes a snapshot written by [`put_snapshot`].
pub(crate) fn snapshot(r: &mut Reader<'_>) -> Result<Snapshot, DecodeError> {
    let mut s = Snapshot::default();
    let meta = s.mut_metadata();
    meta.index = index(r)?;
    meta.term = index(r)?;
    let cs = ConfState {
        voters: ids(r)?,
        learners: ids(r)?,
        voters_outgoing: ids(r)?,
        learners_next: ids(r)?,
        auto_leave: flag(r)?,
        ..ConfState::default()
    };
    meta.set_conf_state(cs);
    s.data = bytes(r)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let mut m = Message {
            msg_type: MessageType::MsgAppend,
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 41,
            commit: 40,
            commit_term: 6,
            reject: true,
            reject_hint: 3,
            priority: -2,
            context: Bytes::from_static(b"ctx"),
            ..Message::default()
        };
        for i in 0..3 {
            m.entries.push(Entry {
                term: 7,
                index: 42 + i,
                data: Bytes::from(vec![i as u8; 5]),
                ..Entry::default()
            });
        }
        let mut s = Snapshot::default();
        s.mut_metadata().index = 30;
        s.mut_metadata().term = 5;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.data = Bytes::from_static(b"image");
        m.snapshot = Some(s).into();
        m
    }

    #[test]
    fn messages_round_trip() {
        let m = sample();
        let back = decode_message(&encode_message(&m)).unwrap();
        assert_eq!(back, m);
        let plain = Message {
            msg_type: MessageType::MsgHeartbeat,
            to: 3,
            from: 1,
            term: 2,
            ..Message::default()
        };
        assert_eq!(decode_message(&encode_message(&plain)).unwrap(), plain);
    }

    #[test]
    fn damaged_messages_are_typed_errors() {
        let buf = encode_message(&sample());
        for cut in 0..buf.len() {
            assert!(decode_message(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut local = buf.clone();
        local[1] = MessageType::MsgHup as i32 as u8;
        assert!(
            decode_message(&local).is_err(),
            "local message types do not travel"
        );
        let mut long = buf;
        long.push(0);
        assert_eq!(decode_message(&long), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn a_peer_cannot_send_leadership_transfers_or_read_index() {
        // A peer that could send these would make a voter campaign at once
        // (skipping pre-vote), move leadership, or stall proposals while a
        // transfer is pending; Borges uses none of them.
        for ty in [
            MessageType::MsgTransferLeader,
            MessageType::MsgTimeoutNow,
            MessageType::MsgReadIndex,
            MessageType::MsgReadIndexResp,
        ] {
            let m = Message {
                msg_type: ty,
                to: 2,
                from: 1,
                term: 3,
                ..Message::default()
            };
            assert_eq!(
                decode_message(&encode_message(&m)),
                Err(DecodeError::RefusedRaftMessage(ty as i32 as u8)),
                "{ty:?}"
            );
        }
    }
}
