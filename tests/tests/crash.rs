//! SIGKILL a broker while producers send with acks=all: after a restart
//! every acknowledged record is there, in order, exactly once; and a
//! SIGTERM stops it cleanly with everything kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use borges_net::batch::{decode_records, BatchIter, Compression, RecordBatchBuilder};
use borges_net::protocol::*;
use borges_net::types::TopicId;
use borges_system_tests::{Broker, RawConn};

const PARTITIONS: u32 = 4;

/// An acknowledged batch: partition, first value, record count, base offset.
type Acked = (u32, u64, u64, i64);

fn create(c: &mut RawConn, name: &str) -> TopicId {
    let Ok(Response::CreateTopics(r)) = c.call(Request::CreateTopics(CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            configs: vec![],
        }],
        timeout_ms: 10_000,
        validate_only: false,
    })) else {
        panic!("create failed")
    };
    assert_eq!(r.topics[0].error, ErrorCode::None);
    r.topics[0].id
}

/// Reads a whole partition: (offset, value) pairs.
fn read_partition(c: &mut RawConn, topic: TopicId, partition: u32) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut next = 0i64;
    loop {
        let Ok(Response::Fetch(r)) = c.call(Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 4 << 20,
            topics: vec![FetchTopic {
                topic_id: topic,
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: next,
                    partition_max_bytes: 4 << 20,
                }],
            }],
        })) else {
            panic!("fetch failed")
        };
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error, ErrorCode::None);
        if p.records.is_empty() {
            assert_eq!(next, p.high_watermark);
            return out;
        }
        for item in BatchIter::new(&p.records) {
            let (_, range) = item.unwrap();
            for rec in decode_records(&p.records[range]).unwrap() {
                if rec.offset >= next {
                    out.push((
                        rec.offset,
                        String::from_utf8(rec.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
        }
        next = out.last().map_or(next, |(o, _)| o + 1);
    }
}

#[test]
fn sigkill_during_acks_all_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), 2, &[]);
    let topic = create(&mut RawConn::connect(broker.addr), "payments");
    let addr = broker.addr;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for t in 0..4u32 {
        let acked = acked.clone();
        let stop = stop.clone();
        producers.push(std::thread::spawn(move || {
            let mut c = RawConn::connect(addr);
            let mut seq = t as u64 * 1_000_000_000;
            while !stop.load(Ordering::SeqCst) {
                let partition = (seq % PARTITIONS as u64) as u32;
                let n = 1 + seq % 50;
                let mut b = RecordBatchBuilder::new(Compression::None);
                for i in 0..n {
                    b.push(0, None, Some(format!("{}", seq + i).as_bytes()), &[]);
                }
                let mut out = bytes::BytesMut::new();
                encode_request(
                    &RequestHeader {
                        api_key: ApiKey::Produce,
                        api_version: 0,
                        correlation_id: seq as u32,
                        client_id: "p".into(),
                    },
                    &Request::Produce(ProduceRequest {
                        acks: -1,
                        timeout_ms: 10_000,
                        topics: vec![ProduceTopic {
                            topic_id: topic,
                            partitions: vec![ProducePartition {
                                partition,
                                records: b.build().unwrap(),
                            }],
                        }],
                    }),
                    &mut out,
                );
                if c.send_raw(&out).is_err() {
                    return;
                }
                match c.read_response(ApiKey::Produce) {
                    Some((_, Ok(Response::Produce(r)))) => {
                        let p = &r.topics[0].partitions[0];
                        assert_eq!(p.error, ErrorCode::None);
                        acked.lock().unwrap().push((partition, seq, n, p.base_offset));
                    }
                    // The broker died under us: whatever was not answered was not promised.
                    _ => return,
                }
                seq += n;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill();
    stop.store(true, Ordering::SeqCst);
    for p in producers {
        p.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "producers made progress before the kill: {}",
        acked.len()
    );

    broker.restart();
    let mut c = RawConn::connect(broker.addr);
    let mut stored: HashMap<u32, Vec<(i64, String)>> = HashMap::new();
    for p in 0..PARTITIONS {
        let recs = read_partition(&mut c, topic, p);
        // Offsets are dense and in order.
        for (i, (o, _)) in recs.iter().enumerate() {
            assert_eq!(*o, i as i64);
        }
        stored.insert(p, recs);
    }
    for (partition, first, n, base) in &acked {
        let recs = &stored[partition];
        for i in 0..*n {
            let (o, v) = &recs[(*base + i as i64) as usize];
            assert_eq!(*o, base + i as i64);
            assert_eq!(
                v,
                &(first + i).to_string(),
                "acknowledged record at {partition}/{o}"
            );
        }
    }
    // Everything stored is a whole batch some producer sent, exactly once.
    let total: usize = stored.values().map(|v| v.len()).sum();
    let acked_records: u64 = acked.iter().map(|a| a.2).sum();
    assert!(total as u64 >= acked_records);
    let mut seen = std::collections::HashSet::new();
    for v in stored.values().flatten() {
        assert!(seen.insert(v.1.clone()), "record {} stored twice", v.1);
    }

    // A clean stop keeps everything, and the next start needs no recovery.
    assert!(broker.terminate().success());
    broker.restart();
    let mut c = RawConn::connect(broker.addr);
    let after: usize = (0..PARTITIONS)
        .map(|p| read_partition(&mut c, topic, p).len())
        .sum();
    assert_eq!(after, total);
}
