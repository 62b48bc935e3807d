//! cluster-bench: the metadata controller of a three-broker cluster, real
//! processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3, every one a voter.
//!
//! 1. Creating 1,000 partitions (one topic) through a broker that is not
//!    the controller: until CreateTopics is answered, and until every
//!    broker's Metadata shows all 1,000 led. Baseline: the same topic on a
//!    single-node broker, in the same run.
//! 2. Broker failure to fenced: SIGKILL of a broker that is not the
//!    controller, until the controller's DescribeCluster shows it fenced.
//!    Bounded below by `broker.session.timeout.ms` (the baseline quoted).
//! 3. Controller failover: SIGKILL of the active controller, until the
//!    first successful CreateTopics through a survivor. Baseline: a
//!    CreateTopics in the healthy cluster, same run.
//!
//! Each is repeated `--rounds` times (the killed broker restarted in
//! between) and the median quoted. The last line is one JSON object.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use borges_bench::broker_proc::broker_binary;
use borges_bench::cluster::{
    free_port, kill, ms, spawn, terminate, three_nodes, until, wait_listening, Node,
};
use borges_bench::{median, ScratchDir};
use borges_client::{BrokerState, Client, ClientConfig};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Controller failover, broker fencing and partition creation on three brokers")]
struct Args {
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Partitions of the topic created in phase 1.
    #[arg(long, default_value_t = 1000)]
    partitions: u32,
    /// `broker.session.timeout.ms` of the brokers.
    #[arg(long, default_value_t = 9000)]
    session_timeout_ms: u64,
    /// One round, 200 partitions, a 3 s session timeout: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Where the brokers' data goes (default: a directory under /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
}

async fn client(addr: SocketAddr) -> Option<Client> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(120),
        ..ClientConfig::default()
    };
    Client::connect(&addr.to_string(), config).await.ok()
}

/// The cluster as `addr` describes it: controller and (node, state).
async fn describe(addr: SocketAddr) -> Option<(i32, Vec<(i32, BrokerState)>)> {
    let c = client(addr).await?;
    let d = c.admin().describe_cluster().await.ok()?;
    let mut s: Vec<(i32, BrokerState)> = d.brokers.iter().map(|b| (b.node_id, b.state)).collect();
    s.sort_by_key(|(id, _)| *id);
    Some((d.controller_id, s))
}

async fn all_alive(nodes: &[Node]) -> i32 {
    let want: Vec<(i32, BrokerState)> = nodes.iter().map(|n| (n.id, BrokerState::Alive)).collect();
    let (controller, _) = until(Duration::from_secs(60), "every broker alive", || {
        let (addr, want) = (nodes[0].addr, want.clone());
        async move {
            let (c, s) = describe(addr).await?;
            (c >= 0 && s == want).then_some(c)
        }
    })
    .await;
    controller
}

async fn create(addr: SocketAddr, name: &str, partitions: u32) -> Result<Duration, String> {
    let c = client(addr).await.ok_or("no connection")?;
    let t = Instant::now();
    c.admin()
        .create_topic(name, partitions, 1, &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(t.elapsed())
}

/// Until every address's Metadata shows `partitions` partitions of `topic`,
/// every one led.
async fn until_led(addrs: &[SocketAddr], topic: &str, partitions: u32) -> Duration {
    let (_, took) = until(Duration::from_secs(120), "every partition led everywhere", || {
        let addrs = addrs.to_vec();
        let topic = topic.to_string();
        async move {
            for a in addrs {
                let c = client(a).await?;
                let t = c.refresh_topic(&topic).await.ok()?;
                if t.partitions.len() as u32 != partitions || t.partitions.iter().any(|p| p.leader < 0) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    took
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.rounds = 1;
        args.partitions = args.partitions.min(200);
        args.session_timeout_ms = args.session_timeout_ms.min(3000);
    }
    let bin = broker_binary();
    let scratch = ScratchDir::new(args.dir.as_deref(), "cluster-bench").expect("scratch dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "cluster-bench: 3 brokers (1 shard each) on 127.0.0.1-3, {} partitions, session timeout {} ms, {} round(s)",
        args.partitions, args.session_timeout_ms, args.rounds
    );

    // Baseline: the same topic on a single-node broker.
    let mut single = Vec::new();
    for r in 0..args.rounds {
        let mut node = Node {
            id: 0,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: scratch.child(&format!("single{r}")),
            child: None,
        };
        let (child, rx) = spawn(&bin, &node, None, args.session_timeout_ms, &[]);
        wait_listening(&rx);
        node.child = Some(child);
        let took = rt.block_on(async {
            let answered = create(node.addr, "p", args.partitions)
                .await
                .expect("create on one node");
            let led = until_led(&[node.addr], "p", args.partitions).await;
            answered.max(led)
        });
        println!(
            "  single node: {} partitions created and led in {:.0} ms",
            args.partitions,
            ms(took)
        );
        single.push(ms(took));
        terminate(&mut node);
    }

    let mut nodes = three_nodes(|i| scratch.child(&format!("node{i}")));
    let controllers = borges_bench::cluster::controllers(&nodes);
    let pending: Vec<_> = nodes
        .iter()
        .map(|n| spawn(&bin, n, Some(&controllers), args.session_timeout_ms, &[]))
        .collect();
    for (n, (child, rx)) in nodes.iter_mut().zip(pending) {
        wait_listening(&rx);
        n.child = Some(child);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();

    let (mut create_answered, mut create_led, mut healthy_create) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fenced, mut failover) = (Vec::new(), Vec::new());
    for r in 0..args.rounds {
        let controller = rt.block_on(all_alive(&nodes));
        let via = nodes
            .iter()
            .find(|n| n.id != controller)
            .expect("a non-controller")
            .addr;

        // 1. 1,000 partitions through a broker that is not the controller.
        let (answered, led) = rt.block_on(async {
            let t = Instant::now();
            create(via, &format!("p{r}"), args.partitions)
                .await
                .expect("create");
            let answered = t.elapsed();
            until_led(&addrs, &format!("p{r}"), args.partitions).await;
            (answered, t.elapsed())
        });
        println!(
            "  round {r}: {} partitions: answered in {:.0} ms, led on every broker in {:.0} ms",
            args.partitions,
            ms(answered),
            ms(led)
        );
        create_answered.push(ms(answered));
        create_led.push(ms(led));
        let healthy = rt
            .block_on(create(via, &format!("healthy{r}"), 1))
            .expect("a healthy create");
        healthy_create.push(ms(healthy));

        // 2. A broker that is not the controller dies.
        let victim = nodes.iter().position(|n| n.id != controller).expect("a victim");
        let killed = Instant::now();
        kill(&mut nodes[victim]);
        let victim_id = nodes[victim].id;
        let controller_addr = nodes[controller as usize].addr;
        rt.block_on(until(
            Duration::from_secs(60),
            "the dead broker fenced",
            || async move {
                let (_, s) = describe(controller_addr).await?;
                s.iter()
                    .any(|(id, st)| *id == victim_id && *st == BrokerState::Fenced)
                    .then_some(())
            },
        ));
        let to_fenced = killed.elapsed();
        println!(
            "  round {r}: broker {victim_id} SIGKILLed, fenced after {:.0} ms",
            ms(to_fenced)
        );
        fenced.push(ms(to_fenced));
        let (child, rx) = spawn(
            &bin,
            &nodes[victim],
            Some(&controllers),
            args.session_timeout_ms,
            &[],
        );
        wait_listening(&rx);
        nodes[victim].child = Some(child);
        let controller = rt.block_on(all_alive(&nodes));

        // 3. The controller dies.
        let dead = controller as usize;
        let survivor = nodes[(dead + 1) % 3].addr;
        let killed = Instant::now();
        kill(&mut nodes[dead]);
        let name = format!("after{r}");
        rt.block_on(until(
            Duration::from_secs(60),
            "a CreateTopics after the failover",
            || {
                let name = name.clone();
                async move {
                    match create(survivor, &name, 1).await {
                        Ok(_) => Some(()),
                        Err(e) if e.contains("TopicAlreadyExists") => Some(()),
                        Err(_) => None,
                    }
                }
            },
        ));
        let took = killed.elapsed();
        println!(
            "  round {r}: controller {controller} SIGKILLed, first CreateTopics answered after {:.0} ms",
            ms(took)
        );
        failover.push(ms(took));
        let (child, rx) = spawn(
            &bin,
            &nodes[dead],
            Some(&controllers),
            args.session_timeout_ms,
            &[],
        );
        wait_listening(&rx);
        nodes[dead].child = Some(child);
    }
    for n in &mut nodes {
        terminate(n);
    }
    let _ = scratch.finish(false);

    let (single_m, answered_m, led_m) = (median(&single), median(&create_answered), median(&create_led));
    let (fenced_m, failover_m, healthy_m) = (median(&fenced), median(&failover), median(&healthy_create));
    println!(
        "create {} partitions on 3 brokers: answered {:.0} ms, led everywhere {:.0} ms (median); single node {:.0} ms: x{:.2}",
        args.partitions,
        answered_m,
        led_m,
        single_m,
        led_m / single_m
    );
    println!(
        "broker SIGKILL to fenced: {:.0} ms (median); session timeout {} ms: x{:.2}",
        fenced_m,
        args.session_timeout_ms,
        fenced_m / args.session_timeout_ms as f64
    );
    println!(
        "controller SIGKILL to the first CreateTopics: {:.0} ms (median); a CreateTopics when healthy {:.1} ms",
        failover_m, healthy_m
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "cluster",
            "partitions": args.partitions,
            "rounds": args.rounds,
            "session_timeout_ms": args.session_timeout_ms,
            "create_answered_ms": answered_m,
            "create_led_ms": led_m,
            "create_single_node_ms": single_m,
            "fenced_ms": fenced_m,
            "failover_ms": failover_m,
            "healthy_create_ms": healthy_m,
        })
    );
}
