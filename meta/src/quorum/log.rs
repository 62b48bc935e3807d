//! The Raft log as the metadata node holds it in memory ([`RaftLog`], the
//! `raft::Storage` that RawNode reads), and what must be made durable
//! ([`Write`]) and how a durable copy evolves ([`Stored::apply`]).
//!
//! The node never does I/O: each Ready becomes a `Write` that the caller
//! makes durable (fsynced) before it reports `persisted`; only then are the
//! messages that depend on it sent, and only then does Raft count the
//! entries as stored here. A store on disk (or the simulator's disk) keeps
//! a [`Stored`] by applying the same writes in the same order, so what the
//! node restarts from is exactly what it was told was durable.

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// What a `Write` does with a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotWrite {
    /// From the leader: replaces the whole log.
    Received(Snapshot),
    /// Taken here after applying: the entries it covers are dropped, the
    /// later ones kept.
    Compacted(Snapshot),
}

/// One durable step, to be applied in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Write {
    /// The Ready this write completes; report it with `persisted` once
    /// durable. `None` for a local compaction (no one waits for it).
    pub ready: Option<u64>,
    pub snapshot: Option<SnapshotWrite>,
    /// Entries to append; any stored entry at or after the first one's index
    /// is replaced.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// A durable copy of the Raft state: what a restart begins from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub hard_state: HardState,
    /// The latest snapshot (empty metadata when none).
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl Stored {
    /// Applies `w` as the durable store must.
    pub fn apply(&mut self, w: &Write) {
        match &w.snapshot {
            Some(SnapshotWrite::Received(s)) => {
                self.snapshot = s.clone();
                self.entries.clear();
            }
            Some(SnapshotWrite::Compacted(s)) => {
                let index = s.get_metadata().index;
                self.entries.retain(|e| e.index > index);
                self.snapshot = s.clone();
            }
            None => {}
        }
        append(&mut self.entries, &w.entries);
        if let Some(hs) = &w.hard_state {
            self.hard_state = hs.clone();
        }
    }
}

/// Appends `new` to `log`, replacing any entry at or after `new[0].index`.
fn append(log: &mut Vec<Entry>, new: &[Entry]) {
    let Some(first) = new.first() else { return };
    log.retain(|e| e.index < first.index);
    log.extend_from_slice(new);
}

/// The in-memory Raft log and state, read by RawNode.
#[derive(Debug, Clone)]
pub struct RaftLog {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log restored from `stored`; a fresh one (no snapshot) starts with
    /// the configured voters.
    pub fn restore(stored: &Stored, voters: &[u64]) -> RaftLog {
        let conf_state = if stored.snapshot.get_metadata().index > 0 {
            stored.snapshot.get_metadata().get_conf_state().clone()
        } else {
            ConfState {
                voters: voters.to_vec(),
                ..ConfState::default()
            }
        };
        RaftLog {
            hard_state: stored.hard_state.clone(),
            conf_state,
            snapshot: stored.snapshot.clone(),
            entries: stored.entries.clone(),
        }
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    pub(crate) fn append(&mut self, new: &[Entry]) {
        append(&mut self.entries, new);
    }

    pub(crate) fn set_hard_state(&mut self, hs: &HardState) {
        self.hard_state = hs.clone();
    }

    /// A snapshot from the leader: the log restarts at it.
    pub(crate) fn install(&mut self, snap: &Snapshot) {
        let meta = snap.get_metadata();
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.snapshot = snap.clone();
    }

    /// A snapshot taken here at an applied index: drops what it covers.
    pub(crate) fn compact(&mut self, snap: &Snapshot) {
        let index = snap.get_metadata().index;
        debug_assert!(index >= self.snapshot_index(), "compaction goes forward");
        self.entries.retain(|e| e.index > index);
        self.snapshot = snap.clone();
    }

    pub(crate) fn term_at(&self, idx: u64) -> Option<u64> {
        raft::Storage::term(self, idx).ok()
    }
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first();
        let mut out = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        if let Some(max) = max_size.into() {
            // At least one entry, then as many as fit.
            let mut size = 0u64;
            let keep = out
                .iter()
                .take_while(|e| {
                    size += (e.data.len() + e.context.len() + 24) as u64;
                    size <= max
                })
                .count()
                .max(1);
            out.truncate(keep);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index || self.snapshot_index() == 0 {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}
