//! Time as an input to the broker's logic.
//!
//! Logic that keeps deadlines (the group coordinator's session and
//! rebalance timeouts) or stamps what it stores (commit timestamps) reads
//! time from a [`Clock`] it is given, never from the system itself, so
//! that tests drive it with a [`ManualClock`] and no test waits for real
//! time to pass. Two kinds of time, because they answer different
//! questions: monotonic time for "has this timeout passed" (it never goes
//! back), wall time for what is written down or shown.
//!
//! The storage engine has its own wall-clock seam (`borges_storage::Clock`)
//! for retention and segment age.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic and of wall-clock time.
pub trait Clock {
    /// Monotonic time, for timeouts and deadlines.
    fn now(&self) -> Instant;

    /// Wall-clock time, for what is stored or shown.
    fn wall(&self) -> SystemTime;

    /// Wall-clock time in milliseconds since the Unix epoch (0 before it).
    fn wall_ms(&self) -> i64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; both of its times move together.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    wall_start: SystemTime,
    elapsed: Cell<Duration>,
}

impl ManualClock {
    /// A clock whose wall time starts at `wall_ms` after the epoch.
    pub fn new(wall_ms: u64) -> ManualClock {
        ManualClock {
            start: Instant::now(),
            wall_start: UNIX_EPOCH + Duration::from_millis(wall_ms),
            elapsed: Cell::new(Duration::ZERO),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.elapsed.set(self.elapsed.get() + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed.get()
    }

    fn wall(&self) -> SystemTime {
        self.wall_start + self.elapsed.get()
    }
}

/// Milliseconds of monotonic time since this process first asked: the
/// time the replication state machines are given.
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_when_told() {
        let c = ManualClock::new(1_000);
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        assert_eq!(c.wall_ms(), 1_000);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now() - t0, Duration::from_millis(250));
        assert_eq!(c.wall_ms(), 1_250);
    }
}
