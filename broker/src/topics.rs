//! Topic metadata: names, ids, partition counts and per-topic settings.
//!
//! The truth is the committed metadata image (`borges_meta`); `Topics` is
//! the view of it that shards follow: shard 0 derives it from the image
//! after every committed change (`Topics::from_image`) and hands every
//! shard an immutable snapshot (`Arc<Topics>`), from which each opens or
//! closes the partitions it owns. The single-node broker kept it in
//! `<first data dir>/__meta/topics.json`; that file is read once, imported
//! into the metadata log and renamed `topics.json.imported`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use borges_net::batch::Compression;
use borges_net::types::TopicId;
use borges_storage::LogConfig;
use serde::{Deserialize, Serialize};

pub const META_DIR: &str = "__meta";
pub const TOPICS_FILE: &str = "topics.json";
/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A partition by topic id and index.
pub type PartKey = (TopicId, u32);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: u64,
    pub partitions: u32,
    /// Settings that differ from the broker defaults, as Kafka-style key=value.
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn topic_id(&self) -> TopicId {
        TopicId(self.id)
    }
}

/// All topics; cloned and replaced whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    pub next_id: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// The committed image these topics come from, for what Metadata
    /// reports (brokers, leaders, replicas, ISR). Empty for topics that do
    /// not come from an image (tests).
    #[serde(skip)]
    pub cluster: std::sync::Arc<Cluster>,
}

/// The cluster as a committed metadata image describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// The controller leader as shard 0 knew it when the image was taken.
    pub controller: borges_net::types::NodeId,
    /// The controller quorum's voters.
    pub voters: Vec<borges_net::types::NodeId>,
    pub image: borges_meta::image::MetadataImage,
}

impl Topics {
    pub fn by_id(&self, id: TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id.0)
    }

    pub fn path(meta_home: &Path) -> PathBuf {
        meta_home.join(META_DIR).join(TOPICS_FILE)
    }

    pub fn load(meta_home: &Path) -> Result<Topics, String> {
        let path = Self::path(meta_home);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Topics {
                next_id: 1,
                ..Topics::default()
            }),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The topics of the committed metadata image: what every shard
    /// follows.
    pub fn from_image(
        image: &borges_meta::image::MetadataImage,
        controller: borges_net::types::NodeId,
        voters: &[borges_net::types::NodeId],
    ) -> Topics {
        Topics {
            cluster: std::sync::Arc::new(Cluster {
                controller,
                voters: voters.to_vec(),
                image: image.clone(),
            }),
            next_id: image.next_topic_id().0,
            topics: image
                .topics()
                .map(|t| {
                    let meta = TopicMeta {
                        name: t.name.clone(),
                        id: t.id.0,
                        partitions: t.partitions.len() as u32,
                        configs: t.configs.clone(),
                    };
                    (t.name.clone(), meta)
                })
                .collect(),
        }
    }

    /// Whether a single-node `topics.json` is still in place (not yet
    /// imported into the metadata log).
    pub fn has_file(meta_home: &Path) -> bool {
        Self::path(meta_home).exists()
    }

    /// Renames `topics.json` once its topics are in the metadata log, so
    /// that it is never imported twice and nobody takes it for the truth.
    pub fn retire_file(meta_home: &Path) -> std::io::Result<()> {
        let path = Self::path(meta_home);
        let dir = path.parent().expect("topics file has a directory");
        std::fs::rename(&path, path.with_extension("json.imported"))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

/// The per-topic settings that Borges understands, with their defaults.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "max.message.bytes",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// Checks one topic setting; the error says what is accepted.
pub fn validate_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| -> Result<(), String> {
        match value.parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => Err(format!("{key} must be an integer >= {min}, not {value:?}")),
        }
    };
    match key {
        "retention.ms" | "retention.bytes" => int(-1),
        "delete.retention.ms" | "min.compaction.lag.ms" => int(0),
        "segment.bytes" => match value.parse::<i64>() {
            Ok(v) if (1024..=i32::MAX as i64).contains(&v) => Ok(()),
            _ => Err(format!(
                "segment.bytes must be in [1024, {}], not {value:?}",
                i32::MAX
            )),
        },
        "segment.ms" => int(1),
        "max.message.bytes" => int(1024),
        "min.insync.replicas" => match value.parse::<i64>() {
            Ok(v) if (1..=borges_meta::record::MAX_REPLICAS as i64).contains(&v) => Ok(()),
            _ => Err(format!(
                "min.insync.replicas must be in [1, {}], not {value:?}",
                borges_meta::record::MAX_REPLICAS
            )),
        },
        "cleanup.policy" => match value {
            "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
            _ => Err(format!(
                "cleanup.policy must be delete, compact or compact,delete, not {value:?}"
            )),
        },
        "compression.type" => match value {
            "producer" | "uncompressed" | "lz4" | "zstd" => Ok(()),
            _ => Err(format!(
                "compression.type must be producer, uncompressed, lz4 or zstd, not {value:?}"
            )),
        },
        _ => Err(format!(
            "unknown topic setting {key:?}; known: {}",
            TOPIC_CONFIG_KEYS.join(", ")
        )),
    }
}

/// The effective settings of a topic: its overrides over the broker's.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    pub log: LogConfig,
    pub cleanup: CleanupPolicy,
    /// `None`: keep what the producer sent.
    pub compression: Option<Compression>,
    pub max_message_bytes: usize,
    /// Compacted topics: how long tombstones survive cleaning.
    pub delete_retention_ms: i64,
    /// Compacted topics: records younger than this are never cleaned.
    pub min_compaction_lag_ms: i64,
    /// `min.insync.replicas`; `None`: a majority of the replicas.
    pub min_insync_replicas: Option<usize>,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 << 20;
/// Kafka's default: a day.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 24 * 3600 * 1000;

pub fn settings(defaults: &LogConfig, configs: &BTreeMap<String, String>) -> TopicSettings {
    let mut log = defaults.clone();
    let mut s = TopicSettings {
        log: defaults.clone(),
        cleanup: CleanupPolicy::Delete,
        compression: None,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
        min_compaction_lag_ms: 0,
        min_insync_replicas: None,
    };
    for (k, v) in configs {
        match (k.as_str(), v.parse::<i64>()) {
            ("retention.ms", Ok(ms)) => log.retention_ms = (ms >= 0).then_some(ms),
            ("retention.bytes", Ok(b)) => log.retention_bytes = (b >= 0).then_some(b as u64),
            ("segment.bytes", Ok(b)) => log.segment_bytes_max = b as u64,
            ("segment.ms", Ok(ms)) => log.segment_ms_max = Some(ms),
            ("max.message.bytes", Ok(b)) => s.max_message_bytes = b as usize,
            ("delete.retention.ms", Ok(ms)) => s.delete_retention_ms = ms,
            ("min.compaction.lag.ms", Ok(ms)) => s.min_compaction_lag_ms = ms,
            ("min.insync.replicas", Ok(n)) if n >= 1 => s.min_insync_replicas = Some(n as usize),
            ("cleanup.policy", _) => {
                s.cleanup = match v.as_str() {
                    "compact" => CleanupPolicy::Compact,
                    "compact,delete" | "delete,compact" => CleanupPolicy::CompactDelete,
                    _ => CleanupPolicy::Delete,
                }
            }
            ("compression.type", _) => {
                s.compression = match v.as_str() {
                    "uncompressed" => Some(Compression::None),
                    "lz4" => Some(Compression::Lz4),
                    "zstd" => Some(Compression::Zstd),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    if s.cleanup == CleanupPolicy::Compact {
        // Compaction alone keeps the latest value of every key forever.
        log.retention_ms = None;
        log.retention_bytes = None;
    }
    s.log = log;
    s
}

/// Every known setting of a topic with its effective value, for DescribeConfigs.
pub fn describe(defaults: &LogConfig, configs: &BTreeMap<String, String>) -> Vec<(String, String, bool)> {
    let opt = |v: Option<i64>| v.map_or("-1".to_string(), |v| v.to_string());
    let default_of = |key: &str| -> String {
        match key {
            "cleanup.policy" => "delete".into(),
            "compression.type" => "producer".into(),
            "max.message.bytes" => DEFAULT_MAX_MESSAGE_BYTES.to_string(),
            "delete.retention.ms" => DEFAULT_DELETE_RETENTION_MS.to_string(),
            "min.compaction.lag.ms" => "0".into(),
            "min.insync.replicas" => "a majority of the replicas".into(),
            "retention.bytes" => opt(defaults.retention_bytes.map(|b| b as i64)),
            "retention.ms" => opt(defaults.retention_ms),
            "segment.bytes" => defaults.segment_bytes_max.to_string(),
            "segment.ms" => opt(defaults.segment_ms_max),
            _ => String::new(),
        }
    };
    TOPIC_CONFIG_KEYS
        .iter()
        .map(|&k| match configs.get(k) {
            Some(v) => (k.to_string(), v.clone(), false),
            None => (k.to_string(), default_of(k), true),
        })
        .collect()
}

/// The shard that owns a partition. Deterministic, so every shard computes
/// the same answer with no coordination.
pub fn shard_for(topic: TopicId, partition: u32, shards: usize) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(&topic.0.to_be_bytes());
    (h.wrapping_add(partition as u64) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        for (k, v) in [
            ("retention.ms", "-1"),
            ("retention.ms", "1000"),
            ("segment.bytes", "1048576"),
            ("cleanup.policy", "compact,delete"),
            ("compression.type", "zstd"),
        ] {
            validate_config(k, v).unwrap();
        }
        for (k, v) in [
            ("retention.ms", "soon"),
            ("retention.ms", "-2"),
            ("segment.bytes", "10"),
            ("cleanup.policy", "burn"),
            ("compression.type", "gzip"),
            ("no.such.key", "1"),
        ] {
            assert!(validate_config(k, v).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn settings_apply_overrides() {
        let d = LogConfig::default();
        let mut c = BTreeMap::new();
        c.insert("retention.ms".to_string(), "-1".to_string());
        c.insert("segment.bytes".to_string(), "4096".to_string());
        c.insert("compression.type".to_string(), "lz4".to_string());
        let s = settings(&d, &c);
        assert_eq!(s.log.retention_ms, None);
        assert_eq!(s.log.segment_bytes_max, 4096);
        assert_eq!(s.compression, Some(Compression::Lz4));
        let described = describe(&d, &c);
        assert!(described.contains(&("segment.bytes".into(), "4096".into(), false)));
        assert!(described.contains(&("cleanup.policy".into(), "delete".into(), true)));
    }

    #[test]
    fn shards_spread_partitions() {
        let mut counts = [0usize; 4];
        for p in 0..400 {
            counts[shard_for(TopicId(7), p, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c == 100), "{counts:?}");
    }
}
