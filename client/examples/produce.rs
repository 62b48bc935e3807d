//! Produces records to a topic and reports the rate.
//!
//! ```text
//! cargo run -p borges-client --example produce -- --topic events \
//!     [--brokers 127.0.0.1:9092] [--count 100000] [--size 100] \
//!     [--acks all|leader|none] [--compression none|lz4|zstd] [--partitions 4] [--keyed]
//! ```
//!
//! `--brokers` defaults to `$BORGES_BROKERS`, then `127.0.0.1:9092`. The
//! topic is created with `--partitions` partitions if it does not exist.

use std::time::Instant;

use borges_client::{
    Acks, Client, ClientConfig, ClientError, Compression, ErrorCode, Producer, ProducerConfig, ProducerRecord,
};
use bytes::Bytes;

struct Args {
    brokers: String,
    topic: String,
    count: usize,
    size: usize,
    acks: Acks,
    compression: Compression,
    partitions: u32,
    keyed: bool,
}

fn usage(why: &str) -> ! {
    eprintln!("produce: {why}");
    eprintln!(
        "usage: produce --topic NAME [--brokers HOST:PORT] [--count N] [--size BYTES] \
         [--acks all|leader|none] [--compression none|lz4|zstd] [--partitions N] [--keyed]"
    );
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        brokers: std::env::var("BORGES_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topic: String::new(),
        count: 100_000,
        size: 100,
        acks: Acks::All,
        compression: Compression::None,
        partitions: 4,
        keyed: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keyed" {
            a.keyed = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = |v: &str| {
            v.parse::<usize>()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number")))
        };
        match flag.as_str() {
            "--brokers" => a.brokers = value,
            "--topic" => a.topic = value,
            "--count" => a.count = number(&value),
            "--size" => a.size = number(&value),
            "--partitions" => a.partitions = number(&value) as u32,
            "--acks" => {
                a.acks = match value.as_str() {
                    "all" | "-1" => Acks::All,
                    "leader" | "1" => Acks::Leader,
                    "none" | "0" => Acks::None,
                    _ => usage("--acks: all, leader or none"),
                }
            }
            "--compression" => {
                a.compression = match value.as_str() {
                    "none" => Compression::None,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    _ => usage("--compression: none, lz4 or zstd"),
                }
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if a.topic.is_empty() {
        usage("--topic is required");
    }
    a
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let args = parse();
    let client = Client::connect(&args.brokers, ClientConfig::default()).await?;
    match client
        .admin()
        .create_topic(&args.topic, args.partitions, 1, &[])
        .await
    {
        Ok(id) => println!("created topic {} ({id})", args.topic),
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
        Err(e) => return Err(e),
    }
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: args.acks,
            compression: args.compression,
            ..ProducerConfig::default()
        },
    )?;
    let value = Bytes::from(vec![b'x'; args.size]);
    let start = Instant::now();
    // Deliveries are awaited by a second task, so sending never waits on them.
    let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
    let waiter = tokio::spawn(async move {
        let mut failed = 0usize;
        let mut first_error = None;
        while let Some(delivery) = rx.recv().await {
            if let Err(e) = delivery.await {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        (failed, first_error)
    });
    for i in 0..args.count {
        let mut record = ProducerRecord::new(args.topic.as_str()).value(value.clone());
        if args.keyed {
            record = record.key(format!("key-{}", i % 10_000));
        }
        let delivery = producer.send(record).await?;
        if tx.send(delivery).await.is_err() {
            break;
        }
    }
    drop(tx);
    producer.close().await;
    let (failed, first_error) = waiter.await.expect("the delivery task does not panic");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} records of {} bytes in {secs:.2} s: {:.0} records/s, {:.1} MiB/s; {failed} failed",
        args.count,
        args.size,
        args.count as f64 / secs,
        (args.count * args.size) as f64 / secs / (1 << 20) as f64,
    );
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
