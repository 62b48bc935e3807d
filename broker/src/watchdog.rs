//! Shard liveness: every shard bumps a heartbeat from a timer task, so the
//! count moves only while its executor turns; a watchdog thread outside the
//! executors checks the counts and logs a shard that has not turned for
//! `shard_stall_timeout` (and again when it resumes), counting each stall.
//! A stall is never silent: an executor asleep with work ready (issue 9), a
//! task that blocks its thread, or a shard stopped by a debugger all show.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a shard beats.
pub const BEAT: Duration = Duration::from_millis(100);

/// The heartbeats of every shard, and the stalls seen so far.
#[derive(Debug)]
pub struct Liveness {
    beats: Vec<AtomicU64>,
    stalls: AtomicU64,
}

impl Liveness {
    pub fn new(shards: usize) -> Arc<Liveness> {
        Arc::new(Liveness {
            beats: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            stalls: AtomicU64::new(0),
        })
    }

    /// Called by shard `id` on every turn of its heartbeat task.
    pub fn beat(&self, id: usize) {
        self.beats[id].fetch_add(1, Ordering::Relaxed);
    }

    /// Stalls seen since the start, all shards together (a metric).
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }
}

/// Beats for shard `id` as long as its executor runs (a detached task:
/// it ends with the executor's main future).
pub async fn heartbeat(live: Arc<Liveness>, id: usize) {
    loop {
        live.beat(id);
        glommio::timer::sleep(BEAT).await;
    }
}

/// Stops the watchdog thread when dropped, however `run` returns.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(live: Arc<Liveness>, timeout: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let thread = spawn_watchdog(live, timeout, done.clone());
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches `live` on a thread of its own until `done` is set.
pub fn spawn_watchdog(
    live: Arc<Liveness>,
    timeout: Duration,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("shard-watchdog".into())
        .spawn(move || {
            let now = Instant::now();
            // Per shard: the count last seen, when it last moved, whether
            // the shard is being reported as stalled.
            let mut seen: Vec<(u64, Instant, bool)> = live
                .beats
                .iter()
                .map(|b| (b.load(Ordering::Relaxed), now, false))
                .collect();
            let check = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(check);
                for (id, b) in live.beats.iter().enumerate() {
                    let count = b.load(Ordering::Relaxed);
                    let (last, since, stalled) = &mut seen[id];
                    if count != *last {
                        if *stalled {
                            tracing::warn!(shard = id, stalled_for = ?since.elapsed(), "shard turns again");
                        }
                        *last = count;
                        *since = Instant::now();
                        *stalled = false;
                    } else if !*stalled && since.elapsed() >= timeout {
                        *stalled = true;
                        let total = live.stalls.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::error!(
                            shard = id,
                            stalled_for = ?since.elapsed(),
                            heartbeats = count,
                            stalls = total,
                            glommio_lost_wakeups = glommio::lost_wakeups(),
                            "shard stalled: its executor has not turned"
                        );
                    }
                }
            }
        })
        .expect("spawn the shard watchdog")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_stops_beating_is_counted_once_per_stall() {
        let live = Liveness::new(2);
        let done = Arc::new(AtomicBool::new(false));
        let w = spawn_watchdog(live.clone(), Duration::from_millis(100), done.clone());
        // Shard 0 beats on; shard 1 stops for a while, then resumes.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(600) {
            live.beat(0);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(live.stalls(), 1, "shard 1 stalled once");
        for _ in 0..30 {
            live.beat(0);
            live.beat(1);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(live.stalls(), 1, "a shard that beats is not stalled");
        done.store(true, Ordering::SeqCst);
        w.join().expect("watchdog");
    }
}
