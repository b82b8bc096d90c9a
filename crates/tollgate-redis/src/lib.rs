#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`RedisLimiter`]: the port's implementation; [`Options`]: its timeouts.
//! - `gcra.lua`: the script every check and adjustment runs.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_core::ports::{
    Bucket, BucketState, Decision, RateLimitError, RateLimiter, Scope, Unit,
};

/// The burst tolerance: one second's worth of each limit, in microseconds (as the in-process limiter).
pub const TOLERANCE_US: u64 = 1_000_000;

/// Why a limiter cannot be built. Never names the URL: it may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    /// Not a URL the client can connect to.
    #[error("not a Redis URL (redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH): {0}")]
    Url(String),
}

/// How long the limiter waits for Redis before it answers with an error.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Opening a connection.
    pub connect_timeout: Duration,
    /// Each answer (a check, an adjustment, a ping).
    pub response_timeout: Duration,
    /// After a failure, calls fail at once for this long before Redis is tried again.
    pub pause_after_error: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(250),
            pause_after_error: Duration::from_millis(500),
        }
    }
}

/// Rate-limit buckets on one Redis, shared by every node that uses it.
pub struct RedisLimiter {
    /// Multiplexed, cheap to clone, reconnects in the background after a connection is lost.
    connection: ConnectionManager,
    script: Script,
    options: Options,
    /// Hard bound on one call, whatever the connection's own timeouts do (a reconnect in progress included).
    deadline: Duration,
    /// When the limiter was built: `paused_until_us` counts from it.
    start: Instant,
    /// Microseconds after `start` until which calls fail without trying Redis (0: not paused). An atomic, not a
    /// lock: every check on the hot path reads it.
    paused_until_us: AtomicU64,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection's Debug prints its address; its password is the client's business, so leave it out.
        f.debug_struct("RedisLimiter")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Checks that `url` is one the limiter can use, without connecting.
pub fn validate_url(url: &str) -> Result<(), RedisLimiterError> {
    client(url).map(|_| ())
}

fn client(url: &str) -> Result<Client, RedisLimiterError> {
    // The client's own message may quote the URL; say what kind of fault it is, never the text.
    Client::open(url).map_err(|e| RedisLimiterError::Url(format!("{:?}", e.kind())))
}

impl RedisLimiter {
    /// A limiter on the Redis at `url`. It connects on first use, so a Redis that is down when the server starts
    /// is an outage like any other, not a failed start. Needs a Tokio runtime.
    pub fn new(url: &str, options: Options) -> Result<Self, RedisLimiterError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            // One attempt per reconnection: retrying inside a request would make it wait; the pause retries.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client(url)?, config)
            .map_err(|e| RedisLimiterError::Url(format!("{:?}", e.kind())))?;
        Ok(Self {
            connection,
            script: Script::new(include_str!("gcra.lua")),
            options,
            deadline: options.connect_timeout + options.response_timeout,
            start: Instant::now(),
            paused_until_us: AtomicU64::new(0),
        })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Runs one call against Redis, bounded by the deadline, unless a recent failure paused the limiter.
    async fn call<T, F>(&self, what: &str, call: F) -> Result<T, RateLimitError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let paused = self.paused_until_us.load(Ordering::Relaxed);
        if paused != 0 && self.now_us() < paused {
            return Err(RateLimitError(format!(
                "Redis {what}: unavailable (a recent call failed)"
            )));
        }
        let result = match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RateLimitError(format!("Redis {what}: {e}"))),
            Err(_) => Err(RateLimitError(format!(
                "Redis {what}: no answer within {} ms",
                self.deadline.as_millis()
            ))),
        };
        match &result {
            Ok(_) if paused != 0 => self.paused_until_us.store(0, Ordering::Relaxed),
            Ok(_) => {}
            Err(_) => {
                let pause =
                    u64::try_from(self.options.pause_after_error.as_micros()).unwrap_or(u64::MAX);
                self.paused_until_us.store(
                    self.now_us().saturating_add(pause).max(1),
                    Ordering::Relaxed,
                );
            }
        }
        result
    }
}

/// The bucket's key. Ids are tenant ids, key ids and source addresses: never secrets.
pub fn key_name(bucket: &Bucket<'_>) -> String {
    let scope = match bucket.scope {
        Scope::Tenant => "tenant",
        Scope::Key => "key",
        Scope::AuthFailures => "auth",
        Scope::LoginAccount => "login-account",
        Scope::LoginAddress => "login-address",
    };
    let unit = match bucket.unit {
        Unit::Requests => "requests",
        Unit::Tokens => "tokens",
    };
    format!("tollgate:rl:{scope}:{unit}:{}", bucket.id)
}

/// Microseconds between two units of `per_minute` (60 s / the limit), as the script's decimal argument.
fn interval_us(per_minute: u64) -> f64 {
    // A limit of 0 is refused by config validation; treat it as 1 rather than divide by zero.
    60_000_000.0 / per_minute.max(1) as f64
}

/// What the script answers: admitted, refusing index, retry_after_ms, then remaining and reset_ms per bucket.
fn decision(buckets: &[Bucket<'_>], reply: &[i64]) -> Result<Decision, RateLimitError> {
    let bad = || RateLimitError(format!("Redis: unexpected script reply {reply:?}"));
    if reply.len() != 3 + 2 * buckets.len() {
        return Err(bad());
    }
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
    let states = buckets
        .iter()
        .zip(reply[3..].chunks_exact(2))
        .map(|(b, s)| BucketState {
            limit: b.per_minute,
            remaining: unsigned(s[0]),
            reset_ms: unsigned(s[1]),
        })
        .collect();
    if reply[0] == 1 {
        return Ok(Decision::Admitted(states));
    }
    let bucket = usize::try_from(reply[1])
        .ok()
        .filter(|&i| i < buckets.len())
        .ok_or_else(bad)?;
    Ok(Decision::Refused {
        bucket,
        retry_after_ms: unsigned(reply[2]).max(1),
        states,
    })
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, buckets: &[Bucket<'_>]) -> Result<Decision, RateLimitError> {
        if buckets.is_empty() {
            return Ok(Decision::Admitted(Vec::new()));
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg("check").arg(TOLERANCE_US);
        for bucket in buckets {
            invocation
                .key(key_name(bucket))
                .arg(interval_us(bucket.per_minute))
                .arg(bucket.cost);
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .call("check", invocation.invoke_async(&mut connection))
            .await?;
        decision(buckets, &reply)
    }

    async fn adjust(&self, bucket: &Bucket<'_>, delta: i64) -> Result<(), RateLimitError> {
        if delta == 0 {
            return Ok(());
        }
        let mut invocation = self.script.key(key_name(bucket));
        invocation
            .arg("adjust")
            .arg(TOLERANCE_US)
            .arg(interval_us(bucket.per_minute))
            .arg(delta);
        let mut connection = self.connection.clone();
        let _: Vec<i64> = self
            .call("adjust", invocation.invoke_async(&mut connection))
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), RateLimitError> {
        let mut connection = self.connection.clone();
        let _: String = self
            .call(
                "ping",
                redis::cmd("PING").query_async::<String>(&mut connection),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(scope: Scope, unit: Unit, id: &str) -> Bucket<'_> {
        Bucket {
            scope,
            id,
            unit,
            per_minute: 60,
            cost: 1,
        }
    }

    #[test]
    fn key_names_are_namespaced_by_scope_and_unit() {
        assert_eq!(
            key_name(&bucket(Scope::Tenant, Unit::Requests, "org_1")),
            "tollgate:rl:tenant:requests:org_1"
        );
        assert_eq!(
            key_name(&bucket(Scope::Key, Unit::Tokens, "key_1")),
            "tollgate:rl:key:tokens:key_1"
        );
        assert_eq!(
            key_name(&bucket(Scope::AuthFailures, Unit::Requests, "2001:db8::1")),
            "tollgate:rl:auth:requests:2001:db8::1"
        );
    }

    #[test]
    fn replies_become_decisions() {
        let b = [
            bucket(Scope::Tenant, Unit::Requests, "t"),
            bucket(Scope::Key, Unit::Requests, "k"),
        ];
        assert_eq!(
            decision(&b, &[1, -1, 0, 3, 10, 0, 2000]).unwrap(),
            Decision::Admitted(vec![
                BucketState {
                    limit: 60,
                    remaining: 3,
                    reset_ms: 10
                },
                BucketState {
                    limit: 60,
                    remaining: 0,
                    reset_ms: 2000
                },
            ])
        );
        let Decision::Refused {
            bucket,
            retry_after_ms,
            ..
        } = decision(&b, &[0, 1, 0, 3, 10, 0, 2000]).unwrap()
        else {
            panic!("refused expected");
        };
        assert_eq!((bucket, retry_after_ms), (1, 1));
        assert!(decision(&b, &[1, -1, 0]).is_err());
        assert!(decision(&b, &[0, 2, 5, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn urls_are_checked_without_quoting_them() {
        assert!(validate_url("redis://127.0.0.1:6379").is_ok());
        assert!(validate_url("unix:///tmp/redis.sock").is_ok());
        let err = validate_url("http://:hunter2@cache:6379").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
