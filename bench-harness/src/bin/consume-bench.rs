//! consume-bench: one broker on one core, the native client's consumer on
//! the other, reading back 100-byte records written just before (untimed)
//! by the producer: a first read (the records are on disk only, as the
//! broker writes with O_DIRECT) and a second (now in the page cache); the
//! headline figures are the first read's. Prints records/s, MB/s and poll latency percentiles,
//! and the bandwidth of a raw loopback TCP stream measured in the same run.
//! The last line of output is one JSON object of the headline figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use borges_bench::broker_proc::{broker_binary, run_pinned, BrokerProc};
use borges_bench::net_baseline::loopback_tcp_mib_per_s;
use borges_bench::{latency_histogram, median, ScratchDir};
use borges_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use bytes::Bytes;
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Consumer throughput against one broker, versus raw loopback TCP")]
struct Args {
    /// Records written, then read back, per run.
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Bytes of each record's value (no key).
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Repeat every measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 0)]
    broker_core: usize,
    #[arg(long, default_value_t = 1)]
    client_core: usize,
    /// The consumer's per-partition fetch size in bytes (default: the client's).
    #[arg(long)]
    partition_max_bytes: Option<u32>,
    /// A short smoke run (CI).
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    records_per_s: f64,
    mib_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Share of the consume time the load generator's thread was on CPU.
    client_busy: f64,
}

fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

async fn fill(addr: &str, args: &Args) {
    let client = Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect");
    client
        .admin()
        .create_topic("bench", args.partitions, 1, &[])
        .await
        .expect("create topic");
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    let topic: Arc<str> = "bench".into();
    let value = Bytes::from_static(Box::leak(vec![b'v'; args.record_bytes].into_boxed_slice()));
    for _ in 0..args.records {
        producer
            .send(ProducerRecord::new(topic.clone()).value(value.clone()))
            .await
            .expect("send");
    }
    producer.flush().await;
    producer.close().await;
}

/// Reads the whole topic from the earliest offset once, timed.
async fn read_pass(addr: &str, args: &Args) -> Measured {
    let client = Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect");
    let mut config = ConsumerConfig::default();
    if let Some(b) = args.partition_max_bytes {
        config.partition_max_bytes = b;
    }
    let mut consumer = Consumer::new(client, config);
    consumer.assign((0..args.partitions).map(|p| ("bench".to_string(), p)));
    for p in 0..args.partitions {
        consumer.seek("bench", p, SeekTo::Earliest).await.expect("seek");
    }
    let mut h = latency_histogram();
    let mut got = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    let cpu0 = thread_cpu_secs();
    while got < args.records {
        let t = Instant::now();
        let records = consumer.poll(Duration::from_secs(5)).await.expect("poll");
        let _ = h.record(t.elapsed().as_micros() as u64);
        assert!(!records.is_empty(), "records stopped coming after {got}");
        for r in &records {
            bytes += r.value.as_ref().map_or(0, |v| v.len()) as u64;
        }
        got += records.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let client_busy = (thread_cpu_secs() - cpu0) / secs;
    assert_eq!(got, args.records, "every record read exactly once");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Measured {
        records_per_s: got as f64 / secs,
        mib_per_s: bytes as f64 / secs / (1 << 20) as f64,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        client_busy,
    }
}

/// Writes the records, then reads them twice: the first read finds them on
/// disk only (the broker writes with O_DIRECT, so nothing is in the page
/// cache), the second in the page cache.
async fn consume_run(addr: String, args: Args) -> (Measured, Measured) {
    fill(&addr, &args).await;
    let cold = read_pass(&addr, &args).await;
    let warm = read_pass(&addr, &args).await;
    (cold, warm)
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.records = 200_000;
        args.runs = 1;
    }
    let bin = broker_binary();
    let scratch = ScratchDir::new(None, "consume-bench").expect("scratch directory on disk");
    println!("consume-bench");
    println!(
        "  {} records of {} B per run, {} partitions, {} run(s), medians reported; poll latency per poll() call",
        args.records, args.record_bytes, args.partitions, args.runs
    );
    let raw_total: u64 = if args.quick { 256 << 20 } else { 4 << 30 };
    let mut raw = Vec::new();
    let mut runs = Vec::new();
    let mut warm_runs = Vec::new();
    for run in 1..=args.runs {
        let r = loopback_tcp_mib_per_s(raw_total, 1 << 20, args.broker_core, args.client_core);
        println!("run {run}  raw loopback TCP   {r:>9.1} MiB/s");
        raw.push(r);
        let dir = scratch.child(&format!("run{run}"));
        let broker = BrokerProc::start(&bin, &dir, args.broker_core, &[]);
        let addr = broker.addr.to_string();
        let a = args.clone();
        let (cold, warm) = run_pinned(args.client_core, move || consume_run(addr, a));
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
        for (name, m) in [("consume, first read", &cold), ("consume, second read", &warm)] {
            println!(
                "run {run}  {name:<22} {:>9.1} MiB/s {:>12.0} records/s  poll p50 {:.2} ms  p99 {:.2} ms  client core busy {:.0}%",
                m.mib_per_s,
                m.records_per_s,
                m.p50_ms,
                m.p99_ms,
                m.client_busy * 100.0
            );
        }
        runs.push(cold);
        warm_runs.push(warm);
    }
    let raw_med = median(&raw);
    let pick = |f: fn(&Measured) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let (rps, mib, p50, p99) = (
        pick(|m| m.records_per_s),
        pick(|m| m.mib_per_s),
        pick(|m| m.p50_ms),
        pick(|m| m.p99_ms),
    );
    let pick_warm = |f: fn(&Measured) -> f64| median(&warm_runs.iter().map(f).collect::<Vec<_>>());
    let (warm_rps, warm_mib, warm_p99) = (
        pick_warm(|m| m.records_per_s),
        pick_warm(|m| m.mib_per_s),
        pick_warm(|m| m.p99_ms),
    );
    println!();
    println!("medians of {} run(s)", args.runs);
    println!("raw loopback TCP   {raw_med:>9.1} MiB/s");
    println!(
        "consume, first read    {mib:>9.1} MiB/s {rps:>12.0} records/s  poll p50 {p50:.2} ms  p99 {p99:.2} ms  ({:.3} of raw TCP)",
        mib / raw_med
    );
    println!(
        "consume, second read   {warm_mib:>9.1} MiB/s {warm_rps:>12.0} records/s  poll p99 {warm_p99:.2} ms  ({:.3} of raw TCP)",
        warm_mib / raw_med
    );
    let _ = scratch.finish(false);
    println!();
    println!(
        "{}",
        serde_json::json!({
            "records_per_s": rps.round(),
            "mb_per_s": (mib * 10.0).round() / 10.0,
            "mb_unit": "MiB/s",
            "p50_ms": (p50 * 100.0).round() / 100.0,
            "p99_ms": (p99 * 100.0).round() / 100.0,
            "raw_tcp_mb_per_s": (raw_med * 10.0).round() / 10.0,
            "warm_records_per_s": warm_rps.round(),
            "warm_mb_per_s": (warm_mib * 10.0).round() / 10.0,
            "warm_p99_ms": (warm_p99 * 100.0).round() / 100.0,
            "ratio_to_raw_tcp": ((mib / raw_med) * 1000.0).round() / 1000.0,
            "record_bytes": args.record_bytes,
            "records": args.records,
            "runs": args.runs,
        })
    );
}
