//! A producer's timed run: `records` values of `record_bytes` to one topic
//! (the sticky partitioner spreads them), with delivery latency sampled on
//! every 64th record. Values are made before the clock starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use borges_client::{Acks, Client, Compression, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;

use crate::{latency_histogram, XorShift};

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub records_per_s: f64,
    pub mib_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// How a run produces.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub records: u64,
    pub record_bytes: usize,
    pub acks: Acks,
    pub compression: Compression,
    pub batch_bytes: usize,
    pub linger: Duration,
}

/// Produces `load.records` records to `topic` through `client` and measures.
pub async fn produce_timed(client: Client, topic: &str, load: Load) -> Measured {
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: load.acks,
            compression: load.compression,
            batch_size_bytes: load.batch_bytes,
            linger: load.linger,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    let mut rng = XorShift::new(42);
    // Static payloads, as load generators reuse theirs: cloning one costs
    // nothing, so the figure measures the producer, not the allocator.
    let values: Vec<Bytes> = (0..64)
        .map(|_| {
            let v: Vec<u8> = (0..load.record_bytes)
                .map(|_| b'a' + (rng.next_u64() % 26) as u8)
                .collect();
            Bytes::from_static(Box::leak(v.into_boxed_slice()))
        })
        .collect();
    let topic: Arc<str> = topic.into();
    // Sampled deliveries are awaited in send order by their own task.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, borges_client::DeliveryFuture)>();
    let sampler = tokio::spawn(async move {
        let mut h = latency_histogram();
        while let Some((sent, d)) = rx.recv().await {
            d.await.expect("delivered");
            let _ = h.record(sent.elapsed().as_micros() as u64);
        }
        h
    });
    let start = Instant::now();
    let mut last = None;
    for i in 0..load.records {
        let r = ProducerRecord::new(topic.clone()).value(values[(i % 64) as usize].clone());
        let sampled = i % 64 == 0;
        let sent = sampled.then(Instant::now);
        let d = producer.send(r).await.expect("send");
        if let Some(sent) = sent {
            let _ = tx.send((sent, d));
        } else if i + 1 == load.records {
            last = Some(d);
        }
    }
    producer.flush().await;
    if let Some(d) = last {
        d.await.expect("last record delivered");
    }
    let secs = start.elapsed().as_secs_f64();
    drop(tx);
    let h = sampler.await.expect("sampler");
    producer.close().await;
    let bytes = load.records as f64 * load.record_bytes as f64;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Measured {
        records_per_s: load.records as f64 / secs,
        mib_per_s: bytes / secs / (1 << 20) as f64,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
    }
}
