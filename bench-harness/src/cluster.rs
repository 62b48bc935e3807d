//! Three brokers on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (one port, the same
//! on each address), every one a voter of the metadata quorum, as real
//! processes: started, SIGKILLed, restarted, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One broker of the cluster.
pub struct Node {
    pub id: i32,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

/// A port free on 127.0.0.1, .2 and .3 alike.
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = l.local_addr().expect("address").port();
        drop(l);
        let free =
            (2..=3).all(|i| std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, i], port))).is_ok());
        if free {
            return port;
        }
    }
}

/// Three nodes on one free port, their data under `dir(i)`.
pub fn three_nodes(dir: impl Fn(i32) -> PathBuf) -> Vec<Node> {
    let port = free_port();
    (0..3)
        .map(|i| Node {
            id: i,
            addr: SocketAddr::from(([127, 0, 0, i as u8 + 1], port)),
            dir: dir(i),
            child: None,
        })
        .collect()
}

/// The `--controllers` value naming every node.
pub fn controllers(nodes: &[Node]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| format!("{}@{}", n.id, n.addr)).collect();
    v.join(",")
}

/// Starts `node`'s broker (one shard): a voter of `controllers`, or
/// (`None`) a single-node broker of its own, with `extra` arguments.
/// The receiver is told once it listens.
pub fn spawn(
    bin: &Path,
    node: &Node,
    controllers: Option<&str>,
    session_ms: u64,
    extra: &[&str],
) -> (Child, std::sync::mpsc::Receiver<()>) {
    let mut cmd = Command::new(bin);
    cmd.args(["start", "--cores", "1", "--node-id", &node.id.to_string()])
        .args(["--listen", &node.addr.to_string()])
        .args(["--broker-session-timeout-ms", &session_ms.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(&node.dir)
        .env("BORGES_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(c) = controllers {
        cmd.args(["--controllers", c]);
    }
    let mut child = cmd.spawn().expect("start borges");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    (child, rx)
}

pub fn wait_listening(rx: &std::sync::mpsc::Receiver<()>) {
    rx.recv_timeout(Duration::from_secs(60))
        .expect("a broker listens within 60 s");
}

/// Starts every node and waits until all listen.
pub fn start_all(bin: &Path, nodes: &mut [Node], session_ms: u64, extra: &[&str]) {
    let c = controllers(nodes);
    let pending: Vec<_> = nodes
        .iter()
        .map(|n| spawn(bin, n, Some(&c), session_ms, extra))
        .collect();
    for (n, (child, rx)) in nodes.iter_mut().zip(pending) {
        wait_listening(&rx);
        n.child = Some(child);
    }
}

/// Starts one node of the cluster again and waits until it listens.
pub fn restart(bin: &Path, nodes: &mut [Node], i: usize, session_ms: u64, extra: &[&str]) {
    let c = controllers(nodes);
    let (child, rx) = spawn(bin, &nodes[i], Some(&c), session_ms, extra);
    wait_listening(&rx);
    nodes[i].child = Some(child);
}

pub fn kill(node: &mut Node) {
    if let Some(mut c) = node.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub fn terminate(node: &mut Node) {
    if let Some(mut c) = node.child.take() {
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let _ = c.wait();
    }
}

/// Polls `f` every 20 ms until it gives `Some`, at most `limit`.
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> (T, Duration) {
    let began = Instant::now();
    loop {
        if let Some(v) = f().await {
            return (v, began.elapsed());
        }
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
