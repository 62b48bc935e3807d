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
//! A write larger than a frame may be ([`MAX_FRAME`]) takes several
//! frames, each but the last marked as followed by more of the same write;
//! replay applies it only once all are there, so a crash part-way through
//! leaves a torn tail, never half a write (and never a frame replay would
//! take for a torn one).
//!
//! To bound the file, the caller rewrites it as one write holding the
//! whole current state ([`encode_state`]), written to a new file and
//! renamed over the old (then the directory is fsynced).

use raft::prelude::{Entry, HardState};
use thiserror::Error;

use super::log::{SnapshotWrite, Stored, Write};
use super::wire::{entry, flag, put_entry, put_snapshot, snapshot};
use crate::record::{DecodeError, Reader};

const FRAME_HEADER: usize = 8;
/// The first byte of a frame's body: the version, for a write's only or
/// last frame; [`MORE`] for a frame that more of the same write follows.
const VERSION: u8 = 0;
const MORE: u8 = 1;
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

/// One write as journal frames: one, or several when it is larger than a
/// frame may be ([`MAX_FRAME`]); every frame but the last says more of the
/// write follows, and replay applies the write only once it has them all.
pub fn encode_write(w: &Write) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest: &[Entry] = &w.entries;
    let mut snapshot = w.snapshot.as_ref();
    loop {
        // As many entries as fit, and at least one: an entry or snapshot
        // larger than a frame is refused before it gets here (the wire and
        // the node bound both well below MAX_FRAME).
        let mut size = MIN_BODY + 8 * 4 + snapshot.map_or(0, snapshot_write_len);
        let mut n = 0;
        while n < rest.len() && (n == 0 || size + entry_len(&rest[n]) <= MAX_FRAME) {
            size += entry_len(&rest[n]);
            n += 1;
        }
        let (part, later) = rest.split_at(n);
        let more = !later.is_empty();
        let hard_state = if more { None } else { w.hard_state.as_ref() };
        put_frame(&mut out, more, snapshot, part, hard_state);
        debug_assert!(
            size <= MAX_FRAME,
            "a single entry or snapshot larger than a journal frame"
        );
        snapshot = None;
        rest = later;
        if !more {
            return out;
        }
    }
}

fn entry_len(e: &Entry) -> usize {
    1 + 8 + 8 + 4 + e.data.len() + 4 + e.context.len()
}

fn snapshot_write_len(s: &SnapshotWrite) -> usize {
    let (SnapshotWrite::Received(s) | SnapshotWrite::Compacted(s)) = s;
    let cs = s.get_metadata().get_conf_state();
    let ids = cs.voters.len() + cs.learners.len() + cs.voters_outgoing.len() + cs.learners_next.len();
    16 + 4 * 2 + 8 * ids + 1 + 4 + s.data.len()
}

/// Appends one frame: its header, then the body.
fn put_frame(
    out: &mut Vec<u8>,
    more: bool,
    snapshot: Option<&SnapshotWrite>,
    entries: &[Entry],
    hard_state: Option<&HardState>,
) {
    let mut body = vec![if more { MORE } else { VERSION }];
    match snapshot {
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
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        put_entry(&mut body, e);
    }
    match hard_state {
        None => body.push(0),
        Some(hs) => {
            body.push(1);
            for v in [hs.term, hs.vote, hs.commit] {
                body.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    out.reserve(FRAME_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// The whole state as one write (one frame, or several for a large
/// state): replayed alone, it gives `stored` back.
pub fn encode_state(stored: &Stored) -> Vec<u8> {
    encode_write(&Write {
        ready: None,
        snapshot: Some(SnapshotWrite::Received(stored.snapshot.clone())),
        entries: stored.entries.clone(),
        hard_state: Some(stored.hard_state.clone()),
    })
}

/// A frame's body: part of a write, and whether more of it follows.
fn decode_body(body: &[u8]) -> Result<(Write, bool), DecodeError> {
    let mut r = Reader::new(body);
    let version = r.u8()?;
    let more = match version {
        VERSION => false,
        MORE => true,
        _ => return Err(DecodeError::UnsupportedVersion { kind: 0, version }),
    };
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
    let w = Write {
        ready: None,
        snapshot: snap,
        entries,
        hard_state,
    };
    Ok((w, more))
}

/// What the bytes at one offset are.
enum Frame {
    /// A whole frame whose checksum matches and whose body decodes, whether
    /// more of its write follows, and its length with the header.
    Whole(Write, bool, usize),
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
        Ok((w, more)) => Frame::Whole(w, more, FRAME_HEADER + len),
        Err(e) => Frame::Undecodable(e),
    }
}

/// Replays a journal file's bytes.
pub fn replay(buf: &[u8]) -> Result<Replayed, JournalError> {
    let mut stored = Stored::default();
    let mut at = 0;
    let mut frames = 0;
    // The frames of a write not yet whole, and where the last whole write
    // ends: a write cut short is a torn tail, dropped from its start.
    let mut parts: Vec<Write> = Vec::new();
    let mut valid_len = 0;
    while at < buf.len() {
        match frame_at(buf, at) {
            Frame::Whole(w, more, len) => {
                parts.push(w);
                at += len;
                if !more {
                    for w in parts.drain(..) {
                        stored.apply(&w);
                        frames += 1;
                    }
                    valid_len = at;
                }
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
        valid_len,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Snapshot;

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
    fn a_write_larger_than_a_frame_replays_whole_or_not_at_all() {
        // More than MAX_FRAME of entries (the journal's rewrite holds every
        // entry since the snapshot): written as several frames that replay
        // as one write; a crash part-way leaves the state before it.
        let big = |index| Entry {
            index,
            term: 2,
            data: vec![0; 60 << 20].into(),
            ..Entry::default()
        };
        let first = Write {
            entries: entries(1, 2, 1),
            hard_state: Some(HardState {
                term: 1,
                vote: 1,
                commit: 2,
                ..HardState::default()
            }),
            ..Write::default()
        };
        let huge = Write {
            entries: (3..8).map(big).collect(),
            hard_state: Some(HardState {
                term: 2,
                vote: 2,
                commit: 7,
                ..HardState::default()
            }),
            ..Write::default()
        };
        let (buf, ends, stored) = journal(&[first.clone(), huge]);
        assert!(ends[1] - ends[0] > MAX_FRAME);
        let r = replay(&buf).unwrap();
        assert_eq!(r.valid_len, buf.len());
        assert!(r.stored == stored, "the large write replays");
        let (_, _, before) = journal(&[first]);
        // Cut inside the first frame of the write, just after it (its later
        // frames lost), and inside the next. (Cuts that leave a long torn
        // tail are slow to scan in a debug build; these are short.)
        let frame_one = ends[0]
            + FRAME_HEADER
            + u32::from_be_bytes(buf[ends[0]..ends[0] + 4].try_into().unwrap()) as usize;
        assert!(frame_one < buf.len(), "the write takes more than one frame");
        for cut in [ends[0] + 1_000, frame_one, frame_one + 100] {
            let r = replay(&buf[..cut]).unwrap();
            assert_eq!(r.valid_len, ends[0], "cut at {cut}");
            assert!(r.stored == before, "cut at {cut}: the state before the write");
        }
        // The rewrite of a large state replays to it as well.
        // (Without a snapshot: an empty one comes back with an empty
        // configuration where there was none, which is the same to Raft.)
        let again = replay(&encode_state(&stored)).unwrap().stored;
        assert_eq!(again.snapshot.get_metadata().index, 0);
        assert!(again.entries == stored.entries && again.hard_state == stored.hard_state);
    }

    #[test]
    fn damage_before_good_frames_is_an_error() {
        let (buf, ends, _) = journal(&history());
        let mut bad = buf.clone();
        bad[ends[0] + 9] ^= 0x10;
        assert!(matches!(replay(&bad), Err(JournalError::Damaged { .. })));
    }
}
