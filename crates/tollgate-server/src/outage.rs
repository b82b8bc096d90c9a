//! One log line per outage of a background call (change log reads, lease renewals, the rate limiter's Redis): when
//! it starts failing and when it works again, never on every attempt.

use std::fmt::Display;
use std::time::Instant;

/// Whether a background call is failing, and since when.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    since: Option<Instant>,
}

impl Outage {
    /// The call failed: logs `what` (with the error) if it worked before.
    pub(crate) fn failed(&mut self, error: &dyn Display, what: &str) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(%error, "{what}");
        }
    }

    /// The call worked: logs `what` (with the outage's length) if it failed before.
    pub(crate) fn ended(&mut self, what: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(after_ms = since.elapsed().as_millis(), "{what}");
        }
    }
}
