//! Rate limits: the stage after policy and before idempotency and the hold, so a refused request never reaches the
//! upstream and is never charged. A request takes one request and its token bound (the hold's: the prompt bound plus
//! the most output it may produce) from its tenant's buckets (the plan's limits, or the operator's override) and,
//! where the key has `rate_limits`, from the key's too, all or none, through the [`RateLimiter`] port. Once the
//! usage is known the token buckets are corrected to it ([`TokenCharge::settle`]); a request that ends unsettled
//! gives its tokens back. Refused: 429 naming the limit, `Retry-After`, and the `x-ratelimit-*` headers, which an
//! admitted request's response carries as well ([`Quota`]).

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponseParts, ResponseParts};
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use tollgate_core::ports::{Bucket, BucketState, Decision, Scope, Unit};
use tollgate_core::tenant::Principal;

/// The `x-ratelimit-*` headers of a request: for requests and for tokens, the tighter of its tenant's and key's
/// buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests.
    pub requests: BucketState,
    /// Tokens.
    pub tokens: BucketState,
}

/// The six header names, built once (a `&str` name would be parsed and checked on every insert).
const NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

impl Quota {
    /// Writes the six headers.
    pub fn stamp(&self, headers: &mut HeaderMap) {
        headers.reserve(6);
        for ([limit, remaining, reset], s) in NAMES.iter().zip([self.requests, self.tokens]) {
            headers.insert(limit.clone(), HeaderValue::from(s.limit));
            headers.insert(remaining.clone(), HeaderValue::from(s.remaining));
            let mut text = Text::default();
            write_duration(&mut text, s.reset_ms);
            if let Ok(value) = HeaderValue::from_bytes(text.as_bytes()) {
                headers.insert(reset.clone(), value);
            }
        }
    }
}

/// A duration's text, on the stack (the longest, `5124095576030431h0m0.999s`, fits).
struct Text {
    bytes: [u8; 40],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Self {
            bytes: [0; 40],
            len: 0,
        }
    }
}

impl Text {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl IntoResponseParts for Quota {
    type Error = Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Infallible> {
        self.stamp(res.headers_mut());
        Ok(res)
    }
}

/// A duration in OpenAI's (Go's) format: `0s`, `12ms`, `1s`, `1.5s`, `6m0s`, `1h0m0s`.
pub fn duration(ms: u64) -> String {
    let mut out = String::with_capacity(12);
    write_duration(&mut out, ms);
    out
}

fn write_duration(out: &mut impl Write, ms: u64) {
    // Writing to a `String` or a `Text` long enough for any u64 cannot fail.
    let _ = match ms {
        0 => out.write_str("0s"),
        1..1000 => write!(out, "{ms}ms"),
        _ => {
            let (hours, minutes) = (ms / 3_600_000, ms / 60_000 % 60);
            let (seconds, millis) = (ms / 1000 % 60, ms % 1000);
            if hours > 0 {
                let _ = write!(out, "{hours}h");
            }
            if hours > 0 || minutes > 0 {
                let _ = write!(out, "{minutes}m");
            }
            let _ = write!(out, "{seconds}");
            if millis > 0 {
                // Go's fraction: three digits, trailing zeros dropped.
                let (mut digits, mut width) = (millis, 3);
                while digits % 10 == 0 {
                    digits /= 10;
                    width -= 1;
                }
                let _ = write!(out, ".{digits:0width$}");
            }
            out.write_char('s')
        }
    };
}

/// The per-minute limits that apply to one request: its tenant's, and its key's where it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    tenant_requests: u64,
    tenant_tokens: u64,
    key_requests: Option<u64>,
    key_tokens: Option<u64>,
}

impl Limits {
    fn of(state: &AppState, principal: &Principal) -> Result<Self, ApiError> {
        let plan = state.plans.get(&principal.tenant_plan).ok_or_else(|| {
            ApiError::Internal(format!(
                "the tenant's plan {:?} is not in the config",
                principal.tenant_plan
            ))
        })?;
        let (tenant_requests, tenant_tokens) = plan.tenant_limits(principal.tenant_rate_limits);
        let key = principal.key.rate_limits.unwrap_or_default();
        Ok(Self {
            tenant_requests,
            tenant_tokens,
            key_requests: key.requests_per_minute,
            key_tokens: key.tokens_per_minute,
        })
    }
}

/// Up to four buckets, on the stack: the tenant's two, then the key's.
struct Buckets<'a> {
    all: [Bucket<'a>; 4],
    len: usize,
}

impl<'a> Buckets<'a> {
    fn new(principal: &'a Principal, limits: Limits, tokens: u64) -> Self {
        let bucket = |scope, id, unit, per_minute, cost| Bucket {
            scope,
            id,
            unit,
            per_minute,
            cost,
        };
        let (tenant, key) = (principal.key.tenant_id.as_str(), principal.key.id.as_str());
        let requests = bucket(
            Scope::Tenant,
            tenant,
            Unit::Requests,
            limits.tenant_requests,
            1,
        );
        let tokens_bucket = bucket(
            Scope::Tenant,
            tenant,
            Unit::Tokens,
            limits.tenant_tokens,
            tokens,
        );
        let mut all = [
            requests.clone(),
            tokens_bucket.clone(),
            requests,
            tokens_bucket,
        ];
        let mut len = 2;
        if let Some(rpm) = limits.key_requests {
            all[len] = bucket(Scope::Key, key, Unit::Requests, rpm, 1);
            len += 1;
        }
        if let Some(tpm) = limits.key_tokens {
            all[len] = bucket(Scope::Key, key, Unit::Tokens, tpm, tokens);
            len += 1;
        }
        Self { all, len }
    }

    fn get(&self) -> &[Bucket<'a>] {
        &self.all[..self.len]
    }

    /// The headers' view: per unit, the tighter limit and the least left; reset when both are full again.
    fn quota(&self, states: &[BucketState]) -> Quota {
        let mut out: [Option<BucketState>; 2] = [None, None];
        for (b, s) in self.get().iter().zip(states) {
            let at = usize::from(b.unit == Unit::Tokens);
            out[at] = Some(match out[at] {
                None => *s,
                Some(t) => BucketState {
                    limit: t.limit.min(s.limit),
                    remaining: t.remaining.min(s.remaining),
                    reset_ms: t.reset_ms.max(s.reset_ms),
                },
            });
        }
        let empty = BucketState {
            limit: 0,
            remaining: 0,
            reset_ms: 0,
        };
        Quota {
            requests: out[0].unwrap_or(empty),
            tokens: out[1].unwrap_or(empty),
        }
    }
}

/// An admitted request's rate-limit outcome: its headers, and the tokens it took.
#[derive(Debug)]
pub struct Admitted {
    /// For the response's headers.
    pub quota: Quota,
    /// To be corrected once the usage is known.
    pub tokens: TokenCharge,
}

/// Admits the request against its tenant's and key's limits, taking one request and `tokens` (its bound) from each,
/// or refuses it (429) having taken nothing.
pub async fn admit(state: &AppState, key: &ProjectKey, tokens: u64) -> Result<Admitted, ApiError> {
    let principal = &key.0;
    let limits = Limits::of(state, principal)?;
    let buckets = Buckets::new(principal, limits, tokens);
    let decision = match state.limiter.check(buckets.get()).await {
        Ok(decision) => decision,
        // A shared limiter that cannot answer (the local one never fails): `rate_limit_fail` says whether the
        // request goes on unlimited (its headers then show full buckets) or gets 503. The limiter logs the outage.
        Err(_) if state.config.rate_limit_fail.admits_when_unavailable() => Decision::Admitted(
            buckets
                .get()
                .iter()
                .map(|b| BucketState {
                    limit: b.per_minute,
                    remaining: b.per_minute,
                    reset_ms: 0,
                })
                .collect(),
        ),
        Err(e) => return Err(ApiError::Unavailable(e.to_string())),
    };
    match decision {
        Decision::Admitted(states) => Ok(Admitted {
            quota: buckets.quota(&states),
            tokens: TokenCharge {
                state: state.clone(),
                principal: Arc::clone(principal),
                limits,
                taken: tokens,
                open: true,
            },
        }),
        Decision::Refused {
            bucket,
            retry_after_ms,
            states,
        } => {
            let refusing = &buckets.get()[bucket];
            let whose = match refusing.scope {
                Scope::Key => "this API key's",
                Scope::Tenant | Scope::AuthFailures | Scope::LoginAccount | Scope::LoginAddress => {
                    "the organization's"
                }
            };
            let what = match refusing.unit {
                Unit::Requests => "requests",
                Unit::Tokens => "tokens",
            };
            Err(ApiError::RateLimited {
                message: format!(
                    "Rate limit reached for {whose} {what} per minute (limit: {}, requested: {}). Please try again \
                     in {}",
                    refusing.per_minute,
                    refusing.cost,
                    duration(retry_after_ms.div_ceil(1000).max(1) * 1000),
                ),
                retry_after_ms,
                quota: Some(Box::new(buckets.quota(&states))),
            })
        }
    }
}

/// The tokens a request took up front: [`TokenCharge::settle`] corrects them to its usage; dropped unsettled (the
/// request was refused later, failed, or its client left before any usage), they are all given back.
pub struct TokenCharge {
    state: AppState,
    principal: Arc<Principal>,
    limits: Limits,
    taken: u64,
    open: bool,
}

impl std::fmt::Debug for TokenCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCharge")
            .field("key_id", &self.principal.key.id)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl TokenCharge {
    /// Corrects the token buckets to the request's real usage.
    pub async fn settle(mut self, used: u64) {
        self.open = false;
        correct(&self.state, &self.principal, self.limits, self.taken, used).await;
    }
}

impl Drop for TokenCharge {
    fn drop(&mut self) {
        if !self.open || self.taken == 0 {
            return;
        }
        // Dropped on a refusal or a failure path, which cannot wait here: the give-back runs on the app's tracker.
        let (state, principal, limits, taken) = (
            self.state.clone(),
            Arc::clone(&self.principal),
            self.limits,
            self.taken,
        );
        let tasks = self.state.tasks.clone();
        tasks.spawn(async move { correct(&state, &principal, limits, taken, 0).await });
    }
}

/// Moves each token bucket by `used − taken`.
async fn correct(state: &AppState, principal: &Principal, limits: Limits, taken: u64, used: u64) {
    let delta = i64::try_from(used)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(taken).unwrap_or(i64::MAX));
    if delta == 0 {
        return;
    }
    let buckets = Buckets::new(principal, limits, 0);
    for b in buckets.get().iter().filter(|b| b.unit == Unit::Tokens) {
        if let Err(error) = state.limiter.adjust(b, delta).await {
            // A correction lost costs at most one request's bound of accuracy; the request itself is done.
            tracing::warn!(%error, key_id = %principal.key.id, delta, "rate-limit token correction failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_in_openais_format() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(12), "12ms");
        assert_eq!(duration(999), "999ms");
        assert_eq!(duration(1000), "1s");
        assert_eq!(duration(1500), "1.5s");
        assert_eq!(duration(1_234), "1.234s");
        assert_eq!(duration(59_990), "59.99s");
        assert_eq!(duration(60_000), "1m0s");
        assert_eq!(duration(360_000), "6m0s");
        assert_eq!(duration(61_500), "1m1.5s");
        assert_eq!(duration(3_600_000), "1h0m0s");
    }
}
