//! Broker configuration: one definition of every setting, layered
//! defaults < TOML file < environment (`BORGES_*`) < flags.
//!
//! The definition is the clap `Args` struct below: each field's
//! attributes name its flag, its environment variable and its default,
//! and its doc comment says what it does, so that `borges start --help`
//! lists every setting. A TOML file's keys are the fields' ids (the flag
//! names with `_` for `-`); [`file_flags`] turns a file into the flags it
//! stands for, for the settings that neither the environment nor a flag
//! set, so that clap parses all four layers with the same parsers.
//! `borges start` with nothing set runs a single-node broker on
//! 127.0.0.1:9092 with its data in ./borges-data.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use borges_storage::{FlushPolicy, LogConfig};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid setting {0}: {1}")]
    Invalid(&'static str, String),
    #[error("{0}")]
    Flags(String),
}

/// How appended data is made durable, and what acks=all waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlushMode {
    /// fdatasync only what acks=all producers wait for (group commit), plus
    /// a background sync every `flush_interval_ms`; acks=0/1 never wait for
    /// a disk. The default, as Redpanda does it.
    AcksAll,
    /// Every append is synced before it is acknowledged, whatever the acks.
    EveryBatch,
    /// Never sync on the produce path: acks=all waits until the bytes are in
    /// the file (safe against a process crash, not a power loss).
    Never,
}

/// Parses a count of milliseconds.
pub(crate) fn millis(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{s:?}: {e} (milliseconds, a whole number)"))
}

fn default_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Kafka's `fetch.max.bytes` default.
pub const FETCH_MAX_BYTES_DEFAULT: usize = 57_671_680;

const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// Everything a broker needs to start: the one definition of each setting.
#[derive(Debug, Clone, Args)]
#[command(
    next_help_heading = "Settings (TOML key: the flag's name with _ for -; environment: BORGES_ and the key in capitals)"
)]
pub struct BrokerConfig {
    /// This broker's node id.
    #[arg(long, env = "BORGES_NODE_ID", default_value_t = 0)]
    pub node_id: i32,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, env = "BORGES_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,
    /// Address clients are told to connect to [default: the listen address].
    #[arg(long, env = "BORGES_ADVERTISED")]
    pub advertised: Option<SocketAddr>,
    /// A data directory (one per disk); repeat, or separate with commas.
    #[arg(
        id = "data_dirs",
        long = "data-dir",
        env = "BORGES_DATA_DIRS",
        value_delimiter = ',',
        default_value = "borges-data"
    )]
    pub data_dirs: Vec<PathBuf>,
    /// Shards (pinned executors), one per core from core 0 [default: every core].
    #[arg(long, env = "BORGES_CORES", default_value_t = default_cores(), hide_default_value = true)]
    pub cores: usize,
    /// What acks=all waits for, and when data is synced.
    #[arg(long, env = "BORGES_FLUSH", value_enum, default_value_t = FlushMode::AcksAll)]
    pub flush: FlushMode,
    /// With --flush acks-all: how often everything appended is synced in the background.
    #[arg(
        id = "flush_interval_ms",
        long = "flush-interval-ms",
        env = "BORGES_FLUSH_INTERVAL_MS",
        value_parser = millis,
        default_value = "1000"
    )]
    pub flush_interval: Duration,
    /// Topic default: a segment rolls at this size (Kafka's segment.bytes).
    #[arg(long, env = "BORGES_SEGMENT_BYTES", default_value_t = 1 << 30)]
    pub segment_bytes: u64,
    /// Topic default: a segment rolls at this age; -1 never (segment.ms).
    #[arg(long, env = "BORGES_SEGMENT_MS", default_value_t = WEEK_MS, allow_negative_numbers = true)]
    pub segment_ms: i64,
    /// Topic default: data older than this is deleted; -1 keeps it forever (retention.ms).
    #[arg(long, env = "BORGES_RETENTION_MS", default_value_t = WEEK_MS, allow_negative_numbers = true)]
    pub retention_ms: i64,
    /// Topic default: oldest segments are deleted while a partition is larger; -1 no limit (retention.bytes).
    #[arg(long, env = "BORGES_RETENTION_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub retention_bytes: i64,
    /// Partitions of a topic created without a count (or by a produce).
    #[arg(long, env = "BORGES_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: u32,
    /// Largest request frame accepted, in bytes.
    #[arg(long, env = "BORGES_MAX_FRAME_BYTES", default_value_t = 100 << 20)]
    pub max_frame_bytes: usize,
    /// Connections one shard accepts at once.
    #[arg(long, env = "BORGES_MAX_CONNECTIONS_PER_SHARD", default_value_t = 10_000)]
    pub max_connections_per_shard: usize,
    /// Request bytes of one connection held in memory at once (left unset, it grows to hold one --max-frame-bytes frame).
    #[arg(long, env = "BORGES_MAX_INFLIGHT_BYTES_PER_CONNECTION", default_value_t = 128 << 20)]
    pub max_inflight_bytes_per_connection: usize,
    /// Request bytes of all of a shard's connections held at once (left unset, it grows to hold one connection's).
    #[arg(long, env = "BORGES_MAX_INFLIGHT_BYTES_PER_SHARD", default_value_t = 1 << 30)]
    pub max_inflight_bytes_per_shard: usize,
    /// Memory for recent batches, shared by a shard's partitions (each gets
    /// between 256 KiB and 16 MiB).
    #[arg(long, env = "BORGES_TAIL_CACHE_BYTES_PER_SHARD", default_value_t = 256 << 20)]
    pub tail_cache_bytes_per_shard: usize,
    /// How often each shard applies retention to its partitions.
    #[arg(
        id = "retention_check_interval_ms",
        long = "retention-check-interval-ms",
        env = "BORGES_RETENTION_CHECK_INTERVAL_MS",
        value_parser = millis,
        default_value = "60000"
    )]
    pub retention_check_interval: Duration,
    /// Partitions of `__consumer_offsets`, fixed when the topic is first created.
    #[arg(long, env = "BORGES_OFFSETS_TOPIC_PARTITIONS", default_value_t = 16)]
    pub offsets_topic_partitions: u32,
    #[command(flatten)]
    pub groups: crate::group::GroupSettings,
    /// How often each shard's cleaner looks for compacted topics to clean.
    #[arg(
        id = "cleaner_interval_ms",
        long = "cleaner-interval-ms",
        env = "BORGES_CLEANER_INTERVAL_MS",
        value_parser = millis,
        default_value = "15000"
    )]
    pub cleaner_interval: Duration,
    /// The cleaner's read+write budget per shard, bytes per second.
    #[arg(long, env = "BORGES_CLEANER_MAX_BYTES_PER_SEC", default_value_t = 64 << 20)]
    pub cleaner_max_bytes_per_sec: u64,
    /// Most record bytes in one fetch response, whatever the client asks
    /// (Kafka's fetch.max.bytes). The first partition with data may go
    /// past it by one batch, so that a consumer always makes progress.
    #[arg(long, env = "BORGES_FETCH_MAX_BYTES", default_value_t = FETCH_MAX_BYTES_DEFAULT)]
    pub fetch_max_bytes: usize,
    /// Longest a fetch may wait for its min_bytes (a client's max_wait_ms
    /// above it is cut to it).
    #[arg(
        id = "fetch_max_wait_ms",
        long = "fetch-max-wait-ms",
        env = "BORGES_FETCH_MAX_WAIT_MS",
        value_parser = millis,
        default_value = "30000"
    )]
    pub fetch_max_wait: Duration,
    /// A response that makes no progress into the socket for this long
    /// closes its connection (a client that stopped reading).
    #[arg(
        id = "write_timeout_ms",
        long = "write-timeout-ms",
        env = "BORGES_WRITE_TIMEOUT_MS",
        value_parser = millis,
        default_value = "30000"
    )]
    pub write_timeout: Duration,
    /// A connection that sends nothing for this long is closed (Kafka's
    /// connections.max.idle.ms).
    #[arg(
        id = "connection_idle_timeout_ms",
        long = "connection-idle-timeout-ms",
        env = "BORGES_CONNECTION_IDLE_TIMEOUT_MS",
        value_parser = millis,
        default_value = "600000"
    )]
    pub connection_idle_timeout: Duration,
    /// While a connection's responses not yet written exceed this, no more
    /// of its requests are read.
    #[arg(long, env = "BORGES_MAX_UNWRITTEN_BYTES_PER_CONNECTION", default_value_t = 64 << 20)]
    pub max_unwritten_bytes_per_connection: usize,
    /// Largest decompressed size of one partition's records in a produce
    /// that the broker recompresses for a topic's compression.type.
    #[arg(long, env = "BORGES_RECOMPRESS_MAX_BYTES", default_value_t = 64 << 20)]
    pub recompress_max_bytes: usize,
    /// Threads per shard for blocking work (sendfile of cold pages, file
    /// renames and removals), so that one slow disk read does not hold up
    /// the rest.
    #[arg(long, env = "BORGES_BLOCKING_THREADS_PER_SHARD", default_value_t = 4)]
    pub blocking_threads_per_shard: usize,
    /// A request frame must arrive whole within this (plus a second per MiB
    /// of its length) from its length prefix on, since it holds its
    /// in-flight permits from then.
    #[arg(
        id = "request_read_timeout_ms",
        long = "request-read-timeout-ms",
        env = "BORGES_REQUEST_READ_TIMEOUT_MS",
        value_parser = millis,
        default_value = "30000"
    )]
    pub request_read_timeout: Duration,
    /// Most requests of one connection being handled or answered at once.
    #[arg(
        long,
        env = "BORGES_MAX_INFLIGHT_REQUESTS_PER_CONNECTION",
        default_value_t = 256
    )]
    pub max_inflight_requests_per_connection: usize,
    /// A shard whose executor has not turned for this long is logged as
    /// stalled (and again when it turns), and counted.
    #[arg(
        id = "shard_stall_timeout_ms",
        long = "shard-stall-timeout-ms",
        env = "BORGES_SHARD_STALL_TIMEOUT_MS",
        value_parser = millis,
        default_value = "2000"
    )]
    pub shard_stall_timeout: Duration,
    /// The metadata quorum's voters, `id@host:port` each (their client
    /// address: brokers talk to each other on the port clients use),
    /// comma-separated; a broker not among them follows the metadata log as
    /// an observer [default: none, a cluster of this broker alone].
    #[arg(
        long,
        env = "BORGES_CONTROLLERS",
        value_delimiter = ',',
        value_parser = controller_voter
    )]
    pub controllers: Vec<ControllerVoter>,
    /// Replication factor of `__consumer_offsets` in a cluster (Kafka's
    /// offsets.topic.replication.factor); a broker alone uses 1. Until as
    /// many brokers are registered, groups are not available.
    #[arg(long, env = "BORGES_OFFSETS_TOPIC_REPLICATION_FACTOR", default_value_t = 3)]
    pub offsets_topic_replication_factor: usize,
    /// Replication factor of a topic created without one (or by a produce);
    /// Kafka's default.replication.factor.
    #[arg(long, env = "BORGES_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub default_replication_factor: usize,
    /// Broker default of `min.insync.replicas`: acks=all writes need this
    /// many in-sync replicas; unset, a majority of each partition's
    /// replicas (2 of 3).
    #[arg(long, env = "BORGES_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<usize>,
    /// An in-sync follower that has not caught up with its leader for this
    /// long leaves the ISR (`replica.lag.time.max.ms`).
    #[arg(
        id = "replica_lag_time_max_ms",
        long = "replica-lag-time-max-ms",
        env = "BORGES_REPLICA_LAG_TIME_MAX_MS",
        value_parser = millis,
        default_value = "30000"
    )]
    pub replica_lag_time_max: Duration,
    /// Longest a follower's fetch waits at its leader for new records
    /// (`replica.fetch.wait.max.ms`).
    #[arg(
        id = "replica_fetch_wait_max_ms",
        long = "replica-fetch-wait-max-ms",
        env = "BORGES_REPLICA_FETCH_WAIT_MAX_MS",
        value_parser = millis,
        default_value = "500"
    )]
    pub replica_fetch_wait_max: Duration,
    /// Most record bytes a follower asks per partition in one fetch
    /// (`replica.fetch.max.bytes`).
    #[arg(long, env = "BORGES_REPLICA_FETCH_MAX_BYTES", default_value_t = 4 << 20)]
    pub replica_fetch_max_bytes: u32,
    /// Most record bytes in one replica fetch response
    /// (`replica.fetch.response.max.bytes`).
    #[arg(long, env = "BORGES_REPLICA_FETCH_RESPONSE_MAX_BYTES", default_value_t = 32 << 20)]
    pub replica_fetch_response_max_bytes: u32,
    /// A broker that has not heartbeated for this long is fenced
    /// (`broker.session.timeout.ms`).
    #[arg(
        id = "broker_session_timeout_ms",
        long = "broker-session-timeout-ms",
        env = "BORGES_BROKER_SESSION_TIMEOUT_MS",
        value_parser = millis,
        default_value = "9000"
    )]
    pub broker_session_timeout: Duration,
    /// How often a broker heartbeats to the controller
    /// (`broker.heartbeat.interval.ms`).
    #[arg(
        id = "broker_heartbeat_interval_ms",
        long = "broker-heartbeat-interval-ms",
        env = "BORGES_BROKER_HEARTBEAT_INTERVAL_MS",
        value_parser = millis,
        default_value = "2000"
    )]
    pub broker_heartbeat_interval: Duration,
    /// How long a stopping broker waits for the controller to move its
    /// leaderships away before it stops anyway
    /// (`controlled.shutdown.timeout.ms`).
    #[arg(
        id = "controlled_shutdown_timeout_ms",
        long = "controlled-shutdown-timeout-ms",
        env = "BORGES_CONTROLLED_SHUTDOWN_TIMEOUT_MS",
        value_parser = millis,
        default_value = "30000"
    )]
    pub controlled_shutdown_timeout: Duration,
}

/// One voter of the metadata quorum: its node id and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerVoter {
    pub node: i32,
    pub addr: SocketAddr,
}

impl std::fmt::Display for ControllerVoter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.node, self.addr)
    }
}

/// Parses `id@host:port`.
fn controller_voter(s: &str) -> Result<ControllerVoter, String> {
    let s = s.trim();
    let (id, addr) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected id@host:port"))?;
    let node: i32 = id.parse().map_err(|e| format!("{s:?}: node id {id:?}: {e}"))?;
    if node < 0 {
        return Err(format!("{s:?}: node ids are not negative"));
    }
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("{s:?}: address {addr:?}: {e}"))?;
    Ok(ControllerVoter { node, addr })
}

/// `borges start`'s arguments: a settings file, and every setting.
#[derive(Debug, Clone, Parser)]
#[command(name = "start")]
pub struct StartArgs {
    /// A TOML file of settings: its keys are the flags' names with `_` for
    /// `-` (`flush_interval_ms = 500`, `data_dirs = ["/d1", "/d2"]`); the
    /// environment and flags override it.
    #[arg(long, env = "BORGES_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub broker: BrokerConfig,
}

impl StartArgs {
    /// `borges start`'s settings from its arguments (those after `start`),
    /// the environment and the file that `--config` names, layered.
    pub fn resolve(args: &[OsString]) -> Result<BrokerConfig, ConfigError> {
        resolve_with(StartArgs::command(), args)
    }
}

fn resolve_with(cmd: clap::Command, args: &[OsString]) -> Result<BrokerConfig, ConfigError> {
    let cmd = cmd.no_binary_name(true);
    let m = cmd
        .clone()
        .try_get_matches_from(args)
        .map_err(|e| ConfigError::Flags(e.to_string()))?;
    let start = StartArgs::from_arg_matches(&m).map_err(|e| ConfigError::Flags(e.to_string()))?;
    let Some(path) = start.config else {
        return BrokerConfig::from_matches(&m);
    };
    let flags = file_flags(&path, &m)?;
    let m = cmd
        .try_get_matches_from(args.iter().cloned().chain(flags))
        .map_err(|e| ConfigError::Parse(path.clone(), e.to_string()))?;
    BrokerConfig::from_matches(&m)
}

impl Default for BrokerConfig {
    /// Every setting at its default: no file, no environment, no flags.
    fn default() -> Self {
        BrokerConfig::from_flags(std::iter::empty::<&str>()).expect("the defaults parse")
    }
}

/// Whether a parse left the setting `id` to its default (or a file).
fn unset(m: &ArgMatches, id: &str) -> bool {
    !matches!(
        m.value_source(id),
        Some(ValueSource::EnvVariable | ValueSource::CommandLine)
    )
}

impl BrokerConfig {
    /// Settings from flags alone, ignoring the environment (for tests and
    /// embedding): `from_flags(["--listen", "127.0.0.1:0"])`.
    pub fn from_flags<I, T>(flags: I) -> Result<BrokerConfig, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cmd = BrokerConfig::augment_args(clap::Command::new("start"))
            .mut_args(|a| a.env(None::<&str>))
            .no_binary_name(true);
        let m = cmd
            .try_get_matches_from(flags)
            .map_err(|e| ConfigError::Flags(e.to_string()))?;
        BrokerConfig::from_matches(&m)
    }

    /// Settings from a parse of [`BrokerConfig`]'s arguments (alone or
    /// flattened into a command), with the budgets that were left unset
    /// grown to fit `max_frame_bytes`.
    pub fn from_matches(m: &ArgMatches) -> Result<BrokerConfig, ConfigError> {
        let mut c = BrokerConfig::from_arg_matches(m).map_err(|e| ConfigError::Flags(e.to_string()))?;
        // The connection's budget must hold one whole frame and its prefix:
        // budgets left at their defaults grow to fit; budgets an operator
        // set are theirs, and a misfit is refused by `validate`.
        let frame = c
            .max_frame_bytes
            .saturating_add(borges_net::protocol::FRAME_PREFIX_LEN);
        if unset(m, "max_inflight_bytes_per_connection") {
            c.max_inflight_bytes_per_connection = c.max_inflight_bytes_per_connection.max(frame);
        }
        if unset(m, "max_inflight_bytes_per_shard") {
            c.max_inflight_bytes_per_shard = c
                .max_inflight_bytes_per_shard
                .max(c.max_inflight_bytes_per_connection);
        }
        Ok(c)
    }

    /// The address clients are told to connect to.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised.unwrap_or(self.listen)
    }

    /// The log settings of a topic that sets none of its own.
    pub fn log_defaults(&self) -> LogConfig {
        LogConfig {
            flush: FlushPolicy::Never,
            segment_bytes_max: self.segment_bytes,
            segment_ms_max: (self.segment_ms >= 0).then_some(self.segment_ms),
            retention_ms: (self.retention_ms >= 0).then_some(self.retention_ms),
            retention_bytes: u64::try_from(self.retention_bytes).ok(),
            ..LogConfig::default()
        }
    }
}

/// The flags that the TOML file at `path` stands for: one `--flag=value`
/// per key (one per element of an array) whose setting neither the
/// environment nor a flag set in `matches` (a parse of [`StartArgs`]'s
/// arguments). Unknown keys and values of the wrong shape are errors.
pub fn file_flags(path: &Path, matches: &ArgMatches) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
    file_flags_from_str(path, &text, matches)
}

fn file_flags_from_str(path: &Path, text: &str, matches: &ArgMatches) -> Result<Vec<OsString>, ConfigError> {
    let bad = |m: String| ConfigError::Parse(path.to_path_buf(), m);
    let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let cmd = StartArgs::command();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let long = cmd
            .get_arguments()
            .filter(|a| a.get_id().as_str() == key && key != "config")
            .find_map(|a| a.get_long())
            .ok_or_else(|| bad(format!("unknown setting {key:?}")))?;
        if !unset(matches, key) {
            continue;
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(bad(format!(
                "{key}: expected a string, an integer or a boolean, found {}",
                other.type_str()
            ))),
        };
        let values = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
            v => vec![scalar(v)?],
        };
        for v in values {
            flags.push(OsString::from(format!("--{long}={v}")));
        }
    }
    Ok(flags)
}

impl BrokerConfig {
    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if self.cores == 0 || self.cores > cpus {
            return Err(ConfigError::Invalid(
                "cores",
                format!("{} (this machine has {cpus})", self.cores),
            ));
        }
        if self.data_dirs.is_empty() {
            return Err(ConfigError::Invalid("data_dirs", "at least one is needed".into()));
        }
        if self.max_frame_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_frame_bytes",
                self.max_frame_bytes.to_string(),
            ));
        }
        // A frame holds permits for its length prefix too: a budget that
        // cannot take the largest frame would make it wait forever.
        let largest_frame = self.max_frame_bytes + borges_net::protocol::FRAME_PREFIX_LEN;
        if self.max_inflight_bytes_per_connection < largest_frame {
            return Err(ConfigError::Invalid(
                "max_inflight_bytes_per_connection",
                format!(
                    "{} cannot hold one frame of max_frame_bytes {} plus its 4-byte prefix",
                    self.max_inflight_bytes_per_connection, self.max_frame_bytes
                ),
            ));
        }
        if self.max_inflight_bytes_per_shard < self.max_inflight_bytes_per_connection {
            return Err(ConfigError::Invalid(
                "max_inflight_bytes_per_shard",
                format!(
                    "{} is less than max_inflight_bytes_per_connection {}",
                    self.max_inflight_bytes_per_shard, self.max_inflight_bytes_per_connection
                ),
            ));
        }
        // A fetch response is at most fetch_max_bytes plus one batch
        // (max.message.bytes is capped by the batch format) and its heads:
        // it must fit a frame's u32 length with room to spare.
        if self.fetch_max_bytes == 0 || self.fetch_max_bytes > (1 << 30) {
            return Err(ConfigError::Invalid(
                "fetch_max_bytes",
                format!("{} (1 to 1 GiB)", self.fetch_max_bytes),
            ));
        }
        if self.fetch_max_wait > Duration::from_secs(300) {
            return Err(ConfigError::Invalid(
                "fetch_max_wait_ms",
                format!("{} ms (at most 300000)", self.fetch_max_wait.as_millis()),
            ));
        }
        if self.write_timeout.is_zero() || self.connection_idle_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "write_timeout_ms / connection_idle_timeout_ms",
                "must be above 0".into(),
            ));
        }
        if self.max_unwritten_bytes_per_connection == 0 || self.recompress_max_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_unwritten_bytes_per_connection / recompress_max_bytes",
                "must be above 0".into(),
            ));
        }
        if self.request_read_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "request_read_timeout_ms",
                "must be above 0".into(),
            ));
        }
        if self.max_inflight_requests_per_connection == 0
            || self.max_inflight_requests_per_connection > 65_536
        {
            return Err(ConfigError::Invalid(
                "max_inflight_requests_per_connection",
                format!("{} (1 to 65536)", self.max_inflight_requests_per_connection),
            ));
        }
        // A long poll that outlives the idle timeout would see its
        // connection closed under it for sending nothing while it waited.
        if self.connection_idle_timeout < self.fetch_max_wait {
            return Err(ConfigError::Invalid(
                "connection_idle_timeout_ms",
                format!(
                    "{} ms is shorter than fetch_max_wait_ms {} ms",
                    self.connection_idle_timeout.as_millis(),
                    self.fetch_max_wait.as_millis()
                ),
            ));
        }
        if self.shard_stall_timeout < crate::watchdog::BEAT * 2 {
            return Err(ConfigError::Invalid(
                "shard_stall_timeout_ms",
                format!(
                    "{} ms (at least {} ms, twice a shard's heartbeat)",
                    self.shard_stall_timeout.as_millis(),
                    (crate::watchdog::BEAT * 2).as_millis()
                ),
            ));
        }
        if self.blocking_threads_per_shard == 0 || self.blocking_threads_per_shard > 64 {
            return Err(ConfigError::Invalid(
                "blocking_threads_per_shard",
                format!("{} (1 to 64)", self.blocking_threads_per_shard),
            ));
        }
        if self.offsets_topic_partitions == 0 || self.offsets_topic_partitions > crate::topics::MAX_PARTITIONS
        {
            return Err(ConfigError::Invalid(
                "offsets_topic_partitions",
                self.offsets_topic_partitions.to_string(),
            ));
        }
        if self.groups.min_session_timeout > self.groups.max_session_timeout {
            return Err(ConfigError::Invalid(
                "group_min_session_timeout_ms",
                "exceeds group_max_session_timeout_ms".into(),
            ));
        }
        if self.cleaner_max_bytes_per_sec == 0 {
            return Err(ConfigError::Invalid("cleaner_max_bytes_per_sec", "0".into()));
        }
        if !self.controllers.is_empty() {
            let mut ids: Vec<i32> = self.controllers.iter().map(|v| v.node).collect();
            ids.sort_unstable();
            let mut addrs: Vec<SocketAddr> = self.controllers.iter().map(|v| v.addr).collect();
            addrs.sort_unstable();
            if addrs.windows(2).any(|w| w[0] == w[1]) {
                return Err(ConfigError::Invalid(
                    "controllers",
                    "an address is listed twice".into(),
                ));
            }
            // Raft messages (a snapshot of the image, a batch of entries)
            // travel in frames: the frame limit must take the largest.
            let raft_frame = borges_meta::quorum::wire::MAX_PAYLOAD + (1 << 20);
            if self.max_frame_bytes < raft_frame {
                return Err(ConfigError::Invalid(
                    "max_frame_bytes",
                    format!(
                        "{} is too small for a cluster: raft messages take up to {raft_frame} bytes",
                        self.max_frame_bytes
                    ),
                ));
            }
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(ConfigError::Invalid(
                    "controllers",
                    "a node id is listed twice".into(),
                ));
            }
            // A broker not among them observes the metadata log.
            if let Some(me) = self.controllers.iter().find(|v| v.node == self.node_id) {
                let mine = me.addr == self.advertised_addr()
                    || me.addr == self.listen
                    || (self.listen.ip().is_unspecified() && me.addr.port() == self.listen.port());
                if !mine {
                    return Err(ConfigError::Invalid(
                        "controllers",
                        format!(
                            "node {}'s entry {} is not this broker's address (listen {}, advertised {})",
                            self.node_id,
                            me.addr,
                            self.listen,
                            self.advertised_addr()
                        ),
                    ));
                }
            }
        }
        if self.node_id < 0 {
            return Err(ConfigError::Invalid("node_id", self.node_id.to_string()));
        }
        if self.broker_heartbeat_interval.is_zero()
            || self.broker_heartbeat_interval >= self.broker_session_timeout
        {
            return Err(ConfigError::Invalid(
                "broker_heartbeat_interval_ms",
                format!(
                    "{} ms (above 0 and below broker_session_timeout_ms {} ms)",
                    self.broker_heartbeat_interval.as_millis(),
                    self.broker_session_timeout.as_millis()
                ),
            ));
        }
        if self.default_replication_factor == 0
            || self.default_replication_factor > borges_meta::record::MAX_REPLICAS
        {
            return Err(ConfigError::Invalid(
                "default_replication_factor",
                format!(
                    "{} (1 to {})",
                    self.default_replication_factor,
                    borges_meta::record::MAX_REPLICAS
                ),
            ));
        }
        if self.offsets_topic_replication_factor == 0
            || self.offsets_topic_replication_factor > borges_meta::record::MAX_REPLICAS
        {
            return Err(ConfigError::Invalid(
                "offsets_topic_replication_factor",
                self.offsets_topic_replication_factor.to_string(),
            ));
        }
        if self
            .min_insync_replicas
            .is_some_and(|n| n == 0 || n > borges_meta::record::MAX_REPLICAS)
        {
            return Err(ConfigError::Invalid(
                "min_insync_replicas",
                format!("{:?}", self.min_insync_replicas),
            ));
        }
        if self.default_partitions == 0 {
            return Err(ConfigError::Invalid("default_partitions", "0".into()));
        }
        self.log_defaults()
            .validate()
            .map_err(|e| ConfigError::Invalid("log", e.to_string()))
    }

    /// The flush policy a partition log runs with under this broker.
    pub fn log_flush_policy(&self) -> FlushPolicy {
        match self.flush {
            FlushMode::AcksAll => FlushPolicy::Interval(self.flush_interval),
            FlushMode::EveryBatch => FlushPolicy::EveryBatch,
            FlushMode::Never => FlushPolicy::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = BrokerConfig {
            cores: 1,
            ..BrokerConfig::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn controllers_are_parsed_and_checked() {
        let c = BrokerConfig::from_flags([
            "--cores=1",
            "--node-id=2",
            "--listen=127.0.0.2:9092",
            "--controllers=1@127.0.0.1:9092,2@127.0.0.2:9092",
            "--controllers=3@127.0.0.3:9092",
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.controllers.len(), 3);
        let any = BrokerConfig::from_flags([
            "--cores=1",
            "--node-id=1",
            "--listen=0.0.0.0:9092",
            "--controllers=1@10.0.0.1:9092",
        ])
        .unwrap();
        any.validate().unwrap();
        for (flags, what) in [
            (
                &["--node-id=1", "--controllers=1@127.0.0.1:9092,1@127.0.0.2:9092"][..],
                "twice",
            ),
            (
                &["--node-id=1", "--controllers=1@127.0.0.1:9092,2@127.0.0.1:9092"][..],
                "address is listed twice",
            ),
            (
                &[
                    "--node-id=1",
                    "--controllers=1@127.0.0.1:9092",
                    "--max-frame-bytes=1048576",
                ][..],
                "too small for a cluster",
            ),
            (
                &["--node-id=1", "--controllers=1@127.0.0.1:9093"][..],
                "not this broker's address",
            ),
            (
                &["--broker-heartbeat-interval-ms=9000"][..],
                "below broker_session_timeout_ms",
            ),
        ] {
            let mut all = vec!["--cores=1"];
            all.extend_from_slice(flags);
            let e = BrokerConfig::from_flags(all).unwrap().validate().unwrap_err();
            assert!(e.to_string().contains(what), "{flags:?}: {e}");
        }
        for bad in ["1", "x@127.0.0.1:9093", "-1@127.0.0.1:9093", "1@nowhere"] {
            let e = BrokerConfig::from_flags(["--cores=1".to_string(), format!("--controllers={bad}")]);
            assert!(e.is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn timeouts_and_request_bounds_hang_together() {
        let base = BrokerConfig {
            cores: 1,
            ..BrokerConfig::default()
        };
        // A long poll must not outlive the idle timeout.
        let idle = BrokerConfig {
            connection_idle_timeout: Duration::from_secs(10),
            fetch_max_wait: Duration::from_secs(20),
            ..base.clone()
        };
        assert!(matches!(
            idle.validate(),
            Err(ConfigError::Invalid("connection_idle_timeout_ms", _))
        ));
        for bad in [
            BrokerConfig {
                max_inflight_requests_per_connection: 0,
                ..base.clone()
            },
            BrokerConfig {
                request_read_timeout: Duration::ZERO,
                ..base.clone()
            },
            BrokerConfig {
                shard_stall_timeout: Duration::from_millis(50),
                ..base.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn budgets_must_hold_the_largest_frame() {
        let base = BrokerConfig {
            cores: 1,
            ..BrokerConfig::default()
        };
        // A frame of exactly max_frame_bytes needs 4 more permits for its prefix.
        let tight = BrokerConfig {
            max_frame_bytes: 1 << 20,
            max_inflight_bytes_per_connection: 1 << 20,
            ..base.clone()
        };
        assert!(tight.validate().is_err());
        let fits = BrokerConfig {
            max_inflight_bytes_per_connection: (1 << 20) + 4,
            ..tight.clone()
        };
        fits.validate().unwrap();
        // The shard's budget must hold one connection's.
        let shard_small = BrokerConfig {
            max_inflight_bytes_per_shard: 1 << 20,
            ..fits
        };
        assert!(shard_small.validate().is_err());
        let huge_fetch = BrokerConfig {
            fetch_max_bytes: 4 << 30,
            ..base
        };
        assert!(huge_fetch.validate().is_err());
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// `borges start`'s parser with the environment left out.
    fn no_env() -> clap::Command {
        StartArgs::command().mut_args(|a| a.env(None::<&str>))
    }

    #[test]
    fn a_file_overrides_defaults_and_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("borges.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\ndata_dirs = [\"/a\", \"/b\"]\nflush = \"never\"\n\
             retention_ms = -1\nflush_interval_ms = 250\ngroup_max_size = 7\nsegment_bytes = 65536\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = resolve_with(no_env(), &args(&["--config", path])).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.advertised_addr().port(), 9999);
        assert_eq!(c.data_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.flush, FlushMode::Never);
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert_eq!(c.groups.max_group_size, 7);
        assert_eq!(c.log_defaults().retention_ms, None);
        assert_eq!(c.log_defaults().segment_bytes_max, 65536);
        // A flag beats the file; what the flag does not name, the file keeps.
        let c = resolve_with(
            no_env(),
            &args(&["--config", path, "--flush", "every-batch", "--data-dir", "/c"]),
        )
        .unwrap();
        assert_eq!(c.flush, FlushMode::EveryBatch);
        assert_eq!(c.data_dirs, vec![PathBuf::from("/c")]);
        assert_eq!(c.listen.port(), 9999);
    }

    #[test]
    fn the_environment_sits_between_the_file_and_the_flags() {
        // Only this test reads this variable: the others leave the
        // environment out of their parsers.
        std::env::set_var("BORGES_CLEANER_MAX_BYTES_PER_SEC", "12345");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("borges.toml");
        std::fs::write(&file, "cleaner_max_bytes_per_sec = 999\n").unwrap();
        let path = file.to_str().unwrap();
        let c = StartArgs::resolve(&args(&["--config", path])).unwrap();
        assert_eq!(
            c.cleaner_max_bytes_per_sec, 12345,
            "the environment beats the file"
        );
        let c = StartArgs::resolve(&args(&["--config", path, "--cleaner-max-bytes-per-sec", "77"])).unwrap();
        assert_eq!(c.cleaner_max_bytes_per_sec, 77, "a flag beats the environment");
        std::env::remove_var("BORGES_CLEANER_MAX_BYTES_PER_SEC");
        let c = StartArgs::resolve(&args(&["--config", path])).unwrap();
        assert_eq!(c.cleaner_max_bytes_per_sec, 999);
    }

    #[test]
    fn bad_files_and_values_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("borges.toml");
        for (text, needle) in [
            ("nonsense = 1\n", "nonsense"),
            ("flush = \"sometimes\"\n", "sometimes"),
            ("listen = 5\n", "listen"),
            ("fetch_max_wait_ms = \"soon\"\n", "soon"),
            ("group_max_size = { a = 1 }\n", "group_max_size"),
            ("config = \"other.toml\"\n", "config"),
            ("not toml at all\n", "borges.toml"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = resolve_with(no_env(), &args(&["--config", file.to_str().unwrap()]))
                .expect_err(text)
                .to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let missing = resolve_with(no_env(), &args(&["--config", "/nonexistent/borges.toml"]));
        assert!(matches!(missing, Err(ConfigError::Read(..))));
        assert!(BrokerConfig::from_flags(["--cores", "many"]).is_err());
    }

    #[test]
    fn every_setting_has_a_flag_an_environment_variable_and_help() {
        let cmd = StartArgs::command();
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" {
                continue;
            }
            let long = a.get_long().unwrap_or_else(|| panic!("{id} has no flag"));
            let env = a
                .get_env()
                .unwrap_or_else(|| panic!("{id} has no environment variable"));
            assert_eq!(
                env.to_str().unwrap(),
                format!("BORGES_{}", id.to_uppercase()),
                "{id}'s environment variable"
            );
            assert_eq!(
                long.replace('-', "_").trim_end_matches('s'),
                id.trim_end_matches('s'),
                "{id}'s flag"
            );
            assert!(a.get_help().is_some(), "{id} has no help");
        }
    }

    #[test]
    fn a_larger_frame_grows_the_budgets_left_unset() {
        let c = BrokerConfig::from_flags(["--max-frame-bytes", "200000000"]).unwrap();
        assert!(c.max_inflight_bytes_per_connection >= 200_000_004);
        assert!(c.max_inflight_bytes_per_shard >= c.max_inflight_bytes_per_connection);
        c.validate()
            .map(|_| ())
            .or_else(|e| match e {
                ConfigError::Invalid("cores", _) => Ok(()),
                e => Err(e),
            })
            .unwrap();
        // A budget the operator set is theirs: too small is refused.
        let c = BrokerConfig::from_flags([
            "--max-frame-bytes",
            "200000000",
            "--max-inflight-bytes-per-connection",
            "1000000",
            "--cores",
            "1",
        ])
        .unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid("max_inflight_bytes_per_connection", _))
        ));
    }
}
