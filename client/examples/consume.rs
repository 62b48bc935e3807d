//! Reads every partition of a topic and prints the records (or a count).
//!
//! ```text
//! cargo run -p borges-client --example consume -- --topic events \
//!     [--brokers 127.0.0.1:9092] [--from earliest|latest|OFFSET] [--count N] [--quiet]
//! ```
//!
//! `--brokers` defaults to `$BORGES_BROKERS`, then `127.0.0.1:9092`. Stops
//! after `--count` records, or after 5 s without any.

use std::time::{Duration, Instant};

use borges_client::{AutoOffsetReset, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, SeekTo};

struct Args {
    brokers: String,
    topic: String,
    from: SeekTo,
    count: Option<usize>,
    quiet: bool,
}

fn usage(why: &str) -> ! {
    eprintln!("consume: {why}");
    eprintln!("usage: consume --topic NAME [--brokers HOST:PORT] [--from earliest|latest|OFFSET] [--count N] [--quiet]");
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        brokers: std::env::var("BORGES_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topic: String::new(),
        from: SeekTo::Earliest,
        count: None,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--quiet" {
            a.quiet = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--brokers" => a.brokers = value,
            "--topic" => a.topic = value,
            "--count" => a.count = Some(value.parse().unwrap_or_else(|_| usage("--count: not a number"))),
            "--from" => {
                a.from = match value.as_str() {
                    "earliest" => SeekTo::Earliest,
                    "latest" => SeekTo::Latest,
                    o => SeekTo::Offset(
                        o.parse()
                            .unwrap_or_else(|_| usage("--from: earliest, latest or an offset")),
                    ),
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
    let partitions = client.topic_metadata(&args.topic).await?.partition_count();
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..partitions).map(|p| (args.topic.clone(), p)));
    for p in 0..partitions {
        consumer.seek(&args.topic, p, args.from).await?;
    }
    let start = Instant::now();
    let mut seen = 0usize;
    let mut idle_since = Instant::now();
    while args.count.is_none_or(|c| seen < c) {
        let mut records = consumer.poll(Duration::from_millis(500)).await?;
        if let Some(c) = args.count {
            records.truncate(c - seen);
        }
        if records.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(5) {
                break;
            }
            continue;
        }
        idle_since = Instant::now();
        for r in &records {
            if !args.quiet {
                let show = |b: &Option<bytes::Bytes>| match b {
                    None => "null".to_string(),
                    Some(b) => String::from_utf8_lossy(b).into_owned(),
                };
                println!(
                    "{}/{} @{} ts={} key={} value={}",
                    r.topic,
                    r.partition,
                    r.offset,
                    r.timestamp,
                    show(&r.key),
                    show(&r.value)
                );
            }
        }
        seen += records.len();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{seen} records in {secs:.2} s ({:.0} records/s)",
        seen as f64 / secs
    );
    Ok(())
}
