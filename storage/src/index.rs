//! The sparse per-segment indexes, kept in memory and written beside the
//! segment when it is sealed.
//!
//! - `.index`: entries of (offset relative to the segment base: u32,
//!   byte position of the batch that starts at that offset: u32), big-endian,
//!   one every `index_interval_bytes` of batches.
//! - `.timeindex`: entries of (largest timestamp so far: i64, relative offset
//!   of the batch that carried it: u32), added at the same cadence and only
//!   when the timestamp grew, so both columns strictly increase.
//!
//! Each lookup is a binary search for the last entry at or below the target;
//! the caller then scans batch headers forward from the position it gives.

/// The sparse offset index of one segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

impl OffsetIndex {
    pub fn push(&mut self, rel_offset: u32, position: u32) {
        if let Some(&(o, p)) = self.entries.last() {
            assert!(
                rel_offset > o && position > p,
                "offset index entries must grow: ({o}, {p}) then ({rel_offset}, {position})"
            );
        }
        self.entries.push((rel_offset, position));
    }

    /// The last entry whose offset is at or below `rel_offset`, or the
    /// segment start.
    pub fn floor(&self, rel_offset: u32) -> (u32, u32) {
        let i = self.entries.partition_point(|&(o, _)| o <= rel_offset);
        if i == 0 {
            (0, 0)
        } else {
            self.entries[i - 1]
        }
    }

    /// Entries strictly after `position`, in order: batch boundaries with
    /// the relative offset of the batch that starts there.
    pub fn entries_after(&self, position: u32) -> &[(u32, u32)] {
        let i = self.entries.partition_point(|&(_, p)| p <= position);
        &self.entries[i..]
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Decodes an index file, refusing anything a sealed segment of
    /// `segment_size` bytes could not have produced; the caller then
    /// rebuilds the index from the segment.
    pub fn decode(bytes: &[u8], segment_size: u64) -> Option<OffsetIndex> {
        if bytes.len() % OFFSET_ENTRY_LEN != 0 {
            return None;
        }
        let mut entries = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
        for c in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let o = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let p = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
            if p as u64 >= segment_size {
                return None;
            }
            if let Some(&(lo, lp)) = entries.last() {
                if o <= lo || p <= lp {
                    return None;
                }
            }
            entries.push((o, p));
        }
        Some(OffsetIndex { entries })
    }
}

/// The sparse time index of one segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Records that the batch at `rel_offset` carried `timestamp`, the
    /// largest so far; ignored unless both grow.
    pub fn maybe_push(&mut self, timestamp: i64, rel_offset: u32) {
        match self.entries.last() {
            Some(&(t, o)) if timestamp <= t || rel_offset <= o => {}
            _ => self.entries.push((timestamp, rel_offset)),
        }
    }

    /// The relative offset to start scanning at for the first batch whose
    /// max timestamp is at or above `timestamp`.
    pub fn floor(&self, timestamp: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t <= timestamp);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_LEN);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8], next_rel_offset: u64) -> Option<TimeIndex> {
        if bytes.len() % TIME_ENTRY_LEN != 0 {
            return None;
        }
        let mut entries: Vec<(i64, u32)> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
        for c in bytes.chunks_exact(TIME_ENTRY_LEN) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            let t = i64::from_be_bytes(t);
            let o = u32::from_be_bytes([c[8], c[9], c[10], c[11]]);
            if o as u64 >= next_rel_offset {
                return None;
            }
            if let Some(&(lt, lo)) = entries.last() {
                if t <= lt || o <= lo {
                    return None;
                }
            }
            entries.push((t, o));
        }
        Some(TimeIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_floor_and_truncate() {
        let mut ix = OffsetIndex::default();
        ix.push(10, 4096);
        ix.push(20, 8192);
        ix.push(35, 12300);
        assert_eq!(ix.floor(0), (0, 0));
        assert_eq!(ix.floor(9), (0, 0));
        assert_eq!(ix.floor(10), (10, 4096));
        assert_eq!(ix.floor(34), (20, 8192));
        assert_eq!(ix.floor(1000), (35, 12300));
        assert_eq!(ix.entries_after(4096), &[(20, 8192), (35, 12300)]);
        let back = OffsetIndex::decode(&ix.encode(), 20000).unwrap();
        assert_eq!(back, ix);
        assert!(OffsetIndex::decode(&ix.encode(), 12300).is_none());
        assert!(OffsetIndex::decode(&ix.encode()[..7], 20000).is_none());
        assert_eq!(ix.last(), Some((35, 12300)));
    }

    #[test]
    fn offset_index_refuses_disorder() {
        let mut bytes = Vec::new();
        for (o, p) in [(5u32, 100u32), (4, 200)] {
            bytes.extend_from_slice(&o.to_be_bytes());
            bytes.extend_from_slice(&p.to_be_bytes());
        }
        assert!(OffsetIndex::decode(&bytes, 1000).is_none());
    }

    #[test]
    fn time_index_keeps_only_growth() {
        let mut ix = TimeIndex::default();
        ix.maybe_push(100, 0);
        ix.maybe_push(90, 5);
        ix.maybe_push(150, 7);
        ix.maybe_push(150, 9);
        assert_eq!(ix.entries, vec![(100, 0), (150, 7)]);
        assert_eq!(ix.floor(99), 0);
        assert_eq!(ix.floor(120), 0);
        assert_eq!(ix.floor(150), 7);
        let back = TimeIndex::decode(&ix.encode(), 10).unwrap();
        assert_eq!(back, ix);
        assert!(TimeIndex::decode(&ix.encode(), 7).is_none());
        assert_eq!(ix.last(), Some((150, 7)));
    }
}
