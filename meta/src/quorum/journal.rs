//! The durable form of the Raft state: a journal of [`Write`]s, each framed
//! with its length and a CRC32C, appended and fsynced before the node is
//! told `persisted`. Replaying the frames through [`Stored::apply`] gives
//! back exactly what was durable.
//!
//! A crash can leave the last frame short or with a bad checksum (a torn
//! append): replay stops there and reports how many bytes are good, and
//! the caller truncates the file to that length before appending again. A
//! bad frame *followed by* a good one is damage, not a torn tail, and is an
//! error: a node must not quietly forget votes or entries it acknowledged.
//! So is a frame whose checksum matches but whose body does not decode,
//! even the last: a torn append cannot make one.
//!
//! To bound the file, the caller rewrites it as one frame holding the
//! whole current state ([`encode_state`]), written to a new file and
//! renamed over the old (then the directory is fsynced).

use raft::prelude::HardState;
use thiserror::Error;

use super::log::{SnapshotWrite, Stored, Write};
use super::wire::{entry, flag, put_entry, put_snapshot, snapshot};
use crate::record::{DecodeError, Reader};

const FRAME_HEADER: usize = 8;
const VERSION: u8 = 0;
/// Largest frame the journal holds (a snapshot of a very large cluster).
pub const MAX_FRAME: usize = 256 << 20;
/// The shortest body a write encodes to: version, snapshot kind, entry
/// count and hard-state flag.
const MIN_BODY: usize = 1 + 1 + 4 + 1;

/// Why a journal did not replay.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JournalError {
    #[error("raft journal damaged at byte {at}: {why} (and valid frames follow)")]
    Damaged { at: usize, why: String },
}

/// What replay found.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub stored: Stored,
    /// Bytes of whole, valid frames; anything after is a torn tail.
    pub valid_len: usize,
    pub frames: usize,
}

/// One write as a journal frame.
pub fn encode_write(w: &Write) -> Vec<u8> {
    let mut body = vec![VERSION];
    match &w.snapshot {
        None => body.push(0),
        Some(SnapshotWrite::Received(s)) => {
            body.push(1);
            put_snapshot(&mut body, s);
        }
        Some(SnapshotWrite::Compacted(s)) => {
            body.push(2);
            put_snapshot(&mut body, s);
        }
    }
    body.extend_from_slice(&(w.entries.len() as u32).to_be_bytes());
    for e in &w.entries {
        put_entry(&mut body, e);
    }
    match &w.hard_state {
        None => body.push(0),
        Some(hs) => {
            body.push(1);
            for v in [hs.term, hs.vote, hs.commit] {
                body.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The whole state as one frame: replayed alone, it gives `stored` back.
pub fn encode_state(stored: &Stored) -> Vec<u8> {
    encode_write(&Write {
        ready: None,
        snapshot: Some(SnapshotWrite::Received(stored.snapshot.clone())),
        entries: stored.entries.clone(),
        hard_state: Some(stored.hard_state.clone()),
    })
}

fn decode_body(body: &[u8]) -> Result<Write, DecodeError> {
    let mut r = Reader::new(body);
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion { kind: 0, version });
    }
    let snap = match r.u8()? {
        0 => None,
        1 => Some(SnapshotWrite::Received(snapshot(&mut r)?)),
        2 => Some(SnapshotWrite::Compacted(snapshot(&mut r)?)),
        _ => return Err(DecodeError::Invalid("unknown snapshot kind in the journal")),
    };
    let n = r.u32()? as usize;
    if n > body.len() {
        return Err(DecodeError::Invalid("more entries than bytes"));
    }
    let entries = (0..n).map(|_| entry(&mut r)).collect::<Result<Vec<_>, _>>()?;
    let hard_state = if flag(&mut r)? {
        Some(HardState {
            term: r.u64()?,
            vote: r.u64()?,
            commit: r.u64()?,
            ..HardState::default()
        })
    } else {
        None
    };
    r.finish()?;
    Ok(Write {
        ready: None,
        snapshot: snap,
        entries,
        hard_state,
    })
}

/// What the bytes at one offset are.
enum Frame {
    /// A whole frame whose checksum matches and whose body decodes, and
    /// its length with the header.
    Whole(Write, usize),
    /// Too short, too long or a checksum mismatch: what a torn append
    /// leaves (or damage, if a whole frame follows).
    Torn,
    /// The checksum matches but the body does not decode: no torn append
    /// makes that, so it is damage, wherever it is.
    Undecodable(DecodeError),
}

/// Reads one frame at `at`.
fn frame_at(buf: &[u8], at: usize) -> Frame {
    let rest = &buf[at..];
    if rest.len() < FRAME_HEADER {
        return Frame::Torn;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
    // No write encodes to fewer than MIN_BODY bytes: a shorter "frame" is
    // what a tail of zeros (a crash after the file grew, before its data
    // landed) looks like, and the checksum of nothing is 0.
    if !(MIN_BODY..=MAX_FRAME).contains(&len) || rest.len() - FRAME_HEADER < len {
        return Frame::Torn;
    }
    let body = &rest[FRAME_HEADER..FRAME_HEADER + len];
    if crc32c::crc32c(body) != crc {
        return Frame::Torn;
    }
    match decode_body(body) {
        Ok(w) => Frame::Whole(w, FRAME_HEADER + len),
        Err(e) => Frame::Undecodable(e),
    }
}

/// Replays a journal file's bytes.
pub fn replay(buf: &[u8]) -> Result<Replayed, JournalError> {
    let mut stored = Stored::default();
    let mut at = 0;
    let mut frames = 0;
    while at < buf.len() {
        match frame_at(buf, at) {
            Frame::Whole(w, len) => {
                stored.apply(&w);
                at += len;
                frames += 1;
            }
            Frame::Undecodable(e) => {
                return Err(JournalError::Damaged {
                    at,
                    why: format!("a frame with a good checksum does not decode: {e}"),
                });
            }
            Frame::Torn => {
                // A torn tail, unless a valid frame starts later.
                if (at + 1..buf.len()).any(|later| !matches!(frame_at(buf, later), Frame::Torn)) {
                    return Err(JournalError::Damaged {
                        at,
                        why: "a frame fails its length or checksum".into(),
                    });
                }
                break;
            }
        }
    }
    Ok(Replayed {
        stored,
        valid_len: at,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{Entry, Snapshot};

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term,
                data: vec![index as u8; 3].into(),
                ..Entry::default()
            })
            .collect()
    }

    fn history() -> Vec<Write> {
        let hs = |term, vote, commit| HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        };
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 1;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snap.data = vec![9; 10].into();
        vec![
            Write {
                hard_state: Some(hs(1, 1, 0)),
                ..Write::default()
            },
            Write {
                entries: entries(1, 4, 1),
                hard_state: Some(hs(1, 1, 2)),
                ..Write::default()
            },
            Write {
                snapshot: Some(SnapshotWrite::Compacted(snap)),
                ..Write::default()
            },
            // A new leader overwrites the uncommitted tail.
            Write {
                entries: entries(4, 6, 2),
                hard_state: Some(hs(2, 2, 5)),
                ..Write::default()
            },
        ]
    }

    fn journal(writes: &[Write]) -> (Vec<u8>, Vec<usize>, Stored) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        let mut stored = Stored::default();
        for w in writes {
            buf.extend_from_slice(&encode_write(w));
            ends.push(buf.len());
            stored.apply(w);
        }
        (buf, ends, stored)
    }

    #[test]
    fn replay_gives_back_what_was_written() {
        let (buf, _, stored) = journal(&history());
        let r = replay(&buf).unwrap();
        assert_eq!(r.stored, stored);
        assert_eq!((r.valid_len, r.frames), (buf.len(), 4));
        assert_eq!(
            stored
                .entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            [(4, 2), (5, 2), (6, 2)]
        );
        // The rewritten journal replays to the same state.
        let again = replay(&encode_state(&stored)).unwrap();
        assert_eq!(again.stored, stored);
    }

    #[test]
    fn a_torn_tail_is_dropped_at_every_cut() {
        let writes = history();
        let (buf, ends, _) = journal(&writes);
        for cut in 0..buf.len() {
            let r = replay(&buf[..cut]).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            let (_, _, expect) = journal(&writes[..whole]);
            assert_eq!(r.stored, expect, "cut at {cut}");
            assert_eq!(r.valid_len, if whole == 0 { 0 } else { ends[whole - 1] });
        }
        // A flipped byte in the last frame is a torn tail too.
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(replay(&bad).unwrap().frames, 3);
    }

    #[test]
    fn a_checksummed_frame_that_does_not_decode_is_damage_not_a_torn_tail() {
        // A torn append cannot produce a frame whose checksum matches: one
        // that matches and does not decode was written wrong, or by another
        // version, and holds state the node acknowledged. Replay must not
        // cut it away, wherever it is.
        let (buf, ends, _) = journal(&history());
        let last = ends[ends.len() - 2];
        let mut body = buf[last + FRAME_HEADER..].to_vec();
        body[0] = 7; // an unknown version
        let mut bad = buf[..last].to_vec();
        bad.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bad.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bad.extend_from_slice(&body);
        assert_eq!(bad.len(), buf.len());
        assert!(
            matches!(replay(&bad), Err(JournalError::Damaged { at, .. }) if at == last),
            "{:?}",
            replay(&bad).map(|r| r.frames)
        );
        // Alone in the file too.
        assert!(matches!(
            replay(&bad[last..]),
            Err(JournalError::Damaged { at: 0, .. })
        ));
        // A tail of zeros (the file grew, its data never landed) is still
        // a torn tail: the checksum of an empty body is 0, but no write is
        // empty.
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 64]);
        let r = replay(&zeros).unwrap();
        assert_eq!((r.valid_len, r.frames), (buf.len(), 4));
    }

    #[test]
    fn damage_before_good_frames_is_an_error() {
        let (buf, ends, _) = journal(&history());
        let mut bad = buf.clone();
        bad[ends[0] + 9] ^= 0x10;
        assert!(matches!(replay(&bad), Err(JournalError::Damaged { .. })));
    }
}
