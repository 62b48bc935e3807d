//! Helpers for whole-system tests: start real `borges` broker processes on
//! 127.0.0.1, wait until they listen, stop them with SIGTERM or SIGKILL, and
//! talk to them with raw protocol frames. The client crate's integration
//! tests use the same `Broker` (a dev-dependency), so there is one copy of
//! the process handling.
//!
//! Layout:
//! - `lib.rs`: [`Broker`] (a broker process) and [`RawConn`] (a blocking
//!   protocol connection for tests that send malformed input on purpose).
//! - `cluster.rs`: several brokers on their own addresses, and what tests
//!   ask of them.

pub mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use borges_net::batch::{Compression, RecordBatchBuilder};
use borges_net::protocol::{
    decode_response, encode_request, frame_length, ApiKey, CreatableTopic, CreateTopicsRequest, ErrorCode,
    Limits, ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceTopic, Request, RequestHeader,
    Response, ResponseResult,
};
use borges_net::types::TopicId;
use bytes::{Bytes, BytesMut};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `borges` binary, built once per test process.
pub fn borges_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "borges", "--bin", "borges"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the broker failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        target.join("debug").join("borges")
    })
    .clone()
}

/// A free port on 127.0.0.1 for a test broker, below the kernel's
/// ephemeral range: the client connections of tests running in parallel
/// take their source ports from that range, so a port there that a killed
/// broker released could be taken by one of them before the broker
/// restarts on it. Random, and checked free by binding it.
pub fn broker_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (from, to) = if low > 12_000 {
        (10_000u16, low)
    } else {
        (low, u16::MAX)
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let mut x = seed | 1;
    for _ in 0..1000 {
        // xorshift: cheap randomness without a dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = from + (x % u64::from(to - from)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// A free port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How long a broker may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running broker process, stopped (SIGKILL) when dropped.
pub struct Broker {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker with its data in `data_dir` on a free port (see
    /// `broker_port`). Another test may take the port first, so a few are
    /// tried; the broker refuses a port something already listens on.
    pub fn start(data_dir: &Path, cores: usize, extra_args: &[&str]) -> Broker {
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut b = Broker {
                addr: SocketAddr::from(([127, 0, 0, 1], broker_port())),
                data_dir: data_dir.to_path_buf(),
                cores,
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                child: None,
            };
            match b.spawn() {
                Ok(()) => return b,
                Err(e) => last_error = e,
            }
        }
        panic!("the broker did not start: {last_error}");
    }

    /// Starts a broker at `addr` without waiting for it to listen (a
    /// cluster's brokers wait for each other's quorum before they do).
    pub fn launch(addr: SocketAddr, data_dir: &Path, cores: usize, extra_args: &[&str]) -> Launch {
        let broker = Broker {
            addr,
            data_dir: data_dir.to_path_buf(),
            cores,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        let (child, rx) = broker.spawn_child().expect("start borges");
        Launch { broker, child, rx }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let (child, rx) = self.spawn_child()?;
        self.await_listening(child, rx)
    }

    fn spawn_child(
        &self,
    ) -> Result<
        (
            Child,
            std::sync::mpsc::Receiver<Result<SocketAddr, std::net::AddrParseError>>,
        ),
        String,
    > {
        let mut child = Command::new(borges_bin())
            .arg("start")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cores")
            .arg(self.cores.to_string())
            .args(&self.extra_args)
            .env(
                "BORGES_LOG",
                std::env::var("BORGES_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start borges: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining after the line, so the broker never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>());
                }
            }
        });
        Ok((child, rx))
    }

    fn await_listening(
        &mut self,
        mut child: Child,
        rx: std::sync::mpsc::Receiver<Result<SocketAddr, std::net::AddrParseError>>,
    ) -> Result<(), String> {
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => self.addr = addr,
            Ok(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the broker printed an unreadable address: {e}"));
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(format!(
                    "no 'listening on' line within {START_TIMEOUT:?} (exit status {status:?})"
                ));
            }
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("broker did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same broker again (same port and data), killing it first
    /// (SIGKILL) if it still runs: a crash and a recovery. The port was just
    /// released, so a few attempts are made.
    pub fn restart(&mut self) {
        self.kill();
        let mut last_error = String::new();
        for _ in 0..10 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the broker did not restart: {last_error}");
    }

    /// CPU time (user + system) the broker process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc/PID/stat");
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(ticks * 1_000_000 / hz)
    }

    /// Resident memory of the broker process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.status_kb("VmRSS:") * 1024
    }

    /// The most resident memory the broker process has had, in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kb("VmHWM:") * 1024
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }
}

/// A broker started by [`Broker::launch`], not yet listening.
pub struct Launch {
    broker: Broker,
    child: Child,
    rx: std::sync::mpsc::Receiver<Result<SocketAddr, std::net::AddrParseError>>,
}

impl Launch {
    /// Waits for its `listening on` line (at most `START_TIMEOUT`).
    pub fn wait(self) -> Result<Broker, String> {
        let Launch {
            mut broker,
            child,
            rx,
        } = self;
        broker.await_listening(child, rx)?;
        Ok(broker)
    }

    /// Waits for the process to exit (at most `timeout`): its status, or
    /// `None` if it still runs (then it is killed).
    pub fn exit_status(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One uncompressed batch holding `values`.
pub fn batch(values: &[&str]) -> BytesMut {
    let mut b = RecordBatchBuilder::new(Compression::None);
    for v in values {
        b.push(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    b.build().expect("a valid batch")
}

/// A blocking protocol connection for tests.
pub struct RawConn {
    pub stream: TcpStream,
    next: u32,
    buf: BytesMut,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        RawConn::try_connect(addr, Duration::from_secs(20)).expect("connect")
    }

    /// A connection, or the error if `addr` does not take one; each call
    /// waits at most `read_timeout` for its answer.
    pub fn try_connect(addr: SocketAddr, read_timeout: Duration) -> std::io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(read_timeout))?;
        Ok(RawConn {
            stream,
            next: 1,
            buf: BytesMut::new(),
        })
    }

    /// [`RawConn::call`] that reports a broken connection instead of
    /// panicking: `None` if the request could not be sent or answered.
    pub fn try_call(&mut self, req: Request) -> Option<ResponseResult> {
        let api = req.api_key();
        let corr = self.next;
        self.next += 1;
        let mut out = BytesMut::new();
        let header = RequestHeader {
            api_key: api,
            api_version: 0,
            correlation_id: corr,
            client_id: "system-test".into(),
        };
        encode_request(&header, &req, &mut out);
        self.stream.write_all(&out).ok()?;
        let (got, resp) = self.read_response(api)?;
        (got == corr).then_some(resp)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request and returns its response (or request-level error).
    pub fn call(&mut self, req: Request) -> ResponseResult {
        let api = req.api_key();
        let corr = self.next;
        self.next += 1;
        let mut out = BytesMut::new();
        let header = RequestHeader {
            api_key: api,
            api_version: 0,
            correlation_id: corr,
            client_id: "system-test".into(),
        };
        encode_request(&header, &req, &mut out);
        self.stream.write_all(&out).expect("send");
        let (got, resp) = self.read_response(api).expect("a response");
        assert_eq!(got, corr, "correlation id");
        resp
    }

    /// Creates a topic with `configs`, asserting it worked; returns its id.
    pub fn create_topic(&mut self, name: &str, partitions: u32, configs: &[(&str, &str)]) -> TopicId {
        let resp = self
            .call(Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: name.into(),
                    partitions,
                    replication_factor: 1,
                    configs: configs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }],
                timeout_ms: 10_000,
                validate_only: false,
            }))
            .expect("create topics");
        let Response::CreateTopics(r) = resp else {
            panic!("wrong response")
        };
        assert_eq!(r.topics[0].error, ErrorCode::None, "{:?}", r.topics[0].message);
        r.topics[0].id
    }

    /// Produces `records` to one partition with acks=all; returns its result.
    pub fn produce(&mut self, topic: TopicId, partition: u32, records: BytesMut) -> ProducePartitionResponse {
        self.produce_with_acks(topic, partition, records, -1)
    }

    /// Produces `records` to one partition with `acks` (-1 or 1); returns
    /// its result.
    pub fn produce_with_acks(
        &mut self,
        topic: TopicId,
        partition: u32,
        records: BytesMut,
        acks: i8,
    ) -> ProducePartitionResponse {
        let resp = self
            .call(Request::Produce(ProduceRequest {
                acks,
                timeout_ms: 10_000,
                topics: vec![ProduceTopic {
                    topic_id: topic,
                    partitions: vec![ProducePartition { partition, records }],
                }],
            }))
            .expect("produce");
        let Response::Produce(r) = resp else {
            panic!("wrong response")
        };
        r.topics[0].partitions[0].clone()
    }

    /// Reads one response frame; `None` when the broker closed the connection.
    pub fn read_response(&mut self, api: ApiKey) -> Option<(u32, ResponseResult)> {
        let payload = self.read_frame()?;
        Some(decode_response(api, payload, &Limits::default()).expect("decodable response"))
    }

    /// Reads one response frame's payload (correlation id first), undecoded.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let limits = Limits::default();
        loop {
            if let Ok(Some(total)) = frame_length(&self.buf, &limits) {
                let mut frame = self.buf.split_to(total);
                return Some(frame.split_off(4).freeze());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the broker closes this connection within `wait` (without
    /// sending anything).
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut b = [0u8; 1];
        let closed = matches!(self.stream.read(&mut b), Ok(0));
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(20)));
        closed
    }

    /// True once the broker has closed this connection.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}
