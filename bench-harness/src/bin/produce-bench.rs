//! produce-bench: one broker on one core, the native client's producer on
//! the other, 100-byte records; acks=1 and acks=all, without compression
//! and with lz4. Prints records/s, MB/s and delivery latency percentiles,
//! and the bandwidth of a raw loopback TCP stream measured in the same run.
//! The last line of output is one JSON object of the headline figures.

use std::time::Duration;

use borges_bench::broker_proc::{broker_binary, run_pinned, BrokerProc};
use borges_bench::load::{produce_timed, Load, Measured};
use borges_bench::net_baseline::loopback_tcp_mib_per_s;
use borges_bench::{median, ScratchDir};
use borges_client::{Acks, Client, ClientConfig, Compression};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Producer throughput and latency against one broker, versus raw loopback TCP")]
struct Args {
    /// Records per scenario and run.
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
    /// Core of the broker's shard.
    #[arg(long, default_value_t = 0)]
    broker_core: usize,
    /// Core of the load generator.
    #[arg(long, default_value_t = 1)]
    client_core: usize,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// A short smoke run (CI).
    #[arg(long)]
    quick: bool,
}

struct Scenario {
    name: &'static str,
    acks: Acks,
    compression: Compression,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "acks=1 none",
        acks: Acks::Leader,
        compression: Compression::None,
    },
    Scenario {
        name: "acks=1 lz4",
        acks: Acks::Leader,
        compression: Compression::Lz4,
    },
    Scenario {
        name: "acks=all none",
        acks: Acks::All,
        compression: Compression::None,
    },
    Scenario {
        name: "acks=all lz4",
        acks: Acks::All,
        compression: Compression::Lz4,
    },
];

/// Produces `records` records and measures; runs on the pinned client core.
async fn produce_run(addr: String, args: Args, acks: Acks, compression: Compression) -> Measured {
    let client = Client::connect(&addr, ClientConfig::default())
        .await
        .expect("connect");
    client
        .admin()
        .create_topic("bench", args.partitions, 1, &[])
        .await
        .expect("create topic");
    let load = Load {
        records: args.records,
        record_bytes: args.record_bytes,
        acks,
        compression,
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(5),
    };
    produce_timed(client, "bench", load).await
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.records = 200_000;
        args.runs = 1;
    }
    let bin = broker_binary();
    let scratch = ScratchDir::new(None, "produce-bench").expect("scratch directory on disk");
    println!("produce-bench");
    println!(
        "  {} records of {} B per scenario and run, {} partitions, batches of {} B, {} run(s), medians reported",
        args.records, args.record_bytes, args.partitions, args.batch_bytes, args.runs
    );
    println!(
        "  broker: {} (one shard) on core {}; load generator on core {}",
        bin.display(),
        args.broker_core,
        args.client_core
    );
    let mut raw = Vec::new();
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); SCENARIOS.len()];
    let raw_total: u64 = if args.quick { 256 << 20 } else { 4 << 30 };
    for run in 1..=args.runs {
        let r = loopback_tcp_mib_per_s(raw_total, 1 << 20, args.client_core, args.broker_core);
        println!("run {run}  raw loopback TCP                 {r:>9.1} MiB/s");
        raw.push(r);
        for (i, s) in SCENARIOS.iter().enumerate() {
            let dir = scratch.child(&format!("run{run}-{i}"));
            let broker = BrokerProc::start(&bin, &dir, args.broker_core, &[]);
            let addr = broker.addr.to_string();
            let a = args.clone();
            let (acks, compression) = (s.acks, s.compression);
            let m = run_pinned(args.client_core, move || produce_run(addr, a, acks, compression));
            drop(broker);
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "run {run}  {:<30} {:>9.1} MiB/s {:>12.0} records/s  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms",
                s.name, m.mib_per_s, m.records_per_s, m.p50_ms, m.p99_ms, m.p999_ms
            );
            results[i].push(m);
        }
    }
    let raw_med = median(&raw);
    println!();
    println!("medians of {} run(s)", args.runs);
    println!(
        "{:<32} {:>10} {:>14} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "MiB/s", "records/s", "p50 ms", "p99 ms", "p999 ms", "vs raw"
    );
    println!("{:<32} {:>10.1}", "raw loopback TCP (1 MiB writes)", raw_med);
    let mut json = serde_json::Map::new();
    for (i, s) in SCENARIOS.iter().enumerate() {
        let pick = |f: fn(&Measured) -> f64| median(&results[i].iter().map(f).collect::<Vec<_>>());
        let (rps, mib, p50, p99, p999) = (
            pick(|m| m.records_per_s),
            pick(|m| m.mib_per_s),
            pick(|m| m.p50_ms),
            pick(|m| m.p99_ms),
            pick(|m| m.p999_ms),
        );
        println!(
            "{:<32} {:>10.1} {:>14.0} {:>9.2} {:>9.2} {:>9.2} {:>9.3}",
            s.name,
            mib,
            rps,
            p50,
            p99,
            p999,
            mib / raw_med
        );
        let key = s.name.replace(['=', ' '], "_");
        json.insert(format!("{key}_records_per_s"), serde_json::json!(rps.round()));
        json.insert(
            format!("{key}_mb_per_s"),
            serde_json::json!((mib * 10.0).round() / 10.0),
        );
        json.insert(
            format!("{key}_p99_ms"),
            serde_json::json!((p99 * 100.0).round() / 100.0),
        );
        if i == 0 {
            json.insert("records_per_s".into(), serde_json::json!(rps.round()));
            json.insert("mb_per_s".into(), serde_json::json!((mib * 10.0).round() / 10.0));
            json.insert("p99_ms".into(), serde_json::json!((p99 * 100.0).round() / 100.0));
            json.insert(
                "ratio_to_raw_tcp".into(),
                serde_json::json!(((mib / raw_med) * 1000.0).round() / 1000.0),
            );
        }
    }
    json.insert(
        "raw_tcp_mb_per_s".into(),
        serde_json::json!((raw_med * 10.0).round() / 10.0),
    );
    json.insert("mb_unit".into(), serde_json::json!("MiB/s"));
    json.insert("record_bytes".into(), serde_json::json!(args.record_bytes));
    json.insert("records".into(), serde_json::json!(args.records));
    json.insert("runs".into(), serde_json::json!(args.runs));
    let _ = scratch.finish(false);
    println!();
    println!("{}", serde_json::Value::Object(json));
}
