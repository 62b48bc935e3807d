//! Issue 19's consumer-group faults against a real broker, one test per
//! finding, named after it: a member whose rejoin failed, a switch from a
//! cooperative to an eager protocol, heartbeats through a rebalance, a
//! membership lost in a commit, a static member restarted under
//! cooperative-sticky, and `max_poll_interval`. (The coordinator's own
//! findings, pipelined commits and commits to a group being deleted, are
//! unit tests in `broker/src/group/mod.rs`, where the order in which
//! writes complete can be chosen.)
//!
//! Each test is bounded in time; members run in this process, on tokio
//! tasks, and extra raw members are driven request by request.

mod group_faults_common;

use group_faults_common::*;

/// Finding 1. A member's rejoin fails (its JoinGroup times out: the
/// rebalance is held open by a member that does not rejoin, longer than
/// the member waits); the error surfaces from `poll`, and the polls after
/// it must rejoin, not leave the member out of the group, consuming nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_after_failed_rejoin() {
    let b = GroupBroker::start();
    bounded(90, async {
        let client = connect(&b.addr()).await;
        client.admin().create_topic("z", 2, 1, &[]).await.expect("create");
        produce_to(&client, "z", 0, 0, 5).await;
        produce_to(&client, "z", 1, 5, 5).await;
        let mut cfg = group_config("zombie");
        cfg.assignors = vec![Assignor::Range];
        cfg.rebalance_timeout = Duration::from_secs(2);
        // JoinGroup waits rebalance_timeout + 1 s; join_and_sync gives up after 4 s.
        let mut a = consumer_with(&client, Duration::from_secs(1));
        a.subscribe(cfg, &["z"], Box::new(NoopListener))
            .expect("subscribe");
        let mut seen = 0;
        while seen < 10 {
            seen += a.poll(Duration::from_millis(100)).await.expect("poll").len();
        }
        // A raw member joins (session and rebalance timeouts 10 s) and then
        // never rejoins nor heartbeats.
        let raw = connect(&b.addr()).await;
        let n = node(&raw);
        let r1 = raw.clone();
        let first = tokio::spawn(async move {
            r1.send_to(
                n,
                &raw_join("zombie", "", 10_000, 10_000, &["range"]),
                Duration::from_secs(30),
            )
            .await
        });
        while !first.is_finished() {
            a.poll(Duration::from_millis(100)).await.expect("poll");
        }
        let Ok(Response::JoinGroup(j)) = first.await.expect("task") else {
            panic!("the raw member's join failed")
        };
        assert_eq!(j.error, ErrorCode::None);
        wait_for_group(&client, "zombie", "two members, stable", |d| {
            d.state == "Stable" && d.members.len() == 2
        })
        .await;
        // A third member joins: the rebalance waits up to 10 s for the
        // raw member, longer than `a` waits in join_and_sync.
        let r2 = raw.clone();
        let _second = tokio::spawn(async move {
            r2.send_to(
                n,
                &raw_join("zombie", "", 10_000, 10_000, &["range"]),
                Duration::from_secs(30),
            )
            .await
        });
        let mut failed = None;
        let start = tokio::time::Instant::now();
        while failed.is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the rejoin never failed"
            );
            if let Err(e) = a.poll(Duration::from_millis(100)).await {
                failed = Some(e);
            }
        }
        eprintln!("the rejoin failed with {:?} after {:?}", failed, start.elapsed());
        // New records; the member must get them once the rebalance completes.
        produce_to(&client, "z", 0, 10, 5).await;
        produce_to(&client, "z", 1, 15, 5).await;
        let mut fresh = 0;
        let start = tokio::time::Instant::now();
        while fresh == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the member never came back: polls return nothing ({:?})",
                a.group_member()
            );
            match a.poll(Duration::from_millis(100)).await {
                Ok(recs) => fresh += recs.iter().filter(|r| value_index(r) >= 10).count(),
                Err(e) => eprintln!("poll: {e}"),
            }
        }
    })
    .await;
}

/// Finding 2. Two members support [cooperative-sticky, range] (the
/// default); a third supports only range, so the group switches to an
/// eager protocol: the first two must revoke before they rejoin, so that
/// no partition has two owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_to_eager_revokes_first() {
    let b = GroupBroker::start();
    bounded(90, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("ce", 6, 1, &[])
            .await
            .expect("create");
        let shared = Arc::new(Mutex::new(Ownership::default()));
        let mut cfg = group_config("ce");
        cfg.session_timeout = Duration::from_secs(3);
        cfg.rebalance_timeout = Duration::from_secs(10);
        assert_eq!(cfg.assignors, vec![Assignor::CooperativeSticky, Assignor::Range]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for name in ["a", "b"] {
            let mut c = consumer(&client);
            let l = Tracked {
                name: name.into(),
                shared: shared.clone(),
                revoke_work: Duration::from_millis(500),
            };
            c.subscribe(cfg.clone(), &["ce"], Box::new(l)).expect("subscribe");
            tasks.push(run_member(c, stop.clone()));
            wait_for_group(&client, "ce", "members stable", |d| {
                d.state == "Stable" && d.members.len() == tasks.len()
            })
            .await;
        }
        wait_for_group(&client, "ce", "a and b own 3 each", |d| {
            d.state == "Stable" && d.members.len() == 2 && d.members.iter().all(|m| m.assignment.len() == 3)
        })
        .await;
        let d = client.admin().describe_group("ce").await.expect("describe");
        eprintln!(
            "before the range-only member: protocol {} generation {}",
            d.protocol, d.generation
        );
        let mut range_cfg = cfg.clone();
        range_cfg.assignors = vec![Assignor::Range];
        let mut c = consumer(&client);
        let l = Tracked {
            name: "c".into(),
            shared: shared.clone(),
            revoke_work: Duration::ZERO,
        };
        c.subscribe(range_cfg, &["ce"], Box::new(l)).expect("subscribe");
        tasks.push(run_member(c, stop.clone()));
        let d = wait_for_group(&client, "ce", "three members, two partitions each", |d| {
            d.state == "Stable" && d.members.len() == 3 && d.members.iter().all(|m| m.assignment.len() == 2)
        })
        .await;
        assert_eq!(d.protocol, "range");
        // Every member has its listener told by now.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.lock().unwrap().owner.len() < 6 || {
            let o = shared.lock().unwrap();
            let names: BTreeSet<&String> = o.owner.values().collect();
            names.len() < 3
        } {
            assert!(tokio::time::Instant::now() < deadline, "listeners not told");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let c = t.await.expect("member");
            drop(c);
        }
        let o = shared.lock().unwrap();
        assert!(o.violations.is_empty(), "two owners: {:?}", o.violations);
    })
    .await;
}

/// Finding 3. Session 2 s, rebalance 10 s, a member that polls every 4 s:
/// when a new member joins, the slow one must be kept alive by its
/// heartbeats until it rejoins, keeping its member id, and the generation
/// rises by exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_continue_through_a_rebalance() {
    let b = GroupBroker::start();
    bounded(90, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("hb", 2, 1, &[])
            .await
            .expect("create");
        let mut cfg = group_config("hb");
        cfg.session_timeout = Duration::from_secs(2);
        cfg.rebalance_timeout = Duration::from_secs(10);
        cfg.heartbeat_interval = Duration::from_millis(500);
        let mut slow = consumer(&client);
        slow.subscribe(cfg.clone(), &["hb"], Box::new(NoopListener))
            .expect("subscribe");
        while slow.group_member().is_none() {
            slow.poll(Duration::from_millis(100)).await.expect("poll");
        }
        let (generation, id) = slow.group_member().expect("joined");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let slow_task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                slow.poll(Duration::from_millis(100)).await.expect("poll");
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            slow
        });
        let mut fast = consumer(&client);
        fast.subscribe(cfg, &["hb"], Box::new(NoopListener))
            .expect("subscribe");
        let fast_task = run_member(fast, stop.clone());
        let d = wait_for_group(&client, "hb", "two members with a partition each", |d| {
            d.state == "Stable" && d.members.len() == 2 && d.members.iter().all(|m| m.assignment.len() == 1)
        })
        .await;
        assert!(
            d.members.iter().any(|m| m.member_id == id),
            "the slow member lost its id {id}: {d:?}"
        );
        assert_eq!(d.generation, generation + 1, "one rebalance only: {d:?}");
        stop.store(true, Ordering::SeqCst);
        let slow = slow_task.await.expect("slow");
        let fast = fast_task.await.expect("fast");
        slow.close().await.expect("close");
        fast.close().await.expect("close");
    })
    .await;
}

/// Finding 4. OffsetFetch fails (its connections break) for 12 s right
/// after the SyncGroup that gives a member its partitions, longer than the
/// client's own retries of it last: the member must
/// keep its new assignment and consume it once the committed offsets can
/// be read, not drop it until the next rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_failure_keeps_the_assignment() {
    let proxy = FaultProxy::start().await;
    let advertised = proxy.addr.to_string();
    let b = GroupBroker::start_with(&["--advertised", &advertised]);
    proxy.set_upstream(b.broker.addr);
    bounded(90, async {
        let client = connect(&advertised).await;
        client
            .admin()
            .create_topic("of", 2, 1, &[])
            .await
            .expect("create");
        produce_to(&client, "of", 0, 0, 10).await;
        produce_to(&client, "of", 1, 10, 10).await;
        let mut cfg = group_config("of");
        cfg.assignors = vec![Assignor::Range];
        cfg.session_timeout = Duration::from_secs(10);
        let mut a = consumer(&client);
        a.subscribe(cfg, &["of"], Box::new(NoopListener))
            .expect("subscribe");
        proxy.fail_offset_fetches_after_next_sync(Duration::from_secs(12));
        let start = tokio::time::Instant::now();
        let mut seen = BTreeSet::new();
        while seen.len() < 20 {
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "the assignment was not consumed: {} of 20 records, assignment {:?}, {} OffsetFetch broken",
                seen.len(),
                a.assignment(),
                proxy.broken()
            );
            match a.poll(Duration::from_millis(100)).await {
                Ok(recs) => seen.extend(recs.iter().map(|r| (r.partition, r.offset))),
                Err(e) => eprintln!("poll: {e}"),
            }
        }
        eprintln!(
            "consumed after {:?}; {} OffsetFetch broken",
            start.elapsed(),
            proxy.broken()
        );
        assert!(
            proxy.broken() > 0,
            "no OffsetFetch was broken: the test tested nothing"
        );
        a.close().await.expect("close");
    })
    .await;
}

/// Finding 5. Member A is expelled without its heartbeat noticing; B takes
/// the partition over, commits 150 and leaves; A's next poll learns of the
/// lost membership from its commit: it must drop its partitions and its
/// positions (telling its listener they are lost), so that it starts again
/// from B's commit, not from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_membership_drops_positions() {
    let b = GroupBroker::start();
    bounded(90, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("lm", 1, 1, &[])
            .await
            .expect("create");
        produce_to(&client, "lm", 0, 0, 100).await;
        let mut cfg = group_config("lm");
        // A's heartbeats stay out of the way: the loss is learnt from a commit.
        cfg.session_timeout = Duration::from_secs(60);
        cfg.heartbeat_interval = Duration::from_secs(50);
        cfg.auto_commit_interval = Duration::from_millis(100);
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut a = consumer(&client);
        a.subscribe(cfg.clone(), &["lm"], Box::new(Events(events.clone())))
            .expect("subscribe");
        let mut got = 0;
        while got < 100 {
            got += a.poll(Duration::from_millis(100)).await.expect("poll").len();
        }
        let (_, a_id) = a.group_member().expect("joined");
        // A is expelled (as a session expiry would), and does not know.
        expel(&client, "lm", &a_id).await;
        produce_to(&client, "lm", 0, 100, 100).await;
        let mut bcfg = cfg.clone();
        bcfg.enable_auto_commit = false;
        bcfg.heartbeat_interval = Duration::from_millis(200);
        let mut bm = consumer(&client);
        bm.subscribe(bcfg, &["lm"], Box::new(NoopListener))
            .expect("subscribe");
        let mut got = 0;
        while got < 50 {
            got += bm.poll(Duration::from_millis(100)).await.expect("poll").len();
        }
        bm.commit_offsets(&[(("lm".to_string(), 0), 150)])
            .await
            .expect("commit 150");
        bm.close().await.expect("close");
        // A polls again; its first record must be at 150 or later.
        let start = tokio::time::Instant::now();
        let first = loop {
            assert!(start.elapsed() < Duration::from_secs(20), "A read nothing more");
            match a.poll(Duration::from_millis(100)).await {
                Ok(recs) if !recs.is_empty() => break recs[0].offset,
                Ok(_) => {}
                Err(e) => eprintln!("poll: {e}"),
            }
        };
        assert!(
            first >= 150,
            "A went on from its stale position: first record at {first}"
        );
        let events = events.lock().unwrap().clone();
        assert!(
            events.iter().any(|(what, _)| *what == "lost"),
            "the listener was not told the partition was lost: {events:?}"
        );
        a.close().await.expect("close");
    })
    .await;
}

/// Finding 8. Under cooperative-sticky, after two rebalances (so that the
/// members' subscriptions carry owned partitions and a generation), a
/// static member restarted with its instance id must get its partitions
/// back without a rebalance: the generation is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_keeps_the_generation() {
    let b = GroupBroker::start();
    bounded(90, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("st", 4, 1, &[])
            .await
            .expect("create");
        let mut one_cfg = group_config("st");
        one_cfg.assignors = vec![Assignor::CooperativeSticky];
        one_cfg.session_timeout = Duration::from_secs(10);
        one_cfg.instance_id = Some("host-1".into());
        let mut two_cfg = one_cfg.clone();
        two_cfg.instance_id = Some("host-2".into());
        let stop = Arc::new(AtomicBool::new(false));
        let mut one = consumer(&client);
        one.subscribe(one_cfg.clone(), &["st"], Box::new(NoopListener))
            .expect("subscribe");
        let t1 = run_member(one, stop.clone());
        wait_for_group(&client, "st", "one member with everything", |d| {
            d.state == "Stable" && d.members.len() == 1 && d.members[0].assignment.len() == 4
        })
        .await;
        let mut two = consumer(&client);
        two.subscribe(two_cfg, &["st"], Box::new(NoopListener))
            .expect("subscribe");
        let t2 = run_member(two, stop.clone());
        let stable = wait_for_group(&client, "st", "two members, two partitions each", |d| {
            d.state == "Stable" && d.members.len() == 2 && d.members.iter().all(|m| m.assignment.len() == 2)
        })
        .await;
        assert!(
            stable.generation >= 3,
            "cooperative takes two rebalances: {stable:?}"
        );
        stop.store(true, Ordering::SeqCst);
        let one = t1.await.expect("one");
        let two = t2.await.expect("two");
        let before = one.assignment();
        // A crash-like stop of host-1 (static members send no LeaveGroup).
        drop(one);
        let stop2 = Arc::new(AtomicBool::new(false));
        let t2 = run_member(two, stop2.clone());
        let mut again = consumer(&client);
        again
            .subscribe(one_cfg, &["st"], Box::new(NoopListener))
            .expect("subscribe");
        while again.group_member().is_none() {
            again.poll(Duration::from_millis(100)).await.expect("poll");
        }
        let d = client.admin().describe_group("st").await.expect("describe");
        assert_eq!(d.generation, stable.generation, "no rebalance: {d:?}");
        assert_eq!(d.state, "Stable");
        assert_eq!(again.assignment(), before);
        stop2.store(true, Ordering::SeqCst);
        let two = t2.await.expect("two");
        again.close().await.expect("close");
        two.close().await.expect("close");
    })
    .await;
}

/// Finding 9. A member whose application stops calling `poll` (its
/// heartbeats go on) must leave the group after `max_poll_interval`, so
/// that its partitions move to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_poll_interval_moves_partitions() {
    let b = GroupBroker::start();
    bounded(90, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("mp", 2, 1, &[])
            .await
            .expect("create");
        let mut cfg = group_config("mp");
        cfg.max_poll_interval = Duration::from_secs(3);
        let mut stuck = consumer(&client);
        stuck
            .subscribe(cfg.clone(), &["mp"], Box::new(NoopListener))
            .expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let mut other = consumer(&client);
        other
            .subscribe(cfg, &["mp"], Box::new(NoopListener))
            .expect("subscribe");
        let t = run_member(other, stop.clone());
        while stuck.group_member().is_none() {
            stuck.poll(Duration::from_millis(100)).await.expect("poll");
        }
        wait_for_group(&client, "mp", "two members with a partition each", |d| {
            d.state == "Stable" && d.members.len() == 2 && d.members.iter().all(|m| m.assignment.len() == 1)
        })
        .await;
        // `stuck` is not polled again (it stays alive, its heartbeat task runs).
        let start = tokio::time::Instant::now();
        let d = wait_for_group(&client, "mp", "the other member took both partitions", |d| {
            d.state == "Stable" && d.members.len() == 1 && d.members[0].assignment.len() == 2
        })
        .await;
        eprintln!("moved after {:?}: {d:?}", start.elapsed());
        assert!(start.elapsed() >= Duration::from_secs(2), "left too early");
        stop.store(true, Ordering::SeqCst);
        let other = t.await.expect("other");
        other.close().await.expect("close");
        drop(stuck);
    })
    .await;
}

/// A small deterministic generator (xorshift64*), so that a run replays
/// from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the members did, for the history checker.
#[derive(Default)]
struct History {
    /// Every record some member's `poll` returned: (partition, offset).
    processed: BTreeSet<(u32, i64)>,
    /// (generation, owner, its assignment) seen after each `poll`; the
    /// owner is the instance id of a static member, else the member id.
    owned: Vec<(i32, String, BTreeSet<TopicPartition>)>,
}

/// How a member stops.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// `close`: commit, revoke, LeaveGroup.
    Close,
    /// Dropped with no goodbye (the in-process SIGKILL: heartbeats stop,
    /// nothing is committed).
    Crash,
}

/// Orders to a running member.
#[derive(Debug, Clone, Copy)]
enum Order {
    Stop(Stop),
    /// Stop polling for this long (its heartbeats go on).
    Pause(Duration),
}

fn spawn_chaos_member(
    client: &Client,
    cfg: GroupConfig,
    history: Arc<Mutex<History>>,
) -> (
    tokio::sync::mpsc::UnboundedSender<Order>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Order>();
    let mut c = consumer(client);
    let instance = cfg.instance_id.clone();
    c.subscribe(cfg, &["chaos"], Box::new(NoopListener))
        .expect("subscribe");
    let task = tokio::spawn(async move {
        loop {
            match rx.try_recv() {
                Ok(Order::Stop(Stop::Close)) => {
                    let _ = c.close().await;
                    return;
                }
                Ok(Order::Stop(Stop::Crash)) => return,
                Ok(Order::Pause(d)) => tokio::time::sleep(d).await,
                Err(_) => {}
            }
            match c.poll(Duration::from_millis(100)).await {
                Ok(recs) => {
                    let mut h = history.lock().unwrap();
                    h.processed.extend(recs.iter().map(|r| (r.partition, r.offset)));
                    if let Some((generation, member)) = c.group_member() {
                        let owner = instance.clone().unwrap_or(member);
                        let parts: BTreeSet<TopicPartition> = c.assignment().into_iter().collect();
                        h.owned.push((generation, owner, parts));
                    }
                }
                Err(e) => eprintln!("member poll: {e}"),
            }
        }
    });
    (tx, task)
}

/// Issue 19's randomized run: members join, close, crash, pause (shorter and
/// longer than `max_poll_interval`) and come back with static ids while
/// records flow; then a history checker: every acknowledged record was
/// processed at least once, no partition was owned by two members in one
/// generation, and the committed offsets never went back. Short by
/// default; the long run (see HACKING.md):
/// `BORGES_GROUP_CHAOS_SECS=600 BORGES_GROUP_CHAOS_SEED=<n> cargo test -p
/// borges-system-tests --test group_faults randomized -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_membership_keeps_the_history_valid() {
    let secs: u64 = std::env::var("BORGES_GROUP_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("BORGES_GROUP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!(
        "randomized group run: seed {seed}, {secs} s (BORGES_GROUP_CHAOS_SEED={seed} replays its choices)"
    );
    let mut rng = Rng(seed);
    let b = GroupBroker::start();
    bounded(secs + 120, async move {
        let client = connect(&b.addr()).await;
        const PARTITIONS: u32 = 6;
        client
            .admin()
            .create_topic("chaos", PARTITIONS, 1, &[])
            .await
            .expect("create");
        let history = Arc::new(Mutex::new(History::default()));
        // Records flow all along.
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let producing = Arc::new(AtomicBool::new(true));
        let producer_task = {
            let client = client.clone();
            let acked = acked.clone();
            let producing = producing.clone();
            tokio::spawn(async move {
                let producer = Producer::new(
                    client,
                    ProducerConfig {
                        acks: Acks::All,
                        linger: Duration::from_millis(5),
                        ..ProducerConfig::default()
                    },
                )
                .expect("producer");
                let mut i = 0u64;
                while producing.load(Ordering::SeqCst) {
                    let mut futs = Vec::new();
                    for _ in 0..20 {
                        let rec = ProducerRecord::new("chaos")
                            .partition((i % u64::from(PARTITIONS)) as u32)
                            .value(format!("v{i}"));
                        i += 1;
                        futs.push(producer.send(rec).await.expect("send"));
                    }
                    for f in futs {
                        let m = f.await.expect("delivered");
                        acked.lock().unwrap().insert((m.partition, m.offset));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                producer.close().await;
            })
        };
        // Committed offsets, sampled: they must never go back.
        let regressions = Arc::new(Mutex::new(Vec::new()));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let admin = client.admin();
            let regressions = regressions.clone();
            let sampling = sampling.clone();
            tokio::spawn(async move {
                let mut last: BTreeMap<TopicPartition, i64> = BTreeMap::new();
                while sampling.load(Ordering::SeqCst) {
                    if let Ok(now) = admin.group_offsets("chaos").await {
                        for (tp, o) in now {
                            let prev = last.insert(tp.clone(), o);
                            if prev.is_some_and(|p| o < p) {
                                regressions.lock().unwrap().push((tp, prev, o));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let cooperative = rng.below(2) == 0;
        eprintln!("assignors: {}", if cooperative { "cooperative-sticky only" } else { "[cooperative-sticky, range] and [range] (eager)" });
        let config = |rng: &mut Rng, slot: usize| {
            let mut cfg = group_config("chaos");
            cfg.max_poll_interval = Duration::from_secs(2);
            cfg.assignors = if cooperative {
                vec![Assignor::CooperativeSticky]
            } else if rng.below(2) == 0 {
                vec![Assignor::CooperativeSticky, Assignor::Range]
            } else {
                vec![Assignor::Range]
            };
            if slot % 2 == 0 {
                cfg.instance_id = Some(format!("slot-{slot}"));
            }
            cfg
        };
        const SLOTS: usize = 4;
        let mut slots: Vec<Option<(tokio::sync::mpsc::UnboundedSender<Order>, tokio::task::JoinHandle<()>)>> =
            (0..SLOTS).map(|_| None).collect();
        let mut actions = BTreeMap::<&'static str, u32>::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < until {
            let slot = rng.below(SLOTS as u64) as usize;
            match slots[slot].take() {
                None => {
                    let cfg = config(&mut rng, slot);
                    slots[slot] = Some(spawn_chaos_member(&client, cfg, history.clone()));
                    *actions.entry("start").or_default() += 1;
                }
                Some((tx, task)) => match rng.below(5) {
                    0 => {
                        let _ = tx.send(Order::Stop(Stop::Close));
                        task.await.expect("member");
                        *actions.entry("close").or_default() += 1;
                    }
                    1 => {
                        let _ = tx.send(Order::Stop(Stop::Crash));
                        task.await.expect("member");
                        *actions.entry("crash").or_default() += 1;
                    }
                    2 => {
                        let _ = tx.send(Order::Pause(Duration::from_millis(500)));
                        slots[slot] = Some((tx, task));
                        *actions.entry("short pause").or_default() += 1;
                    }
                    3 => {
                        let _ = tx.send(Order::Pause(Duration::from_secs(4)));
                        slots[slot] = Some((tx, task));
                        *actions.entry("pause past max_poll_interval").or_default() += 1;
                    }
                    _ => slots[slot] = Some((tx, task)),
                },
            }
            let wait = 300 + rng.below(1200);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        eprintln!("actions: {actions:?}");
        // The chaos ends: two members stay, the producer stops, and they
        // must get through everything.
        for (slot, s) in slots.iter_mut().enumerate().take(2) {
            if s.is_none() {
                let cfg = config(&mut rng, slot);
                *s = Some(spawn_chaos_member(&client, cfg, history.clone()));
            }
        }
        producing.store(false, Ordering::SeqCst);
        producer_task.await.expect("producer");
        let acked: BTreeSet<(u32, i64)> = acked.lock().unwrap().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let missing = {
                let h = history.lock().unwrap();
                acked.difference(&h.processed).count()
            };
            if missing == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{missing} of {} acknowledged records were never processed",
                acked.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sampling.store(false, Ordering::SeqCst);
        sampler.await.expect("sampler");
        for (tx, task) in slots.into_iter().flatten() {
            let _ = tx.send(Order::Stop(Stop::Close));
            task.await.expect("member");
        }
        let h = history.lock().unwrap();
        // No partition had two owners in one generation.
        let mut by_generation: BTreeMap<i32, BTreeMap<TopicPartition, BTreeSet<String>>> = BTreeMap::new();
        for (generation, owner, parts) in &h.owned {
            for tp in parts {
                by_generation
                    .entry(*generation)
                    .or_default()
                    .entry(tp.clone())
                    .or_default()
                    .insert(owner.clone());
            }
        }
        let doubles: Vec<String> = by_generation
            .iter()
            .flat_map(|(g, parts)| {
                parts
                    .iter()
                    .filter(|(_, owners)| owners.len() > 1)
                    .map(move |(tp, owners)| format!("generation {g}: {tp:?} owned by {owners:?}"))
            })
            .collect();
        assert!(doubles.is_empty(), "two owners in one generation: {doubles:?}");
        let regressions = regressions.lock().unwrap();
        assert!(regressions.is_empty(), "committed offsets went back: {regressions:?}");
        eprintln!(
            "{} records acknowledged, all processed ({} with duplicates counted once); {} generations checked",
            acked.len(),
            h.processed.len(),
            by_generation.len()
        );
    })
    .await;
}

/// Finding 1, its fencing part. A static member whose instance id another
/// process took over (a second `host-1` started while the first still runs)
/// and that learns it from the coordinator (here from its auto-commit,
/// before its heartbeat) must stop consuming: from then on every `poll`
/// fails with `FencedInstanceId`, and its partitions are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_static_member_stops_consuming() {
    let b = GroupBroker::start();
    bounded(60, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("fs", 2, 1, &[])
            .await
            .expect("create");
        produce_to(&client, "fs", 0, 0, 5).await;
        produce_to(&client, "fs", 1, 5, 5).await;
        let mut cfg = group_config("fs");
        cfg.assignors = vec![Assignor::CooperativeSticky];
        cfg.instance_id = Some("host-1".into());
        cfg.session_timeout = Duration::from_secs(30);
        cfg.heartbeat_interval = Duration::from_secs(20);
        cfg.auto_commit_interval = Duration::from_millis(100);
        let mut a = consumer(&client);
        a.subscribe(cfg, &["fs"], Box::new(NoopListener))
            .expect("subscribe");
        let mut seen = 0;
        while seen < 10 {
            seen += a.poll(Duration::from_millis(100)).await.expect("poll").len();
        }
        // Another process joins as host-1 and takes the instance over.
        let mut takeover = raw_join("fs", "", 30_000, 5_000, &["cooperative-sticky"]);
        if let Request::JoinGroup(j) = &mut takeover {
            j.group_instance_id = Some("host-1".into());
        }
        let Response::JoinGroup(j) = client
            .send_to(node(&client), &takeover, Duration::from_secs(10))
            .await
            .expect("join")
        else {
            panic!()
        };
        assert_eq!(j.error, ErrorCode::None);
        produce_to(&client, "fs", 0, 10, 5).await;
        produce_to(&client, "fs", 1, 15, 5).await;
        // It learns of the takeover from its next auto-commit (records it
        // fetched before that may still come, as in Kafka); from then on
        // every poll fails and nothing more is consumed.
        let start = tokio::time::Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the fenced member went on consuming, told nothing"
            );
            match a.poll(Duration::from_millis(100)).await {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.code(), Some(ErrorCode::FencedInstanceId), "{e}");
                    break;
                }
            }
        }
        for _ in 0..5 {
            let e = a
                .poll(Duration::from_millis(100))
                .await
                .expect_err("a fenced member's poll fails");
            assert_eq!(e.code(), Some(ErrorCode::FencedInstanceId), "{e}");
        }
        assert!(a.assignment().is_empty(), "still assigned: {:?}", a.assignment());
    })
    .await;
}

/// Finding 8, after a coordinator restart: the coordinator reloads the
/// group with only the selected protocol's metadata of each member; a
/// static member restarted then must still come back without a rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_keeps_the_generation_after_a_coordinator_restart() {
    let mut b = GroupBroker::start();
    let client = connect(&b.addr()).await;
    client
        .admin()
        .create_topic("sr", 4, 1, &[])
        .await
        .expect("create");
    let mut one_cfg = group_config("sr");
    one_cfg.assignors = vec![Assignor::CooperativeSticky];
    one_cfg.session_timeout = Duration::from_secs(10);
    one_cfg.instance_id = Some("host-1".into());
    let mut two_cfg = one_cfg.clone();
    two_cfg.instance_id = Some("host-2".into());
    let stop = Arc::new(AtomicBool::new(false));
    let mut one = consumer(&client);
    one.subscribe(one_cfg.clone(), &["sr"], Box::new(NoopListener))
        .expect("subscribe");
    let t1 = run_member(one, stop.clone());
    // Alone first, so that the rebalances bringing host-2 in leave host-1's
    // subscription carrying owned partitions and a generation.
    wait_for_group(&client, "sr", "one member with everything", |d| {
        d.state == "Stable" && d.members.len() == 1 && d.members[0].assignment.len() == 4
    })
    .await;
    let mut two = consumer(&client);
    two.subscribe(two_cfg, &["sr"], Box::new(NoopListener))
        .expect("subscribe");
    let t2 = run_member(two, stop.clone());
    let stable = wait_for_group(&client, "sr", "two members, two partitions each", |d| {
        d.state == "Stable" && d.members.len() == 2 && d.members.iter().all(|m| m.assignment.len() == 2)
    })
    .await;
    assert!(
        stable.generation >= 3,
        "cooperative takes two rebalances: {stable:?}"
    );
    stop.store(true, Ordering::SeqCst);
    let one = t1.await.expect("one");
    let mut two = t2.await.expect("two");
    let before = one.assignment();
    drop(one);
    // The coordinator restarts (SIGKILL: what it knows is what it wrote).
    b.broker.restart();
    bounded(60, async {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t2 = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                // Errors while the broker is away are expected.
                let _ = two.poll(Duration::from_millis(100)).await;
            }
            two
        });
        let client = connect(&b.addr()).await;
        let mut again = consumer(&client);
        again
            .subscribe(one_cfg, &["sr"], Box::new(NoopListener))
            .expect("subscribe");
        while again.group_member().is_none() {
            let _ = again.poll(Duration::from_millis(100)).await;
        }
        let d = client.admin().describe_group("sr").await.expect("describe");
        assert_eq!(d.generation, stable.generation, "no rebalance: {d:?}");
        assert_eq!(d.state, "Stable");
        assert_eq!(again.assignment(), before);
        stop.store(true, Ordering::SeqCst);
        let two = t2.await.expect("two");
        again.close().await.expect("close");
        two.close().await.expect("close");
    })
    .await;
}

/// Finding 10 against a real broker: DeleteGroups and an offset commit
/// (from another connection, a moment later) race, many times. Whatever
/// each answers, what OffsetFetch shows afterwards must be what the broker
/// still has after a restart: a commit acknowledged while the deletion was
/// being written must not be invisible now and back after the restart.
/// (The coordinator's unit test `a_commit_to_a_group_being_deleted_is_refused`
/// holds the write open; this one needs the race to land.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_racing_a_group_deletion_stays_deleted() {
    let mut b = GroupBroker::start();
    let client = connect(&b.addr()).await;
    client
        .admin()
        .create_topic("del", 1, 1, &[])
        .await
        .expect("create");
    let other = connect(&b.addr()).await;
    const ROUNDS: usize = 40;
    let rounds = async {
        let mut seen = BTreeMap::new();
        let mut both_acked = 0;
        for i in 0..ROUNDS {
            let group = format!("del-{i}");
            let tp = ("del".to_string(), 0);
            client
                .admin()
                .set_group_offsets(&group, &[(tp.clone(), 1)])
                .await
                .expect("first commit");
            let delay = Duration::from_micros(200 * (i as u64 % 10));
            let admin = client.admin();
            let other_admin = other.admin();
            let g2 = group.clone();
            let (deleted, committed) = tokio::join!(admin.delete_group(&group), async {
                tokio::time::sleep(delay).await;
                other_admin.set_group_offsets(&g2, &[(tp.clone(), 7)]).await
            });
            if deleted.is_ok() && committed.is_ok() {
                both_acked += 1;
            }
            let visible = client.admin().group_offsets(&group).await.expect("offsets");
            seen.insert(group, visible);
        }
        eprintln!("{both_acked} of {ROUNDS} rounds had both the deletion and the commit acknowledged");
        seen
    };
    let seen = tokio::time::timeout(Duration::from_secs(60), rounds)
        .await
        .expect("the rounds took longer than 60 s");
    b.broker.restart();
    bounded(60, async {
        let client = connect(&b.addr()).await;
        for (group, before) in &seen {
            let after = loop {
                match client.admin().group_offsets(group).await {
                    Ok(v) => break v,
                    // The coordinator may still be loading.
                    Err(e) if e.is_retriable() => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => panic!("offsets of {group}: {e}"),
                }
            };
            assert_eq!(&after, before, "{group}'s offsets changed across the restart");
        }
    })
    .await;
}

/// A cold review's finding after issue 19: a `poll` future dropped while
/// its group work waits (here: the JoinGroup of a rebalance another member
/// started, cut by `tokio::time::timeout`) must leave the member in its
/// group, still committing and consuming, not out of it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_poll_keeps_the_membership() {
    let b = GroupBroker::start();
    bounded(90, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("dropped", 2, 1, &[])
            .await
            .expect("create");
        let mut cfg = group_config("dropped");
        cfg.rebalance_timeout = Duration::from_secs(10);
        let mut a = consumer(&client);
        a.subscribe(cfg.clone(), &["dropped"], Box::new(NoopListener))
            .expect("subscribe");
        while a.group_member().is_none() {
            a.poll(Duration::from_millis(100)).await.expect("poll");
        }
        // Another member joins: the rebalance makes `a` rejoin, and each of
        // its polls is cut short while it waits in the group work.
        let stop = Arc::new(AtomicBool::new(false));
        let mut other = consumer(&client);
        other
            .subscribe(cfg, &["dropped"], Box::new(NoopListener))
            .expect("subscribe");
        let other_task = run_member(other, stop.clone());
        let mut cut = 0;
        let began = std::time::Instant::now();
        while began.elapsed() < Duration::from_secs(3) {
            if tokio::time::timeout(Duration::from_millis(20), a.poll(Duration::from_secs(1)))
                .await
                .is_err()
            {
                cut += 1;
            }
        }
        assert!(cut > 0, "no poll was cut short");
        // The member is still in the group: it rejoins, gets a partition,
        // and its commits reach the coordinator.
        wait_for_group(&client, "dropped", "both members with a partition each", |d| {
            d.state == "Stable" && d.members.len() == 2 && d.members.iter().all(|m| m.assignment.len() == 1)
        })
        .await;
        for _ in 0..20 {
            a.poll(Duration::from_millis(100)).await.expect("poll");
        }
        assert!(a.group_member().is_some(), "the member left its group");
        a.commit().await.expect("a commit after the cut polls");
        stop.store(true, Ordering::SeqCst);
        let other = other_task.await.expect("other");
        a.close().await.expect("close");
        other.close().await.expect("close");
        println!("{cut} polls cut short during a rebalance; the member stayed in its group and commits");
    })
    .await;
}

/// A cold review's finding after issue 19 (finding 5's callbacks): a member
/// expelled without knowing it learns so from the commit `close` makes; its
/// listener must hear that the partitions are lost, not revoked (a listener
/// that saves state on revocation would overwrite the new owner's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_an_unknown_expulsion_reports_lost_not_revoked() {
    let b = GroupBroker::start();
    bounded(60, async {
        let client = connect(&b.addr()).await;
        client
            .admin()
            .create_topic("cl", 1, 1, &[])
            .await
            .expect("create");
        produce_to(&client, "cl", 0, 0, 10).await;
        let mut cfg = group_config("cl");
        // The heartbeats stay out of the way: the loss is learnt from the commit.
        cfg.session_timeout = Duration::from_secs(60);
        cfg.heartbeat_interval = Duration::from_secs(50);
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut a = consumer(&client);
        a.subscribe(cfg, &["cl"], Box::new(Events(events.clone())))
            .expect("subscribe");
        let mut got = 0;
        while got < 10 {
            got += a.poll(Duration::from_millis(100)).await.expect("poll").len();
        }
        let (_, a_id) = a.group_member().expect("joined");
        expel(&client, "cl", &a_id).await;
        let before = events.lock().unwrap().len();
        let _ = a.close().await;
        let after: Vec<&str> = events.lock().unwrap()[before..].iter().map(|(w, _)| *w).collect();
        assert_eq!(after, vec!["lost"], "the listener after the expulsion: {after:?}");
        println!("close after an expulsion the member did not know of: the listener heard {after:?}");
    })
    .await;
}
