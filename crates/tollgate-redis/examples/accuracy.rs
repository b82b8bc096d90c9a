//! Accuracy of the shared limit: one key driven at a multiple of its limit from several limiter instances
//! ("nodes") on one Redis, each check taking the tenant's and the key's request and token buckets as the pipeline
//! does, for a fixed time. Prints what was admitted against what the limit allows. Run by
//! `bench/rate_limit_accuracy_redis.sh`, which starts the Redis.
//!
//! `accuracy URL [PER_MINUTE] [SECONDS] [MULTIPLE] [NODES]` (defaults 600, 60, 5, 2).
#![expect(clippy::print_stdout, reason = "a benchmark prints its report")]
#![expect(clippy::unwrap_used, reason = "a benchmark stops at its first fault")]

use std::time::{Duration, Instant};
use tokio::time::sleep_until;
use tollgate_core::ports::{Bucket, Decision, RateLimiter, Scope, Unit};
use tollgate_redis::{Options, RedisLimiter};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap();
    let arg = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().unwrap());
    let (per_minute, seconds, multiple, nodes) = (arg(2, 600), arg(3, 60), arg(4, 5), arg(5, 2));
    let run = format!("bench-{}", std::process::id());
    let (tenant, key) = (format!("{run}-tenant"), format!("{run}-key"));
    let limiters: Vec<RedisLimiter> = (0..nodes)
        .map(|_| RedisLimiter::new(&url, Options::default()).unwrap())
        .collect();
    // Offered load: `multiple` × the limit, evenly spaced, handed to the nodes in turn.
    let offered = per_minute * multiple * seconds / 60;
    let gap = Duration::from_secs(seconds) / u32::try_from(offered).unwrap();
    let start = Instant::now() + Duration::from_millis(100);
    let node = |n: usize| {
        let limiter = &limiters[n];
        let (tenant, key) = (&tenant, &key);
        async move {
            let (mut admitted, mut latencies) = (0u64, Vec::new());
            let mut i = n as u64;
            while i < offered {
                sleep_until((start + gap * u32::try_from(i).unwrap()).into()).await;
                // The tenant's plan is wide; the key's own limit is the one that binds.
                let buckets = [
                    bucket(Scope::Tenant, tenant, Unit::Requests, per_minute * 100, 1),
                    bucket(Scope::Tenant, tenant, Unit::Tokens, 10_000_000, 40),
                    bucket(Scope::Key, key, Unit::Requests, per_minute, 1),
                    bucket(Scope::Key, key, Unit::Tokens, 1_000_000, 40),
                ];
                let sent = Instant::now();
                if let Decision::Admitted(_) = limiter.check(&buckets).await.unwrap() {
                    admitted += 1;
                }
                latencies.push(sent.elapsed());
                i += nodes;
            }
            (admitted, latencies)
        }
    };
    let results = futures::future::join_all((0..limiters.len()).map(node)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let admitted: u64 = results.iter().map(|r| r.0).sum();
    let mut latencies: Vec<Duration> = results.into_iter().flat_map(|r| r.1).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let limit = per_minute as f64 * elapsed / 60.0;
    let burst = (per_minute as f64 / 60.0).max(1.0);
    println!(
        "nodes {nodes}, limit {per_minute}/min, offered {offered} in {elapsed:.1} s ({multiple}x), admitted {admitted}"
    );
    println!(
        "admitted/limit {:.4} (limit over the run {limit:.1}; GCRA's bound: that + one second's burst, {:.4})",
        admitted as f64 / limit,
        (limit + burst) / limit
    );
    println!(
        "check latency (4 buckets, one round trip): p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

fn bucket<'a>(scope: Scope, id: &'a str, unit: Unit, per_minute: u64, cost: u64) -> Bucket<'a> {
    Bucket {
        scope,
        id,
        unit,
        per_minute,
        cost,
    }
}
