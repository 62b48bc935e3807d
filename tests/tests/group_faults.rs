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
