//! Where a new topic's replicas go.
//!
//! Kafka's assignment, which its operators know: the first replica (the
//! preferred leader) of partition `p` is broker `(start + p) mod n`, so
//! leaders are spread evenly; each follower is shifted from it by an amount
//! that grows every `n` partitions, so that followers spread too and one
//! broker's loss does not land all its followers' load on one neighbour.
//! `start` and the shift are random per topic, so that many small topics do
//! not all pile their leaders onto the first broker.
//!
//! With racks, the brokers are first listed rack by rack in turn (r1, r2,
//! r3, r1, ...) and a follower whose rack already holds a replica of the
//! partition is skipped while some rack holds none: each partition spans
//! `min(R, racks)` racks. A broker without a rack counts as a rack of its
//! own kind (the empty one).

use std::collections::{BTreeMap, BTreeSet};

use borges_net::types::NodeId;
use thiserror::Error;

use crate::seams::Random;

/// A broker that may host new replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error("replication factor {needed} needs {needed} live brokers; {available} are available")]
    NotEnoughBrokers { needed: usize, available: usize },
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// Replica lists for `partitions` new partitions of replication factor `rf`
/// over `brokers`, with a random start and shift.
pub fn place(
    brokers: &[Candidate],
    partitions: u32,
    rf: usize,
    rng: &mut dyn Random,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    let n = brokers.len().max(1) as u64;
    let start = rng.below(n) as usize;
    let shift = rng.below(n) as usize;
    place_from(brokers, partitions, rf, start, shift)
}

/// [`place`] with the start and shift given.
pub fn place_from(
    brokers: &[Candidate],
    partitions: u32,
    rf: usize,
    start: usize,
    shift: usize,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    if rf == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if rf > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers {
            needed: rf,
            available: brokers.len(),
        });
    }
    let ring = rack_alternated(brokers);
    let n = ring.len();
    let racks: BTreeSet<&str> = ring.iter().map(rack_of).collect();
    let mut out = Vec::with_capacity(partitions as usize);
    let mut shift = shift;
    for p in 0..partitions as usize {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (start + p) % n;
        let mut replicas = vec![ring[first].node];
        let mut used: BTreeSet<&str> = BTreeSet::from([rack_of(&ring[first])]);
        // Each step visits another broker; 2n steps visit every broker at
        // least once even with the rack rule skipping some the first time.
        let mut k = 0;
        while replicas.len() < rf && k < 2 * n {
            let c = &ring[follower_index(first, shift, k, n)];
            k += 1;
            if replicas.contains(&c.node) {
                continue;
            }
            let rack = rack_of(c);
            if used.len() < racks.len() && used.contains(rack) {
                continue;
            }
            replicas.push(c.node);
            used.insert(rack);
        }
        // A follower index sweeps every other broker, so rf <= n always fills.
        debug_assert_eq!(replicas.len(), rf, "placement filled every replica");
        out.push(replicas);
    }
    Ok(out)
}

/// The `k`-th follower candidate for a partition whose first replica is at
/// `first`: never `first` itself, and all the others as `k` runs over
/// `0..n-1`.
fn follower_index(first: usize, shift: usize, k: usize, n: usize) -> usize {
    if n == 1 {
        return first;
    }
    (first + 1 + (shift + k) % (n - 1)) % n
}

fn rack_of(c: &Candidate) -> &str {
    c.rack.as_deref().unwrap_or("")
}

/// The brokers listed rack by rack in turn, each rack's in node id order.
fn rack_alternated(brokers: &[Candidate]) -> Vec<Candidate> {
    let mut by_rack: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(rack_of(b)).or_default().push(b);
    }
    for list in by_rack.values_mut() {
        list.sort_by_key(|c| c.node);
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut i = 0;
    while out.len() < brokers.len() {
        for list in by_rack.values() {
            if let Some(c) = list.get(i) {
                out.push((*c).clone());
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::SplitMix64;

    fn brokers(racks: &[&str]) -> Vec<Candidate> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| Candidate {
                node: NodeId(i as i32 + 1),
                rack: (!r.is_empty()).then(|| r.to_string()),
            })
            .collect()
    }

    fn count(nodes: impl Iterator<Item = NodeId>) -> BTreeMap<NodeId, usize> {
        let mut m = BTreeMap::new();
        for n in nodes {
            *m.entry(n).or_default() += 1;
        }
        m
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let b = brokers(&["", "", "", "", ""]);
        for seed in 0..20 {
            let placed = place(&b, 100, 3, &mut SplitMix64::new(seed)).unwrap();
            for r in &placed {
                assert_eq!(r.len(), 3);
                assert_eq!(count(r.iter().copied()).len(), 3, "distinct replicas: {r:?}");
            }
            let leaders = count(placed.iter().map(|r| r[0]));
            assert!(leaders.values().all(|&c| c == 20), "{leaders:?}");
            let all = count(placed.iter().flatten().copied());
            assert!(all.values().all(|&c| c == 60), "{all:?}");
        }
    }

    #[test]
    fn the_start_is_random_per_topic() {
        let b = brokers(&["", "", ""]);
        let firsts: BTreeSet<NodeId> = (0..30)
            .map(|s| place(&b, 1, 1, &mut SplitMix64::new(s)).unwrap()[0][0])
            .collect();
        assert_eq!(firsts.len(), 3, "one-partition topics land on every broker");
    }

    #[test]
    fn racks_are_spread() {
        // Two racks of three, and three racks of two.
        for racks in [
            vec!["a", "a", "a", "b", "b", "b"],
            vec!["a", "a", "b", "b", "c", "c"],
        ] {
            let b = brokers(&racks);
            let n_racks = racks.iter().collect::<BTreeSet<_>>().len();
            let rack = |n: NodeId| racks[n.0 as usize - 1];
            for seed in 0..20 {
                let placed = place(&b, 60, 3, &mut SplitMix64::new(seed)).unwrap();
                for r in &placed {
                    let spanned: BTreeSet<&str> = r.iter().map(|&n| rack(n)).collect();
                    assert_eq!(spanned.len(), 3.min(n_racks), "{r:?} over {racks:?}");
                    assert_eq!(count(r.iter().copied()).len(), 3);
                }
                let leaders = count(placed.iter().map(|r| r[0]));
                assert!(leaders.values().all(|&c| c == 10), "{leaders:?}");
            }
        }
    }

    #[test]
    fn too_few_brokers_is_a_typed_error() {
        let b = brokers(&["", ""]);
        assert_eq!(
            place(&b, 1, 3, &mut SplitMix64::new(0)),
            Err(PlacementError::NotEnoughBrokers {
                needed: 3,
                available: 2
            })
        );
        assert_eq!(
            place(&b, 1, 0, &mut SplitMix64::new(0)),
            Err(PlacementError::ZeroReplicationFactor)
        );
        assert_eq!(
            place(&[], 0, 1, &mut SplitMix64::new(0)).unwrap_err().to_string(),
            "replication factor 1 needs 1 live brokers; 0 are available"
        );
        assert_eq!(place(&b, 4, 2, &mut SplitMix64::new(0)).unwrap().len(), 4);
    }
}
