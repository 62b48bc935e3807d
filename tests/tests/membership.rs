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
