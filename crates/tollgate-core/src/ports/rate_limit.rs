//! The rate-limiter port: per-minute limits on requests and tokens, checked for several buckets at once (a tenant's
//! and its key's, requests and tokens) and taken from all of them or from none. Implemented in process (one node)
//! and on Redis (shared by every node); the inference pipeline's rate-limit stage is its only caller.

use async_trait::async_trait;

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Requests.
    Requests,
    /// Tokens (counted up front from the hold's bound, corrected once the usage is known).
    Tokens,
}

/// Whose bucket it is: the limits of a tenant's plan are shared by all its keys; a key's own tighten them; the
/// failed authentications of a source address are counted before any key is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A tenant (its id).
    Tenant,
    /// A project key (its id).
    Key,
    /// A source address (its text form) sending unknown or malformed keys.
    AuthFailures,
    /// A dashboard account (a digest of its email) whose sign-ins fail.
    LoginAccount,
    /// A source address whose dashboard sign-ins fail.
    LoginAddress,
}

/// One bucket a request must fit: `cost` units of `unit` out of `per_minute`, in the bucket of `scope` and `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket<'a> {
    /// Whose bucket.
    pub scope: Scope,
    /// The tenant's, key's or address's id.
    pub id: &'a str,
    /// What it counts.
    pub unit: Unit,
    /// The limit: units per minute (at least 1).
    pub per_minute: u64,
    /// What this request takes; 0 takes nothing and only asks whether the bucket is over its limit (refused while it
    /// is, with the wait until it is not).
    pub cost: u64,
}

/// A bucket's state after a check, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// The limit, per minute.
    pub limit: u64,
    /// What could still be taken now.
    pub remaining: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
}

/// The outcome of a check of several buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every bucket had room: the costs were taken from all of them. The states are in the order of the buckets.
    Admitted(Vec<BucketState>),
    /// A bucket had no room: nothing was taken from any. `bucket` is the index of a bucket that refused (the one
    /// with the longest wait, when several do); `retry_after_ms` is how long until the request would fit every
    /// bucket (at least 1).
    Refused {
        /// The index of the refusing bucket.
        bucket: usize,
        /// Until the request would fit.
        retry_after_ms: u64,
        /// Every bucket's state, in order.
        states: Vec<BucketState>,
    },
}

/// The limiter could not answer (Redis unreachable…): the caller fails open or closed as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct RateLimitError(pub String);

/// Per-minute limits shared by whatever the implementation spans (one process, or every node on one Redis).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes each bucket's cost from it, all or none, at once (atomically against other checks of the same buckets).
    async fn check(&self, buckets: &[Bucket<'_>]) -> Result<Decision, RateLimitError>;

    /// Corrects a bucket once a request's real cost is known: `delta` units are given back (negative) or taken
    /// (positive) without any check. Used for tokens, which are taken up front at their bound.
    async fn adjust(&self, bucket: &Bucket<'_>, delta: i64) -> Result<(), RateLimitError>;

    /// Whether the limiter can answer now (for `/readyz`).
    async fn ping(&self) -> Result<(), RateLimitError> {
        Ok(())
    }
}
