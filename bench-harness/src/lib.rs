//! Helpers shared by the Borges benchmarks: deterministic record batches,
//! scratch directories on a real disk, latency summaries and medians.
//!
//! Nothing here is timed; the binaries build their inputs with these
//! helpers before a measurement starts, so that the timed region holds only
//! the work under test.
//!
//! Layout:
//! - `lib.rs` (this file): [`build_batches`], [`ScratchDir`],
//!   [`LatencySummary`], [`median`], [`filesystem_name`],
//!   [`mem_available_bytes`].
//! - `net_baseline.rs`: raw loopback TCP throughput between pinned threads.
//! - `broker_proc.rs`: a release broker process pinned to one core, and a
//!   pinned tokio runtime for the load generator.
//! - `cluster.rs`: three brokers on 127.0.0.1-3, every one a voter.
//! - `load.rs`: a producer's timed run (records/s, delivery latency).
//! - `bin/produce-bench.rs`, `bin/consume-bench.rs`: the broker through the
//!   native client, against raw loopback TCP.
//! - `bin/storage-bench.rs`: the storage engine's append throughput and
//!   latency against raw O_DIRECT writes to the same disk.
//! - `bin/cluster-bench.rs`, `bin/replication-bench.rs`: three brokers:
//!   the controller, and replicated produce and failover.

pub mod broker_proc;
pub mod cluster;
pub mod load;
pub mod net_baseline;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use borges_net::batch::{Compression, RecordBatchBuilder};
use bytes::BytesMut;
use hdrhistogram::Histogram;

/// One encoded record batch and what it holds.
#[derive(Debug, Clone)]
pub struct BuiltBatch {
    pub bytes: BytesMut,
    pub records: u64,
}

/// A small, fast, deterministic generator (xorshift64*): the same seed
/// always gives the same record values, so runs are comparable.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // A zero state would stay zero forever.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `out` with pseudo-random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Builds `distinct` uncompressed v2 batches of key-less records with
/// `record_bytes`-byte pseudo-random values, each batch filled with as many
/// records as fit in `batch_bytes` (header included). Deterministic.
///
/// # Panics
/// If `record_bytes` is so large that not one record fits in `batch_bytes`,
/// or the batch exceeds the protocol's size cap.
pub fn build_batches(record_bytes: usize, batch_bytes: usize, distinct: usize) -> Vec<BuiltBatch> {
    // A fixed, plausible CreateTime base, so the bytes do not depend on the
    // day the benchmark runs.
    const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;
    let mut value = vec![0u8; record_bytes];
    (0..distinct)
        .map(|i| {
            let mut rng = XorShift::new(i as u64 + 1);
            let mut builder = RecordBatchBuilder::with_capacity(Compression::None, batch_bytes);
            // Upper bound of one record's encoding: the value, a length
            // prefix, and at most a few bytes each of the varints around it.
            let record_max = record_bytes + 32;
            while builder.estimated_size() + record_max <= batch_bytes {
                rng.fill(&mut value);
                // A few records per millisecond, as a busy producer makes them.
                let ts = BASE_TIMESTAMP_MS + builder.len() as i64 / 8;
                builder.push(ts, None, Some(&value), &[]);
            }
            assert!(
                !builder.is_empty(),
                "a {record_bytes}-byte record does not fit in a {batch_bytes}-byte batch"
            );
            let records = builder.len() as u64;
            let bytes = builder.build().expect("benchmark batch within protocol limits");
            BuiltBatch { bytes, records }
        })
        .collect()
}

/// A directory created for one benchmark invocation, removed by
/// [`ScratchDir::finish`] unless it is to be kept.
#[derive(Debug)]
pub struct ScratchDir {
    pub path: PathBuf,
    /// Whether we created the directory (and so may delete it).
    created: bool,
}

impl ScratchDir {
    /// Uses `dir` when given (created if missing), else a fresh
    /// `./target/bench-data/<name>-<pid>-<time>` under the current directory.
    pub fn new(dir: Option<&Path>, name: &str) -> io::Result<ScratchDir> {
        let (path, created) = match dir {
            Some(d) => (d.to_path_buf(), !d.exists()),
            None => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                let base = std::env::current_dir()?.join("target").join("bench-data");
                (base.join(format!("{name}-{}-{stamp}", std::process::id())), true)
            }
        };
        std::fs::create_dir_all(&path)?;
        // Fail early, with the path in the message, if we cannot write here.
        let probe = path.join(".write-probe");
        std::fs::write(&probe, b"probe")?;
        std::fs::remove_file(&probe)?;
        Ok(ScratchDir { path, created })
    }

    /// A fresh, not yet existing path inside the directory.
    pub fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Removes everything the benchmark wrote here, and the directory itself
    /// if the benchmark created it.
    pub fn finish(self, keep: bool) -> io::Result<()> {
        if keep {
            return Ok(());
        }
        if self.created {
            std::fs::remove_dir_all(&self.path)
        } else {
            Ok(())
        }
    }
}

/// Removes a file or a directory tree if it exists.
pub fn remove_path(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The filesystem `path` lives on, by its statfs magic number (`ext4`,
/// `xfs`, `tmpfs`, ... or the number in hex).
pub fn filesystem_name(path: &Path) -> io::Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a valid,
    // writable statfs that the call fills in.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
    let name = match st.f_type as i64 {
        0xEF53 => "ext4".to_string(),
        0x5846_5342 => "xfs".to_string(),
        0x9123_683E => "btrfs".to_string(),
        0x0102_1994 => "tmpfs".to_string(),
        0x794C_7630 => "overlayfs".to_string(),
        0x2FC1_2FC1 => "zfs".to_string(),
        other => format!("0x{other:x}"),
    };
    Ok(name)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The usual percentiles of a latency histogram recorded in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencySummary {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        LatencySummary {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// A histogram for latencies in microseconds, 1 µs to one hour, with three
/// significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub const MIB: f64 = (1u64 << 20) as f64;

#[cfg(test)]
mod tests {
    use super::*;
    use borges_net::batch::validate_batch_deep;

    #[test]
    fn batches_are_valid_deterministic_and_near_the_target_size() {
        let a = build_batches(100, 1 << 20, 2);
        let b = build_batches(100, 1 << 20, 2);
        assert_eq!(a[0].bytes, b[0].bytes);
        assert_ne!(a[0].bytes, a[1].bytes);
        for batch in &a {
            let h = validate_batch_deep(&batch.bytes).expect("valid batch");
            assert_eq!(h.records_count as u64, batch.records);
            assert!(batch.bytes.len() <= 1 << 20);
            assert!(batch.bytes.len() > (1 << 20) - 256);
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
