//! The rate limiters behind [`tollgate_core::ports::RateLimiter`], and the one place that picks which one a
//! deployment runs ([`build`]). The pipeline's rate-limit stage (`pipeline::rate_limit`) and authentication's
//! failure limit are their only callers; nothing here knows about HTTP.

pub mod local;

use crate::config::Config;
use std::sync::Arc;
use tollgate_core::ports::{Clock, RateLimiter};

pub use local::LocalRateLimiter;

/// The limiter `config` asks for: in this process's memory unless a shared one is configured. (A shared limiter,
/// on `redis_url`, is one more branch here.)
pub fn build(_config: &Config, clock: Arc<dyn Clock>) -> Arc<dyn RateLimiter> {
    Arc::new(LocalRateLimiter::new(clock))
}
