//! What consumers may read: in the flush modes where an acknowledgement
//! promises durability (`acks-all`, `every-batch`), only records already on
//! disk, so that a power loss can never take back a record a consumer has
//! seen (after which a new append would reuse its offset); with
//! `flush = never`, everything appended.

use std::time::{Duration, Instant};

use borges_net::protocol::*;
use borges_net::types::TopicId;
use borges_system_tests::{batch, Broker, RawConn};

fn fetch(c: &mut RawConn, topic: TopicId, offset: i64, max_wait_ms: u32) -> FetchPartitionResponse {
    let resp = c
        .call(Request::Fetch(FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                topic_id: topic,
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: offset,
                    partition_max_bytes: 1 << 20,
                }],
            }],
        }))
        .expect("fetch");
    let Response::Fetch(mut r) = resp else {
        panic!("wrong response: {resp:?}")
    };
    r.topics.remove(0).partitions.remove(0)
}

fn latest(c: &mut RawConn, topic: TopicId) -> i64 {
    let resp = c
        .call(Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                topic_id: topic,
                partitions: vec![ListOffsetsPartition {
                    partition: 0,
                    timestamp: LATEST_TIMESTAMP,
                }],
            }],
        }))
        .expect("list offsets");
    let Response::ListOffsets(r) = resp else {
        panic!("wrong response: {resp:?}")
    };
    r.topics[0].partitions[0].offset
}

/// A broker whose interval sync never comes during the test.
fn broker(dir: &std::path::Path, flush: &str) -> Broker {
    let config = dir.join("borges.toml");
    std::fs::write(&config, "flush_interval_ms = 3600000\n").expect("config");
    let data = dir.join("data");
    Broker::start(
        &data,
        1,
        &["--config", config.to_str().expect("utf-8 path"), "--flush", flush],
    )
}

#[test]
fn acks_all_mode_shows_consumers_only_records_on_disk_and_syncs_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path(), "acks-all");
    let mut c = RawConn::connect(b.addr);
    let topic = c.create_topic("visible", 1, &[]);
    // acks=1: appended, not synced (no interval sync for an hour).
    let r = c.produce_with_acks(topic, 0, batch(&["a", "b", "c"]), 1);
    assert_eq!(r.error, ErrorCode::None);
    let first = fetch(&mut c, topic, 0, 0);
    assert_eq!(first.error, ErrorCode::None);
    assert_eq!(first.high_watermark, 0, "records not on disk are not visible");
    assert!(first.records.is_empty(), "records not on disk were served");
    // A consumer that waits makes the broker sync for it: it sees the
    // records in about one fdatasync, not at the interval sync.
    let t = Instant::now();
    let waited = fetch(&mut c, topic, 0, 20_000);
    println!("records visible to a waiting consumer after {:?}", t.elapsed());
    assert_eq!(waited.error, ErrorCode::None);
    assert_eq!(waited.high_watermark, 3);
    assert!(!waited.records.is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the consumer waited {:?}",
        t.elapsed()
    );
    assert_eq!(latest(&mut c, topic), 3);

    // A long poll already waiting when an acks=1 produce arrives is
    // answered with it.
    let addr = b.addr;
    let poller = std::thread::spawn(move || {
        let mut p = RawConn::connect(addr);
        let t = Instant::now();
        let r = fetch(&mut p, topic, 3, 20_000);
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = c.produce_with_acks(topic, 0, batch(&["d"]), 1);
    assert_eq!(r.error, ErrorCode::None);
    let (r, took) = poller.join().expect("poller");
    println!("a waiting long poll was answered after {took:?}");
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(r.high_watermark, 4);
    assert!(!r.records.is_empty());
    assert!(took < Duration::from_secs(10), "the long poll waited {took:?}");
    // Unsynced records are not listed as the latest offset either.
    let r = c.produce_with_acks(topic, 0, batch(&["e"]), 1);
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(latest(&mut c, topic), 4);
}

#[test]
fn flush_never_shows_consumers_everything_appended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path(), "never");
    let mut c = RawConn::connect(b.addr);
    let topic = c.create_topic("visible", 1, &[]);
    let r = c.produce_with_acks(topic, 0, batch(&["a", "b", "c"]), 1);
    assert_eq!(r.error, ErrorCode::None);
    let f = fetch(&mut c, topic, 0, 0);
    assert_eq!(f.high_watermark, 3);
    assert!(!f.records.is_empty());
    assert_eq!(latest(&mut c, topic), 3);
}
