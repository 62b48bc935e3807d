//! The leader-epoch history of a partition: for each leader epoch, the first
//! offset written under it. Replication uses it to find where a follower's
//! log diverges from the leader's (the answer to "where does epoch E end?")
//! and truncates there.
//!
//! Persisted as the text file `leader-epoch-checkpoint` (format version,
//! entry count, then one `epoch start_offset` line per entry), rewritten
//! atomically on every change; changes happen only when leadership moves.

use borges_net::types::{LeaderEpoch, Offset};

pub const CHECKPOINT_VERSION: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// Epoch history, oldest first; epochs and start offsets both strictly grow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the
    /// history changed (and must be persisted). An epoch older than the
    /// latest is ignored: batches of a deposed leader never rewrite history.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        if epoch.0 < 0 {
            return false;
        }
        match self.entries.last() {
            Some(last) if epoch <= last.epoch => false,
            Some(last) => {
                assert!(
                    start_offset >= last.start_offset,
                    "epoch {epoch} starts at {start_offset}, before epoch {} at {}",
                    last.epoch,
                    last.start_offset
                );
                // A new epoch at the same offset replaces the old one: the old
                // leader wrote nothing under it.
                if start_offset == last.start_offset {
                    self.entries.pop();
                }
                self.entries.push(EpochEntry { epoch, start_offset });
                true
            }
            None => {
                self.entries.push(EpochEntry { epoch, start_offset });
                true
            }
        }
    }

    /// The epoch the record at `offset` was written under.
    pub fn epoch_for(&self, offset: Offset) -> Option<LeaderEpoch> {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        (i > 0).then(|| self.entries[i - 1].epoch)
    }

    /// Kafka's OffsetsForLeaderEpoch: the largest epoch at or below the one
    /// asked for, and the offset where it ended (the start of the next
    /// epoch, or `log_end` if it is the latest). `None` when the asked epoch
    /// precedes all history.
    pub fn end_offset_for(&self, epoch: LeaderEpoch, log_end: Offset) -> Option<(LeaderEpoch, Offset)> {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        if i == 0 {
            return None;
        }
        let found = self.entries[i - 1].epoch;
        let end = self.entries.get(i).map(|e| e.start_offset).unwrap_or(log_end);
        Some((found, end))
    }

    /// Forgets epochs that start at or after `offset` (the log was truncated
    /// there). Returns whether anything changed.
    pub fn truncate_from_end(&mut self, offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < offset);
        before != self.entries.len()
    }

    /// Moves history forward to a new log start: the epoch in force at
    /// `offset` now starts there and older ones are dropped.
    pub fn truncate_from_start(&mut self, offset: Offset) -> bool {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        if i == 0 {
            return false;
        }
        let mut changed = i > 1;
        self.entries.drain(..i - 1);
        if self.entries[0].start_offset < offset {
            self.entries[0].start_offset = offset;
            changed = true;
        }
        changed
    }

    pub fn encode(&self) -> String {
        let mut s = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch.0, e.start_offset.0));
        }
        s
    }

    pub fn decode(text: &str) -> Result<LeaderEpochCache, String> {
        let mut lines = text.lines();
        let version = lines.next().ok_or("empty checkpoint")?;
        if version.trim() != CHECKPOINT_VERSION.to_string() {
            return Err(format!("unknown checkpoint version {version:?}"));
        }
        let count: usize = lines
            .next()
            .ok_or("missing entry count")?
            .trim()
            .parse()
            .map_err(|e| format!("bad entry count: {e}"))?;
        let mut cache = LeaderEpochCache::default();
        for _ in 0..count {
            let line = lines.next().ok_or("fewer entries than announced")?;
            let mut parts = line.split_whitespace();
            let epoch: i32 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("bad line {line:?}"))?;
            let start: u64 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("bad line {line:?}"))?;
            if let Some(last) = cache.entries.last() {
                if epoch <= last.epoch.0 || start < last.start_offset.0 {
                    return Err(format!("entries out of order at {line:?}"));
                }
            }
            cache.entries.push(EpochEntry {
                epoch: LeaderEpoch(epoch),
                start_offset: Offset(start),
            });
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, u64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(LeaderEpoch(e), Offset(o)));
        }
        c
    }

    #[test]
    fn assign_ignores_stale_and_none() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(!c.assign(LeaderEpoch(2), Offset(20)));
        assert!(!c.assign(LeaderEpoch(3), Offset(20)));
        assert!(!c.assign(LeaderEpoch::NONE, Offset(20)));
        assert!(c.assign(LeaderEpoch(5), Offset(10)));
        assert_eq!(c.entries().len(), 2);
        assert_eq!(c.latest().unwrap().epoch, LeaderEpoch(5));
    }

    #[test]
    fn end_offsets_follow_kafka_semantics() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.end_offset_for(LeaderEpoch(0), Offset(40)), None);
        assert_eq!(
            c.end_offset_for(LeaderEpoch(1), Offset(40)),
            Some((LeaderEpoch(1), Offset(10)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(2), Offset(40)),
            Some((LeaderEpoch(1), Offset(10)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(4), Offset(40)),
            Some((LeaderEpoch(4), Offset(40)))
        );
        assert_eq!(c.epoch_for(Offset(9)), Some(LeaderEpoch(1)));
        assert_eq!(c.epoch_for(Offset(10)), Some(LeaderEpoch(3)));
    }

    #[test]
    fn truncation_both_ends() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(c.truncate_from_end(Offset(25)));
        assert_eq!(c.latest().unwrap().epoch, LeaderEpoch(3));
        assert!(c.truncate_from_start(Offset(12)));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: LeaderEpoch(3),
                start_offset: Offset(12)
            }]
        );
    }

    #[test]
    fn checkpoint_round_trip_and_garbage() {
        let c = cache(&[(1, 0), (3, 10)]);
        assert_eq!(LeaderEpochCache::decode(&c.encode()).unwrap(), c);
        for bad in ["", "1\n0\n", "0\n2\n1 0\n", "0\n1\nx y\n", "0\n2\n3 10\n1 20\n"] {
            assert!(LeaderEpochCache::decode(bad).is_err(), "{bad:?}");
        }
    }
}
