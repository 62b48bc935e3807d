//! Which partition a record goes to.

use ahash::AHashMap as HashMap;

use xxhash_rust::xxh3::xxh3_64;

/// Chooses partitions: an explicit partition wins; a keyed record goes to
/// `xxh3_64(key) % partitions`, so one key always lands on one partition
/// (while the partition count stays the same); a record with neither sticks
/// to one partition per topic until that partition's batch is sent or full,
/// then moves on, so that keyless records fill few large batches instead of
/// many small ones (Kafka's sticky partitioner, KIP-480).
#[derive(Debug, Default)]
pub(crate) struct Partitioner {
    /// Per topic: the sticky partition and the partition count it was chosen from.
    sticky: HashMap<String, (u32, u32)>,
    /// Where the next topic without a sticky partition starts, so that
    /// topics do not all start on partition 0.
    next_start: u32,
}

/// The partition of a keyed record.
pub(crate) fn key_partition(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    (xxh3_64(key) % u64::from(partitions)) as u32
}

impl Partitioner {
    /// The partition for a record without an explicit partition.
    #[cfg(test)]
    pub(crate) fn partition(&mut self, topic: &str, key: Option<&[u8]>, partitions: u32) -> u32 {
        match key {
            Some(k) => key_partition(k, partitions),
            None => self.sticky(topic, partitions),
        }
    }

    /// The current sticky partition of `topic`.
    pub(crate) fn sticky(&mut self, topic: &str, partitions: u32) -> u32 {
        if let Some(&(p, count)) = self.sticky.get(topic) {
            if count == partitions {
                return p;
            }
        }
        let p = self.next_start % partitions;
        self.next_start = self.next_start.wrapping_add(1);
        self.sticky.insert(topic.to_string(), (p, partitions));
        p
    }

    /// Called when a batch of `topic`/`partition` is closed (sent or full):
    /// if it was the sticky partition, keyless records move to the next one.
    pub(crate) fn batch_closed(&mut self, topic: &str, partition: u32) {
        if let Some((p, count)) = self.sticky.get_mut(topic) {
            if *p == partition {
                *p = (partition + 1) % *count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_records_are_deterministic_and_spread() {
        let mut p = Partitioner::default();
        let mut seen = [0u32; 8];
        for i in 0..1000 {
            let key = format!("key-{i}");
            let a = p.partition("t", Some(key.as_bytes()), 8);
            let b = p.partition("other", Some(key.as_bytes()), 8);
            assert_eq!(a, b, "the topic does not change a key's partition");
            assert_eq!(a, key_partition(key.as_bytes(), 8));
            assert_eq!(a, (xxh3_64(key.as_bytes()) % 8) as u32);
            seen[a as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 60),
            "keys spread over partitions: {seen:?}"
        );
    }

    #[test]
    fn keyless_records_stick_until_the_batch_closes() {
        let mut p = Partitioner::default();
        let first = p.partition("t", None, 4);
        for _ in 0..100 {
            assert_eq!(p.partition("t", None, 4), first);
        }
        // Another partition's batch closing changes nothing.
        p.batch_closed("t", (first + 1) % 4);
        assert_eq!(p.partition("t", None, 4), first);
        // Its own batch closing moves it on, through every partition in turn.
        let mut order = vec![first];
        for _ in 0..4 {
            let cur = p.partition("t", None, 4);
            p.batch_closed("t", cur);
            order.push(p.partition("t", None, 4));
        }
        assert_eq!(order[4], order[0]);
        let mut distinct = order[..4].to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn sticky_partition_follows_a_changed_count() {
        let mut p = Partitioner::default();
        p.sticky.insert("t".into(), (7, 8));
        assert_eq!(p.partition("t", None, 8), 7);
        assert!(p.partition("t", None, 2) < 2);
        assert_eq!(p.partition("t", None, 1), 0);
    }
}
