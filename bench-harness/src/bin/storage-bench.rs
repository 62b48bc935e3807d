//! `storage-bench`: append throughput and latency of one Borges partition
//! log, against raw O_DIRECT writes to the same disk in the same run.
//!
//! Measurements, repeated `--runs` times in interleaved rounds (each on a
//! fresh log directory or file) and reported as medians:
//! - raw QD4 / raw QD8: sequential 1 MiB O_DIRECT writes of the same total
//!   as run A, 4 (the log's default `writes_in_flight_max`) or 8 in flight,
//!   then one fdatasync; the better of the two is the device's capability.
//! - A, no fsync: `FlushPolicy::Never`, every batch appended in one task,
//!   timed from the first append until a final `Log::sync` has returned.
//! - raw fsync QD1: 1 MiB O_DIRECT write + fdatasync, one after another.
//! - B, fsync per batch: `FlushPolicy::EveryBatch`, same timing as A.
//!
//! Batches are built before the clock starts; the only copies inside the
//! timed region are the log's own (into its write buffers). The last line of
//! stdout is one JSON object with the headline figures.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use borges_bench::{
    build_batches, filesystem_name, latency_histogram, median, mem_available_bytes, remove_path, BuiltBatch,
    LatencySummary, ScratchDir, XorShift, MIB,
};
use borges_net::types::LeaderEpoch;
use borges_storage::{FlushPolicy, Log, LogConfig, SystemClock};
use bytes::BytesMut;
use clap::Parser;
use glommio::io::{DmaBuffer, DmaFile};
use glommio::{GlommioError, LocalExecutorBuilder, Placement};

/// Storage-engine append benchmark against a raw O_DIRECT baseline.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// CPU core the benchmark's glommio executor is pinned to.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Override LogConfig::preallocate_bytes (MiB fallocated ahead of the data).
    #[arg(long)]
    preallocate_mb: Option<u64>,
    /// Override LogConfig::writes_in_flight_max.
    #[arg(long)]
    writes_in_flight: Option<usize>,
    /// The executor's preempt timer in microseconds (default: what a broker
    /// shard uses, borges_storage::SHARD_PREEMPT_TIMER).
    #[arg(long)]
    preempt_us: Option<u64>,
    /// Data directory (must be on a real disk, not tmpfs); default: a fresh
    /// directory under ./target/bench-data/.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the logs and files written instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// Bytes of each record's value (records have no key and no headers).
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Target size of each record batch, header included.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// MiB appended by the no-fsync run (and written by the raw baselines).
    #[arg(long, default_value_t = 2048)]
    total_mb: u64,
    /// MiB appended by the fsync-per-batch run (and its raw baseline).
    #[arg(long, default_value_t = 512)]
    fsync_total_mb: u64,
    /// Repetitions of every measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Distinct batches built; appends cycle through copies of them.
    #[arg(long, default_value_t = 8)]
    distinct_batches: usize,
    /// CI smoke run: 64 MiB, 16 MiB with fsync, one run.
    #[arg(long)]
    quick: bool,
}

/// Size of each raw O_DIRECT write: the log's own write-buffer size.
fn raw_write_bytes() -> usize {
    LogConfig::default().write_buffer_bytes
}

/// One timed pass of a log.
#[derive(Debug, Clone, Copy)]
struct LogRun {
    secs: f64,
    bytes: u64,
    records: u64,
    latency: LatencySummary,
    /// How long the final `Log::sync` took (included in `secs`).
    final_sync_us: u64,
    segments: usize,
    /// Minor page faults of the benchmark thread inside the timed region.
    faults: u64,
}

impl LogRun {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.secs
    }
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// One timed pass of raw O_DIRECT writes.
#[derive(Debug, Clone, Copy)]
struct RawRun {
    secs: f64,
    bytes: u64,
    /// Per write (QD1 with fdatasync only), write + fdatasync.
    latency: Option<LatencySummary>,
    faults: u64,
}

impl RawRun {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.secs
    }
}

/// Every measurement of one interleaved round.
#[derive(Debug, Clone, Copy)]
struct Round {
    raw_qd4: RawRun,
    raw_qd8: RawRun,
    log_a: LogRun,
    raw_fsync: RawRun,
    log_b: LogRun,
}

/// The plan, settled before the executor starts.
#[derive(Debug, Clone)]
struct Plan {
    args: Args,
    data_dir: PathBuf,
    total_bytes_target: u64,
    fsync_total_bytes_target: u64,
    /// Whether appends get buffers copied before the clock starts (else the
    /// copy of each batch happens inside the timed loop, for lack of memory).
    prebuild: bool,
    fsync_qd: usize,
    raw_qds: [usize; 2],
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.total_mb = 64;
        args.fsync_total_mb = 16;
        args.runs = 1;
    }
    if args.runs == 0 || args.total_mb == 0 || args.fsync_total_mb == 0 || args.distinct_batches == 0 {
        eprintln!(
            "storage-bench: --runs, --total-mb, --fsync-total-mb and --distinct-batches must be positive"
        );
        return ExitCode::from(2);
    }

    let scratch = match ScratchDir::new(args.dir.as_deref(), "storage-bench") {
        Ok(s) => s,
        Err(e) => {
            let shown = args
                .dir
                .as_ref()
                .map_or_else(|| "./target/bench-data/".to_string(), |d| d.display().to_string());
            eprintln!("storage-bench: cannot create or write the data directory {shown}: {e}");
            eprintln!("storage-bench: pass --dir with a writable directory on a real disk");
            return ExitCode::from(2);
        }
    };
    let fs = filesystem_name(&scratch.path).unwrap_or_else(|e| format!("unknown ({e})"));
    if fs == "tmpfs" {
        eprintln!(
            "storage-bench: {} is on tmpfs; the figures would be memory speed, not disk. \
             Pass --dir with a directory on a real disk.",
            scratch.path.display()
        );
        let _ = scratch.finish(args.keep);
        return ExitCode::from(2);
    }

    let total_bytes_target = args.total_mb << 20;
    let fsync_total_bytes_target = args.fsync_total_mb << 20;
    // The pool of pre-copied buffers of run A must fit comfortably in memory.
    let available = mem_available_bytes().unwrap_or(u64::MAX);
    let prebuild = total_bytes_target <= available / 2;
    let defaults = LogConfig::default();
    let plan = Plan {
        args: args.clone(),
        data_dir: scratch.path.clone(),
        total_bytes_target,
        fsync_total_bytes_target,
        prebuild,
        fsync_qd: 1,
        raw_qds: [defaults.writes_in_flight_max, 8],
    };

    let (memlock_soft, memlock_hard) = memlock_limit();
    println!("storage-bench");
    println!("  data dir        {} ({fs})", plan.data_dir.display());
    println!("  core            {} (glommio Placement::Fixed)", args.core);
    println!(
        "  records         {} B values, no keys; batches of about {} B, uncompressed",
        args.record_bytes, args.batch_bytes
    );
    println!(
        "  totals          {} MiB no-fsync, {} MiB fsync-per-batch; {} run(s), medians reported",
        args.total_mb, args.fsync_total_mb, args.runs
    );
    println!(
        "  log config      segment_bytes_max 1 GiB, write_buffer_bytes {}, writes_in_flight_max {}",
        defaults.write_buffer_bytes, defaults.writes_in_flight_max
    );
    println!(
        "  input buffers   {}",
        if prebuild {
            "every append's buffer copied before the clock starts"
        } else {
            "NOT ENOUGH MEMORY to pre-copy: each batch is copied inside the timed loop (memcpy counted)"
        }
    );
    println!("  memlock limit   soft {memlock_soft}, hard {memlock_hard}");
    println!("  throughput unit MiB/s (2^20 bytes per second)");

    let core = args.core;
    let preempt = args
        .preempt_us
        .map(std::time::Duration::from_micros)
        .unwrap_or(borges_storage::SHARD_PREEMPT_TIMER);
    let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
        .name("storage-bench")
        .preempt_timer(preempt)
        .spawn(move || async move { run_all(plan).await });
    let result = match handle {
        Ok(h) => h.join(),
        Err(e) => Err(e),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("storage-bench: the glommio executor on core {core} failed: {e}");
            if let GlommioError::ReactorError(_) = e {
                eprintln!(
                    "storage-bench: io_uring needs locked memory: the memlock limit is soft {memlock_soft}, \
                     hard {memlock_hard}; raise it (e.g. `ulimit -l 1048576`, or memlock in \
                     /etc/security/limits.conf) and try again"
                );
            } else {
                eprintln!(
                    "storage-bench: check that core {core} exists (--core) and that io_uring is allowed"
                );
            }
            let _ = scratch.finish(args.keep);
            return ExitCode::from(1);
        }
    };

    if let Err(e) = scratch.finish(args.keep) {
        eprintln!("storage-bench: could not remove the data directory: {e}");
    }
    println!("{report}");
    ExitCode::SUCCESS
}

fn memlock_limit() -> (String, String) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return ("unknown".into(), "unknown".into());
    }
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    (show(lim.rlim_cur), show(lim.rlim_max))
}

/// Runs every round on the pinned executor; returns the final JSON line.
async fn run_all(plan: Plan) -> String {
    let args = &plan.args;
    let distinct = build_batches(args.record_bytes, args.batch_bytes, args.distinct_batches);
    let batch_len = distinct[0].bytes.len() as u64;
    let records_per_batch = distinct[0].records;
    let count_a = plan.total_bytes_target.div_ceil(batch_len).max(1) as usize;
    let count_b = plan.fsync_total_bytes_target.div_ceil(batch_len).max(1) as usize;
    let bytes_a: u64 = (0..count_a)
        .map(|i| distinct[i % distinct.len()].bytes.len() as u64)
        .sum();
    let raw_bytes = raw_write_bytes() as u64;
    let raw_total = bytes_a.div_ceil(raw_bytes) * raw_bytes;
    let bytes_b: u64 = (0..count_b)
        .map(|i| distinct[i % distinct.len()].bytes.len() as u64)
        .sum();
    let raw_fsync_total = bytes_b.div_ceil(raw_bytes) * raw_bytes;
    println!(
        "  batches         {} B each ({} records); run A {} batches = {} B; run B {} batches = {} B",
        batch_len, records_per_batch, count_a, bytes_a, count_b, bytes_b
    );
    println!(
        "  raw baselines   {} x {} B writes ({} B), QD {} and {}; fsync baseline {} writes, QD{} + fdatasync each",
        raw_total / raw_bytes,
        raw_bytes,
        raw_total,
        plan.raw_qds[0],
        plan.raw_qds[1],
        raw_fsync_total / raw_bytes,
        plan.fsync_qd,
    );

    // Warm the device and the filesystem up once, untimed, so that the
    // first measurement of round 1 is not the only one to pay for it.
    let warm = plan.data_dir.join("warmup.dat");
    raw_sequential(&warm, raw_total.min(256 << 20), plan.raw_qds[0]).await;
    remove_path(&warm).expect("remove the warm-up file");

    println!();
    println!(
        "{:<4} {:<24} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "run", "measurement", "MiB/s", "records/s", "p50_us", "p99_us", "p999_us", "max_us", "secs", "faults"
    );
    let mut rounds = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let keep = args.keep;
        let dir = |name: &str| plan.data_dir.join(format!("run{run}-{name}"));

        let path = dir("raw-qd4.dat");
        let raw_qd4 = raw_sequential(&path, raw_total, plan.raw_qds[0]).await;
        print_raw(run, &format!("raw O_DIRECT QD{}", plan.raw_qds[0]), &raw_qd4);
        cleanup(&path, keep);

        let path = dir("raw-qd8.dat");
        let raw_qd8 = raw_sequential(&path, raw_total, plan.raw_qds[1]).await;
        print_raw(run, &format!("raw O_DIRECT QD{}", plan.raw_qds[1]), &raw_qd8);
        cleanup(&path, keep);

        let path = dir("log-a");
        let log_a = log_run(
            &path,
            FlushPolicy::Never,
            &distinct,
            count_a,
            plan.prebuild,
            &plan.args,
        )
        .await;
        print_log(run, "A log, no fsync", &log_a);
        cleanup(&path, keep);

        let path = dir("raw-fsync.dat");
        let raw_fsync = raw_fsync_each(&path, raw_fsync_total).await;
        print_raw(run, "raw O_DIRECT+fsync QD1", &raw_fsync);
        cleanup(&path, keep);

        let path = dir("log-b");
        let log_b = log_run(
            &path,
            FlushPolicy::EveryBatch,
            &distinct,
            count_b,
            plan.prebuild,
            &plan.args,
        )
        .await;
        print_log(run, "B log, fsync per batch", &log_b);
        cleanup(&path, keep);

        rounds.push(Round {
            raw_qd4,
            raw_qd8,
            log_a,
            raw_fsync,
            log_b,
        });
    }

    summarize(&plan, &rounds, bytes_a, records_per_batch)
}

fn cleanup(path: &Path, keep: bool) {
    if !keep {
        if let Err(e) = remove_path(path) {
            eprintln!("storage-bench: could not remove {}: {e}", path.display());
        }
    }
}

fn print_raw(run: usize, name: &str, r: &RawRun) {
    let lat = r.latency;
    let cell = |f: fn(&LatencySummary) -> u64| lat.as_ref().map_or("-".to_string(), |l| f(l).to_string());
    println!(
        "{:<4} {:<24} {:>9.1} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8.3} {:>8}",
        run,
        name,
        r.mib_per_s(),
        "-",
        cell(|l| l.p50_us),
        cell(|l| l.p99_us),
        cell(|l| l.p999_us),
        cell(|l| l.max_us),
        r.secs,
        r.faults
    );
}

fn print_log(run: usize, name: &str, r: &LogRun) {
    println!(
        "{:<4} {:<24} {:>9.1} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>8.3} {:>8}   (final sync {} us, {} segment(s))",
        run,
        name,
        r.mib_per_s(),
        r.records_per_s(),
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.latency.max_us,
        r.secs,
        r.faults,
        r.final_sync_us,
        r.segments
    );
}

/// Appends `count` batches (copies of `distinct`, in turn) to a fresh log in
/// `dir` under `flush`, timing from the first append until a final sync.
async fn log_run(
    dir: &Path,
    flush: FlushPolicy,
    distinct: &[BuiltBatch],
    count: usize,
    prebuild: bool,
    tuning: &Args,
) -> LogRun {
    let mut config = LogConfig {
        flush,
        segment_bytes_max: 1 << 30,
        ..Default::default()
    };
    if let Some(mb) = tuning.preallocate_mb {
        config.preallocate_bytes = mb << 20;
    }
    if let Some(n) = tuning.writes_in_flight {
        config.writes_in_flight_max = n;
    }
    let log = Log::open(dir, config, Rc::new(SystemClock))
        .await
        .unwrap_or_else(|e| panic!("open a log in {}: {e}", dir.display()));
    let pick = |i: usize| &distinct[i % distinct.len()];
    let records: u64 = (0..count).map(|i| pick(i).records).sum();
    let bytes: u64 = (0..count).map(|i| pick(i).bytes.len() as u64).sum();
    // The log rewrites each batch's base offset and epoch in place, so every
    // append needs its own buffer; copy them all before the clock starts.
    let feed: Box<dyn Iterator<Item = BytesMut> + '_> = if prebuild {
        let pool: Vec<BytesMut> = (0..count).map(|i| BytesMut::from(&pick(i).bytes[..])).collect();
        Box::new(pool.into_iter())
    } else {
        Box::new((0..count).map(move |i| BytesMut::from(&pick(i).bytes[..])))
    };
    let epoch = LeaderEpoch(0);
    let mut hist = latency_histogram();

    let faults_before = thread_minor_faults();
    let start = Instant::now();
    for buf in feed {
        let t = Instant::now();
        log.append(buf, epoch)
            .await
            .unwrap_or_else(|e| panic!("append to {}: {e}", dir.display()));
        hist.saturating_record(micros(t));
    }
    let sync_start = Instant::now();
    log.sync()
        .await
        .unwrap_or_else(|e| panic!("sync {}: {e}", dir.display()));
    let final_sync_us = micros(sync_start);
    let secs = start.elapsed().as_secs_f64();
    let faults = thread_minor_faults() - faults_before;

    assert_eq!(log.log_end_offset().0, records, "every record appended");
    assert_eq!(log.durable_offset().0, records, "every record durable after sync");
    let segments = log.segment_count();
    log.close()
        .await
        .unwrap_or_else(|e| panic!("close {}: {e}", dir.display()));
    LogRun {
        secs,
        bytes,
        records,
        latency: LatencySummary::of(&hist),
        final_sync_us,
        segments,
        faults,
    }
}

/// Minor page faults of the calling thread so far. Faults inside a timed
/// region mean fresh memory is being touched there (allocations that miss
/// the DMA pool, or buffers the allocator returned to the kernel).
fn thread_minor_faults() -> u64 {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_minflt as u64
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros().max(1) as u64
}

/// Aligned write buffers of the raw baselines, filled with pseudo-random
/// (non-zero) bytes once, before any clock starts. Shared read-only by the
/// writes in flight, so the timed loops copy nothing.
fn raw_buffers(file: &DmaFile, n: usize) -> Vec<Rc<DmaBuffer>> {
    (0..n)
        .map(|i| {
            let mut b = file.alloc_dma_buffer(raw_write_bytes());
            XorShift::new(1000 + i as u64).fill(b.as_bytes_mut());
            Rc::new(b)
        })
        .collect()
}

async fn create_raw(path: &Path) -> Rc<DmaFile> {
    let file = DmaFile::create(path)
        .await
        .unwrap_or_else(|e| panic!("create {} for O_DIRECT writes: {e}", path.display()));
    Rc::new(file)
}

fn check_written(path: &Path, r: glommio::Result<usize, ()>, len: usize) {
    match r {
        Ok(n) if n == len => {}
        Ok(n) => panic!("short O_DIRECT write to {}: {n} of {len} bytes", path.display()),
        Err(e) => panic!("O_DIRECT write to {}: {e}", path.display()),
    }
}

/// Writes `total` bytes sequentially to a fresh file with O_DIRECT, `qd`
/// writes in flight (reaped in order, as the log's writer does), then
/// fdatasyncs; the time includes the fdatasync.
async fn raw_sequential(path: &Path, total: u64, qd: usize) -> RawRun {
    let file = create_raw(path).await;
    let bufs = raw_buffers(&file, qd);
    let len = raw_write_bytes();
    let writes = total.div_ceil(len as u64) as usize;
    let mut inflight = VecDeque::with_capacity(qd);

    let faults_before = thread_minor_faults();
    let start = Instant::now();
    for i in 0..writes {
        if inflight.len() == qd {
            let task: glommio::Task<_> = inflight.pop_front().expect("a write in flight");
            check_written(path, task.await, len);
        }
        let (f, b) = (file.clone(), bufs[i % qd].clone());
        let pos = (i * len) as u64;
        inflight.push_back(glommio::spawn_local(async move { f.write_rc_at(b, pos).await }));
    }
    while let Some(task) = inflight.pop_front() {
        check_written(path, task.await, len);
    }
    file.fdatasync()
        .await
        .unwrap_or_else(|e| panic!("fdatasync {}: {e}", path.display()));
    let secs = start.elapsed().as_secs_f64();
    let faults = thread_minor_faults() - faults_before;

    drop(bufs);
    close_raw(path, file).await;
    RawRun {
        secs,
        bytes: writes as u64 * len as u64,
        latency: None,
        faults,
    }
}

/// Writes `total` bytes to a fresh file with O_DIRECT, one write at a time,
/// each followed by an fdatasync: what durability per batch costs the
/// device alone.
async fn raw_fsync_each(path: &Path, total: u64) -> RawRun {
    let file = create_raw(path).await;
    let buf = raw_buffers(&file, 1).pop().expect("one buffer");
    let len = raw_write_bytes();
    let writes = total.div_ceil(len as u64) as usize;
    let mut hist = latency_histogram();

    let faults_before = thread_minor_faults();
    let start = Instant::now();
    for i in 0..writes {
        let t = Instant::now();
        let r = file.write_rc_at(buf.clone(), (i * len) as u64).await;
        check_written(path, r, len);
        file.fdatasync()
            .await
            .unwrap_or_else(|e| panic!("fdatasync {}: {e}", path.display()));
        hist.saturating_record(micros(t));
    }
    let secs = start.elapsed().as_secs_f64();
    let faults = thread_minor_faults() - faults_before;

    drop(buf);
    close_raw(path, file).await;
    RawRun {
        secs,
        bytes: writes as u64 * len as u64,
        latency: Some(LatencySummary::of(&hist)),
        faults,
    }
}

async fn close_raw(path: &Path, file: Rc<DmaFile>) {
    if let Err(e) = file.close_rc().await {
        eprintln!("storage-bench: closing {}: {e}", path.display());
    }
}

/// Prints the table of medians and returns the JSON line.
fn summarize(plan: &Plan, rounds: &[Round], bytes_a: u64, records_per_batch: u64) -> String {
    let med = |f: &dyn Fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let a_mib = med(&|r| r.log_a.mib_per_s());
    let a_rps = med(&|r| r.log_a.records_per_s());
    let a_p50 = med(&|r| r.log_a.latency.p50_us as f64);
    let a_p99 = med(&|r| r.log_a.latency.p99_us as f64);
    let a_p999 = med(&|r| r.log_a.latency.p999_us as f64);
    let a_max = med(&|r| r.log_a.latency.max_us as f64);
    let b_mib = med(&|r| r.log_b.mib_per_s());
    let b_rps = med(&|r| r.log_b.records_per_s());
    let b_p50 = med(&|r| r.log_b.latency.p50_us as f64);
    let b_p99 = med(&|r| r.log_b.latency.p99_us as f64);
    let b_p999 = med(&|r| r.log_b.latency.p999_us as f64);
    let b_max = med(&|r| r.log_b.latency.max_us as f64);
    let qd4 = med(&|r| r.raw_qd4.mib_per_s());
    let qd8 = med(&|r| r.raw_qd8.mib_per_s());
    let raw_best = qd4.max(qd8);
    let fs_lat = |f: fn(&LatencySummary) -> u64| {
        med(&|r: &Round| r.raw_fsync.latency.as_ref().map_or(f64::NAN, |l| f(l) as f64))
    };
    let raw_fsync = med(&|r| r.raw_fsync.mib_per_s());
    let raw_fsync_p50 = fs_lat(|l| l.p50_us);
    let raw_fsync_p99 = fs_lat(|l| l.p99_us);
    let ratio = a_mib / raw_best;
    let fsync_ratio = b_mib / raw_fsync;

    let [q_lo, q_hi] = plan.raw_qds;
    println!();
    println!("medians of {} run(s)", rounds.len());
    println!(
        "{:<28} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "measurement", "MiB/s", "records/s", "p50_us", "p99_us", "p999_us", "max_us", "vs raw"
    );
    println!("{:<28} {:>9.1}", format!("raw O_DIRECT QD{q_lo}"), qd4);
    println!("{:<28} {:>9.1}", format!("raw O_DIRECT QD{q_hi}"), qd8);
    println!(
        "{:<28} {:>9.1} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.3}",
        "A log, no fsync", a_mib, a_rps, a_p50, a_p99, a_p999, a_max, ratio
    );
    println!(
        "{:<28} {:>9.1} {:>12} {:>9.0} {:>9.0}",
        "raw O_DIRECT+fsync QD1", raw_fsync, "-", raw_fsync_p50, raw_fsync_p99
    );
    println!(
        "{:<28} {:>9.1} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.3}",
        "B log, fsync per batch", b_mib, b_rps, b_p50, b_p99, b_p999, b_max, fsync_ratio
    );
    println!("A's ratio is to the better raw queue depth; B's to raw write+fdatasync at QD1.");
    println!();

    let json = serde_json::json!({
        "records_per_s": a_rps.round(),
        "mb_per_s": round1(a_mib),
        "mb_unit": "MiB/s",
        "p50_us": a_p50,
        "p99_us": a_p99,
        "p999_us": a_p999,
        "max_us": a_max,
        "raw_odirect_mb_per_s": round1(raw_best),
        "raw_odirect_qd4_mb_per_s": round1(qd4),
        "raw_odirect_qd8_mb_per_s": round1(qd8),
        "ratio_to_raw": round3(ratio),
        "fsync_records_per_s": b_rps.round(),
        "fsync_mb_per_s": round1(b_mib),
        "fsync_p50_us": b_p50,
        "fsync_p99_us": b_p99,
        "fsync_p999_us": b_p999,
        "raw_odirect_fsync_mb_per_s": round1(raw_fsync),
        "raw_odirect_fsync_p50_us": raw_fsync_p50,
        "raw_odirect_fsync_p99_us": raw_fsync_p99,
        "fsync_ratio_to_raw": round3(fsync_ratio),
        "record_bytes": plan.args.record_bytes,
        "records_per_batch": records_per_batch,
        "batch_bytes": plan.args.batch_bytes,
        "total_bytes": bytes_a,
        "fsync_total_bytes": rounds.first().map_or(0, |r| r.log_b.bytes),
        "prebuilt_buffers": plan.prebuild,
        "runs": rounds.len(),
    });
    json.to_string()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
