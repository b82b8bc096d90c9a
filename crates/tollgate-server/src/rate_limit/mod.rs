//! The rate limiters behind [`tollgate_core::ports::RateLimiter`], and the one place that picks which one a
//! deployment runs ([`build`]). The pipeline's rate-limit stage (`pipeline::rate_limit`) and authentication's
//! failure limit are their only callers; nothing here knows about HTTP.

pub mod local;
pub mod shared;

use crate::config::Config;
use std::sync::Arc;
use tollgate_core::ports::{Clock, RateLimiter};

pub use local::LocalRateLimiter;
pub use shared::{FailPolicy, LimiterError};

/// The limiter `config` asks for: the one shared by every node on `redis_url` when it is set, else this process's.
pub fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Arc<dyn RateLimiter>, LimiterError> {
    Ok(match shared::build_limiter(config)? {
        Some(shared) => shared,
        None => Arc::new(LocalRateLimiter::new(clock)),
    })
}
