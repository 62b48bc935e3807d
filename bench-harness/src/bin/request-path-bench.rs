//! request-path-bench: what the broker's request path costs when clients
//! wait and when they read slowly. One broker on one core, the load
//! generator on the other.
//!
//! 1. Long polls: a trickle producer writes a few records a second to a
//!    quiet topic; alone (the baseline), then with many idle consumers
//!    whose `fetch_min_bytes` the trickle never satisfies, so every fetch
//!    waits its whole `fetch_max_wait`. Reports the broker's CPU in both and
//!    the CPU each waiting consumer costs. (A long poll that re-read the log
//!    until its deadline used a whole core here.)
//! 2. Cold, slow readers: a producer at a fixed rate, its delivery latency
//!    alone (the baseline), then while readers fetch large ranges of records
//!    that are only on disk and drain their sockets slowly. Reports the
//!    producer's p50/p99/max in both.
//!
//! The last line of output is one JSON object of the headline figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use borges_bench::broker_proc::{broker_binary, run_pinned, BrokerProc};
use borges_bench::{latency_histogram, median, LatencySummary, ScratchDir};
use borges_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, DeliveryFuture, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use borges_net::protocol::{
    encode_request, FetchPartition, FetchRequest, FetchTopic, Request, RequestHeader,
};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug, Clone)]
#[command(about = "Broker CPU per waiting consumer; producer latency behind cold, slow readers")]
struct Args {
    /// Idle consumers in the long-poll scenario.
    #[arg(long, default_value_t = 500)]
    consumers: usize,
    /// Partitions of the quiet topic (consumers are spread over them).
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Seconds each long-poll measurement lasts.
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    /// Records per second the trickle producer writes to the quiet topic.
    #[arg(long, default_value_t = 20)]
    trickle_per_s: u64,
    /// MiB written to the cold topic before the slow readers start.
    #[arg(long, default_value_t = 1024)]
    cold_mib: u64,
    /// Slow readers in the cold-read scenario.
    #[arg(long, default_value_t = 8)]
    readers: usize,
    /// KiB per second each slow reader takes off its socket.
    #[arg(long, default_value_t = 2048)]
    reader_kib_per_s: u64,
    /// Records per second of the latency-measured producer.
    #[arg(long, default_value_t = 5000)]
    produce_per_s: u64,
    /// Seconds each producer-latency measurement lasts.
    #[arg(long, default_value_t = 10)]
    produce_secs: u64,
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

const RECORD_BYTES: usize = 100;

async fn connect(addr: &str) -> Client {
    Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect")
}

fn producer(client: Client, acks: Acks) -> Producer {
    Producer::new(
        client,
        ProducerConfig {
            acks,
            linger: Duration::from_millis(1),
            ..ProducerConfig::default()
        },
    )
    .expect("producer")
}

fn value(bytes: usize) -> Bytes {
    Bytes::from_static(Box::leak(vec![b'v'; bytes].into_boxed_slice()))
}

/// Writes `per_s` records a second to `topic` until `stop` is set.
async fn trickle(addr: String, topic: &'static str, per_s: u64, stop: Arc<AtomicBool>) {
    let p = producer(connect(&addr).await, Acks::Leader);
    let topic: Arc<str> = topic.into();
    let v = value(RECORD_BYTES);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s.max(1) as f64));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let d = p
            .send(ProducerRecord::new(topic.clone()).value(v.clone()))
            .await
            .expect("send");
        drop(d);
    }
    p.flush().await;
    p.close().await;
}

/// Broker CPU share of one core over `secs` with `consumers` waiting
/// consumers (none for the baseline), and the polls they got answered.
fn long_poll_round(broker: &BrokerProc, args: &Args, consumers: usize) -> (f64, u64) {
    let addr = broker.addr.to_string();
    let (secs, partitions, per_s) = (args.poll_secs, args.partitions, args.trickle_per_s);
    let pid = broker.pid();
    run_pinned(args.client_core, move || async move {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let trickler = tokio::spawn(trickle(addr.clone(), "quiet", per_s, stop.clone()));
        let mut tasks = Vec::new();
        for i in 0..consumers {
            let (addr, stop, polls) = (addr.clone(), stop.clone(), polls.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Consumer::new(
                    connect(&addr).await,
                    ConsumerConfig {
                        fetch_min_bytes: 1 << 20,
                        fetch_max_wait: Duration::from_millis(500),
                        ..ConsumerConfig::default()
                    },
                );
                let p = i as u32 % partitions;
                c.assign([("quiet".to_string(), p)]);
                c.seek("quiet", p, SeekTo::Latest).await.expect("seek");
                while !stop.load(Ordering::Relaxed) {
                    let _ = c.poll(Duration::from_millis(600)).await.expect("poll");
                    polls.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Let every consumer connect and start waiting before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let polls0 = polls.load(Ordering::Relaxed);
        let cpu0 = borges_bench::broker_proc::process_cpu_time(pid).unwrap_or_default();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = borges_bench::broker_proc::process_cpu_time(pid).unwrap_or_default() - cpu0;
        let wall = t0.elapsed();
        let answered = polls.load(Ordering::Relaxed) - polls0;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("consumer");
        }
        trickler.await.expect("trickle");
        (cpu.as_secs_f64() / wall.as_secs_f64(), answered)
    })
}

/// Fills the cold topic with `mib` MiB of records (written with O_DIRECT,
/// so they are on disk only).
fn fill_cold(broker: &BrokerProc, args: &Args) {
    let addr = broker.addr.to_string();
    let (mib, readers) = (args.cold_mib, args.readers);
    run_pinned(args.client_core, move || async move {
        let client = connect(&addr).await;
        client
            .admin()
            .create_topic("cold", readers as u32, 1, &[])
            .await
            .expect("create cold topic");
        let p = producer(client, Acks::Leader);
        let topic: Arc<str> = "cold".into();
        let v = value(1000);
        let mut last = None;
        for _ in 0..(mib << 20) / 1000 {
            last = Some(
                p.send(ProducerRecord::new(topic.clone()).value(v.clone()))
                    .await
                    .expect("send"),
            );
        }
        p.flush().await;
        if let Some(d) = last {
            d.await.expect("delivered");
        }
        p.close().await;
    })
}

/// A reader that asks for a large range of `partition` from offset 0 and
/// takes the response off a small socket buffer at `kib_per_s`.
async fn slow_reader(
    addr: String,
    topic: borges_net::types::TopicId,
    partition: u32,
    kib_per_s: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    let _ = sock.set_recv_buffer_size(64 << 10);
    let mut s = sock
        .connect(addr.parse().expect("address"))
        .await
        .expect("connect");
    let mut out = BytesMut::new();
    let header = RequestHeader {
        api_key: borges_net::protocol::ApiKey::Fetch,
        api_version: 0,
        correlation_id: 1,
        client_id: "slow-reader".into(),
    };
    let req = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 30,
        topics: vec![FetchTopic {
            topic_id: topic,
            partitions: vec![FetchPartition {
                partition,
                fetch_offset: 0,
                partition_max_bytes: 1 << 30,
            }],
        }],
    });
    encode_request(&header, &req, &mut out);
    s.write_all(&out).await.expect("send fetch");
    let chunk = 16usize << 10;
    let pause = Duration::from_secs_f64(chunk as f64 / (kib_per_s.max(1) << 10) as f64);
    let mut buf = vec![0u8; chunk];
    let mut got = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // A response smaller than what the reader takes in the round (a
        // read ends where the tail cache begins) is read whole before the
        // round ends: the reader then waits for nothing, and must still see
        // `stop`.
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got += n as u64,
        }
        tokio::time::sleep(pause).await;
    }
    got
}

/// The producer's delivery latency at a fixed rate, with `readers` slow
/// cold readers running (none for the baseline); and the bytes they read.
fn produce_latency_round(broker: &BrokerProc, args: &Args, readers: usize) -> (LatencySummary, u64) {
    let addr = broker.addr.to_string();
    let (secs, rate, kib) = (args.produce_secs, args.produce_per_s, args.reader_kib_per_s);
    run_pinned(args.client_core, move || async move {
        let client = connect(&addr).await;
        let cold = client.topic_metadata("cold").await.expect("cold topic").id;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for r in 0..readers {
            tasks.push(tokio::spawn(slow_reader(
                addr.clone(),
                cold,
                r as u32,
                kib,
                stop.clone(),
            )));
        }
        // The readers' first sendfiles start before the producer does.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let p = producer(client, Acks::Leader);
        let topic: Arc<str> = "hot".into();
        let v = value(RECORD_BYTES);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, DeliveryFuture)>();
        let sampler = tokio::spawn(async move {
            let mut h = latency_histogram();
            while let Some((sent, d)) = rx.recv().await {
                d.await.expect("delivered");
                let _ = h.record(sent.elapsed().as_micros() as u64);
            }
            h
        });
        // Records go out in ticks of 1 ms.
        let per_tick = (rate / 1000).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            tick.tick().await;
            for _ in 0..per_tick {
                let sent = Instant::now();
                let d = p
                    .send(ProducerRecord::new(topic.clone()).value(v.clone()))
                    .await
                    .expect("send");
                let _ = tx.send((sent, d));
            }
        }
        drop(tx);
        let h = sampler.await.expect("sampler");
        p.close().await;
        stop.store(true, Ordering::Relaxed);
        let mut read = 0;
        for t in tasks {
            read += t.await.expect("reader");
        }
        (LatencySummary::of(&h), read)
    })
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.consumers = 20;
        args.poll_secs = 2;
        args.cold_mib = 16;
        args.readers = 2;
        args.produce_secs = 2;
        args.runs = 1;
    }
    let bin = broker_binary();
    let scratch = ScratchDir::new(None, "request-path-bench").expect("scratch directory on disk");
    println!("request-path-bench");
    println!(
        "  broker: {} (one shard) on core {}; load generator on core {}; {} run(s), medians reported",
        bin.display(),
        args.broker_core,
        args.client_core,
        args.runs
    );
    let mut idle = Vec::new();
    let mut waiting = Vec::new();
    let mut per_consumer_us = Vec::new();
    let mut alone = Vec::new();
    let mut behind = Vec::new();
    for run in 1..=args.runs {
        let dir = scratch.child(&format!("run-{run}"));
        let broker = BrokerProc::start(&bin, &dir, args.broker_core, &[]);
        let addr = broker.addr.to_string();
        let partitions = args.partitions;
        run_pinned(args.client_core, move || async move {
            let c = connect(&addr).await;
            c.admin()
                .create_topic("quiet", partitions, 1, &[])
                .await
                .expect("quiet topic");
            c.admin().create_topic("hot", 1, 1, &[]).await.expect("hot topic");
        });
        let (base_cpu, _) = long_poll_round(&broker, &args, 0);
        let (cpu, polls) = long_poll_round(&broker, &args, args.consumers);
        let extra = (cpu - base_cpu).max(0.0);
        let per = extra / args.consumers as f64 * 1e6;
        let per_poll = extra * args.poll_secs as f64 / polls.max(1) as f64 * 1e6;
        println!(
            "run {run}  long polls: broker CPU {:.2}% of a core with the trickle alone, {:.2}% with {} waiting consumers ({} polls answered in {} s): {:.1} µs of CPU per consumer per second, {:.1} µs per poll",
            base_cpu * 100.0,
            cpu * 100.0,
            args.consumers,
            polls,
            args.poll_secs,
            per,
            per_poll
        );
        idle.push(base_cpu);
        waiting.push(cpu);
        per_consumer_us.push(per);

        fill_cold(&broker, &args);
        let (a, _) = produce_latency_round(&broker, &args, 0);
        let (b, read) = produce_latency_round(&broker, &args, args.readers);
        println!(
            "run {run}  producer at {}/s: alone p50 {} µs p99 {} µs max {} µs; behind {} cold slow readers ({:.1} MiB read) p50 {} µs p99 {} µs max {} µs",
            args.produce_per_s,
            a.p50_us,
            a.p99_us,
            a.max_us,
            args.readers,
            read as f64 / (1 << 20) as f64,
            b.p50_us,
            b.p99_us,
            b.max_us
        );
        alone.push(a);
        behind.push(b);
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let m = |v: &[LatencySummary], f: fn(&LatencySummary) -> u64| {
        median(&v.iter().map(|s| f(s) as f64).collect::<Vec<_>>())
    };
    let (idle_m, wait_m, per_m) = (median(&idle), median(&waiting), median(&per_consumer_us));
    let (a99, b99) = (m(&alone, |s| s.p99_us), m(&behind, |s| s.p99_us));
    println!();
    println!("medians of {} run(s)", args.runs);
    println!(
        "long polls   broker CPU {:.2}% of a core alone, {:.2}% with {} waiting consumers; {per_m:.1} µs CPU per consumer per second",
        idle_m * 100.0,
        wait_m * 100.0,
        args.consumers
    );
    println!(
        "cold readers producer p99 {a99:.0} µs alone, {b99:.0} µs behind {} slow readers ({:.2}x)",
        args.readers,
        b99 / a99.max(1.0)
    );
    let _ = scratch.finish(false);
    println!();
    println!(
        "{}",
        serde_json::json!({
            "consumers": args.consumers,
            "broker_cpu_idle": (idle_m * 10000.0).round() / 10000.0,
            "broker_cpu_waiting": (wait_m * 10000.0).round() / 10000.0,
            "cpu_us_per_consumer_per_s": (per_m * 10.0).round() / 10.0,
            "producer_p99_us_alone": a99,
            "producer_p99_us_behind_readers": b99,
            "producer_p99_ratio": ((b99 / a99.max(1.0)) * 100.0).round() / 100.0,
            "readers": args.readers,
            "runs": args.runs,
        })
    );
}
