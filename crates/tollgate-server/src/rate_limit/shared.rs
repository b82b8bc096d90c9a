//! Which rate limiter a node uses and what its failures mean: the Redis limiter (`tollgate-redis`, shared by every
//! node on that Redis) when `redis_url` is set, else the in-process one; `rate_limit_fail` for when it cannot answer;
//! one log line per outage, never one per request. It never decides a request itself: the pipeline's rate-limit
//! stage asks the limiter and applies [`FailPolicy`] to an error.

use crate::config::{Config, ExposeSecret};
use crate::outage::Outage;
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tollgate_core::ports::{Bucket, Decision, RateLimitError, RateLimiter};
use tollgate_redis::{Options, RedisLimiter, RedisLimiterError};

/// `rate_limit_fail`: what a request meets while the limiter cannot answer (Redis unreachable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// Admitted without a limit (the default: an outage of Redis is not an outage of the API).
    #[default]
    Open,
    /// Refused with 503 `service_unavailable`: nothing is executed or charged.
    Closed,
}

impl FailPolicy {
    /// Whether a request is admitted when the limiter returned an error.
    pub fn admits_when_unavailable(self) -> bool {
        self == Self::Open
    }

    /// The config file's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// Why the configured limiter cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// `redis_url` is not a usable URL (the message never quotes it: it may carry a password).
    #[error("invalid config: redis_url: {0}")]
    Redis(#[from] RedisLimiterError),
}

/// The shared limiter when `redis_url` is set (wrapped in [`Watched`]), else `None`: the caller then uses the
/// in-process limiter. Connects lazily, so a Redis that is down at start-up is an outage, not a failed start. Needs a
/// Tokio runtime.
pub fn build_limiter(config: &Config) -> Result<Option<Arc<dyn RateLimiter>>, LimiterError> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let redis = RedisLimiter::new(url.expose_secret(), Options::default())?;
    Ok(Some(Arc::new(Watched::new(redis, config.rate_limit_fail))))
}

/// A limiter whose errors are logged once per outage: a warning when it starts failing (saying what requests get
/// meanwhile), an info line with the outage's length when it answers again.
pub struct Watched<L> {
    inner: L,
    policy: FailPolicy,
    /// Read on every call without the lock; the lock is taken only on an error and on the first success after one.
    down: AtomicBool,
    outage: Mutex<Outage>,
}

impl<L> Watched<L> {
    /// Watches `inner`; `policy` is only named in the log line.
    pub fn new(inner: L, policy: FailPolicy) -> Self {
        Self {
            inner,
            policy,
            down: AtomicBool::new(false),
            outage: Mutex::new(Outage::default()),
        }
    }

    fn observe<T>(&self, result: Result<T, RateLimitError>) -> Result<T, RateLimitError> {
        match &result {
            Err(error) => {
                self.down.store(true, Ordering::Relaxed);
                let what = match self.policy {
                    FailPolicy::Open => {
                        "rate limiter unavailable: requests are admitted without limits (rate_limit_fail = \"open\")"
                    }
                    FailPolicy::Closed => {
                        "rate limiter unavailable: inference requests get 503 (rate_limit_fail = \"closed\")"
                    }
                };
                // A poisoned lock only means a panic elsewhere mid-log; the state is still usable.
                self.outage
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .failed(error, what);
            }
            Ok(_) if self.down.swap(false, Ordering::Relaxed) => {
                self.outage
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ended("rate limiter available again");
            }
            Ok(_) => {}
        }
        result
    }
}

#[async_trait]
impl<L: RateLimiter> RateLimiter for Watched<L> {
    async fn check(&self, buckets: &[Bucket<'_>]) -> Result<Decision, RateLimitError> {
        self.observe(self.inner.check(buckets).await)
    }

    async fn adjust(&self, bucket: &Bucket<'_>, delta: i64) -> Result<(), RateLimitError> {
        self.observe(self.inner.adjust(bucket, delta).await)
    }

    async fn ping(&self) -> Result<(), RateLimitError> {
        self.observe(self.inner.ping().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Logs;

    #[test]
    fn the_policy_parses_from_config_and_defaults_to_open() {
        assert_eq!(Config::default().rate_limit_fail, FailPolicy::Open);
        let closed = Config::from_toml("rate_limit_fail = \"closed\"").unwrap();
        assert_eq!(closed.rate_limit_fail, FailPolicy::Closed);
        assert!(!closed.rate_limit_fail.admits_when_unavailable());
        assert!(FailPolicy::Open.admits_when_unavailable());
        let err = Config::from_toml("rate_limit_fail = \"ajar\"").unwrap_err();
        assert!(err.to_string().contains("rate_limit_fail"), "{err}");
    }

    #[tokio::test]
    async fn no_redis_url_means_no_shared_limiter() {
        assert!(build_limiter(&Config::default()).unwrap().is_none());
        let config = Config {
            redis_url: Some("redis://127.0.0.1:1".into()),
            ..Config::default()
        };
        assert!(build_limiter(&config).unwrap().is_some());
    }

    /// Fails while `down` is set.
    struct Flaky(AtomicBool);

    #[async_trait]
    impl RateLimiter for Flaky {
        async fn check(&self, b: &[Bucket<'_>]) -> Result<Decision, RateLimitError> {
            if self.0.load(Ordering::Relaxed) {
                return Err(RateLimitError("down".into()));
            }
            Ok(Decision::Admitted(Vec::with_capacity(b.len())))
        }
        async fn adjust(&self, _: &Bucket<'_>, _: i64) -> Result<(), RateLimitError> {
            Ok(())
        }
        async fn ping(&self) -> Result<(), RateLimitError> {
            self.check(&[]).await.map(|_| ())
        }
    }

    #[tokio::test]
    async fn an_outage_is_one_warning_and_one_line_when_it_ends() {
        let (logs, _guard) = Logs::capture();
        let w = Watched::new(Flaky(AtomicBool::new(true)), FailPolicy::Closed);
        let count = |needle: &str| logs.text().matches(needle).count();
        for _ in 0..5 {
            assert!(w.check(&[]).await.is_err());
            assert!(w.ping().await.is_err());
        }
        assert_eq!(count("\"level\":\"WARN\""), 1, "{}", logs.text());
        assert!(
            logs.text().contains("rate_limit_fail = \\\"closed\\\""),
            "{}",
            logs.text()
        );
        w.inner.0.store(false, Ordering::Relaxed);
        for _ in 0..3 {
            assert!(w.check(&[]).await.is_ok());
        }
        assert_eq!(count("rate limiter available again"), 1, "{}", logs.text());
        // The next outage is a new one.
        w.inner.0.store(true, Ordering::Relaxed);
        assert!(w.check(&[]).await.is_err());
        assert_eq!(count("\"level\":\"WARN\""), 2, "{}", logs.text());
    }
}
