//! replication-bench: three brokers (one shard each) on 127.0.0.1-3, every
//! one a voter, 100-byte records to a 6-partition topic through the native
//! client:
//!
//! - `rf1_1p`: replication factor 1, acks=1, one producer (the baseline);
//! - `rf3_acks1_1p`, `rf3_acks_all_1p`: replication factor 3, one producer;
//! - `rf3_acks1_3p`, `rf3_acks_all_3p`: three producers at once (each its
//!   own client and connections), a third of the records each;
//! - failover: a producer sends with acks=all to a one-partition topic of
//!   replication factor 3; its leader is SIGKILLed; the time from the kill
//!   to the first acknowledged write sent after it (the client's retries
//!   and metadata refreshes included, as an application sees it).
//!
//! Every scenario runs `--runs` times on fresh topics; medians are quoted,
//! with each as a ratio to the same run's `rf1_1p`. The last line is one
//! JSON object.

use std::time::{Duration, Instant};

use borges_bench::broker_proc::broker_binary;
use borges_bench::cluster::{kill, ms, restart, start_all, terminate, three_nodes, until, Node};
use borges_bench::load::{produce_timed, Load, Measured};
use borges_bench::{median, ScratchDir};
use borges_client::{Acks, Client, ClientConfig, Compression, Producer, ProducerConfig, ProducerRecord};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Replicated produce throughput and latency, and leader failover, on three brokers")]
struct Args {
    /// Records per scenario and run.
    #[arg(long, default_value_t = 5_000_000)]
    records: u64,
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// `broker.session.timeout.ms` of the brokers (it bounds failover).
    #[arg(long, default_value_t = 9000)]
    session_timeout_ms: u64,
    /// 200,000 records, one run, a 3 s session timeout: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Where the brokers' data goes (default: a directory under /tmp).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

struct Scenario {
    name: &'static str,
    rf: u16,
    acks: Acks,
    producers: u64,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "rf1_1p",
        rf: 1,
        acks: Acks::Leader,
        producers: 1,
    },
    Scenario {
        name: "rf3_acks1_1p",
        rf: 3,
        acks: Acks::Leader,
        producers: 1,
    },
    Scenario {
        name: "rf3_acks_all_1p",
        rf: 3,
        acks: Acks::All,
        producers: 1,
    },
    Scenario {
        name: "rf3_acks1_3p",
        rf: 3,
        acks: Acks::Leader,
        producers: 3,
    },
    Scenario {
        name: "rf3_acks_all_3p",
        rf: 3,
        acks: Acks::All,
        producers: 3,
    },
];

async fn connect(bootstrap: &str) -> Client {
    Client::connect(bootstrap, ClientConfig::default())
        .await
        .expect("connect")
}

/// Waits until every partition of `topic` has a leader and `rf` in-sync replicas.
async fn until_in_sync(bootstrap: &str, topic: &str, rf: usize) {
    until(Duration::from_secs(60), "every replica in sync", || async move {
        let c = Client::connect(bootstrap, ClientConfig::default()).await.ok()?;
        let t = c.refresh_topic(topic).await.ok()?;
        t.partitions
            .iter()
            .all(|p| p.leader >= 0 && p.isr.len() == rf)
            .then_some(())
    })
    .await;
}

/// One scenario's run on a fresh topic: records/s over all its producers,
/// latency of the first producer.
async fn run_scenario(bootstrap: &str, topic: &str, s: &Scenario, args: &Args) -> Measured {
    let c = connect(bootstrap).await;
    c.admin()
        .create_topic(topic, args.partitions, s.rf, &[])
        .await
        .expect("create topic");
    until_in_sync(bootstrap, topic, s.rf as usize).await;
    let load = Load {
        records: args.records / s.producers,
        record_bytes: args.record_bytes,
        acks: s.acks,
        compression: Compression::None,
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(5),
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..s.producers {
        let client = connect(bootstrap).await;
        let topic = topic.to_string();
        tasks.push(tokio::spawn(
            async move { produce_timed(client, &topic, load).await },
        ));
    }
    let mut first = None;
    for t in tasks {
        let m = t.await.expect("a producer");
        first.get_or_insert(m);
    }
    let secs = start.elapsed().as_secs_f64();
    let total = load.records * s.producers;
    let first = first.expect("one producer at least");
    Measured {
        records_per_s: total as f64 / secs,
        mib_per_s: total as f64 * args.record_bytes as f64 / secs / (1 << 20) as f64,
        ..first
    }
}

/// SIGKILL of a partition leader under an acks=all producer: the time to
/// the first acknowledged write sent after the kill.
async fn failover(
    bin: &std::path::Path,
    nodes: &mut [Node],
    bootstrap: &str,
    topic: &str,
    args: &Args,
) -> Duration {
    let c = connect(bootstrap).await;
    c.admin()
        .create_topic(topic, 1, 3, &[])
        .await
        .expect("create topic");
    until_in_sync(bootstrap, topic, 3).await;
    let producer = Producer::new(
        connect(bootstrap).await,
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(1),
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    // Warm: the producer knows the leader and has a connection to it.
    for i in 0..100 {
        producer
            .send(ProducerRecord::new(topic).value(format!("warm-{i}")))
            .await
            .expect("send")
            .await
            .expect("delivered");
    }
    let leader = c.refresh_topic(topic).await.expect("metadata").partitions[0].leader;
    let victim = nodes
        .iter()
        .position(|n| n.id == leader)
        .expect("the leader's node");
    let killed = Instant::now();
    kill(&mut nodes[victim]);
    producer
        .send(ProducerRecord::new(topic).value("after"))
        .await
        .expect("send")
        .await
        .expect("delivered on the new leader");
    let took = killed.elapsed();
    producer.close().await;
    restart(bin, nodes, victim, args.session_timeout_ms, &[]);
    until_in_sync(bootstrap, topic, 3).await;
    took
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.records = 200_000;
        args.runs = 1;
        args.session_timeout_ms = args.session_timeout_ms.min(3000);
    }
    let bin = broker_binary();
    let scratch = ScratchDir::new(args.dir.as_deref(), "replication-bench").expect("scratch dir");
    let mut nodes = three_nodes(|i| scratch.child(&format!("node{i}")));
    start_all(&bin, &mut nodes, args.session_timeout_ms, &[]);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let bootstrap = bootstrap.join(",");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "replication-bench: 3 brokers (1 shard each) on 127.0.0.1-3, {} records of {} B per scenario and run, {} partitions, batches of {} B, session timeout {} ms, {} run(s)",
        args.records, args.record_bytes, args.partitions, args.batch_bytes, args.session_timeout_ms, args.runs
    );
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); SCENARIOS.len()];
    let mut failovers = Vec::new();
    for run in 0..args.runs {
        for (i, s) in SCENARIOS.iter().enumerate() {
            let topic = format!("{}-{run}", s.name);
            let m = rt.block_on(run_scenario(&bootstrap, &topic, s, &args));
            println!(
                "run {run}  {:<16} {:>12.0} records/s {:>8.1} MiB/s  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms",
                s.name, m.records_per_s, m.mib_per_s, m.p50_ms, m.p99_ms, m.p999_ms
            );
            results[i].push(m);
        }
        let took = rt.block_on(failover(
            &bin,
            &mut nodes,
            &bootstrap,
            &format!("failover-{run}"),
            &args,
        ));
        println!(
            "run {run}  leader SIGKILL to the first acks=all write acknowledged after it: {:.0} ms",
            ms(took)
        );
        failovers.push(ms(took));
    }
    for n in &mut nodes {
        terminate(n);
    }
    let _ = scratch.finish(false);
    println!();
    println!("medians of {} run(s)", args.runs);
    let baseline = median(&results[0].iter().map(|m| m.records_per_s).collect::<Vec<_>>());
    let mut json = serde_json::Map::new();
    json.insert("bench".into(), serde_json::json!("replication"));
    for (i, s) in SCENARIOS.iter().enumerate() {
        let pick = |f: fn(&Measured) -> f64| median(&results[i].iter().map(f).collect::<Vec<_>>());
        let (rps, p50, p99, p999) = (
            pick(|m| m.records_per_s),
            pick(|m| m.p50_ms),
            pick(|m| m.p99_ms),
            pick(|m| m.p999_ms),
        );
        println!(
            "{:<16} {:>12.0} records/s  x{:.2} of rf1_1p  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms",
            s.name,
            rps,
            rps / baseline,
            p50,
            p99,
            p999
        );
        json.insert(
            format!("{}_records_per_s", s.name),
            serde_json::json!(rps.round()),
        );
        json.insert(
            format!("{}_p99_ms", s.name),
            serde_json::json!((p99 * 100.0).round() / 100.0),
        );
    }
    let failover_ms = median(&failovers);
    println!(
        "failover: leader SIGKILL to the first acknowledged acks=all write {:.0} ms (median); session timeout {} ms",
        failover_ms, args.session_timeout_ms
    );
    json.insert("failover_ms".into(), serde_json::json!(failover_ms.round()));
    json.insert(
        "session_timeout_ms".into(),
        serde_json::json!(args.session_timeout_ms),
    );
    json.insert("records".into(), serde_json::json!(args.records));
    json.insert("runs".into(), serde_json::json!(args.runs));
    println!("{}", serde_json::Value::Object(json));
}
