//! The metadata quorum's Raft state on disk: one journal file of framed
//! writes (`borges_meta::quorum::journal`), appended and fdatasynced before
//! the node is told `persisted`.
//!
//! Durable ordering (see docs/ARCHITECTURE.md):
//! - open: create `<meta home>/__meta/raft/` and fsync its parent if it was
//!   created; replay the file; a torn tail (a crash mid-append) is cut off
//!   and the cut fdatasynced before anything is appended after it;
//!   damage followed by valid frames is refused (a node must not forget
//!   votes or entries it acknowledged).
//! - append: write the frame, fdatasync, then report.
//! - compact (when the file outgrows its limit): write the whole state as
//!   one frame to `journal.tmp`, fdatasync it, rename it over `journal`,
//!   fsync the directory. A crash before the rename leaves the old file
//!   (the `.tmp` is removed at the next open); after it, the new one.
//!
//! Blocking file calls: the journal is written on shard 0's metadata path
//! (admin changes, registrations, elections), which is rare and small.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};

use borges_meta::quorum::journal::{self, JournalError};
use borges_meta::quorum::log::{Stored, Write};

/// Where the journal lives under the first data directory.
pub const RAFT_DIR: &str = "__meta/raft";
const FILE: &str = "journal";
const TMP: &str = "journal.tmp";

#[derive(Debug, thiserror::Error)]
pub enum RaftJournalError {
    #[error("raft journal {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("raft journal {path}: {source}")]
    Damaged { path: PathBuf, source: JournalError },
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> RaftJournalError + 'a {
    move |source| RaftJournalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), RaftJournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "sync directory"))
}

/// The open journal, and the state it holds.
#[derive(Debug)]
pub struct RaftJournal {
    dir: PathBuf,
    file: File,
    len: u64,
    /// Rewrite the file as one frame once it is larger than this.
    compact_above: u64,
    stored: Stored,
}

impl RaftJournal {
    /// Opens (or creates) the journal under `meta_home`. What it holds is
    /// what the node restarts from; `dropped` is the torn tail cut off.
    pub fn open(meta_home: &Path, compact_above: u64) -> Result<(RaftJournal, u64), RaftJournalError> {
        let dir = meta_home.join(RAFT_DIR);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(io(&dir, "create"))?;
            sync_dir(dir.parent().expect("raft dir has a parent"))?;
            sync_dir(meta_home)?;
        }
        let tmp = dir.join(TMP);
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io(&tmp, "remove"))?;
        }
        let path = dir.join(FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        if created {
            sync_dir(&dir)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path, "read"))?;
        let replayed = journal::replay(&bytes).map_err(|source| RaftJournalError::Damaged {
            path: path.clone(),
            source,
        })?;
        let dropped = (bytes.len() - replayed.valid_len) as u64;
        if dropped > 0 {
            file.set_len(replayed.valid_len as u64)
                .map_err(io(&path, "truncate the torn tail"))?;
            file.sync_data().map_err(io(&path, "sync"))?;
        }
        let journal = RaftJournal {
            dir,
            file,
            len: replayed.valid_len as u64,
            compact_above,
            stored: replayed.stored,
        };
        Ok((journal, dropped))
    }

    /// What is durable.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes `w` durable. On error nothing may be reported persisted: the
    /// caller stops the quorum node (the file may hold part of the frame,
    /// which the next open cuts off as a torn tail).
    pub fn append(&mut self, w: &Write) -> Result<(), RaftJournalError> {
        if w.is_empty() {
            return Ok(());
        }
        let frame = journal::encode_write(w);
        let path = self.dir.join(FILE);
        self.file.write_all(&frame).map_err(io(&path, "append"))?;
        self.file.sync_data().map_err(io(&path, "sync"))?;
        self.len += frame.len() as u64;
        self.stored.apply(w);
        if self.len > self.compact_above {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal as one frame holding the current state.
    pub fn compact(&mut self) -> Result<(), RaftJournalError> {
        let frame = journal::encode_state(&self.stored);
        let tmp = self.dir.join(TMP);
        let path = self.dir.join(FILE);
        let mut f = File::create(&tmp).map_err(io(&tmp, "create"))?;
        f.write_all(&frame).map_err(io(&tmp, "write"))?;
        f.sync_data().map_err(io(&tmp, "sync"))?;
        std::fs::rename(&tmp, &path).map_err(io(&path, "rename"))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io(&path, "reopen"))?;
        self.len = frame.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borges_meta::quorum::log::SnapshotWrite;
    use raft::prelude::{Entry, HardState, Snapshot};

    fn write(i: u64) -> Write {
        Write {
            ready: Some(i),
            entries: vec![Entry {
                index: i,
                term: 1,
                data: vec![i as u8; 100].into(),
                ..Entry::default()
            }],
            hard_state: Some(HardState {
                term: 1,
                vote: 1,
                commit: i.saturating_sub(1),
                ..HardState::default()
            }),
            ..Write::default()
        }
    }

    #[test]
    fn what_was_appended_is_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, dropped) = RaftJournal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((dropped, j.is_empty()), (0, true));
        for i in 1..=5 {
            j.append(&write(i)).unwrap();
        }
        let expect = j.stored().clone();
        drop(j);
        let (j, dropped) = RaftJournal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(j.stored(), &expect);
        assert_eq!(j.stored().entries.len(), 5);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = RaftJournal::open(dir.path(), 1 << 20).unwrap();
        j.append(&write(1)).unwrap();
        j.append(&write(2)).unwrap();
        let whole = j.len();
        drop(j);
        // A crash mid-append: half of a third frame.
        let path = dir.path().join(RAFT_DIR).join(FILE);
        let half = &journal::encode_write(&write(3))[..50];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(half)
            .unwrap();
        let (mut j, dropped) = RaftJournal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(dropped, 50);
        assert_eq!(j.len(), whole);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            whole,
            "the cut is on disk"
        );
        j.append(&write(3)).unwrap();
        drop(j);
        let (j, dropped) = RaftJournal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(
            j.stored().entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn damage_in_the_middle_refuses_to_open_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = RaftJournal::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=3 {
            j.append(&write(i)).unwrap();
        }
        drop(j);
        let path = dir.path().join(RAFT_DIR).join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = RaftJournal::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, RaftJournalError::Damaged { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn compaction_keeps_the_state_and_bounds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = RaftJournal::open(dir.path(), 2_000).unwrap();
        for i in 1..=40 {
            j.append(&write(i)).unwrap();
            if i == 30 {
                let mut s = Snapshot::default();
                s.mut_metadata().index = 30;
                s.mut_metadata().term = 1;
                s.mut_metadata().mut_conf_state().voters = vec![1];
                s.data = vec![7; 64].into();
                let w = Write {
                    snapshot: Some(SnapshotWrite::Compacted(s)),
                    ..Write::default()
                };
                j.append(&w).unwrap();
            }
        }
        assert!(j.len() < 4_000, "compacted: {} bytes", j.len());
        let expect = j.stored().clone();
        assert_eq!(expect.entries.first().map(|e| e.index), Some(31));
        drop(j);
        // A crash during a later rewrite leaves a .tmp: ignored and removed.
        std::fs::write(dir.path().join(RAFT_DIR).join(TMP), b"partial").unwrap();
        let (j, _) = RaftJournal::open(dir.path(), 2_000).unwrap();
        assert_eq!(j.stored(), &expect);
        assert!(!dir.path().join(RAFT_DIR).join(TMP).exists());
    }
}
