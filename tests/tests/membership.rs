//! The broker as a member of its cluster: the metadata quorum's journal
//! survives restarts, and a damaged journal stops the start with a clear
//! error instead of a broker that forgot what it had voted and committed.

use std::process::Command;
use std::time::Duration;

use borges_system_tests::{borges_bin, free_port, Broker, RawConn};

fn journal(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("__meta/raft/journal")
}

/// Starts a broker that must exit; returns its stderr.
fn start_failing(dir: &std::path::Path) -> String {
    let mut child = Command::new(borges_bin())
        .arg("start")
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--cores", "1"])
        .arg("--data-dir")
        .arg(dir)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                !status.success(),
                "a broker with a damaged journal must not start"
            );
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return err;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the broker with a damaged journal kept running");
}

#[test]
fn the_journal_survives_restarts_and_damage_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut b = Broker::start(&dir, 1, &[]);
    let mut c = RawConn::connect(b.addr);
    let id = c.create_topic("kept", 1, &[]);
    drop(c);
    // SIGKILL, then a restart: the journal replays and the broker rejoins.
    b.restart();
    assert!(b.terminate().success());
    let good = std::fs::read(journal(&dir)).expect("the broker keeps a raft journal");
    assert!(
        good.len() > 64,
        "the journal holds several writes ({} bytes)",
        good.len()
    );
    println!("journal after two starts: {} bytes", good.len());

    // Damage inside the first frame, with valid frames after it: refused.
    let mut bad = good.clone();
    bad[12] ^= 0xff;
    std::fs::write(journal(&dir), &bad).unwrap();
    let err = start_failing(&dir);
    assert!(err.contains("raft journal"), "the error names the journal: {err}");
    assert_eq!(
        std::fs::read(journal(&dir)).unwrap(),
        bad,
        "a refused start changes nothing"
    );

    // Put right, the same data starts again with its topic.
    std::fs::write(journal(&dir), &good).unwrap();
    let mut b = Broker::start(&dir, 1, &[]);
    let mut c = RawConn::connect(b.addr);
    let p = c.produce(id, 0, borges_system_tests::batch(&["v"]));
    assert_eq!(p.error, borges_net::protocol::ErrorCode::None, "{p:?}");
    drop(c);
    assert!(b.terminate().success());
}

/// A data directory as the single-node broker left it (`topics.json`, no
/// metadata log) upgrades in place: the topics keep their ids and their
/// records, and the file is retired so it is never imported twice.
#[test]
fn a_single_node_data_directory_upgrades_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut b = Broker::start(&dir, 2, &[]);
    let mut c = RawConn::connect(b.addr);
    let id = c.create_topic("old", 3, &[("retention.ms", "86400000")]);
    for p in 0..3 {
        let r = c.produce(id, p, borges_system_tests::batch(&["a", "b", "c"]));
        assert_eq!(r.error, borges_net::protocol::ErrorCode::None, "{r:?}");
    }
    drop(c);
    assert!(b.terminate().success());

    // The single-node layout: topics.json is the truth, no raft journal.
    // Written as that broker wrote it, from the topics this one holds.
    let meta = dir.join("__meta");
    std::fs::remove_dir_all(meta.join("raft")).unwrap();
    let topics = format!(
        r#"{{"next_id": {next}, "topics": {{
            "__consumer_offsets": {{"name": "__consumer_offsets", "id": 1, "partitions": 16,
                "configs": {{"cleanup.policy": "compact", "compression.type": "producer", "segment.bytes": "16777216"}}}},
            "old": {{"name": "old", "id": {id}, "partitions": 3, "configs": {{"retention.ms": "86400000"}}}}
        }}}}"#,
        next = id.0 + 5,
        id = id.0
    );
    let _ = std::fs::remove_file(meta.join("topics.json.imported"));
    std::fs::write(meta.join("topics.json"), topics).unwrap();

    let mut b = Broker::start(&dir, 2, &[]);
    assert!(
        !meta.join("topics.json").exists(),
        "topics.json is retired once imported"
    );
    assert!(meta.join("topics.json.imported").exists());
    let mut c = RawConn::connect(b.addr);
    for p in 0..3 {
        let r = c.produce(id, p, borges_system_tests::batch(&["d"]));
        assert_eq!(r.error, borges_net::protocol::ErrorCode::None, "{r:?}");
        assert_eq!(r.base_offset, 3, "partition {p} kept its three records");
    }
    // Ids below the old next_id are never handed out again.
    let fresh = c.create_topic("new", 1, &[]);
    assert_eq!(
        fresh.0,
        id.0 + 5,
        "a new topic gets the first id after the imported ones"
    );
    drop(c);
    // Restarted again: nothing imported twice, everything still there.
    b.restart();
    let mut c = RawConn::connect(b.addr);
    let r = c.produce(id, 0, borges_system_tests::batch(&["e"]));
    assert_eq!(r.base_offset, 4, "{r:?}");
    println!(
        "upgrade in place: 3 partitions x 3 records kept, ids kept, new id {}",
        fresh.0
    );
    drop(c);
    assert!(b.terminate().success());
}

#[test]
fn peers_requests_with_bad_ids_and_epochs_get_typed_errors() {
    use borges_net::protocol::{
        BrokerHeartbeatRequest, BrokerRegistrationRequest, ErrorCode, LogDirId, MetadataFetchRequest,
        Request, Response,
    };
    use borges_net::types::BrokerEpoch;
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Broker::start(&tmp.path().join("d"), 1, &[]);
    let mut c = RawConn::connect(b.addr);
    let heartbeat = |c: &mut RawConn, node: i32, epoch: i64| {
        let r = c.call(Request::BrokerHeartbeat(BrokerHeartbeatRequest {
            node,
            epoch: BrokerEpoch(epoch),
            metadata_offset: 0,
            want_fence: false,
            want_shutdown: false,
        }));
        match r {
            Ok(Response::BrokerHeartbeat(h)) => h.error,
            other => panic!("a heartbeat answer: {other:?}"),
        }
    };
    // A broker the controller never registered, and a stale epoch of the
    // one it did (this broker, node 0).
    assert_eq!(heartbeat(&mut c, 7, 1), ErrorCode::BrokerIdNotRegistered);
    assert_eq!(heartbeat(&mut c, 0, 999), ErrorCode::StaleBrokerEpoch);
    // A second broker with node 0's id, another incarnation and another
    // data directory, while node 0 lives.
    let r = c.call(Request::BrokerRegistration(BrokerRegistrationRequest {
        node: 0,
        incarnation: 42,
        address: "127.0.0.1:1".into(),
        rack: None,
        shards: 1,
        log_dirs: vec![LogDirId(42)],
    }));
    let Ok(Response::BrokerRegistration(reg)) = r else {
        panic!("a registration answer: {r:?}")
    };
    assert_eq!(
        reg.error,
        ErrorCode::DuplicateBrokerRegistration,
        "{:?}",
        reg.message
    );
    // Nonsense ids are refused too, never a panic.
    let r = c.call(Request::BrokerRegistration(BrokerRegistrationRequest {
        node: -5,
        incarnation: 1,
        address: String::new(),
        rack: None,
        shards: 0,
        log_dirs: vec![],
    }));
    let Ok(Response::BrokerRegistration(reg)) = r else {
        panic!("a registration answer: {r:?}")
    };
    assert_ne!(reg.error, ErrorCode::None, "a registration of node -5 is refused");
    assert_eq!(
        heartbeat(&mut c, i32::MIN, i64::MIN),
        ErrorCode::BrokerIdNotRegistered
    );
    // An observer's fetch gets the image; one from the future gets none.
    let r = c.call(Request::MetadataFetch(MetadataFetchRequest {
        node: 9,
        applied: 0,
        max_wait_ms: 0,
    }));
    let Ok(Response::MetadataFetch(f)) = r else {
        panic!("a fetch answer: {r:?}")
    };
    assert!(f.image.is_some() && f.applied > 0 && f.controller == 0);
    let r = c.call(Request::MetadataFetch(MetadataFetchRequest {
        node: 9,
        applied: u64::MAX,
        max_wait_ms: u32::MAX,
    }));
    let Ok(Response::MetadataFetch(f)) = r else {
        panic!("a fetch answer: {r:?}")
    };
    assert!(f.image.is_none());
    // The broker is unharmed: still registered, alive, and its own.
    let d = c.call(Request::DescribeCluster(Default::default()));
    let Ok(Response::DescribeCluster(d)) = d else {
        panic!("{d:?}")
    };
    assert_eq!(d.brokers.len(), 1);
    assert_eq!(d.brokers[0].state, borges_net::protocol::BrokerState::Alive);
    assert_eq!(d.brokers[0].address, b.addr.to_string());
    println!("unregistered, stale, duplicate and nonsense peer requests refused with typed errors; the broker unchanged");
    assert!(b.terminate().success());
}
