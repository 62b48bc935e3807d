//! Broker configuration: an optional TOML file, overridden by flags.
//! `borges start` with neither runs a single-node broker on
//! 127.0.0.1:9092 with its data in ./borges-data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use borges_storage::{FlushPolicy, LogConfig};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid setting {0}: {1}")]
    Invalid(&'static str, String),
}

/// How appended data is made durable, and what acks=all waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// fdatasync only what acks=all producers wait for (group commit), plus
    /// a background sync every `flush_interval`; acks=0/1 never wait for a
    /// disk. The default, as Redpanda does it.
    AcksAll,
    /// Every append is synced before it is acknowledged, whatever the acks.
    EveryBatch,
    /// Never sync on the produce path: acks=all waits until the bytes are in
    /// the file (safe against a process crash, not a power loss).
    Never,
}

impl std::str::FromStr for FlushMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "acks-all" => Ok(FlushMode::AcksAll),
            "every-batch" => Ok(FlushMode::EveryBatch),
            "never" => Ok(FlushMode::Never),
            _ => Err(format!("{s:?}: expected acks-all, every-batch or never")),
        }
    }
}

/// Everything a broker needs to start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub listen: SocketAddr,
    /// The address clients are told to connect to (defaults to `listen`).
    pub advertised: SocketAddr,
    pub data_dirs: Vec<PathBuf>,
    /// Shards (pinned executors), one per core from core 0.
    pub cores: usize,
    pub flush: FlushMode,
    pub flush_interval: Duration,
    /// Defaults for topics that do not set their own.
    pub log: LogConfig,
    pub default_partitions: u32,
    pub max_frame_bytes: usize,
    pub max_connections_per_shard: usize,
    pub max_inflight_bytes_per_connection: usize,
    pub max_inflight_bytes_per_shard: usize,
    /// Memory for recent batches, shared by a shard's partitions (each gets
    /// between 256 KiB and `log.tail_cache_bytes_max`).
    pub tail_cache_bytes_per_shard: usize,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval: Duration,
    /// Partitions of `__consumer_offsets`, fixed when the topic is first created.
    pub offsets_topic_partitions: u32,
    /// Consumer-group coordinator settings.
    pub groups: crate::group::GroupSettings,
    /// How often each shard's cleaner looks for compacted topics to clean.
    pub cleaner_interval: Duration,
    /// The cleaner's read+write budget per shard, bytes per second.
    pub cleaner_max_bytes_per_sec: u64,
    /// Most record bytes in one fetch response, whatever the client asks
    /// (Kafka's `fetch.max.bytes`). The first partition with data may go
    /// past it by one batch, so that a consumer always makes progress.
    pub fetch_max_bytes: usize,
    /// Longest a fetch may wait for `min_bytes` (a client's `max_wait_ms`
    /// above it is cut to it).
    pub fetch_max_wait: Duration,
    /// A response that makes no progress into the socket for this long
    /// closes its connection (a client that stopped reading).
    pub write_timeout: Duration,
    /// A connection that sends nothing for this long is closed (Kafka's
    /// `connections.max.idle.ms`).
    pub connection_idle_timeout: Duration,
    /// While a connection's responses not yet written exceed this, no more
    /// of its requests are read.
    pub max_unwritten_bytes_per_connection: usize,
    /// Largest decompressed size of one partition's records in a produce
    /// that the broker recompresses for a topic's `compression.type`.
    pub recompress_max_bytes: usize,
    /// Threads per shard for blocking work (sendfile of cold pages, file
    /// renames and removals), so that one slow disk read does not hold up
    /// the rest.
    pub blocking_threads_per_shard: usize,
    /// A request frame must arrive whole within this (plus a second per MiB
    /// of its length) from its length prefix on, since it holds its
    /// in-flight permits from then.
    pub request_read_timeout: Duration,
    /// Most requests of one connection being handled or answered at once.
    pub max_inflight_requests_per_connection: usize,
    /// A shard whose executor has not turned for this long is logged as
    /// stalled (and again when it turns), and counted.
    pub shard_stall_timeout: Duration,
}

/// Kafka's `fetch.max.bytes` default.
pub const FETCH_MAX_BYTES_DEFAULT: usize = 57_671_680;

impl Default for BrokerConfig {
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:9092".parse().expect("literal address");
        BrokerConfig {
            node_id: 0,
            listen,
            advertised: listen,
            data_dirs: vec![PathBuf::from("borges-data")],
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            flush: FlushMode::AcksAll,
            flush_interval: Duration::from_millis(1000),
            log: LogConfig {
                flush: FlushPolicy::Never,
                ..LogConfig::default()
            },
            default_partitions: 1,
            max_frame_bytes: 100 << 20,
            max_connections_per_shard: 10_000,
            max_inflight_bytes_per_connection: 128 << 20,
            max_inflight_bytes_per_shard: 1 << 30,
            tail_cache_bytes_per_shard: 256 << 20,
            retention_check_interval: Duration::from_secs(60),
            offsets_topic_partitions: 16,
            groups: crate::group::GroupSettings::default(),
            cleaner_interval: Duration::from_secs(15),
            cleaner_max_bytes_per_sec: 64 << 20,
            fetch_max_bytes: FETCH_MAX_BYTES_DEFAULT,
            fetch_max_wait: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            connection_idle_timeout: Duration::from_secs(600),
            max_unwritten_bytes_per_connection: 64 << 20,
            recompress_max_bytes: 64 << 20,
            blocking_threads_per_shard: 4,
            request_read_timeout: Duration::from_secs(30),
            max_inflight_requests_per_connection: 256,
            shard_stall_timeout: Duration::from_secs(2),
        }
    }
}

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<i32>,
    pub listen: Option<String>,
    pub advertised: Option<String>,
    pub data_dirs: Option<Vec<PathBuf>>,
    pub cores: Option<usize>,
    pub flush: Option<String>,
    pub flush_interval_ms: Option<u64>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<i64>,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    pub default_partitions: Option<u32>,
    pub max_frame_bytes: Option<usize>,
    pub max_connections_per_shard: Option<usize>,
    pub max_inflight_bytes_per_connection: Option<usize>,
    pub max_inflight_bytes_per_shard: Option<usize>,
    pub tail_cache_bytes_per_shard: Option<usize>,
    pub retention_check_interval_ms: Option<u64>,
    pub offsets_topic_partitions: Option<u32>,
    pub group_min_session_timeout_ms: Option<u64>,
    pub group_max_session_timeout_ms: Option<u64>,
    pub group_initial_rebalance_delay_ms: Option<u64>,
    pub group_max_size: Option<usize>,
    pub cleaner_interval_ms: Option<u64>,
    pub cleaner_max_bytes_per_sec: Option<u64>,
    pub fetch_max_bytes: Option<usize>,
    pub fetch_max_wait_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub connection_idle_timeout_ms: Option<u64>,
    pub max_unwritten_bytes_per_connection: Option<usize>,
    pub recompress_max_bytes: Option<usize>,
    pub blocking_threads_per_shard: Option<usize>,
    pub shard_stall_timeout_ms: Option<u64>,
    pub request_read_timeout_ms: Option<u64>,
    pub max_inflight_requests_per_connection: Option<usize>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e.to_string()))
    }
}

fn addr(what: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|e| ConfigError::Invalid(what, format!("{s:?}: {e}")))
}

impl BrokerConfig {
    /// Applies a config file over the defaults.
    pub fn apply_file(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        if let Some(v) = f.node_id {
            self.node_id = v;
        }
        if let Some(v) = &f.listen {
            self.listen = addr("listen", v)?;
            self.advertised = self.listen;
        }
        if let Some(v) = &f.advertised {
            self.advertised = addr("advertised", v)?;
        }
        if let Some(v) = f.data_dirs {
            self.data_dirs = v;
        }
        if let Some(v) = f.cores {
            self.cores = v;
        }
        if let Some(v) = &f.flush {
            self.flush = v.parse().map_err(|e| ConfigError::Invalid("flush", e))?;
        }
        if let Some(v) = f.flush_interval_ms {
            self.flush_interval = Duration::from_millis(v);
        }
        if let Some(v) = f.segment_bytes {
            self.log.segment_bytes_max = v;
        }
        if let Some(v) = f.segment_ms {
            self.log.segment_ms_max = Some(v);
        }
        if let Some(v) = f.retention_ms {
            self.log.retention_ms = (v >= 0).then_some(v);
        }
        if let Some(v) = f.retention_bytes {
            self.log.retention_bytes = Some(v);
        }
        if let Some(v) = f.default_partitions {
            self.default_partitions = v;
        }
        if let Some(v) = f.max_frame_bytes {
            self.max_frame_bytes = v;
        }
        if let Some(v) = f.max_connections_per_shard {
            self.max_connections_per_shard = v;
        }
        if let Some(v) = f.max_inflight_bytes_per_connection {
            self.max_inflight_bytes_per_connection = v;
        }
        if let Some(v) = f.max_inflight_bytes_per_shard {
            self.max_inflight_bytes_per_shard = v;
        }
        if let Some(v) = f.tail_cache_bytes_per_shard {
            self.tail_cache_bytes_per_shard = v;
        }
        if let Some(v) = f.retention_check_interval_ms {
            self.retention_check_interval = Duration::from_millis(v);
        }
        if let Some(v) = f.offsets_topic_partitions {
            self.offsets_topic_partitions = v;
        }
        if let Some(v) = f.group_min_session_timeout_ms {
            self.groups.min_session_timeout = Duration::from_millis(v);
        }
        if let Some(v) = f.group_max_session_timeout_ms {
            self.groups.max_session_timeout = Duration::from_millis(v);
        }
        if let Some(v) = f.group_initial_rebalance_delay_ms {
            self.groups.initial_rebalance_delay = Duration::from_millis(v);
        }
        if let Some(v) = f.group_max_size {
            self.groups.max_group_size = v;
        }
        if let Some(v) = f.cleaner_interval_ms {
            self.cleaner_interval = Duration::from_millis(v);
        }
        if let Some(v) = f.cleaner_max_bytes_per_sec {
            self.cleaner_max_bytes_per_sec = v;
        }
        if let Some(v) = f.fetch_max_bytes {
            self.fetch_max_bytes = v;
        }
        if let Some(v) = f.fetch_max_wait_ms {
            self.fetch_max_wait = Duration::from_millis(v);
        }
        if let Some(v) = f.write_timeout_ms {
            self.write_timeout = Duration::from_millis(v);
        }
        if let Some(v) = f.connection_idle_timeout_ms {
            self.connection_idle_timeout = Duration::from_millis(v);
        }
        if let Some(v) = f.max_unwritten_bytes_per_connection {
            self.max_unwritten_bytes_per_connection = v;
        }
        if let Some(v) = f.recompress_max_bytes {
            self.recompress_max_bytes = v;
        }
        if let Some(v) = f.blocking_threads_per_shard {
            self.blocking_threads_per_shard = v;
        }
        if let Some(v) = f.shard_stall_timeout_ms {
            self.shard_stall_timeout = Duration::from_millis(v);
        }
        if let Some(v) = f.request_read_timeout_ms {
            self.request_read_timeout = Duration::from_millis(v);
        }
        if let Some(v) = f.max_inflight_requests_per_connection {
            self.max_inflight_requests_per_connection = v;
        }
        Ok(())
    }

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
        if self.default_partitions == 0 {
            return Err(ConfigError::Invalid("default_partitions", "0".into()));
        }
        self.log
            .validate()
            .map_err(|e| ConfigError::Invalid("log", e.to_string()))
    }

    /// The storage settings a partition log runs with under this broker.
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

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let mut c = BrokerConfig::default();
        let f: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9999\"\ndata_dirs = [\"/a\", \"/b\"]\nflush = \"never\"\nretention_ms = -1\n",
        )
        .unwrap();
        c.apply_file(f).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.advertised.port(), 9999);
        assert_eq!(c.data_dirs.len(), 2);
        assert_eq!(c.flush, FlushMode::Never);
        assert_eq!(c.log.retention_ms, None);
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
        let bad: FileConfig = toml::from_str("flush = \"sometimes\"").unwrap();
        assert!(c.apply_file(bad).is_err());
    }
}
