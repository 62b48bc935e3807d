//! group-bench: consumer groups against one broker pinned to one core.
//!
//! 1. Throughput: N consumers in one group (tasks on the load generator's
//!    core, each with its own connection) read a 6-partition topic of
//!    100-byte records written just before (untimed); records/s from the
//!    first record to the last.
//! 2. Failover: N `borges consume --group` processes consume while a
//!    producer keeps writing; one is SIGKILLed, and the time from the kill to
//!    the moment every partition it owned is consumed again by the others
//!    is measured (it is bounded below by the session timeout, which is how
//!    the coordinator learns of the death). Then one member leaves cleanly
//!    (SIGTERM, LeaveGroup), and the same time is measured: the cost of the
//!    rebalance alone.
//!
//! The raw loopback TCP bandwidth measured in the same run is the baseline.
//! The last line of output is one JSON object of the headline figures.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use borges_bench::broker_proc::{broker_binary, run_pinned, BrokerProc};
use borges_bench::net_baseline::loopback_tcp_mib_per_s;
use borges_bench::{median, ScratchDir};
use borges_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, GroupConfig, NoopListener, Producer,
    ProducerConfig, ProducerRecord,
};
use bytes::Bytes;
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Consumer-group throughput and failover time against one broker")]
struct Args {
    /// Records written, then read by the group, per run.
    #[arg(long, default_value_t = 3_000_000)]
    records: u64,
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Members of the group.
    #[arg(long, default_value_t = 3)]
    consumers: usize,
    /// The members' session timeout in the failover phase, ms.
    #[arg(long, default_value_t = 2000)]
    session_timeout_ms: u64,
    /// Records/s the producer writes during the failover phase.
    #[arg(long, default_value_t = 20_000)]
    failover_rate: u64,
    /// Repeat every measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 0)]
    broker_core: usize,
    #[arg(long, default_value_t = 1)]
    client_core: usize,
    /// A short smoke run (CI).
    #[arg(long)]
    quick: bool,
}

const TOPIC: &str = "bench";

async fn fill(addr: &str, args: &Args) {
    let client = Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect");
    client
        .admin()
        .create_topic(TOPIC, args.partitions, 1, &[])
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
    let topic: Arc<str> = TOPIC.into();
    let value = Bytes::from(vec![b'v'; args.record_bytes]);
    for i in 0..args.records {
        let rec = ProducerRecord::new(topic.clone())
            .partition((i % u64::from(args.partitions)) as u32)
            .value(value.clone());
        producer.send(rec).await.expect("send");
    }
    producer.flush().await;
    producer.close().await;
}

/// N members of one group read the whole topic; records/s.
async fn group_read(addr: String, args: Args, group: String) -> f64 {
    let total = Arc::new(AtomicU64::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.consumers {
        let (addr, group) = (addr.clone(), group.clone());
        let (total, first, done) = (total.clone(), first.clone(), done.clone());
        let records = args.records;
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&addr, ClientConfig::default())
                .await
                .expect("connect");
            let mut c = Consumer::new(client, ConsumerConfig::default());
            let mut g = GroupConfig::new(group);
            g.heartbeat_interval = Duration::from_millis(500);
            c.subscribe(g, &[TOPIC], Box::new(NoopListener))
                .expect("subscribe");
            while !done.load(Ordering::SeqCst) {
                let got = c.poll(Duration::from_millis(100)).await.expect("poll").len() as u64;
                if got > 0 {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                    if total.fetch_add(got, Ordering::SeqCst) + got >= records {
                        done.store(true, Ordering::SeqCst);
                    }
                }
            }
            c.close().await.expect("close");
        }));
    }
    let mut end = None;
    while end.is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if done.load(Ordering::SeqCst) {
            end = Some(Instant::now());
        }
    }
    for t in tasks {
        t.await.expect("member");
    }
    let got = total.load(Ordering::SeqCst);
    assert!(got >= args.records, "read {got} of {}", args.records);
    let start = first.lock().unwrap().expect("records arrived");
    args.records as f64 / (end.unwrap() - start).as_secs_f64()
}

/// A `borges consume --group` process and what it printed, with times.
struct Member {
    child: Child,
    seen: Arc<Mutex<Vec<(Instant, u32)>>>,
}

impl Member {
    fn spawn(bin: &std::path::Path, addr: &str, group: &str, session_ms: u64, core: usize) -> Member {
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(core.to_string())
            .arg(bin)
            .args([
                "consume",
                TOPIC,
                "--group",
                group,
                "--brokers",
                addr,
                "--from",
                "latest",
            ])
            .args([
                "--format",
                "{partition}",
                "--session-timeout-ms",
                &session_ms.to_string(),
            ])
            .env("BORGES_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a member");
        let out = child.stdout.take().expect("piped");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(p) = line.trim().parse() {
                    s.lock().unwrap().push((Instant::now(), p));
                }
            }
        });
        Member { child, seen }
    }

    fn partitions_since(&self, t: Instant) -> BTreeSet<u32> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, p)| *p)
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops member `victim` (SIGKILL or SIGTERM) and returns the ms until
/// every partition it was consuming is consumed by another member.
fn takeover_ms(members: &mut [Member], victim: usize, signal: i32) -> f64 {
    let watch_from = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    let owned = members[victim].partitions_since(watch_from);
    assert!(!owned.is_empty(), "member {victim} consumed nothing");
    let t0 = Instant::now();
    unsafe {
        libc::kill(members[victim].child.id() as i32, signal);
    }
    let _ = members[victim].child.wait();
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let mut resumed: HashMap<u32, Instant> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            if i == victim {
                continue;
            }
            for (at, p) in m.seen.lock().unwrap().iter() {
                if *at >= t0 && owned.contains(p) {
                    let e = resumed.entry(*p).or_insert(*at);
                    *e = (*e).min(*at);
                }
            }
        }
        if owned.iter().all(|p| resumed.contains_key(p)) {
            let last = resumed.values().max().copied().expect("non-empty");
            return (last - t0).as_secs_f64() * 1000.0;
        }
        assert!(
            Instant::now() < deadline,
            "partitions {owned:?} were not taken over within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Keeps producing `rate` records/s until `stop`.
async fn produce_steadily(addr: String, rate: u64, partitions: u32, stop: Arc<AtomicBool>) {
    let client = Client::connect(&addr, ClientConfig::default())
        .await
        .expect("connect");
    let producer = Producer::new(client, ProducerConfig::default()).expect("producer");
    let topic: Arc<str> = TOPIC.into();
    let per_tick = (rate / 100).max(1);
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..per_tick {
            let rec = ProducerRecord::new(topic.clone())
                .partition((i % u64::from(partitions)) as u32)
                .value(Bytes::from_static(b"x"));
            producer.send(rec).await.expect("send");
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producer.close().await;
}

fn failover(bin: &std::path::Path, addr: &str, args: &Args, run: usize) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (addr, stop) = (addr.to_string(), stop.clone());
        let (rate, partitions, core) = (args.failover_rate, args.partitions, args.client_core);
        std::thread::spawn(move || run_pinned(core, move || produce_steadily(addr, rate, partitions, stop)))
    };
    let group = format!("failover-{run}");
    let n = args.consumers.max(3);
    let mut members: Vec<Member> = (0..n)
        .map(|_| Member::spawn(bin, addr, &group, args.session_timeout_ms, args.client_core))
        .collect();
    // Wait until every member consumes.
    let t = Instant::now();
    while members.iter().any(|m| m.seen.lock().unwrap().is_empty()) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the members never all consumed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let kill = takeover_ms(&mut members, 0, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(500));
    let leave = takeover_ms(&mut members, 1, libc::SIGTERM);
    stop.store(true, Ordering::SeqCst);
    producer.join().expect("producer");
    (kill, leave)
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.records = 200_000;
        args.runs = 1;
    }
    let bin = broker_binary();
    let scratch = ScratchDir::new(None, "group-bench").expect("scratch directory on disk");
    println!("group-bench");
    println!(
        "  {} records of {} B, {} partitions, {} consumers in one group, session timeout {} ms, {} run(s), medians reported",
        args.records, args.record_bytes, args.partitions, args.consumers, args.session_timeout_ms, args.runs
    );
    let raw_total: u64 = if args.quick { 256 << 20 } else { 4 << 30 };
    let (mut raw, mut rates, mut kills, mut leaves) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let config = scratch.child("broker.toml");
    std::fs::write(
        &config,
        "group_initial_rebalance_delay_ms = 100\ngroup_min_session_timeout_ms = 100\n",
    )
    .expect("write the broker config");
    let config_arg = config.to_str().expect("utf-8 path").to_string();
    for run in 1..=args.runs {
        let r = loopback_tcp_mib_per_s(raw_total, 1 << 20, args.broker_core, args.client_core);
        println!("run {run}  raw loopback TCP        {r:>9.1} MiB/s");
        raw.push(r);
        let dir = scratch.child(&format!("run{run}"));
        let broker = BrokerProc::start(&bin, &dir, args.broker_core, &["--config", &config_arg]);
        let addr = broker.addr.to_string();
        let a = args.clone();
        let fill_addr = addr.clone();
        run_pinned(
            args.client_core,
            move || async move { fill(&fill_addr, &a).await },
        );
        let a = args.clone();
        let read_addr = addr.clone();
        let rps = run_pinned(args.client_core, move || {
            group_read(read_addr, a, format!("read-{run}"))
        });
        let mib = rps * args.record_bytes as f64 / (1 << 20) as f64;
        println!(
            "run {run}  group read ({} members) {mib:>9.1} MiB/s {rps:>12.0} records/s",
            args.consumers
        );
        let (kill, leave) = failover(&bin, &addr, &args, run);
        println!("run {run}  takeover after SIGKILL   {kill:>8.0} ms   after a clean leave {leave:>6.0} ms");
        rates.push(rps);
        kills.push(kill);
        leaves.push(leave);
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (raw_med, rps, kill, leave) = (median(&raw), median(&rates), median(&kills), median(&leaves));
    let mib = rps * args.record_bytes as f64 / (1 << 20) as f64;
    println!();
    println!("medians of {} run(s)", args.runs);
    println!("raw loopback TCP          {raw_med:>9.1} MiB/s");
    println!(
        "group read                {mib:>9.1} MiB/s {rps:>12.0} records/s  ({:.3} of raw TCP)",
        mib / raw_med
    );
    println!(
        "takeover after SIGKILL    {kill:>9.0} ms (session timeout {} ms)",
        args.session_timeout_ms
    );
    println!("takeover after clean leave{leave:>9.0} ms");
    let _ = scratch.finish(false);
    println!();
    println!(
        "{}",
        serde_json::json!({
            "records_per_s": rps.round(),
            "mb_per_s": (mib * 10.0).round() / 10.0,
            "mb_unit": "MiB/s",
            "raw_tcp_mb_per_s": (raw_med * 10.0).round() / 10.0,
            "ratio_to_raw_tcp": ((mib / raw_med) * 1000.0).round() / 1000.0,
            "consumers": args.consumers,
            "partitions": args.partitions,
            "failover_kill_ms": kill.round(),
            "failover_leave_ms": leave.round(),
            "session_timeout_ms": args.session_timeout_ms,
            "records": args.records,
            "runs": args.runs,
        })
    );
}
