//! Partition assignors, and the subscription and assignment bytes members
//! exchange through the coordinator (which treats them as opaque).
//!
//! The group leader runs the assignor the coordinator chose over every
//! member's subscription:
//! - `range`: per topic, the partitions in order, cut into one contiguous
//!   range per subscribed member (members in id order; the first ones get one
//!   more when it does not divide evenly).
//! - `roundrobin`: every subscribed partition of every topic, dealt to the
//!   members in turn (skipping members not subscribed to the topic).
//! - `cooperative-sticky`: balanced like round-robin, but a partition stays
//!   with its current owner whenever balance allows. It is incremental: a
//!   partition that must move is first only taken from its owner (which
//!   revokes it and rejoins at once), and given to its new owner in the
//!   next rebalance, so partitions that do not move are consumed throughout.
//!
//! Subscription, version 0: `u16 0`, `u32` topic count, topics (`u16`
//! length + UTF-8), `i32` generation of the owned partitions, `u32` owned
//! count, owned partitions (topic, `u32` partition).
//! Assignment, version 0: `u16 0`, `u32` count, partitions (topic, `u32`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A partition by topic name and index.
pub type TopicPartition = (String, u32);

/// What a member sends with its JoinGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The topics the member subscribes to.
    pub topics: Vec<String>,
    /// Partitions the member owns now (cooperative rebalancing).
    pub owned: Vec<TopicPartition>,
    /// The generation in which it got them; -1 for none.
    pub generation: i32,
}

/// What the leader gives a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The member's partitions.
    pub partitions: Vec<TopicPartition>,
}

/// Whether members give up everything before a rebalance (eager), or only
/// what moves (cooperative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Revoke everything, then rejoin.
    Eager,
    /// Revoke only what moves.
    Cooperative,
}

/// The assignment strategies this client implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Contiguous ranges per topic.
    Range,
    /// Partitions dealt in turn.
    RoundRobin,
    /// Balanced, sticky and incremental.
    CooperativeSticky,
}

/// Bytes that could not be read as a subscription or assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed group member data: {0}")]
pub struct MalformedData(pub &'static str);

impl Assignor {
    /// Every assignor, in the default order of preference.
    pub const ALL: [Assignor; 3] = [Assignor::CooperativeSticky, Assignor::Range, Assignor::RoundRobin];

    /// The protocol name members announce.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor announced under `name`.
    pub fn from_name(name: &str) -> Option<Assignor> {
        Assignor::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Eager or cooperative.
    pub fn protocol(self) -> RebalanceProtocol {
        match self {
            Assignor::CooperativeSticky => RebalanceProtocol::Cooperative,
            _ => RebalanceProtocol::Eager,
        }
    }

    /// Assigns the partitions of `partition_counts` to `members` (member id
    /// and subscription). Every member gets an entry, possibly empty.
    pub fn assign(
        self,
        members: &[(String, Subscription)],
        partition_counts: &HashMap<String, u32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> =
            members.iter().map(|(id, _)| (id.clone(), Vec::new())).collect();
        match self {
            Assignor::Range => range(members, partition_counts, &mut out),
            Assignor::RoundRobin => round_robin(members, partition_counts, &mut out),
            Assignor::CooperativeSticky => cooperative_sticky(members, partition_counts, &mut out),
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }
}

fn subscribers<'a>(members: &'a [(String, Subscription)], topic: &str) -> Vec<&'a String> {
    let mut v: Vec<&String> = members
        .iter()
        .filter(|(_, s)| s.topics.iter().any(|t| t == topic))
        .map(|(id, _)| id)
        .collect();
    v.sort();
    v
}

fn all_topics(members: &[(String, Subscription)], counts: &HashMap<String, u32>) -> BTreeSet<String> {
    members
        .iter()
        .flat_map(|(_, s)| s.topics.iter().cloned())
        .filter(|t| counts.contains_key(t))
        .collect()
}

fn range(
    members: &[(String, Subscription)],
    counts: &HashMap<String, u32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    for topic in all_topics(members, counts) {
        let subs = subscribers(members, &topic);
        let n = counts[&topic] as usize;
        let (per, extra) = (n / subs.len(), n % subs.len());
        let mut next = 0usize;
        for (i, m) in subs.iter().enumerate() {
            let take = per + usize::from(i < extra);
            let list = out.get_mut(*m).expect("every member has an entry");
            list.extend((next..next + take).map(|p| (topic.clone(), p as u32)));
            next += take;
        }
    }
}

fn round_robin(
    members: &[(String, Subscription)],
    counts: &HashMap<String, u32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let mut ids: Vec<&String> = members.iter().map(|(id, _)| id).collect();
    ids.sort();
    let subscribed: HashMap<&String, &Subscription> = members.iter().map(|(id, s)| (id, s)).collect();
    let mut turn = 0usize;
    for topic in all_topics(members, counts) {
        for p in 0..counts[&topic] {
            // The next member in turn that subscribes to the topic.
            for _ in 0..ids.len() {
                let m = ids[turn % ids.len()];
                turn += 1;
                if subscribed[m].topics.contains(&topic) {
                    out.get_mut(m).expect("entry").push((topic.clone(), p));
                    break;
                }
            }
        }
    }
}

fn cooperative_sticky(
    members: &[(String, Subscription)],
    counts: &HashMap<String, u32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let subs: HashMap<&String, &Subscription> = members.iter().map(|(id, s)| (id, s)).collect();
    let valid = |m: &String, tp: &TopicPartition| {
        counts.get(&tp.0).is_some_and(|&n| tp.1 < n) && subs[m].topics.contains(&tp.0)
    };
    // Current owners; a partition claimed twice goes to the claim of the
    // newer generation (the older one is a member that missed a rebalance).
    let mut owner: HashMap<TopicPartition, (&String, i32)> = HashMap::new();
    for (id, s) in members {
        for tp in &s.owned {
            if !valid(id, tp) {
                continue;
            }
            match owner.get(tp) {
                Some((_, g)) if *g >= s.generation => {}
                _ => {
                    owner.insert(tp.clone(), (id, s.generation));
                }
            }
        }
    }
    let mut all: Vec<TopicPartition> = all_topics(members, counts)
        .into_iter()
        .flat_map(|t| (0..counts[&t]).map(move |p| (t.clone(), p)))
        .collect();
    all.sort();
    // Balance target: with every member able to take every partition, each
    // gets floor or ceil of total / members.
    let mut ids: Vec<&String> = members.iter().map(|(id, _)| id).collect();
    ids.sort();
    let eligible = |tp: &TopicPartition| -> Vec<&String> {
        ids.iter()
            .copied()
            .filter(|m| subs[*m].topics.contains(&tp.0))
            .collect()
    };
    let total = all.len();
    let quota_hi = total.div_ceil(ids.len().max(1));
    let quota_lo = total / ids.len().max(1);
    let mut with_extra = total - quota_lo * ids.len();
    // Keep owned partitions up to the quota.
    let mut kept: BTreeMap<&String, Vec<TopicPartition>> = ids.iter().map(|m| (*m, Vec::new())).collect();
    let mut unassigned: Vec<TopicPartition> = Vec::new();
    let mut owned_by: Vec<(&String, Vec<TopicPartition>)> = ids
        .iter()
        .map(|m| {
            let mut mine: Vec<TopicPartition> = owner
                .iter()
                .filter(|(_, (o, _))| *o == *m)
                .map(|(tp, _)| tp.clone())
                .collect();
            mine.sort();
            (*m, mine)
        })
        .collect();
    // Members owning the most keep first, so the extra slots go to them.
    owned_by.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for (m, mine) in owned_by {
        let cap = if with_extra > 0 && mine.len() > quota_lo {
            with_extra -= 1;
            quota_hi
        } else {
            quota_lo
        };
        for tp in mine {
            if kept[m].len() < cap {
                kept.get_mut(m).expect("entry").push(tp.clone());
                taken.insert(tp);
            }
        }
    }
    for tp in &all {
        if !taken.contains(tp) {
            unassigned.push(tp.clone());
        }
    }
    // Give the rest to the least loaded eligible member.
    let mut target: BTreeMap<&String, Vec<TopicPartition>> = kept.clone();
    for tp in unassigned {
        let best = eligible(&tp)
            .into_iter()
            .min_by(|a, b| target[*a].len().cmp(&target[*b].len()).then(a.cmp(b)));
        if let Some(m) = best {
            target.get_mut(m).expect("entry").push(tp);
        }
    }
    // Incremental: a partition still owned by someone else is withheld this
    // round; its owner revokes it and the next rebalance hands it over.
    for (m, tps) in target {
        let list = out.get_mut(m).expect("entry");
        for tp in tps {
            match owner.get(&tp) {
                Some((o, _)) if *o != m => {}
                _ => list.push(tp),
            }
        }
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

struct In(Bytes);

impl In {
    fn need(&self, n: usize) -> Result<(), MalformedData> {
        if self.0.remaining() < n {
            return Err(MalformedData("truncated"));
        }
        Ok(())
    }
    fn u16(&mut self) -> Result<u16, MalformedData> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self) -> Result<u32, MalformedData> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn i32(&mut self) -> Result<i32, MalformedData> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn str(&mut self) -> Result<String, MalformedData> {
        let n = self.u16()? as usize;
        self.need(n)?;
        String::from_utf8(self.0.split_to(n).to_vec()).map_err(|_| MalformedData("topic is not UTF-8"))
    }
    fn count(&mut self, min_each: usize) -> Result<usize, MalformedData> {
        let n = self.u32()? as usize;
        self.need(n.saturating_mul(min_each))?;
        Ok(n)
    }
    fn partitions(&mut self) -> Result<Vec<TopicPartition>, MalformedData> {
        let n = self.count(6)?;
        (0..n).map(|_| Ok((self.str()?, self.u32()?))).collect()
    }
    fn version(&mut self) -> Result<(), MalformedData> {
        match self.u16()? {
            0 => Ok(()),
            _ => Err(MalformedData("unknown version")),
        }
    }
}

fn put_partitions(out: &mut BytesMut, parts: &[TopicPartition]) {
    out.put_u32(parts.len() as u32);
    for (t, p) in parts {
        put_str(out, t);
        out.put_u32(*p);
    }
}

impl Subscription {
    /// The bytes sent in JoinGroup.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u16(0);
        out.put_u32(self.topics.len() as u32);
        for t in &self.topics {
            put_str(&mut out, t);
        }
        out.put_i32(self.generation);
        put_partitions(&mut out, &self.owned);
        out.freeze()
    }

    /// Reads a member's subscription.
    pub fn decode(b: Bytes) -> Result<Subscription, MalformedData> {
        let mut r = In(b);
        r.version()?;
        let n = r.count(2)?;
        let topics = (0..n).map(|_| r.str()).collect::<Result<_, _>>()?;
        let generation = r.i32()?;
        let owned = r.partitions()?;
        Ok(Subscription {
            topics,
            owned,
            generation,
        })
    }
}

impl Assignment {
    /// The bytes sent in SyncGroup.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u16(0);
        put_partitions(&mut out, &self.partitions);
        out.freeze()
    }

    /// Reads an assignment; empty bytes are an empty assignment.
    pub fn decode(b: Bytes) -> Result<Assignment, MalformedData> {
        if b.is_empty() {
            return Ok(Assignment::default());
        }
        let mut r = In(b);
        r.version()?;
        Ok(Assignment {
            partitions: r.partitions()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(topics: &[&str], owned: &[(&str, u32)], generation: i32) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            generation,
        }
    }

    fn counts(c: &[(&str, u32)]) -> HashMap<String, u32> {
        c.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn check_disjoint_complete(a: &BTreeMap<String, Vec<TopicPartition>>, total: usize) {
        let mut seen = BTreeSet::new();
        for parts in a.values() {
            for tp in parts {
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        assert_eq!(seen.len(), total);
    }

    #[test]
    fn range_cuts_contiguous_ranges() {
        let m = vec![
            ("a".into(), sub(&["t"], &[], -1)),
            ("b".into(), sub(&["t"], &[], -1)),
        ];
        let a = Assignor::Range.assign(&m, &counts(&[("t", 5)]));
        assert_eq!(a["a"], vec![("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]);
        assert_eq!(a["b"], vec![("t".into(), 3), ("t".into(), 4)]);
    }

    #[test]
    fn round_robin_deals_in_turn_and_respects_subscriptions() {
        let m = vec![
            ("a".into(), sub(&["t", "u"], &[], -1)),
            ("b".into(), sub(&["t"], &[], -1)),
        ];
        let a = Assignor::RoundRobin.assign(&m, &counts(&[("t", 4), ("u", 2)]));
        check_disjoint_complete(&a, 6);
        assert!(a["b"].iter().all(|(t, _)| t == "t"));
        assert_eq!(a["a"].len(), 4);
    }

    #[test]
    fn cooperative_sticky_keeps_owners_and_withholds_moves() {
        // One member owned everything; a second joins.
        let m = vec![
            (
                "a".into(),
                sub(&["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)], 1),
            ),
            ("b".into(), sub(&["t"], &[], -1)),
        ];
        let a = Assignor::CooperativeSticky.assign(&m, &counts(&[("t", 4)]));
        // a keeps two, the two that move are withheld (revoked first) ...
        assert_eq!(a["a"].len(), 2);
        assert!(a["b"].is_empty());
        // ... and handed over in the next round.
        let kept = a["a"].clone();
        let m2 = vec![
            (
                "a".into(),
                Subscription {
                    topics: vec!["t".into()],
                    owned: kept.clone(),
                    generation: 2,
                },
            ),
            ("b".into(), sub(&["t"], &[], -1)),
        ];
        let a2 = Assignor::CooperativeSticky.assign(&m2, &counts(&[("t", 4)]));
        assert_eq!(a2["a"], kept);
        assert_eq!(a2["b"].len(), 2);
        check_disjoint_complete(&a2, 4);
    }

    #[test]
    fn cooperative_sticky_balances_from_scratch_and_after_a_member_leaves() {
        let ids = ["a", "b", "c"];
        let m: Vec<(String, Subscription)> = ids
            .iter()
            .map(|i| (i.to_string(), sub(&["t"], &[], -1)))
            .collect();
        let a = Assignor::CooperativeSticky.assign(&m, &counts(&[("t", 6)]));
        check_disjoint_complete(&a, 6);
        assert!(a.values().all(|v| v.len() == 2));
        // c leaves: a and b keep theirs and share c's.
        let m2: Vec<(String, Subscription)> = ["a", "b"]
            .iter()
            .map(|i| {
                (
                    i.to_string(),
                    Subscription {
                        topics: vec!["t".into()],
                        owned: a[*i].clone(),
                        generation: 1,
                    },
                )
            })
            .collect();
        let a2 = Assignor::CooperativeSticky.assign(&m2, &counts(&[("t", 6)]));
        check_disjoint_complete(&a2, 6);
        for i in ["a", "b"] {
            assert!(a[i].iter().all(|tp| a2[i].contains(tp)), "{i} lost a partition");
        }
    }

    #[test]
    fn data_round_trips_and_rejects_truncation() {
        let s = sub(&["t", "u"], &[("t", 3)], 7);
        let b = s.encode();
        assert_eq!(Subscription::decode(b.clone()), Ok(s));
        for cut in 1..b.len() {
            assert!(Subscription::decode(b.slice(..cut)).is_err());
        }
        let a = Assignment {
            partitions: vec![("t".into(), 1)],
        };
        assert_eq!(Assignment::decode(a.encode()), Ok(a));
        assert_eq!(Assignment::decode(Bytes::new()), Ok(Assignment::default()));
        // A huge count with no bytes behind it is refused before allocating.
        assert!(Assignment::decode(Bytes::from_static(b"\x00\x00\xff\xff\xff\xff")).is_err());
    }
}
