//! Placement of partitions over several data directories (one per disk,
//! JBOD). A partition lives in `<data dir>/<topic>-<partition>/`; a new one
//! goes to the directory that holds the fewest partitions, and an existing
//! one is found wherever it is, so placement is stable across restarts
//! without any extra metadata.
//!
//! These are administrative operations (create, open, list); they use
//! blocking directory calls and never run on the append or read path.

use std::path::{Path, PathBuf};

use borges_net::types::PartitionId;

use crate::error::{Result, StorageError};
use crate::fsutil::sync_dir_blocking;
use crate::seam::{self, Op};

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidTopicName(name.to_string()))
    }
}

/// `orders-3` for partition 3 of topic `orders`.
pub fn partition_dir_name(topic: &str, partition: PartitionId) -> String {
    format!("{topic}-{}", partition.0)
}

/// Splits a partition directory name at its last `-`.
pub fn parse_partition_dir_name(name: &str) -> Option<(String, PartitionId)> {
    let (topic, p) = name.rsplit_once('-')?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
        return None;
    }
    validate_topic_name(topic).ok()?;
    Some((topic.to_string(), PartitionId(p.parse().ok()?)))
}

/// A partition found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPartition {
    pub topic: String,
    pub partition: PartitionId,
    pub path: PathBuf,
}

/// The data directories of a broker.
#[derive(Debug, Clone)]
pub struct DataDirs {
    dirs: Vec<PathBuf>,
}

impl DataDirs {
    /// Uses (and creates) these directories.
    pub fn new(dirs: Vec<PathBuf>) -> Result<DataDirs> {
        if dirs.is_empty() {
            return Err(StorageError::InvalidConfig(
                "at least one data directory is needed".into(),
            ));
        }
        let mut absolute = Vec::with_capacity(dirs.len());
        for d in &dirs {
            let d = std::path::absolute(d).map_err(|e| StorageError::io("resolve directory", d, e))?;
            create_dir_durably(&d)?;
            remove_deleted_leftovers(&d)?;
            absolute.push(d);
        }
        Ok(DataDirs { dirs: absolute })
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every partition in every data directory.
    pub fn list(&self) -> Result<Vec<PlacedPartition>> {
        let mut out = Vec::new();
        for d in &self.dirs {
            out.extend(Self::list_dir(d)?);
        }
        out.sort_by(|a, b| (&a.topic, a.partition, &a.path).cmp(&(&b.topic, b.partition, &b.path)));
        Ok(out)
    }

    fn list_dir(dir: &Path) -> Result<Vec<PlacedPartition>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("read directory", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("read directory", dir, e))?;
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = entry.file_name();
            if let Some((topic, partition)) = name.to_str().and_then(parse_partition_dir_name) {
                out.push(PlacedPartition {
                    topic,
                    partition,
                    path: entry.path(),
                });
            }
        }
        Ok(out)
    }

    /// Where the partition is, if it exists; an error if it exists twice.
    pub fn locate(&self, topic: &str, partition: PartitionId) -> Result<Option<PathBuf>> {
        validate_topic_name(topic)?;
        let name = partition_dir_name(topic, partition);
        let hits: Vec<PathBuf> = self
            .dirs
            .iter()
            .map(|d| d.join(&name))
            .filter(|p| p.is_dir())
            .collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(hits.into_iter().next()),
            _ => Err(StorageError::DuplicatePartition(name, hits)),
        }
    }

    /// The partition's directory: where it already is, or else a new one in
    /// the data directory with the fewest partitions (the first on ties).
    /// Either way it is durable in its data directory when this returns: one
    /// found may exist only un-synced (a crash after its `mkdir`, before the
    /// fsync of its parent).
    pub fn place(&self, topic: &str, partition: PartitionId) -> Result<PathBuf> {
        if let Some(p) = self.locate(topic, partition)? {
            create_dir_durably(&p)?;
            return Ok(p);
        }
        let mut best: Option<(usize, &PathBuf)> = None;
        for d in &self.dirs {
            let n = Self::list_dir(d)?.len();
            if best.is_none_or(|(m, _)| n < m) {
                best = Some((n, d));
            }
        }
        let (_, dir) = best.expect("at least one data directory");
        let path = dir.join(partition_dir_name(topic, partition));
        create_dir_durably(&path)?;
        Ok(path)
    }

    /// Deletes a partition's directory and everything in it. The directory
    /// is first renamed to `<name>.deleted` (never a partition's name) and
    /// that rename made durable, so a crash during the removal never leaves
    /// a partial partition to be opened again; leftovers are removed when
    /// the data directories are next opened. The removal is durable too
    /// (the data directory is synced) when this returns.
    pub fn remove(&self, topic: &str, partition: PartitionId) -> Result<bool> {
        let Some(p) = self.locate(topic, partition)? else {
            return Ok(false);
        };
        let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(DELETED_SUFFIX);
        let doomed = parent.join(name);
        if doomed.exists() {
            remove_dir_durably(&doomed)?;
        }
        seam::rename(&p, &doomed).map_err(|e| StorageError::io("rename", &p, e))?;
        std::fs::rename(&p, &doomed).map_err(|e| StorageError::io("rename", &p, e))?;
        sync_dir_blocking(&parent)?;
        remove_dir_durably(&doomed)?;
        Ok(true)
    }
}

/// The suffix of a partition directory being removed.
const DELETED_SUFFIX: &str = ".deleted";

/// Creates `path` (and missing parents), each new directory made durable
/// in its parent. One that exists is synced into its parent too: it may
/// exist only in the page cache (a crash after its `mkdir`, before the
/// fsync of its parent, is followed by a restart that finds it).
pub(crate) fn create_dir_durably(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    if !path.is_dir() {
        if !parent.is_dir() {
            create_dir_durably(parent)?;
        }
        seam::step(Op::CreateDir, path, 0, 0).map_err(|e| StorageError::io("create directory", path, e))?;
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(StorageError::io("create directory", path, e)),
        }
    }
    sync_dir_blocking(parent)
}

/// Removes a directory tree and makes the removal durable in its parent.
fn remove_dir_durably(path: &Path) -> Result<()> {
    seam::step(Op::RemoveDir, path, 0, 0).map_err(|e| StorageError::io("remove directory", path, e))?;
    std::fs::remove_dir_all(path).map_err(|e| StorageError::io("remove directory", path, e))?;
    sync_dir_blocking(path.parent().unwrap_or(Path::new("/")))
}

/// Finishes removals a crash interrupted.
fn remove_deleted_leftovers(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("read directory", dir, e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && entry.file_name().to_string_lossy().ends_with(DELETED_SUFFIX) {
            tracing::info!(path = %entry.path().display(), "finishing the removal of a partition directory");
            remove_dir_durably(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders", "my.topic_v2-x", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250), "../etc"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_dir_names_round_trip() {
        let n = partition_dir_name("my-topic", PartitionId(12));
        assert_eq!(n, "my-topic-12");
        assert_eq!(
            parse_partition_dir_name(&n),
            Some(("my-topic".to_string(), PartitionId(12)))
        );
        assert_eq!(parse_partition_dir_name("topic-"), None);
        assert_eq!(parse_partition_dir_name("topic-01"), None);
        assert_eq!(parse_partition_dir_name("nodash"), None);
    }

    #[test]
    fn placement_balances_and_is_stable() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("disk{i}"))).collect();
        let dd = DataDirs::new(dirs.clone()).unwrap();
        let mut placed = Vec::new();
        for p in 0..6 {
            placed.push(dd.place("t", PartitionId(p)).unwrap());
        }
        for d in &dirs {
            assert_eq!(placed.iter().filter(|p| p.starts_with(d)).count(), 2);
        }
        // A new instance over the same directories finds every partition where it was.
        let again = DataDirs::new(dirs.clone()).unwrap();
        for p in 0..6 {
            assert_eq!(again.place("t", PartitionId(p)).unwrap(), placed[p as usize]);
        }
        assert_eq!(again.list().unwrap().len(), 6);
        // A partition present twice is an error, not a silent pick.
        std::fs::create_dir_all(dirs[2].join("t-0")).unwrap();
        std::fs::create_dir_all(dirs[1].join("t-0")).unwrap();
        assert!(matches!(
            again.locate("t", PartitionId(0)),
            Err(StorageError::DuplicatePartition(..))
        ));
        assert!(again.place("../x", PartitionId(0)).is_err());
    }
}
