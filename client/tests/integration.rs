//! The client against a real broker process (see `common/mod.rs`).
//!
//! Every test starts its own broker, uses its own topics, and is bounded by
//! `tokio::time::timeout`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use borges_client::{
    Acks, AutoOffsetReset, Client, ClientConfig, ClientError, Compression, Consumer, ConsumerConfig,
    ConsumerRecord, DeliveryFuture, ErrorCode, OffsetSpec, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use bytes::Bytes;
use common::Broker;

/// Runs a test body under a time bound.
async fn bounded<F: Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("the test took longer than {secs} s"));
}

async fn connect(broker: &Broker) -> Client {
    Client::connect(broker.addr(), ClientConfig::default())
        .await
        .expect("connect to the broker")
}

/// Consumes from every partition of `topic` from the earliest offset until
/// `expected` records arrived (or `secs` passed).
async fn consume_all(client: &Client, topic: &str, partitions: u32, expected: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..partitions).map(|p| (topic.to_string(), p)));
    let mut out = Vec::new();
    let mut idle = 0;
    while out.len() < expected {
        let batch = consumer.poll(Duration::from_secs(2)).await.expect("poll");
        if batch.is_empty() {
            idle += 1;
            assert!(idle < 10, "no records for 20 s; have {} of {expected}", out.len());
        }
        out.extend(batch);
    }
    // Nothing more arrives.
    let more = consumer.poll(Duration::from_millis(300)).await.expect("poll");
    assert!(
        more.is_empty(),
        "{} records beyond the {expected} produced",
        more.len()
    );
    out
}

/// Checks offsets are exactly 0..n per partition, in order.
fn assert_dense_and_ordered(records: &[ConsumerRecord]) -> BTreeMap<u32, Vec<&ConsumerRecord>> {
    let mut by_partition: BTreeMap<u32, Vec<&ConsumerRecord>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, rs) in &by_partition {
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(
                r.offset, i as i64,
                "partition {p}: record {i} has offset {}",
                r.offset
            );
        }
    }
    by_partition
}

async fn resolve_all(futures: Vec<DeliveryFuture>) -> Vec<borges_client::RecordMetadata> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await.expect("delivery"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_produce_then_consume_everything_exactly_once() {
    let broker = Broker::start();
    bounded(180, async {
        let client = connect(&broker).await;
        client
            .admin()
            .create_topic("orders", 4, 1, &[])
            .await
            .expect("create");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::All,
                batch_size_bytes: 64 << 10,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        const N: usize = 50_000;
        let mut futures = Vec::with_capacity(N);
        for i in 0..N {
            let key = format!("key-{}", i % 1000);
            let value = format!("value-{i}");
            let rec = ProducerRecord::new("orders").key(key).value(value);
            futures.push(producer.send(rec).await.expect("enqueue"));
        }
        let metas = resolve_all(futures).await;
        producer.close().await;
        let distinct: HashSet<(u32, i64)> = metas.iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(distinct.len(), N, "every record has its own (partition, offset)");
        assert!(metas.iter().all(|m| m.offset >= 0 && m.topic == "orders"));
        let used: HashSet<u32> = metas.iter().map(|m| m.partition).collect();
        assert_eq!(used.len(), 4, "keys spread over every partition");

        // Where each value was acknowledged, and in which order per key.
        let acked: HashMap<String, (u32, i64)> = metas
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("value-{i}"), (m.partition, m.offset)))
            .collect();

        let records = consume_all(&client, "orders", 4, N).await;
        assert_eq!(records.len(), N);
        let by_partition = assert_dense_and_ordered(&records);
        let mut seen = HashSet::new();
        let mut last_per_key: HashMap<String, usize> = HashMap::new();
        for rs in by_partition.values() {
            for r in rs {
                let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
                assert!(seen.insert(value.clone()), "{value} consumed twice");
                assert_eq!(
                    acked[&value],
                    (r.partition, r.offset),
                    "{value} is where it was acknowledged"
                );
                let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
                // Records of one key are in send order.
                let i: usize = value["value-".len()..].parse().unwrap();
                if let Some(prev) = last_per_key.insert(key.clone(), i) {
                    assert!(prev < i, "key {key}: value {i} after {prev}");
                }
            }
        }
        assert_eq!(seen.len(), N);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_none_and_acks_leader() {
    let broker = Broker::start();
    bounded(120, async {
        let client = connect(&broker).await;
        client.admin().create_topic("acks", 2, 1, &[]).await.unwrap();

        let none = Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::None,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let mut futures = Vec::new();
        for i in 0..1000u32 {
            let rec = ProducerRecord::new("acks")
                .partition(i % 2)
                .value(format!("n{i}"));
            futures.push(none.send(rec).await.unwrap());
        }
        let metas = resolve_all(futures).await;
        assert!(metas.iter().all(|m| m.offset == -1), "acks=0 learns no offsets");
        none.close().await;

        let leader = Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::Leader,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let mut futures = Vec::new();
        for i in 0..1000u32 {
            let rec = ProducerRecord::new("acks")
                .partition(i % 2)
                .value(format!("l{i}"));
            futures.push(leader.send(rec).await.unwrap());
        }
        let metas = resolve_all(futures).await;
        leader.close().await;
        for p in 0..2 {
            let mut offsets: Vec<i64> = metas
                .iter()
                .filter(|m| m.partition == p)
                .map(|m| m.offset)
                .collect();
            offsets.sort();
            // The acks=0 records came first: 500 per partition.
            assert_eq!(offsets, (500..1000).collect::<Vec<i64>>(), "partition {p}");
        }
        let records = consume_all(&client, "acks", 2, 2000).await;
        assert_dense_and_ordered(&records);
        let values: Vec<String> = records
            .iter()
            .filter(|r| r.partition == 0)
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..1000)
            .step_by(2)
            .map(|i| format!("n{i}"))
            .chain((0..1000).step_by(2).map(|i| format!("l{i}")))
            .collect();
        assert_eq!(values, expected, "partition 0 holds the sends in order");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_and_zstd_round_trip() {
    let broker = Broker::start();
    bounded(120, async {
        let client = connect(&broker).await;
        for (topic, compression) in [("lz4", Compression::Lz4), ("zstd", Compression::Zstd)] {
            client.admin().create_topic(topic, 1, 1, &[]).await.unwrap();
            let producer = Producer::new(
                client.clone(),
                ProducerConfig {
                    compression,
                    batch_size_bytes: 16 << 10,
                    ..ProducerConfig::default()
                },
            )
            .unwrap();
            let mut futures = Vec::new();
            for i in 0..3000 {
                let rec = ProducerRecord::new(topic)
                    .key(format!("k{i}"))
                    .value("compressible ".repeat(10) + &i.to_string())
                    .header("n", Some(Bytes::from(i.to_string())))
                    .header("empty", None)
                    .timestamp(1_700_000_000_000 + i);
                futures.push(producer.send(rec).await.unwrap());
            }
            resolve_all(futures).await;
            producer.close().await;
            let records = consume_all(&client, topic, 1, 3000).await;
            assert_dense_and_ordered(&records);
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
                assert_eq!(
                    r.value.as_deref(),
                    Some(("compressible ".repeat(10) + &i.to_string()).as_bytes())
                );
                assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
                assert_eq!(
                    r.headers,
                    vec![
                        ("n".to_string(), Some(Bytes::from(i.to_string()))),
                        ("empty".to_string(), None)
                    ]
                );
            }
        }
    })
    .await;
}

/// Sends `values` to partition 0 of `topic` with the given timestamps and waits for them.
async fn produce_at(producer: &Producer, topic: &str, items: &[(i64, &str)]) {
    let mut futures = Vec::new();
    for (ts, v) in items {
        let rec = ProducerRecord::new(topic)
            .partition(0)
            .value(v.to_string())
            .timestamp(*ts);
        futures.push(producer.send(rec).await.unwrap());
    }
    resolve_all(futures).await;
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_to_latest_timestamp_and_offset() {
    let broker = Broker::start();
    bounded(120, async {
        let client = connect(&broker).await;
        client.admin().create_topic("seek", 1, 1, &[]).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        let items: Vec<(i64, String)> = (0..100).map(|i| (10_000 + i * 10, format!("r{i}"))).collect();
        let refs: Vec<(i64, &str)> = items.iter().map(|(t, v)| (*t, v.as_str())).collect();
        produce_at(&producer, "seek", &refs).await;

        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
        consumer.assign([("seek", 0)]);

        // Timestamp: the first record at or after it.
        consumer.seek("seek", 0, SeekTo::Timestamp(10_255)).await.unwrap();
        assert_eq!(consumer.position("seek", 0).await.unwrap(), 26);
        let got = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.first().map(|r| r.offset), Some(26));
        assert_eq!(values(&got[..1]), vec!["r26"]);

        // A timestamp after every record: the end of the log.
        consumer
            .seek("seek", 0, SeekTo::Timestamp(1 << 50))
            .await
            .unwrap();
        assert_eq!(consumer.position("seek", 0).await.unwrap(), 100);

        // Offset, in the middle of a batch: records below it are skipped.
        consumer.seek("seek", 0, SeekTo::Offset(57)).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 43 {
            let batch = consumer.poll(Duration::from_secs(5)).await.unwrap();
            assert!(!batch.is_empty());
            got.extend(batch);
        }
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (57..100).collect::<Vec<_>>()
        );
        assert_eq!(consumer.position("seek", 0).await.unwrap(), 100);
        assert_eq!(consumer.high_watermark("seek", 0), Some(100));
        assert_eq!(consumer.high_watermark("seek", 1), None);

        // Latest: only what is produced afterwards.
        consumer.seek("seek", 0, SeekTo::Latest).await.unwrap();
        assert_eq!(consumer.position("seek", 0).await.unwrap(), 100);
        assert!(consumer
            .poll(Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty());
        produce_at(&producer, "seek", &[(20_000, "new-1"), (20_001, "new-2")]).await;
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(consumer.poll(Duration::from_secs(5)).await.unwrap());
        }
        assert_eq!(values(&got), vec!["new-1", "new-2"]);
        assert_eq!(got[0].offset, 100);

        // Earliest: back to the start.
        consumer.seek("seek", 0, SeekTo::Earliest).await.unwrap();
        let got = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got[0].offset, 0);
        producer.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_offset_reset_policies() {
    let broker = Broker::start();
    bounded(120, async {
        let client = connect(&broker).await;
        client.admin().create_topic("reset", 1, 1, &[]).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        produce_at(&producer, "reset", &[(1, "a"), (2, "b"), (3, "c")]).await;

        // None: no position is an error, and so is a position past the end.
        let mut strict = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::None,
                ..ConsumerConfig::default()
            },
        );
        strict.assign([("reset", 0)]);
        let err = strict.poll(Duration::from_secs(1)).await.unwrap_err();
        assert!(
            matches!(err, ClientError::OffsetOutOfRange { offset: -1, .. }),
            "{err:?}"
        );
        strict.seek("reset", 0, SeekTo::Offset(1000)).await.unwrap();
        let err = strict.poll(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(err, ClientError::OffsetOutOfRange { offset: 1000, .. }),
            "{err:?}"
        );

        // Latest: starts at the end.
        let mut latest = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Latest,
                ..ConsumerConfig::default()
            },
        );
        latest.assign([("reset", 0)]);
        assert_eq!(latest.position("reset", 0).await.unwrap(), 3);

        // Earliest: a position past the end goes back to the start.
        let mut earliest = Consumer::new(client.clone(), ConsumerConfig::default());
        earliest.assign([("reset", 0)]);
        earliest.seek("reset", 0, SeekTo::Offset(1000)).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(earliest.poll(Duration::from_secs(5)).await.unwrap());
        }
        assert_eq!(values(&got), vec!["a", "b", "c"]);

        // Not assigned.
        let err = earliest.position("reset", 1).await.unwrap_err();
        assert!(matches!(err, ClientError::NotAssigned { .. }), "{err:?}");
        producer.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_timestamp() {
    let broker = Broker::start();
    bounded(120, async {
        let client = connect(&broker).await;
        let admin = client.admin();
        admin.create_topic("offsets", 2, 1, &[]).await.unwrap();
        let latest = admin
            .list_offsets("offsets", 0, OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(latest.offset, 0, "an empty partition ends at 0");
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        let items: Vec<(i64, String)> = (0..10).map(|i| (5_000 + i * 100, format!("v{i}"))).collect();
        let refs: Vec<(i64, &str)> = items.iter().map(|(t, v)| (*t, v.as_str())).collect();
        produce_at(&producer, "offsets", &refs).await;
        producer.close().await;

        let earliest = admin
            .list_offsets("offsets", 0, OffsetSpec::Earliest)
            .await
            .unwrap();
        assert_eq!(earliest.offset, 0);
        let latest = admin
            .list_offsets("offsets", 0, OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(latest.offset, 10);
        let at = admin
            .list_offsets("offsets", 0, OffsetSpec::Timestamp(5_450))
            .await
            .unwrap();
        assert_eq!((at.offset, at.timestamp), (5, 5_500));
        let exact = admin
            .list_offsets("offsets", 0, OffsetSpec::Timestamp(5_000))
            .await
            .unwrap();
        assert_eq!((exact.offset, exact.timestamp), (0, 5_000));
        let none = admin
            .list_offsets("offsets", 0, OffsetSpec::Timestamp(99_999))
            .await
            .unwrap();
        assert_eq!(none.offset, -1, "no record at or after the time");
        let other = admin
            .list_offsets("offsets", 1, OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(other.offset, 0, "partition 1 got nothing");
        let err = admin
            .list_offsets("offsets", 7, OffsetSpec::Latest)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::UnknownPartition { partition: 7, .. }),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_alter_configs() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(&broker).await;
        let admin = client.admin();
        let id = admin
            .create_topic("configs", 3, 1, &[("retention.ms", "3600000")])
            .await
            .unwrap();
        let d = admin.describe_topic("configs").await.unwrap();
        assert_eq!(d.metadata.id, id);
        assert_eq!(d.metadata.partition_count(), 3);
        assert_eq!(d.config("retention.ms"), Some("3600000"));
        let retention = d.configs.iter().find(|c| c.key == "retention.ms").unwrap();
        assert!(!retention.is_default);
        let segment = d.configs.iter().find(|c| c.key == "segment.bytes").unwrap();
        assert!(segment.is_default);

        admin
            .alter_configs(
                "configs",
                &[("segment.bytes", Some("1048576")), ("retention.ms", None)],
            )
            .await
            .unwrap();
        let d = admin.describe_topic("configs").await.unwrap();
        assert_eq!(d.config("segment.bytes"), Some("1048576"));
        assert!(
            !d.configs
                .iter()
                .find(|c| c.key == "segment.bytes")
                .unwrap()
                .is_default
        );
        assert!(
            d.configs
                .iter()
                .find(|c| c.key == "retention.ms")
                .unwrap()
                .is_default
        );

        let err = admin
            .alter_configs("configs", &[("no.such.key", Some("1"))])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidConfig), "{err:?}");
        let err = admin
            .alter_configs("nope", &[("retention.ms", Some("1"))])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::UnknownTopic(_)), "{err:?}");
        let err = admin
            .create_topic("bad-config", 1, 1, &[("retention.ms", "soon")])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidConfig), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_partitions_are_errors() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(&broker).await;
        let admin = client.admin();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        let err = producer
            .send(ProducerRecord::new("missing").value("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::UnknownTopic(t) if t == "missing"),
            "{err:?}"
        );
        assert!(!err.is_retriable());

        let err = admin.describe_topic("missing").await.unwrap_err();
        assert!(matches!(err, ClientError::UnknownTopic(_)), "{err:?}");
        let err = admin
            .list_offsets("missing", 0, OffsetSpec::Latest)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::UnknownTopic(_)), "{err:?}");
        let err = client.topic_metadata("missing").await.unwrap_err();
        assert!(matches!(err, ClientError::UnknownTopic(_)), "{err:?}");

        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
        consumer.assign([("missing", 0)]);
        let err = consumer.poll(Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, ClientError::UnknownTopic(_)), "{err:?}");

        admin.create_topic("present", 2, 1, &[]).await.unwrap();
        let err = producer
            .send(ProducerRecord::new("present").partition(2).value("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::UnknownPartition { partition: 2, .. }),
            "{err:?}"
        );
        let err = admin.create_topic("present", 2, 1, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err:?}");
        let err = admin.create_topic("bad name!", 1, 1, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidTopicException), "{err:?}");
        let err = admin.create_topic("huge", 1_000_000, 1, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidPartitions), "{err:?}");
        let err = admin.create_topic("replicated", 1, 3, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidReplicationFactor), "{err:?}");
        producer.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_topic_then_recreate() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(&broker).await;
        let admin = client.admin();
        let old_id = admin.create_topic("doomed", 2, 1, &[]).await.unwrap();
        admin.create_topic("kept", 1, 1, &[]).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        let f = producer
            .send(ProducerRecord::new("doomed").partition(0).value("x"))
            .await
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 0);

        let names: Vec<String> = admin
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["doomed", "kept"]);
        admin.delete_topic("doomed").await.unwrap();
        let names: Vec<String> = admin
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["kept"]);
        let err = admin.delete_topic("doomed").await.unwrap_err();
        assert!(matches!(err, ClientError::UnknownTopic(_)), "{err:?}");
        let err = producer
            .send(ProducerRecord::new("doomed").value("x"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::UnknownTopic(_)), "{err:?}");

        // Re-created: a new id, an empty log, and the producer follows it.
        let new_id = admin.create_topic("doomed", 2, 1, &[]).await.unwrap();
        assert_ne!(old_id, new_id);
        let f = producer
            .send(ProducerRecord::new("doomed").partition(0).value("y"))
            .await
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 0, "the re-created topic starts empty");
        producer.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_topic_id_is_refreshed_and_retried() {
    let broker = Broker::start();
    bounded(60, async {
        // Two clients: one re-creates the topic behind the other's back.
        let client = connect(&broker).await;
        let other = connect(&broker).await;
        client.admin().create_topic("moving", 1, 1, &[]).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        let f = producer
            .send(ProducerRecord::new("moving").value("a"))
            .await
            .unwrap();
        f.await.unwrap();
        other.admin().delete_topic("moving").await.unwrap();
        other.admin().create_topic("moving", 1, 1, &[]).await.unwrap();
        // The producer's cached id is stale: the broker answers UnknownTopicId,
        // the producer refreshes and retries.
        let f = producer
            .send(ProducerRecord::new("moving").value("b"))
            .await
            .unwrap();
        let meta = f.await.expect("delivered after a metadata refresh");
        assert_eq!(meta.offset, 0);
        producer.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_ignores_linger_and_backpressure_bounds_the_buffer() {
    let broker = Broker::start();
    bounded(120, async {
        let client = connect(&broker).await;
        client.admin().create_topic("flush", 3, 1, &[]).await.unwrap();
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                linger: Duration::from_secs(3600),
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let f = producer
            .send(ProducerRecord::new("flush").value("x"))
            .await
            .unwrap();
        assert_eq!(producer.pending_records(), 1);
        tokio::time::timeout(Duration::from_secs(10), producer.flush())
            .await
            .expect("flush does not wait for linger");
        assert_eq!(producer.pending_records(), 0);
        f.await.unwrap();
        producer.close().await;
        let err = producer
            .send(ProducerRecord::new("flush").value("x"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");

        // A 64 KiB buffer and 2 MiB of records: sends wait for room, and all arrive.
        let small = Producer::new(
            client.clone(),
            ProducerConfig {
                buffer_memory_bytes: 64 << 10,
                batch_size_bytes: 16 << 10,
                linger: Duration::from_millis(1),
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let value = Bytes::from(vec![7u8; 1000]);
        let mut futures = Vec::new();
        for _ in 0..2000 {
            futures.push(
                small
                    .send(ProducerRecord::new("flush").value(value.clone()))
                    .await
                    .unwrap(),
            );
            assert!(small.pending_records() <= 64, "the buffer bound holds");
        }
        let metas = resolve_all(futures).await;
        small.close().await;
        // Sticky partitioning spread the keyless records over the partitions.
        let used: HashSet<u32> = metas.iter().map(|m| m.partition).collect();
        assert!(
            used.len() > 1,
            "keyless records moved between partitions: {used:?}"
        );
        let records = consume_all(&client, "flush", 3, 2001).await;
        assert_dense_and_ordered(&records);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_match_their_responses() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(&broker).await;
        let admin = client.admin();
        for p in 0..4 {
            admin.create_topic(&format!("pipe-{p}"), 1, 1, &[]).await.unwrap();
        }
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        for p in 0..4u32 {
            let mut futures = Vec::new();
            for i in 0..(p * 10) {
                futures.push(
                    producer
                        .send(ProducerRecord::new(format!("pipe-{p}")).value(i.to_string()))
                        .await
                        .unwrap(),
                );
            }
            resolve_all(futures).await;
        }
        producer.close().await;
        // 400 concurrent lookups on one connection; each answer matches its question.
        let mut tasks = Vec::new();
        for i in 0..400u32 {
            let admin = admin.clone();
            tasks.push(tokio::spawn(async move {
                let p = i % 4;
                let o = admin
                    .list_offsets(&format!("pipe-{p}"), 0, OffsetSpec::Latest)
                    .await
                    .unwrap();
                (p, o.offset)
            }));
        }
        for t in tasks {
            let (p, offset) = t.await.unwrap();
            assert_eq!(offset, i64::from(p) * 10);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_survive_a_broker_crash() {
    let mut broker = Broker::start();
    let client = connect(&broker).await;
    bounded(30, async {
        client.admin().create_topic("crash", 2, 1, &[]).await.unwrap();
    })
    .await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let send_batch = |tag: &'static str| {
        let producer = producer.clone();
        async move {
            let mut futures = Vec::new();
            for i in 0..1000u32 {
                let rec = ProducerRecord::new("crash")
                    .partition(i % 2)
                    .value(format!("{tag}{i}"));
                futures.push(producer.send(rec).await.unwrap());
            }
            resolve_all(futures).await
        }
    };
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign([("crash", 0), ("crash", 1)]);
    let mut consumed = Vec::new();
    bounded(30, async {
        send_batch("a").await;
        while consumed.len() < 1000 {
            consumed.extend(consumer.poll(Duration::from_secs(5)).await.unwrap());
        }
    })
    .await;
    // SIGKILL while the consumer has its next fetch in flight: acks=all
    // records were synced, so all of them survive, and both clients reconnect.
    broker.restart();
    bounded(60, async {
        let metas = send_batch("b").await;
        for p in 0..2 {
            let mut offsets: Vec<i64> = metas
                .iter()
                .filter(|m| m.partition == p)
                .map(|m| m.offset)
                .collect();
            offsets.sort();
            assert_eq!(offsets, (500..1000).collect::<Vec<i64>>(), "partition {p}");
        }
        producer.close().await;
        while consumed.len() < 2000 {
            consumed.extend(consumer.poll(Duration::from_secs(5)).await.unwrap());
        }
        assert_dense_and_ordered(&consumed);
        let records = consume_all(&client, "crash", 2, 2000).await;
        assert_dense_and_ordered(&records);
    })
    .await;
}
