//! A million records through a real broker with the native client: each
//! arrives exactly once and in order within its partition, and all of them
//! are still there after a restart.

use std::collections::HashMap;
use std::time::Duration;

use borges_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use borges_system_tests::Broker;
use bytes::Bytes;

const RECORDS: u64 = 1_000_000;
const PARTITIONS: u32 = 6;
const KEYS: u64 = 1000;

/// Reads every record of the topic: partition -> [(offset, key, value)].
async fn read_all(addr: &str, topic: &str) -> HashMap<u32, Vec<(i64, u64, u64)>> {
    let client = Client::connect(addr, ClientConfig::default()).await.unwrap();
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign((0..PARTITIONS).map(|p| (topic.to_string(), p)));
    for p in 0..PARTITIONS {
        consumer.seek(topic, p, SeekTo::Earliest).await.unwrap();
    }
    let mut out: HashMap<u32, Vec<(i64, u64, u64)>> = HashMap::new();
    let mut n = 0u64;
    while n < RECORDS {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let key: u64 = std::str::from_utf8(r.key.as_ref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let seq = u64::from_be_bytes(r.value.as_ref().unwrap()[..8].try_into().unwrap());
            out.entry(r.partition).or_default().push((r.offset, key, seq));
            n += 1;
        }
    }
    // Nothing more arrives.
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    out
}

fn check(all: &HashMap<u32, Vec<(i64, u64, u64)>>) {
    let mut seen = vec![false; RECORDS as usize];
    for recs in all.values() {
        let mut last_seq_per_key: HashMap<u64, u64> = HashMap::new();
        for (i, (offset, key, seq)) in recs.iter().enumerate() {
            assert_eq!(*offset, i as i64, "offsets are dense and in order");
            assert!(!seen[*seq as usize], "record {seq} arrived twice");
            seen[*seq as usize] = true;
            assert_eq!(seq % KEYS, *key);
            if let Some(prev) = last_seq_per_key.insert(*key, *seq) {
                assert!(prev < *seq, "key {key}: {seq} after {prev}: out of order");
            }
        }
    }
    assert!(seen.iter().all(|&s| s), "every record arrived");
}

#[test]
fn a_million_records_exactly_once_in_order_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), 2, &[]);
    let addr = broker.addr.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(240), async {
            let client = Client::connect(&addr, ClientConfig::default()).await.unwrap();
            client
                .admin()
                .create_topic("events", PARTITIONS, 1, &[])
                .await
                .unwrap();
            let producer = Producer::new(
                client,
                ProducerConfig {
                    acks: Acks::Leader,
                    ..ProducerConfig::default()
                },
            )
            .unwrap();
            let mut deliveries = Vec::with_capacity(RECORDS as usize);
            for seq in 0..RECORDS {
                let mut value = seq.to_be_bytes().to_vec();
                value.resize(100, b'x');
                let record = ProducerRecord::new("events")
                    .key(Bytes::from((seq % KEYS).to_string()))
                    .value(Bytes::from(value));
                deliveries.push(producer.send(record).await.unwrap());
            }
            producer.flush().await;
            let mut positions = std::collections::HashSet::new();
            for d in deliveries {
                let m = d.await.unwrap();
                assert!(
                    positions.insert((m.partition, m.offset)),
                    "two records at one offset"
                );
            }
            producer.close().await;
            check(&read_all(&addr, "events").await);
        })
        .await
        .expect("within the time bound");
    });
    assert!(broker.terminate().success());
    broker.restart();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            check(&read_all(&addr, "events").await)
        })
        .await
        .expect("within the time bound")
    });
}
