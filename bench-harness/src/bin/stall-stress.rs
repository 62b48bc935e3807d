//! stall-stress: drives the pattern under which a glommio executor used to
//! sleep with runnable tasks (issue 9, vendor/glommio/BORGES-PATCH.md) and
//! counts the stalls it sees instead of hanging.
//!
//! Executors (two per core asked for, so that they compete for it as two
//! brokers on one core do), each with a shard's preempt timer, run at once:
//! O_DIRECT writes with an fdatasync after each, short timers, work on the
//! blocking-thread pool, and a ping-pong over a cross-executor channel. Every
//! task bumps its executor's progress counter. A watchdog thread checks the
//! counters; an executor that has not moved for `--stall-ms` is a stall: it
//! is reported, counted, and rescued with a signal (which ends a sleep in
//! io_uring_enter, as a debugger's attach did), and the run goes on.
//!
//! Exits 1 if any stall was seen. The last line of stdout is one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use borges_bench::ScratchDir;
use clap::Parser;
use glommio::channels::shared_channel;
use glommio::io::DmaFile;
use glommio::{LocalExecutorBuilder, Placement};

#[derive(Parser, Debug, Clone)]
#[command(about = "Stress glommio's sleep and wake-up paths; count executor stalls")]
struct Args {
    /// Seconds to run.
    #[arg(long, default_value_t = 3600)]
    secs: u64,
    /// Cores to load (two executors on each).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// An executor that makes no progress for this long is stalled.
    #[arg(long, default_value_t = 2000)]
    stall_ms: u64,
    /// Data directory (a real disk, not tmpfs); default under ./target.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One executor's progress, and its thread to signal when it stalls.
struct Progress {
    turns: AtomicU64,
    thread: std::sync::Mutex<Option<libc::pthread_t>>,
}

extern "C" fn on_rescue(_: libc::c_int) {}

/// A handler that does nothing, so that the signal only interrupts a
/// blocking system call (no SA_RESTART: io_uring_enter returns EINTR).
fn install_rescue_handler() {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_rescue as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
}

async fn writes(dir: PathBuf, p: Arc<Progress>, stop: Arc<AtomicBool>) {
    let file = DmaFile::create(&dir).await.expect("create a file");
    let mut buf = file.alloc_dma_buffer(64 << 10);
    buf.as_bytes_mut().fill(b'x');
    let buf = Rc::new(buf);
    let mut pos = 0u64;
    while !stop.load(Ordering::Relaxed) {
        file.write_rc_at(buf.clone(), pos).await.expect("write");
        file.fdatasync().await.expect("fdatasync");
        pos = (pos + (64 << 10)) % (64 << 20);
        p.turns.fetch_add(1, Ordering::Relaxed);
    }
    let _ = file.close().await;
}

async fn timers(p: Arc<Progress>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_micros(200 + (n % 7) * 300)).await;
        n += 1;
        p.turns.fetch_add(1, Ordering::Relaxed);
    }
}

async fn blocking(p: Arc<Progress>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let d = Duration::from_micros((n % 5) * 100);
        glommio::executor()
            .spawn_blocking(move || std::thread::sleep(d))
            .await;
        n += 1;
        p.turns.fetch_add(1, Ordering::Relaxed);
    }
}

/// CPU-bound work that yields often, so that the preempt timer fires.
async fn spin(p: Arc<Progress>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(300) {
            std::hint::spin_loop();
        }
        glommio::yield_if_needed().await;
        p.turns.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    install_rescue_handler();
    let scratch = ScratchDir::new(args.dir.as_deref(), "stall-stress").expect("scratch directory on disk");
    let stop = Arc::new(AtomicBool::new(false));
    let executors = args.cores * 2;
    let progress: Vec<Arc<Progress>> = (0..executors)
        .map(|_| {
            Arc::new(Progress {
                turns: AtomicU64::new(0),
                thread: std::sync::Mutex::new(None),
            })
        })
        .collect();
    // Executors 2k and 2k+1 share core k and ping-pong over a channel.
    let mut handles = Vec::new();
    for pair in 0..args.cores {
        let (a_tx, b_rx) = shared_channel::new_bounded::<u64>(16);
        let (b_tx, a_rx) = shared_channel::new_bounded::<u64>(16);
        let ends = [(a_tx, a_rx), (b_tx, b_rx)];
        for (side, (tx, rx)) in ends.into_iter().enumerate() {
            let i = pair * 2 + side;
            let (p, stop) = (progress[i].clone(), stop.clone());
            let file = scratch.child(&format!("writes-{i}"));
            let h = LocalExecutorBuilder::new(Placement::Fixed(pair))
                .name(&format!("stall-stress-{i}"))
                .preempt_timer(borges_storage::SHARD_PREEMPT_TIMER)
                .spawn(move || async move {
                    *p.thread.lock().expect("lock") = Some(unsafe { libc::pthread_self() });
                    let tasks = [
                        glommio::spawn_local(writes(file, p.clone(), stop.clone())).detach(),
                        glommio::spawn_local(timers(p.clone(), stop.clone())).detach(),
                        glommio::spawn_local(blocking(p.clone(), stop.clone())).detach(),
                        glommio::spawn_local(spin(p.clone(), stop.clone())).detach(),
                    ];
                    let (tx, rx) = (tx.connect().await, rx.connect().await);
                    let mut n = side as u64;
                    if side == 0 {
                        let _ = tx.send(n).await;
                    }
                    while !stop.load(Ordering::Relaxed) {
                        let recv = futures_lite::future::or(async { rx.recv().await }, async {
                            glommio::timer::sleep(Duration::from_millis(100)).await;
                            None
                        });
                        if let Some(v) = recv.await {
                            n = v + 1;
                            p.turns.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.try_send(n);
                        }
                    }
                    drop(tx);
                    for t in tasks {
                        let _ = t.await;
                    }
                })
                .expect("spawn executor");
            handles.push(h);
        }
    }
    println!(
        "stall-stress: {} executors on {} core(s) for {} s; a stall is {} ms without progress",
        executors, args.cores, args.secs, args.stall_ms
    );
    let start = Instant::now();
    let mut last: Vec<(u64, Instant)> = progress
        .iter()
        .map(|p| (p.turns.load(Ordering::Relaxed), Instant::now()))
        .collect();
    let mut stalls = 0u64;
    let mut longest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(args.secs) {
        std::thread::sleep(Duration::from_millis(100));
        for (i, p) in progress.iter().enumerate() {
            let now = p.turns.load(Ordering::Relaxed);
            if now != last[i].0 {
                last[i] = (now, Instant::now());
                continue;
            }
            let still = last[i].1.elapsed();
            if still >= Duration::from_millis(args.stall_ms) {
                stalls += 1;
                longest = longest.max(still);
                println!(
                    "STALL: executor {i} made no progress for {still:?} at {:.1} s (turns {now}); rescuing it with a signal",
                    start.elapsed().as_secs_f64()
                );
                if let Some(t) = *p.thread.lock().expect("lock") {
                    unsafe { libc::pthread_kill(t, libc::SIGUSR2) };
                }
                last[i].1 = Instant::now();
            }
        }
    }
    // The executors are not joined: a task parked in a channel or a sleep
    // need not end for the figures to stand, and the process exits here.
    stop.store(true, Ordering::Relaxed);
    drop(handles);
    let turns: u64 = progress.iter().map(|p| p.turns.load(Ordering::Relaxed)).sum();
    let hours = start.elapsed().as_secs_f64() / 3600.0;
    println!(
        "{} stall(s) in {:.0} s ({:.1} per hour), longest {:?}; {} turns; lost wake-ups caught by the sleep bound: {}",
        stalls,
        start.elapsed().as_secs_f64(),
        stalls as f64 / hours,
        longest,
        turns,
        glommio::lost_wakeups()
    );
    let _ = scratch.finish(false);
    println!(
        "{}",
        serde_json::json!({
            "stalls": stalls,
            "secs": start.elapsed().as_secs(),
            "longest_stall_ms": longest.as_millis() as u64,
            "turns": turns,
            "lost_wakeups_caught": glommio::lost_wakeups(),
        })
    );
    if stalls > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
