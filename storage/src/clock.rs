//! Time as an input. The log never reads the wall clock itself, so that
//! retention and roll-by-age are tested with a clock the test moves.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of milliseconds since the Unix epoch.
pub trait Clock {
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(Cell<i64>);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(Cell::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.set(now_ms)
    }
    pub fn advance(&self, ms: i64) {
        self.0.set(self.0.get() + ms)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}
