//! Wall-clock time in Unix seconds (and milliseconds, for rate limits), behind a trait so tests can move it.

use crate::tenant::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Unix seconds now.
    fn now(&self) -> Timestamp;

    /// Unix milliseconds now: rate limits refill continuously, so whole seconds are too coarse for them.
    fn now_ms(&self) -> i64 {
        self.now().saturating_mul(1000)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to, for tests of expiry, grace periods and rate limits. It counts
/// milliseconds; [`Clock::now`] is their whole seconds.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at `now` (Unix seconds).
    pub fn new(now: Timestamp) -> Self {
        Self(AtomicI64::new(now.saturating_mul(1000)))
    }

    /// Moves time forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.advance_ms(seconds.saturating_mul(1000));
    }

    /// Moves time forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst).div_euclid(1000)
    }

    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
