//! The in-process [`RateLimiter`]: one node's buckets in memory, for a deployment without `redis_url`.
//!
//! # Algorithm: GCRA
//! Each bucket is the generic cell rate algorithm (a token bucket written as one timestamp). A limit of `L` units
//! per minute makes each unit cost `T = 60 s / L` of time; the bucket keeps its *theoretical arrival time* `tat`,
//! the instant at which it would be full again (`tat ≤ now`: full). Its backlog is `b = max(tat − now, 0)` and its
//! burst tolerance `τ = max(1 s, T + min(T, 1 s))`: one second's worth of the limit can be taken at once, so a client
//! driving a key far above its limit for a minute gets `L` plus one second's worth, within 2 % for any window of a
//! minute or more, and there is no window boundary at which a double burst gets through. A slow limit's bucket
//! (`T` near or above a second) holds one unit plus up to a second of slack: with a tolerance of exactly one unit
//! it would admit only once entirely empty, and lose the time between its emptying and the next arrival on every
//! unit (60/min driven at 5 requests a second admitted 10 % under its limit); the slack banks up to a second of it.
//!
//! A request of `cost` units needs `need = min(cost·T, τ)` of room: it is admitted when `b + need ≤ τ`, and then
//! `tat = max(tat, now) + cost·T`. A request bigger than the whole bucket (a token bound above one second's worth)
//! is thus admitted only when the bucket is full, and pushes it into debt that later requests wait out; a refused
//! one learns exactly how long until it would fit (`b + need − τ`), which is what `Retry-After` says.
//!
//! # Concurrency and memory
//! Buckets live in [`SHARDS`] maps, each behind its own `std` mutex (held for a few hundred instructions, never
//! across an await), picked by a hash of the id: two requests contend only when their ids share a shard. A check of
//! several buckets locks their shards in index order (no deadlock) and decides and takes under all of them, so it
//! is all-or-none against concurrent checks. A bucket that is full again (`tat ≤ now`) is the same as no bucket, so
//! each shard sweeps such entries whenever it has doubled since its last sweep (amortised O(1), no background task):
//! memory follows the buckets that are still refilling, not every key or address ever seen. A shard still over
//! [`MAX_PER_SHARD`] after a sweep (a flood of distinct addresses) drops its entries nearest to full first, which
//! can only ever admit, never refuse, a request wrongly.

use async_trait::async_trait;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tollgate_core::ports::{
    Bucket, BucketState, Clock, Decision, RateLimitError, RateLimiter, Scope, Unit,
};

/// Independent maps, so unrelated ids rarely share a lock.
pub const SHARDS: usize = 64;
/// Entries one shard keeps at most (64 × 16 384 ≈ 1 M buckets-sets, some tens of MiB).
pub const MAX_PER_SHARD: usize = 16_384;
/// A shard is swept for full buckets no more often than when it has this many entries.
const MIN_SWEEP: usize = 64;

const NANOS_PER_MINUTE: u128 = 60_000_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MS: u64 = 1_000_000;

/// The buckets of one id: one `tat` (Unix nanoseconds; 0: full) per scope and unit.
type Tats = [u64; 10];

/// One shard: buckets by id, and the size at which it is next swept.
#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<Box<str>, Tats>,
    sweep_at: usize,
}

/// Per-minute limits in this process's memory (see the module's doc).
pub struct LocalRateLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LocalRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRateLimiter").finish_non_exhaustive()
    }
}

/// Where a bucket's `tat` sits in its id's [`Tats`].
fn slot(scope: Scope, unit: Unit) -> usize {
    let s = match scope {
        Scope::Tenant => 0,
        Scope::Key => 1,
        Scope::AuthFailures => 2,
        Scope::LoginAccount => 3,
        Scope::LoginAddress => 4,
    };
    s * 2 + usize::from(unit == Unit::Tokens)
}

/// A bucket's limit as GCRA sees it, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Units per minute.
    pub per_minute: u64,
}

impl Gcra {
    /// What `units` cost in time: `units × 60 s / per_minute`, rounded up (never cheaper than the limit).
    pub fn cost_ns(self, units: u64) -> u64 {
        let per = u128::from(self.per_minute.max(1));
        let ns = (u128::from(units) * NANOS_PER_MINUTE).div_ceil(per);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The burst tolerance: one second's worth, and at least one unit plus up to a second of slack.
    pub fn tolerance_ns(self) -> u64 {
        let unit = self.cost_ns(1);
        NANOS_PER_SECOND.max(unit.saturating_add(unit.min(NANOS_PER_SECOND)))
    }

    /// The room a request of `cost` units needs in the bucket.
    fn need_ns(self, cost: u64) -> u64 {
        self.cost_ns(cost).min(self.tolerance_ns())
    }

    /// How long until `cost` fits a bucket whose `tat` it is at `now`: 0 when it fits now.
    pub fn wait_ns(self, tat: u64, now: u64, cost: u64) -> u64 {
        let backlog = tat.saturating_sub(now);
        backlog
            .saturating_add(self.need_ns(cost))
            .saturating_sub(self.tolerance_ns())
    }

    /// The bucket's `tat` once `cost` is taken at `now`.
    pub fn take(self, tat: u64, now: u64, cost: u64) -> u64 {
        tat.max(now).saturating_add(self.cost_ns(cost))
    }

    /// The headers' view of a bucket whose `tat` it is at `now`.
    pub fn state(self, tat: u64, now: u64) -> BucketState {
        let backlog = tat.saturating_sub(now);
        let room = self.tolerance_ns().saturating_sub(backlog);
        let remaining = u128::from(room) * u128::from(self.per_minute) / NANOS_PER_MINUTE;
        BucketState {
            limit: self.per_minute,
            remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
            reset_ms: backlog.div_ceil(NANOS_PER_MS),
        }
    }
}

impl LocalRateLimiter {
    /// An empty limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            clock,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.now_ms())
            .unwrap_or(0)
            .saturating_mul(NANOS_PER_MS)
    }

    fn shard_of(&self, id: &str) -> usize {
        // The shard count is a power of two: the low bits of a good hash pick it evenly.
        usize::try_from(self.hasher.hash_one(id)).unwrap_or(0) % SHARDS
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves at worst one bucket's `tat` stale: keep serving.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many ids have buckets in memory (for tests of eviction).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.lock(s).buckets.len()).sum()
    }

    /// Whether no id has a bucket in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    fn tat(&self, id: &str, slot: usize) -> u64 {
        self.buckets.get(id).map_or(0, |t| t[slot])
    }

    /// Sets one bucket's `tat`, making room first if the shard has grown.
    fn set(&mut self, id: &str, slot: usize, tat: u64, now: u64) {
        if let Some(tats) = self.buckets.get_mut(id) {
            tats[slot] = tat;
            return;
        }
        if tat <= now {
            // A full bucket needs no entry.
            return;
        }
        if self.buckets.len() >= self.sweep_at.max(MIN_SWEEP) {
            self.sweep(now);
        }
        let mut tats = Tats::default();
        tats[slot] = tat;
        self.buckets.insert(id.into(), tats);
    }

    /// Forgets full buckets; then, over the cap, the ones nearest to full.
    fn sweep(&mut self, now: u64) {
        self.buckets
            .retain(|_, tats| tats.iter().any(|&tat| tat > now));
        if self.buckets.len() >= MAX_PER_SHARD {
            let mut by_fullness: Vec<(u64, Box<str>)> = self
                .buckets
                .iter()
                .map(|(id, tats)| (tats.iter().copied().max().unwrap_or(0), id.clone()))
                .collect();
            by_fullness.sort_unstable();
            let excess = self.buckets.len() + 1 - MAX_PER_SHARD / 2;
            for (_, id) in by_fullness.into_iter().take(excess) {
                self.buckets.remove(&id);
            }
        }
        self.sweep_at = (self.buckets.len() * 2).min(MAX_PER_SHARD);
    }
}

/// The locked shard `shard` among `guards`.
fn locked<'g>(
    guards: &'g mut [(usize, MutexGuard<'_, Shard>)],
    shard: usize,
) -> Option<&'g mut Shard> {
    guards
        .iter_mut()
        .find(|(s, _)| *s == shard)
        .map(|(_, g)| &mut **g)
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, buckets: &[Bucket<'_>]) -> Result<Decision, RateLimitError> {
        let now = self.now_ns();
        let shard_of: Vec<usize> = buckets.iter().map(|b| self.shard_of(b.id)).collect();
        let mut order = shard_of.clone();
        order.sort_unstable();
        order.dedup();
        // Every shard involved, locked in index order: the decision and the taking are one step.
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&s| (s, self.lock(s))).collect();
        let mut refused: Option<(usize, u64)> = None;
        let mut tats = Vec::with_capacity(buckets.len());
        for (i, b) in buckets.iter().enumerate() {
            let gcra = Gcra {
                per_minute: b.per_minute,
            };
            let tat =
                locked(&mut guards, shard_of[i]).map_or(0, |s| s.tat(b.id, slot(b.scope, b.unit)));
            let wait = gcra.wait_ns(tat, now, b.cost);
            if wait > 0 && refused.is_none_or(|(_, w)| wait > w) {
                // The longest wait is the one that tells when the request would fit every bucket.
                refused = Some((i, wait));
            }
            tats.push(tat);
        }
        if let Some((bucket, wait)) = refused {
            let states = buckets
                .iter()
                .zip(&tats)
                .map(|(b, &tat)| {
                    Gcra {
                        per_minute: b.per_minute,
                    }
                    .state(tat, now)
                })
                .collect();
            return Ok(Decision::Refused {
                bucket,
                retry_after_ms: wait.div_ceil(NANOS_PER_MS).max(1),
                states,
            });
        }
        let mut states = Vec::with_capacity(buckets.len());
        for (i, (b, tat)) in buckets.iter().zip(tats).enumerate() {
            let gcra = Gcra {
                per_minute: b.per_minute,
            };
            let taken = gcra.take(tat, now, b.cost);
            if let Some(s) = locked(&mut guards, shard_of[i]) {
                s.set(b.id, slot(b.scope, b.unit), taken, now);
            }
            states.push(gcra.state(taken, now));
        }
        Ok(Decision::Admitted(states))
    }

    async fn adjust(&self, bucket: &Bucket<'_>, delta: i64) -> Result<(), RateLimitError> {
        let now = self.now_ns();
        let gcra = Gcra {
            per_minute: bucket.per_minute,
        };
        let slot = slot(bucket.scope, bucket.unit);
        let mut shard = self.lock(self.shard_of(bucket.id));
        let tat = shard.tat(bucket.id, slot);
        let moved = gcra.cost_ns(delta.unsigned_abs());
        let tat = if delta >= 0 {
            tat.max(now).saturating_add(moved)
        } else {
            // Given back: never past full (a bucket full at `now` has nothing more to give).
            tat.saturating_sub(moved).max(now.min(tat))
        };
        shard.set(bucket.id, slot, tat, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::ports::ManualClock;

    fn limiter() -> (Arc<ManualClock>, LocalRateLimiter) {
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let limiter = LocalRateLimiter::new(Arc::clone(&clock) as Arc<dyn Clock>);
        (clock, limiter)
    }

    fn bucket(id: &str, unit: Unit, per_minute: u64, cost: u64) -> Bucket<'_> {
        Bucket {
            scope: Scope::Key,
            id,
            unit,
            per_minute,
            cost,
        }
    }

    fn check(l: &LocalRateLimiter, buckets: &[Bucket<'_>]) -> Decision {
        futures::executor::block_on(l.check(buckets)).unwrap()
    }

    #[test]
    fn gcra_costs_and_tolerance() {
        let g = Gcra { per_minute: 60 };
        assert_eq!(g.cost_ns(1), 1_000_000_000);
        // One a second: one second's worth would be a single unit; it holds two.
        assert_eq!(g.tolerance_ns(), 2_000_000_000);
        assert_eq!(Gcra { per_minute: 600 }.tolerance_ns(), 1_000_000_000);
        // Slower: one unit plus a second of slack.
        assert_eq!(Gcra { per_minute: 30 }.tolerance_ns(), 3_000_000_000);
        assert_eq!(Gcra { per_minute: 1 }.tolerance_ns(), 61_000_000_000);
        // Rounded up: 7 per minute is 8.571…s each.
        assert_eq!(Gcra { per_minute: 7 }.cost_ns(1), 8_571_428_572);
        // Full bucket: one second's worth remains, and it is full now.
        let s = Gcra { per_minute: 3000 }.state(0, 5);
        assert_eq!((s.limit, s.remaining, s.reset_ms), (3000, 50, 0));
    }

    #[test]
    fn one_seconds_worth_is_the_burst_then_the_rate() {
        let (clock, l) = limiter();
        let b = [bucket("k", Unit::Requests, 600, 1)];
        for i in 0..10 {
            assert!(
                matches!(check(&l, &b), Decision::Admitted(_)),
                "burst request {i}"
            );
        }
        let Decision::Refused { retry_after_ms, .. } = check(&l, &b) else {
            panic!("the 11th at once is over one second's worth");
        };
        assert_eq!(retry_after_ms, 100);
        clock.advance_ms(99);
        assert!(matches!(check(&l, &b), Decision::Refused { .. }));
        clock.advance_ms(1);
        assert!(matches!(check(&l, &b), Decision::Admitted(_)));
    }

    #[test]
    fn driving_at_five_times_the_limit_admits_the_limit() {
        let (clock, l) = limiter();
        let b = [bucket("k", Unit::Requests, 600, 1)];
        let mut admitted = 0u64;
        // 50 requests a second (5× 600/min) for 60 s.
        for _ in 0..3000 {
            admitted += u64::from(matches!(check(&l, &b), Decision::Admitted(_)));
            clock.advance_ms(20);
        }
        // 600 in the minute, plus the one second's burst.
        assert!((600..=611).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_slow_limit_loses_no_time_between_arrivals() {
        let (clock, l) = limiter();
        let b = [bucket("k", Unit::Requests, 60, 1)];
        let mut admitted = 0u64;
        // Every 300 ms for 60 s against one a second: the arrival after each refill comes up to 200 ms late. A
        // bucket of exactly one unit loses that each time (about 50 admitted); the slack banks it.
        for _ in 0..200 {
            admitted += u64::from(matches!(check(&l, &b), Decision::Admitted(_)));
            clock.advance_ms(300);
        }
        assert!((60..=61).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_request_bigger_than_the_bucket_waits_for_a_full_bucket_then_goes_into_debt() {
        let (clock, l) = limiter();
        // 600 tokens a minute: 10 a second; a request bound of 50 tokens.
        let small = [bucket("k", Unit::Tokens, 600, 5)];
        let big = [bucket("k", Unit::Tokens, 600, 50)];
        assert!(matches!(check(&l, &big), Decision::Admitted(_)));
        // 5 s of debt: a small one waits 4.5 s (it needs half a second of room).
        let Decision::Refused { retry_after_ms, .. } = check(&l, &small) else {
            panic!("in debt");
        };
        assert_eq!(retry_after_ms, 4_500);
        // A second big one waits for the bucket to be full again: 5 s.
        let Decision::Refused { retry_after_ms, .. } = check(&l, &big) else {
            panic!("in debt");
        };
        assert_eq!(retry_after_ms, 5_000);
        clock.advance_ms(5_000);
        assert!(matches!(check(&l, &big), Decision::Admitted(_)));
    }

    #[test]
    fn all_or_none_and_the_longest_wait_is_told() {
        let (clock, l) = limiter();
        let tenant = Bucket {
            scope: Scope::Tenant,
            ..bucket("t", Unit::Requests, 60, 1)
        };
        let key = bucket("k", Unit::Requests, 30, 1);
        for _ in 0..2 {
            assert!(matches!(
                check(&l, std::slice::from_ref(&tenant)),
                Decision::Admitted(_)
            ));
        }
        // The tenant refuses (1 s); the key would admit but must not be taken from.
        let Decision::Refused {
            bucket: at,
            retry_after_ms,
            states,
        } = check(&l, &[tenant.clone(), key.clone()])
        else {
            panic!("tenant is empty");
        };
        assert_eq!((at, retry_after_ms), (0, 1_000));
        assert_eq!(states[1].remaining, 1, "nothing was taken from the key");
        clock.advance(1);
        let Decision::Admitted(states) = check(&l, &[tenant, key]) else {
            panic!("both have room");
        };
        assert_eq!((states[0].remaining, states[1].remaining), (0, 0));
        assert_eq!((states[0].reset_ms, states[1].reset_ms), (2_000, 2_000));
    }

    #[test]
    fn a_check_of_cost_zero_takes_nothing_and_refuses_only_past_the_limit() {
        let (clock, l) = limiter();
        let probe = [bucket("ip", Unit::Requests, 60, 0)];
        assert!(matches!(check(&l, &probe), Decision::Admitted(_)));
        assert!(l.is_empty(), "nothing taken");
        futures::executor::block_on(l.adjust(&bucket("ip", Unit::Requests, 60, 1), 3)).unwrap();
        // Three seconds of backlog, two of tolerance: refused for one more.
        let Decision::Refused { retry_after_ms, .. } = check(&l, &probe) else {
            panic!("over the limit");
        };
        assert_eq!(retry_after_ms, 1_000);
        clock.advance_ms(999);
        assert!(matches!(check(&l, &probe), Decision::Refused { .. }));
        clock.advance_ms(1);
        assert!(matches!(check(&l, &probe), Decision::Admitted(_)));
    }

    #[test]
    fn adjust_gives_back_and_takes() {
        let (_clock, l) = limiter();
        let b = [bucket("k", Unit::Tokens, 600, 10)];
        assert!(matches!(check(&l, &b), Decision::Admitted(_)));
        assert!(matches!(check(&l, &b), Decision::Refused { .. }));
        futures::executor::block_on(l.adjust(&b[0], -7)).unwrap();
        let Decision::Refused { retry_after_ms, .. } = check(&l, &b) else {
            panic!("only 7 of 10 are back");
        };
        assert_eq!(retry_after_ms, 300);
        // Giving back more than was taken never fills past full.
        futures::executor::block_on(l.adjust(&b[0], -1_000)).unwrap();
        let Decision::Admitted(states) = check(&l, &b) else {
            panic!("full again");
        };
        assert_eq!(states[0].remaining, 0);
        futures::executor::block_on(l.adjust(&b[0], 10)).unwrap();
        assert!(matches!(
            check(&l, &[bucket("k", Unit::Tokens, 600, 1)]),
            Decision::Refused {
                retry_after_ms: 1_100,
                ..
            }
        ));
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let (clock, l) = limiter();
        let ids: Vec<String> = (0..20_000)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        for id in &ids {
            let b = Bucket {
                scope: Scope::AuthFailures,
                ..bucket(id, Unit::Requests, 600, 1)
            };
            assert!(matches!(check(&l, &[b]), Decision::Admitted(_)));
        }
        assert!(l.len() <= SHARDS * MAX_PER_SHARD);
        clock.advance(1);
        // New addresses sweep the full ones out as their shards grow: memory follows the refilling buckets.
        for i in 0..20_000 {
            let id = format!("10.1.{}.{}", i / 256, i % 256);
            let b = Bucket {
                scope: Scope::AuthFailures,
                ..bucket(&id, Unit::Requests, 600, 1)
            };
            assert!(matches!(check(&l, &[b]), Decision::Admitted(_)));
            clock.advance_ms(1);
        }
        assert!(
            l.len() <= SHARDS * MIN_SWEEP * 2,
            "{} buckets kept",
            l.len()
        );
    }
}
