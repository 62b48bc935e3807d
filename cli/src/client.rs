//! The client subcommands of `borges`: topics, produce, consume, offsets.
//! They use the native client over a small tokio runtime; none of this
//! runs inside a broker.

use std::future::Future;
use std::io::{BufRead, Write};
use std::time::Duration;

use borges_client::{
    Acks, AutoOffsetReset, Client, ClientConfig, ClientError, Compression, Consumer, ConsumerConfig,
    ErrorCode, GroupConfig, NoopListener, OffsetSpec, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use bytes::Bytes;
use clap::{Args, Subcommand};

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Broker address(es) to bootstrap from.
    #[arg(long, env = "BORGES_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    pub brokers: String,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        replication_factor: u16,
        /// A topic setting, key=value (repeatable), e.g. retention.ms=86400000.
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
    },
    /// Delete a topic and all its data.
    Delete { name: String },
    /// List topics.
    List,
    /// Show a topic's partitions (leader, replicas, ISR, leader epoch) and settings.
    Describe {
        name: String,
        /// `text`, or `json`: one JSON object on stdout.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Change topic settings: key=value sets, key= resets to the default.
    Alter {
        name: String,
        #[arg(long = "config", value_parser = parse_kv, required = true)]
        configs: Vec<(String, String)>,
    },
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// none, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// earliest, latest, or an offset (for every partition).
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Exit after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Exit after this long without a record (milliseconds).
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Output format: {value} {key} {offset} {partition} {timestamp} {topic}.
    #[arg(long, default_value = "{value}")]
    pub format: String,
    /// Consume as a member of this group: the group's committed offsets
    /// decide where to start (--from only applies to partitions without
    /// one), and what is printed is committed.
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: a static member instance id.
    #[arg(long, requires = "group")]
    pub instance_id: Option<String>,
    /// With --group: session timeout in milliseconds.
    #[arg(long, requires = "group", default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<u32>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

async fn connect(t: &Target) -> Result<Client, String> {
    Client::connect(&t.brokers, ClientConfig::default())
        .await
        .map_err(|e| format!("cannot reach {}: {e}", t.brokers))
}

fn err(e: ClientError) -> String {
    e.to_string()
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers (id, address, rack, state, epoch, partitions led), the
    /// controller and its voters, offline and under-replicated partitions.
    Describe {
        /// `text`, or `json`: one JSON object on stdout.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaderCommand {
    /// Move leadership back to each partition's preferred replica (the
    /// first of its replicas), where it is in the ISR and alive.
    Elect {
        /// Preferred-leader election (the only kind there is).
        #[arg(long, required = true)]
        preferred: bool,
        /// TOPIC or TOPIC:PARTITION; none: every partition that needs it.
        targets: Vec<String>,
    },
}

pub fn leader(t: Target, cmd: LeaderCommand) -> Result<(), String> {
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        let admin = client.admin();
        let mut out = std::io::stdout().lock();
        match cmd {
            LeaderCommand::Elect {
                preferred: _,
                targets,
            } => {
                let mut partitions = Vec::new();
                for target in &targets {
                    match target.rsplit_once(':') {
                        Some((topic, p)) => {
                            let p: u32 = p
                                .parse()
                                .map_err(|_| format!("{target:?}: expected TOPIC or TOPIC:PARTITION"))?;
                            partitions.push((topic.to_string(), p));
                        }
                        None => {
                            let meta = client.refresh_topic(target).await.map_err(err)?;
                            partitions.extend(meta.partitions.iter().map(|p| (target.clone(), p.partition)));
                        }
                    }
                }
                let results = admin
                    .elect_preferred_leaders((!targets.is_empty()).then_some(&partitions[..]))
                    .await
                    .map_err(err)?;
                let mut failed = 0;
                for r in &results {
                    let outcome = match r.error {
                        ErrorCode::None => "elected".to_string(),
                        ErrorCode::ElectionNotNeeded => "already led by its preferred replica".to_string(),
                        code => {
                            failed += 1;
                            format!("{code:?}: {}", r.message.as_deref().unwrap_or(""))
                        }
                    };
                    writeln!(out, "{}:{}\t{outcome}", r.topic, r.partition).ok();
                }
                if results.is_empty() {
                    writeln!(out, "every partition is led by its preferred replica").ok();
                }
                if failed > 0 {
                    return Err(format!("{failed} of {} elections failed", results.len()));
                }
            }
        }
        Ok(())
    })
}

pub fn cluster(t: Target, cmd: ClusterCommand) -> Result<(), String> {
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        let admin = client.admin();
        let mut out = std::io::stdout().lock();
        match cmd {
            ClusterCommand::Describe { format } => {
                let d = admin.describe_cluster().await.map_err(err)?;
                if format == "json" {
                    let brokers: Vec<serde_json::Value> = d
                        .brokers
                        .iter()
                        .map(|b| {
                            serde_json::json!({
                                "id": b.node_id,
                                "address": b.address,
                                "rack": b.rack,
                                "state": b.state.name(),
                                "epoch": b.epoch,
                                "leader_count": b.leader_count,
                            })
                        })
                        .collect();
                    let doc = serde_json::json!({
                        "controller_id": d.controller_id,
                        "voters": d.voters,
                        "brokers": brokers,
                        "offline_partitions": d.offline_partitions,
                        "under_replicated_partitions": d.under_replicated_partitions,
                        "metadata_offset": d.metadata_offset,
                    });
                    writeln!(out, "{doc}").ok();
                    return Ok(());
                }
                writeln!(out, "controller {} voters {:?}", d.controller_id, d.voters).ok();
                writeln!(out, "id\taddress\track\tstate\tepoch\tleaders").ok();
                for b in &d.brokers {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        b.node_id,
                        b.address,
                        b.rack.as_deref().unwrap_or("-"),
                        b.state.name(),
                        b.epoch,
                        b.leader_count
                    )
                    .ok();
                }
                writeln!(
                    out,
                    "offline partitions {}, under-replicated partitions {}",
                    d.offline_partitions, d.under_replicated_partitions
                )
                .ok();
            }
        }
        Ok(())
    })
}

pub fn topic(t: Target, cmd: TopicCommand) -> Result<(), String> {
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        let admin = client.admin();
        let mut out = std::io::stdout().lock();
        match cmd {
            TopicCommand::Create {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                let kv: Vec<(&str, &str)> = configs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let id = admin
                    .create_topic(&name, partitions, replication_factor, &kv)
                    .await
                    .map_err(err)?;
                writeln!(
                    out,
                    "created topic {name} (id {id}) with {partitions} partition(s)"
                )
                .ok();
            }
            TopicCommand::Delete { name } => {
                admin.delete_topic(&name).await.map_err(err)?;
                writeln!(out, "deleted topic {name}").ok();
            }
            TopicCommand::List => {
                let mut topics = admin.list_topics().await.map_err(err)?;
                topics.sort_by(|a, b| a.name.cmp(&b.name));
                for t in topics {
                    writeln!(out, "{}\t{} partition(s)", t.name, t.partition_count()).ok();
                }
            }
            TopicCommand::Describe { name, format } => {
                let d = admin.describe_topic(&name).await.map_err(err)?;
                if format == "json" {
                    let partitions: Vec<serde_json::Value> = d
                        .metadata
                        .partitions
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "partition": p.partition,
                                "leader": p.leader,
                                "leader_epoch": p.leader_epoch,
                                "replicas": p.replicas,
                                "isr": p.isr,
                            })
                        })
                        .collect();
                    let configs: serde_json::Map<String, serde_json::Value> = d
                        .configs
                        .iter()
                        .filter(|c| !c.is_default)
                        .map(|c| (c.key.clone(), serde_json::json!(c.value)))
                        .collect();
                    let doc = serde_json::json!({
                        "topic": name,
                        "id": d.metadata.id.0,
                        "partitions": partitions,
                        "configs": configs,
                    });
                    writeln!(out, "{doc}").ok();
                    return Ok(());
                }
                writeln!(
                    out,
                    "topic {} id {} partitions {}",
                    name,
                    d.metadata.id,
                    d.metadata.partition_count()
                )
                .ok();
                for p in &d.metadata.partitions {
                    writeln!(
                        out,
                        "  partition {} leader {} epoch {} replicas {:?} isr {:?}",
                        p.partition, p.leader, p.leader_epoch, p.replicas, p.isr
                    )
                    .ok();
                }
                for c in &d.configs {
                    let origin = if c.is_default { "default" } else { "topic" };
                    writeln!(out, "  {}={} ({origin})", c.key, c.value.as_deref().unwrap_or("")).ok();
                }
            }
            TopicCommand::Alter { name, configs } => {
                let kv: Vec<(&str, Option<&str>)> = configs
                    .iter()
                    .map(|(k, v)| (k.as_str(), (!v.is_empty()).then_some(v.as_str())))
                    .collect();
                admin.alter_configs(&name, &kv).await.map_err(err)?;
                writeln!(out, "altered topic {name}").ok();
            }
        }
        Ok(())
    })
}

pub fn produce(t: Target, a: ProduceArgs) -> Result<(), String> {
    let acks = match a.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => return Err(format!("--acks {other:?}: expected 0, 1 or all")),
    };
    let compression = match a.compression.as_str() {
        "none" => Compression::None,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => return Err(format!("--compression {other:?}: expected none, lz4 or zstd")),
    };
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        client.topic_metadata(&a.topic).await.map_err(err)?;
        let producer = Producer::new(
            client,
            ProducerConfig {
                acks,
                compression,
                ..ProducerConfig::default()
            },
        )
        .map_err(err)?;
        // Stdin is read on a thread of its own: a blocking read on this
        // current-thread runtime would stop the sender task and the linger
        // timer while it waits, so with `tail -f | borges produce` a line
        // would wait for the next one to be sent.
        let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1024);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let failed = line.is_err();
                if lines_tx.blocking_send(line).is_err() || failed {
                    break;
                }
            }
        });
        let mut deliveries = Deliveries::default();
        let mut stopped: Option<String> = None;
        while let Some(line) = lines.recv().await {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    stopped = Some(format!("reading stdin: {e}"));
                    break;
                }
            };
            let (key, value) = match &a.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.to_string()), v.to_string()),
                    None => (None, line),
                },
                None => (None, line),
            };
            let mut r = ProducerRecord::new(a.topic.as_str()).value(Bytes::from(value));
            if let Some(k) = key {
                r = r.key(Bytes::from(k));
            }
            if let Some(p) = a.partition {
                r = r.partition(p);
            }
            match producer.send(r).await {
                Ok(d) => deliveries.push(d),
                Err(e) => {
                    // What was sent before still counts: it is flushed
                    // and reported below, not dropped with the runtime.
                    stopped = Some(format!("record {} not sent: {}", deliveries.sent + 1, err(e)));
                    break;
                }
            }
        }
        producer.flush().await;
        deliveries.settle_all().await;
        producer.close().await;
        let Deliveries {
            sent,
            delivered,
            failed,
            ..
        } = deliveries;
        match stopped {
            Some(why) => Err(format!(
                "{why}; {delivered} record(s) delivered to {}, {failed} failed",
                a.topic
            )),
            None if failed > 0 => Err(format!("{failed} of {sent} records were not delivered")),
            None => {
                eprintln!("produced {sent} record(s) to {}", a.topic);
                Ok(())
            }
        }
    })
}

/// The delivery futures of `borges produce`, settled as they finish so that
/// a long-running pipe holds only the records still in flight.
#[derive(Default)]
struct Deliveries {
    pending: std::collections::VecDeque<borges_client::DeliveryFuture>,
    sent: u64,
    delivered: u64,
    failed: u64,
}

impl Deliveries {
    fn push(&mut self, d: borges_client::DeliveryFuture) {
        self.sent += 1;
        self.pending.push_back(d);
        // Records of one batch settle together and batches mostly in
        // order: counting from the front finds the finished ones cheaply.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while let Some(front) = self.pending.front_mut() {
            match std::pin::Pin::new(front).poll(&mut cx) {
                std::task::Poll::Ready(r) => {
                    self.count(r);
                    self.pending.pop_front();
                }
                std::task::Poll::Pending => break,
            }
        }
    }

    async fn settle_all(&mut self) {
        while let Some(d) = self.pending.pop_front() {
            let r = d.await;
            self.count(r);
        }
    }

    fn count(&mut self, r: Result<borges_client::RecordMetadata, ClientError>) {
        match r {
            Ok(_) => self.delivered += 1,
            Err(e) => {
                self.failed += 1;
                if self.failed <= 10 {
                    eprintln!("borges: record not delivered: {e}");
                }
            }
        }
    }
}

fn render(format: &str, r: &borges_client::ConsumerRecord) -> String {
    let text = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format
        .replace("{value}", &text(&r.value))
        .replace("{key}", &text(&r.key))
        .replace("{offset}", &r.offset.to_string())
        .replace("{partition}", &r.partition.to_string())
        .replace("{timestamp}", &r.timestamp.to_string())
        .replace("{topic}", &r.topic)
}

pub fn consume(t: Target, a: ConsumeArgs) -> Result<(), String> {
    let from = match a.from.as_str() {
        "earliest" => SeekTo::Earliest,
        "latest" => SeekTo::Latest,
        n => SeekTo::Offset(
            n.parse()
                .map_err(|_| format!("--from {n:?}: expected earliest, latest or an offset"))?,
        ),
    };
    if let Some(group) = a.group.clone() {
        return consume_group(t, a, group);
    }
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        let meta = client.topic_metadata(&a.topic).await.map_err(err)?;
        let partitions: Vec<u32> = match a.partition {
            Some(p) if p < meta.partition_count() => vec![p],
            Some(p) => return Err(format!("topic {} has no partition {p}", a.topic)),
            None => (0..meta.partition_count()).collect(),
        };
        let mut consumer = Consumer::new(
            client,
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        );
        consumer.assign(partitions.iter().map(|&p| (a.topic.clone(), p)));
        for &p in &partitions {
            consumer.seek(&a.topic, p, from).await.map_err(err)?;
        }
        print_records(&mut consumer, &a, false, None).await
    })
}

/// Polls and prints records until `--max-records`, `--idle-timeout-ms` or
/// `stop`. With `commit`, each batch printed is then committed for the
/// consumer's group: printed, then committed, so at least once.
async fn print_records(
    consumer: &mut Consumer,
    a: &ConsumeArgs,
    commit: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut seen = 0u64;
    let mut idle_since = std::time::Instant::now();
    let stopped = || stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
    while a.max_records.is_none_or(|m| seen < m) && !stopped() {
        let records = consumer.poll(Duration::from_millis(200)).await.map_err(err)?;
        if records.is_empty() {
            if a.idle_timeout_ms
                .is_some_and(|ms| idle_since.elapsed() >= Duration::from_millis(ms))
            {
                break;
            }
            continue;
        }
        idle_since = std::time::Instant::now();
        let mut next: std::collections::BTreeMap<(String, u32), i64> = Default::default();
        for r in records {
            if a.max_records.is_some_and(|m| seen >= m) {
                break;
            }
            writeln!(out, "{}", render(&a.format, &r)).map_err(|e| format!("writing stdout: {e}"))?;
            if commit {
                next.insert((r.topic.to_string(), r.partition), r.offset + 1);
            }
            seen += 1;
        }
        out.flush().map_err(|e| format!("writing stdout: {e}"))?;
        if !next.is_empty() {
            let offsets: Vec<((String, u32), i64)> = next.into_iter().collect();
            if let Err(e) = consumer.commit_offsets(&offsets).await {
                eprintln!("borges: commit failed ({e}); the records may be delivered again");
            }
        }
    }
    Ok(())
}

/// `consume --group`: a group member that commits what it printed.
fn consume_group(t: Target, a: ConsumeArgs, group: String) -> Result<(), String> {
    let reset = match a.from.as_str() {
        "earliest" => AutoOffsetReset::Earliest,
        "latest" => AutoOffsetReset::Latest,
        other => {
            return Err(format!(
                "--from {other:?} with --group: expected earliest or latest (use `borges group reset-offsets` to start elsewhere)"
            ))
        }
    };
    if a.partition.is_some() {
        return Err("--partition and --group exclude each other: the group assigns partitions".into());
    }
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        client.topic_metadata(&a.topic).await.map_err(err)?;
        let mut consumer = Consumer::new(
            client,
            ConsumerConfig {
                auto_offset_reset: reset,
                ..ConsumerConfig::default()
            },
        );
        let session = Duration::from_millis(a.session_timeout_ms);
        let mut gc = GroupConfig::new(group);
        gc.instance_id = a.instance_id.clone();
        gc.session_timeout = session;
        gc.heartbeat_interval = (session / 3).max(Duration::from_millis(10));
        gc.enable_auto_commit = false;
        consumer
            .subscribe(gc, &[a.topic.as_str()], Box::new(NoopListener))
            .map_err(err)?;
        let stop = stop_flag();
        print_records(&mut consumer, &a, true, Some(&stop)).await?;
        consumer.close().await.map_err(err)
    })
}

/// Set on SIGINT or SIGTERM, so that `consume --group` leaves its group cleanly.
fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        f.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    flag
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's members, assignments, committed offsets and lag.
    Describe { group: String },
    /// Set a group's committed offsets for a topic (the group must have no members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest, or an offset (for every partition).
        #[arg(long)]
        to: String,
    },
    /// Delete a group with no members, and its committed offsets.
    Delete { group: String },
}

pub fn group(t: Target, c: GroupCommand) -> Result<(), String> {
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        let admin = client.admin();
        match c {
            GroupCommand::List => {
                println!("group	state	protocol_type");
                for g in admin.list_groups().await.map_err(err)? {
                    println!("{}	{}	{}", g.group_id, g.state, g.protocol_type);
                }
            }
            GroupCommand::Describe { group } => {
                let d = admin.describe_group(&group).await.map_err(err)?;
                println!(
                    "group {}: state {}, protocol {}, generation {}, {} member(s)",
                    d.group_id,
                    d.state,
                    if d.protocol.is_empty() { "-" } else { &d.protocol },
                    d.generation,
                    d.members.len()
                );
                let mut owner: std::collections::HashMap<(String, u32), String> = Default::default();
                for m in &d.members {
                    println!(
                        "member {} instance {} client {} host {} topics {}",
                        m.member_id,
                        m.instance_id.as_deref().unwrap_or("-"),
                        m.client_id,
                        m.client_host,
                        m.topics.join(",")
                    );
                    for tp in &m.assignment {
                        owner.insert(tp.clone(), m.member_id.clone());
                    }
                }
                println!("topic	partition	committed	end	lag	member");
                let committed = admin.group_offsets(&group).await.map_err(err)?;
                let mut rows: std::collections::BTreeMap<(String, u32), i64> =
                    committed.into_iter().collect();
                for tp in owner.keys() {
                    rows.entry(tp.clone()).or_insert(-1);
                }
                for ((topic, p), off) in rows {
                    let end = admin
                        .list_offsets(&topic, p, OffsetSpec::Latest)
                        .await
                        .map(|o| o.offset)
                        .unwrap_or(-1);
                    let lag = if off >= 0 && end >= 0 {
                        (end - off).max(0).to_string()
                    } else {
                        "-".into()
                    };
                    let shown = if off >= 0 { off.to_string() } else { "-".into() };
                    let member = owner.get(&(topic.clone(), p)).map_or("-", String::as_str);
                    println!("{topic}	{p}	{shown}	{end}	{lag}	{member}");
                }
            }
            GroupCommand::ResetOffsets { group, topic, to } => {
                let meta = client.topic_metadata(&topic).await.map_err(err)?;
                let spec = match to.as_str() {
                    "earliest" => Some(OffsetSpec::Earliest),
                    "latest" => Some(OffsetSpec::Latest),
                    _ => None,
                };
                let fixed: Option<i64> = match spec {
                    Some(_) => None,
                    None => Some(
                        to.parse()
                            .ok()
                            .filter(|o: &i64| *o >= 0)
                            .ok_or_else(|| format!("--to {to:?}: expected earliest, latest or an offset"))?,
                    ),
                };
                let mut offsets = Vec::new();
                for p in 0..meta.partition_count() {
                    let o = match (spec, fixed) {
                        (Some(s), _) => admin.list_offsets(&topic, p, s).await.map_err(err)?.offset,
                        (None, Some(o)) => o,
                        (None, None) => unreachable!("one of the two is set"),
                    };
                    offsets.push(((topic.clone(), p), o));
                }
                admin
                    .set_group_offsets(&group, &offsets)
                    .await
                    .map_err(|e| match e.code() {
                        Some(ErrorCode::UnknownMemberId) => {
                            format!("group {group} has active members; stop its consumers first")
                        }
                        _ => err(e),
                    })?;
                for ((t, p), o) in offsets {
                    println!("{t}	{p}	{o}");
                }
            }
            GroupCommand::Delete { group } => {
                admin.delete_group(&group).await.map_err(|e| match e.code() {
                    Some(ErrorCode::NonEmptyGroup) => format!("group {group} has active members"),
                    Some(ErrorCode::GroupIdNotFound) => format!("no group {group}"),
                    _ => err(e),
                })?;
                println!("deleted group {group}");
            }
        }
        Ok(())
    })
}

pub fn offsets(t: Target, topic: String) -> Result<(), String> {
    runtime()?.block_on(async move {
        let client = connect(&t).await?;
        let meta = client.topic_metadata(&topic).await.map_err(err)?;
        let admin = client.admin();
        println!("partition\tearliest\tlatest");
        for p in 0..meta.partition_count() {
            let e = admin
                .list_offsets(&topic, p, OffsetSpec::Earliest)
                .await
                .map_err(err)?;
            let l = admin
                .list_offsets(&topic, p, OffsetSpec::Latest)
                .await
                .map_err(err)?;
            println!("{p}\t{}\t{}", e.offset, l.offset);
        }
        Ok(())
    })
}
