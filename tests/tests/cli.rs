//! The `borges` CLI against a real broker: a round trip through topic,
//! produce, consume and offsets, and garbage arguments answered with a
//! clear error and a failing exit status.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use borges_system_tests::{borges_bin, Broker};

fn borges(broker: &Broker, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(borges_bin())
        .args(args)
        .env("BORGES_BROKERS", broker.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run borges");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A command refused for its arguments may exit before reading.
        match input.write_all(text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.unwrap(),
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_round_trip_and_garbage_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), 2, &[]);

    let out = borges(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let input: String = (0..300).map(|i| format!("k{}:v{i}\n", i % 7)).collect();
    let out = borges(
        &broker,
        &["produce", "orders", "--key-separator", ":", "--acks", "all"],
        Some(&input),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = borges(
        &broker,
        &[
            "consume",
            "orders",
            "--from",
            "earliest",
            "--max-records",
            "300",
            "--format",
            "{key}={value}",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    lines.sort();
    let mut expected: Vec<String> = (0..300).map(|i| format!("k{}=v{i}", i % 7)).collect();
    expected.sort();
    assert_eq!(lines, expected);

    let out = borges(&broker, &["offsets", "orders"], None);
    assert!(out.status.success());
    let total: i64 = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(2).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 300);
    let out = borges(&broker, &["topic", "describe", "orders"], None);
    assert!(text(&out.stdout).contains("retention.ms=3600000 (topic)"));
    // Scripts read the JSON form: one object, the fields the docs promise.
    let out = borges(
        &broker,
        &["topic", "describe", "orders", "--format", "json"],
        None,
    );
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object");
    let parts = doc["partitions"].as_array().expect("partitions");
    assert!(!parts.is_empty());
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i as u64, "{doc}");
        assert_eq!(p["leader"], 0, "this one-node cluster's node 0 leads: {doc}");
        assert_eq!(p["replicas"], serde_json::json!([0]), "{doc}");
        assert_eq!(p["isr"], serde_json::json!([0]), "{doc}");
        assert_eq!(p["leader_epoch"], 0, "{doc}");
    }
    assert_eq!(doc["configs"]["retention.ms"], "3600000", "{doc}");
    let out = borges(&broker, &["cluster", "describe", "--format", "json"], None);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(
        doc["controller_id"], 0,
        "a one-node cluster is its own controller: {doc}"
    );
    assert_eq!(doc["voters"], serde_json::json!([0]), "{doc}");
    let brokers = doc["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1, "{doc}");
    assert_eq!(brokers[0]["id"], 0, "{doc}");
    assert_eq!(brokers[0]["state"], "alive", "{doc}");
    assert_eq!(brokers[0]["address"], broker.addr.to_string(), "{doc}");
    assert!(brokers[0]["leader_count"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(doc["offline_partitions"], 0, "{doc}");
    // Preferred-leader election: nothing to move in a one-node cluster.
    let out = borges(&broker, &["leader", "elect", "--preferred", "orders"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("orders:0\talready led by its preferred replica"),
        "{}",
        text(&out.stdout)
    );
    let out = borges(&broker, &["leader", "elect", "--preferred"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("every partition is led by its preferred replica"));
    let out = borges(&broker, &["leader", "elect", "--preferred", "orders:99"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("orders:99\tUnknownTopicOrPartition"),
        "{}",
        text(&out.stdout)
    );
    let out = borges(&broker, &["cluster", "describe"], None);
    assert!(
        text(&out.stdout).contains("controller 0 voters [0]"),
        "{}",
        text(&out.stdout)
    );

    // Garbage: each fails with a message, and changes nothing.
    for (args, says) in [
        (vec!["produce", "orders", "--acks", "7"], "--acks"),
        (
            vec!["produce", "orders", "--compression", "gzip9"],
            "--compression",
        ),
        (vec!["consume", "orders", "--from", "yesterday"], "--from"),
        (
            vec!["consume", "no-such-topic", "--max-records", "1"],
            "unknown topic",
        ),
        (
            vec!["consume", "orders", "--partition", "9", "--max-records", "1"],
            "no partition 9",
        ),
        (vec!["topic", "create", "bad/name"], "invalid topic name"),
        (
            vec!["topic", "create", "x", "--config", "retention.ms"],
            "key=value",
        ),
        (
            vec!["topic", "create", "x", "--config", "retention.ms=soon"],
            "retention.ms",
        ),
        (vec!["topic", "create", "orders"], "already exists"),
        (vec!["topic", "delete", "no-such-topic"], "no-such-topic"),
    ] {
        let out = borges(&broker, &args, Some("line\n"));
        assert!(!out.status.success(), "{args:?} should fail");
        let err = text(&out.stderr);
        assert!(
            err.to_lowercase().contains(&says.to_lowercase()),
            "{args:?}: {err}"
        );
    }
    let out = borges(&broker, &["offsets", "orders"], None);
    let after: i64 = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(2).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(after, 300, "failed commands stored nothing");
}
