//! A shard never sleeps with work ready (issue 9): two brokers started at
//! once with one shard each, both on core 0, competing for it. glommio 0.9.0
//! as published parked an executor over runnable tasks when its preempt timer
//! fired between two task-queue runs; here 9 starts in 10 left one broker
//! asleep until a signal woke it. The patched copy (vendor/glommio) must start
//! every pair; the bounded sleep is turned off so that it cannot hide a stall.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use borges_system_tests::borges_bin;

const PAIRS: usize = 10;
/// A broker on this machine starts in well under a second.
const START_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn brokers_sharing_a_core_all_start() {
    let bin = borges_bin();
    let mut stalled = 0;
    let mut slowest = Duration::ZERO;
    for round in 0..PAIRS {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = mpsc::channel();
        let mut children = Vec::new();
        let start = Instant::now();
        for i in 0..2 {
            let mut child = Command::new(&bin)
                .args(["start", "--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"])
                .arg(dir.path().join(format!("b{i}")))
                .env("BORGES_LOG", "warn")
                .env("GLOMMIO_MAX_SLEEP_MS", "0")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start borges");
            let out = child.stdout.take().expect("stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("listening on ") {
                        let _ = tx.send(i);
                    }
                }
            });
            children.push(child);
        }
        let mut up = 0;
        while up < 2 {
            let left = START_LIMIT.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(_) => up += 1,
                Err(_) => break,
            }
        }
        slowest = slowest.max(start.elapsed());
        if up < 2 {
            stalled += 1;
            eprintln!("round {round}: only {up} of 2 brokers listening after {START_LIMIT:?}");
        }
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    println!("{PAIRS} pairs of brokers on one core: {stalled} stalled; slowest pair {slowest:?}");
    assert_eq!(stalled, 0, "{stalled} of {PAIRS} pairs did not both start");
}

/// A shard whose thread is blocked is reported, never silent: the broker
/// blocks shard 0 for 3 s (fault injection); the watchdog, set to 500 ms,
/// must log it stalled and then turning again, while the broker serves on.
#[test]
fn a_blocked_shard_is_reported_by_the_watchdog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("borges.toml");
    std::fs::write(&cfg, "shard_stall_timeout_ms = 500\n").expect("config");
    let mut child = Command::new(borges_bin())
        .args(["start", "--listen", "127.0.0.1:0", "--cores", "1", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("BORGES_LOG", "warn")
        .env("BORGES_FAULT_BLOCK_SHARD", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start borges");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            eprintln!("broker: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut stalled, mut resumed) = (None, None);
    while resumed.is_none() {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        if line.contains("shard stalled") {
            stalled = Some(line);
        } else if line.contains("shard turns again") {
            resumed = Some(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("watchdog reported: {stalled:?} then {resumed:?}");
    let stalled = stalled.expect("the watchdog logs the blocked shard");
    assert!(stalled.contains("shard=0"), "{stalled}");
    assert!(resumed.is_some(), "the watchdog logs the shard turning again");
}
