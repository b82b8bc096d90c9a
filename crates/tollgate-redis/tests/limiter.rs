//! The Redis limiter against a real redis-server (`scripts/redis` starts a throwaway one and exports
//! `TOLLGATE_TEST_REDIS_URL`): all-or-none checks, GCRA's burst and refill, truthful retry-after, adjustments, two
//! limiters ("nodes") sharing one Redis, and outages. Without a server each test prints a notice and passes, unless
//! `TOLLGATE_TEST_REDIS=1` (CI) makes a missing server a failure.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failing step should stop the test"
)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_core::ports::{Bucket, Decision, RateLimiter, Scope, Unit};
use tollgate_redis::{Options, RedisLimiter, key_name};

/// The server's URL, or `None` (with a notice) when the Redis tests are not to run here.
fn redis_url(test: &str) -> Option<String> {
    if let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL")
        && !url.is_empty()
    {
        return Some(url);
    }
    if std::env::var("TOLLGATE_TEST_REDIS").as_deref() == Ok("1") {
        panic!(
            "TOLLGATE_TEST_REDIS=1 but TOLLGATE_TEST_REDIS_URL is unset: run under scripts/redis"
        );
    }
    eprintln!(
        "{test}: skipped, no Redis (run under scripts/redis, or apt-get install redis-server)"
    );
    None
}

/// Bucket ids of their own for each test and run, so parallel tests and reruns never share a bucket.
fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "test-{name}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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

fn requests(id: &str, per_minute: u64) -> Bucket<'_> {
    bucket(id, Unit::Requests, per_minute, 1)
}

fn limiter(url: &str) -> RedisLimiter {
    RedisLimiter::new(url, Options::default()).unwrap()
}

/// A limiter on the test server, or `None` as [`redis_url`].
fn test_limiter(test: &str) -> Option<RedisLimiter> {
    redis_url(test).map(|url| limiter(&url))
}

async fn admitted(limiter: &RedisLimiter, buckets: &[Bucket<'_>]) -> bool {
    matches!(limiter.check(buckets).await.unwrap(), Decision::Admitted(_))
}

/// The refusal's bucket index and retry-after, or a panic if admitted.
async fn refused(limiter: &RedisLimiter, buckets: &[Bucket<'_>]) -> (usize, u64) {
    match limiter.check(buckets).await.unwrap() {
        Decision::Refused {
            bucket,
            retry_after_ms,
            ..
        } => (bucket, retry_after_ms),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_check_takes_from_every_bucket_or_from_none() {
    let Some(l) = test_limiter("all_or_none") else {
        return;
    };
    let (wide, narrow) = (unique("wide"), unique("narrow"));
    // 6000/min: a 10 ms interval, 100 requests of burst; 30/min: one unit (2 s) and a second of slack, a burst of one.
    let both = [requests(&wide, 6000), requests(&narrow, 30)];
    match l.check(&both).await.unwrap() {
        Decision::Admitted(states) => {
            assert_eq!(states.len(), 2);
            assert_eq!(states[0].limit, 6000);
            assert!((98..=99).contains(&states[0].remaining), "{states:?}");
            assert_eq!(states[1].remaining, 0);
            assert!((1900..=2000).contains(&states[1].reset_ms), "{states:?}");
        }
        other => panic!("first check refused: {other:?}"),
    }
    // The narrow bucket refuses, so the wide one must not be charged for these.
    for _ in 0..5 {
        let (index, retry) = refused(&l, &both).await;
        assert_eq!(index, 1);
        assert!((1..=1000).contains(&retry), "retry_after_ms {retry}");
    }
    match l.check(&[requests(&wide, 6000)]).await.unwrap() {
        // One request taken before, this one now: 98 left (99 if 10 ms passed), never the 93 of a leak.
        Decision::Admitted(states) => assert!(states[0].remaining >= 97, "{states:?}"),
        other => panic!("wide bucket refused: {other:?}"),
    }
    // The first refusing bucket is named, whatever its position.
    let (index, _) = refused(&l, &[requests(&narrow, 30), requests(&wide, 6000)]).await;
    assert_eq!(index, 0);
}

#[tokio::test]
async fn the_burst_is_one_seconds_worth_then_it_refills_at_the_rate() {
    let Some(l) = test_limiter("burst_and_refill") else {
        return;
    };
    let id = unique("refill");
    // 120/min: one every 500 ms, a burst of 2.
    let b = [requests(&id, 120)];
    assert!(admitted(&l, &b).await);
    assert!(admitted(&l, &b).await);
    let (_, retry) = refused(&l, &b).await;
    assert!((400..=500).contains(&retry), "retry_after_ms {retry}");
    // Driven hard for 2 s: one more every 500 ms, no bursts.
    let start = Instant::now();
    let mut admits = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if admitted(&l, &b).await {
            admits += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        (3..=5).contains(&admits),
        "{admits} admitted in 2 s at 120/min"
    );
}

#[tokio::test]
async fn retry_after_is_when_every_bucket_admits() {
    let Some(l) = test_limiter("retry_after") else {
        return;
    };
    let (fast, slow) = (unique("fast"), unique("slow"));
    // 120/min has room for a second request; 30/min (2 s a unit, a second of slack) has room again after 1 s: the
    // request waits for the slower.
    let both = [requests(&fast, 120), requests(&slow, 30)];
    assert!(admitted(&l, &both).await);
    let (index, retry) = refused(&l, &both).await;
    assert_eq!(index, 1);
    assert!((900..=1000).contains(&retry), "retry_after_ms {retry}");
    tokio::time::sleep(Duration::from_millis(retry - 150)).await;
    refused(&l, &both).await;
    tokio::time::sleep(Duration::from_millis(170)).await;
    assert!(
        admitted(&l, &both).await,
        "not admitted after retry_after_ms"
    );
}

#[tokio::test]
async fn a_request_larger_than_the_burst_passes_once_and_leaves_debt() {
    let Some(l) = test_limiter("large_request") else {
        return;
    };
    let id = unique("tokens");
    // 600 tokens/min: 100 ms a token, a burst of 10; 50 tokens is five seconds' worth.
    assert!(admitted(&l, &[bucket(&id, Unit::Tokens, 600, 50)]).await);
    let (_, retry) = refused(&l, &[bucket(&id, Unit::Tokens, 600, 1)]).await;
    // 5 s of debt, less the burst's room for one token (0.9 s).
    assert!((4000..=4100).contains(&retry), "retry_after_ms {retry}");
    let (_, retry) = refused(&l, &[bucket(&id, Unit::Tokens, 600, 50)]).await;
    assert!((4900..=5000).contains(&retry), "retry_after_ms {retry}");
    // An absurd cost still passes a full bucket once; the debt it leaves is capped, never wrapped to nothing.
    let huge = unique("huge");
    assert!(admitted(&l, &[bucket(&huge, Unit::Tokens, 60, u64::MAX)]).await);
    let (_, retry) = refused(&l, &[bucket(&huge, Unit::Tokens, 60, 1)]).await;
    assert!(retry >= 1_000_000_000, "retry_after_ms {retry}");
    // A cost of nothing takes nothing and leaves nothing in Redis.
    let free = unique("free");
    for _ in 0..3 {
        assert!(admitted(&l, &[bucket(&free, Unit::Tokens, 60, 0)]).await);
    }
    assert!(admitted(&l, &[bucket(&free, Unit::Tokens, 60, 1)]).await);
}

#[tokio::test]
async fn adjust_gives_back_and_takes_without_a_check() {
    let Some(l) = test_limiter("adjust") else {
        return;
    };
    let id = unique("adjust");
    let tokens = |cost| bucket(&id, Unit::Tokens, 6000, cost);
    // 6000 tokens/min: 10 ms a token, a burst of 100.
    assert!(admitted(&l, &[tokens(100)]).await);
    refused(&l, &[tokens(50)]).await;
    l.adjust(&tokens(0), -60).await.unwrap();
    assert!(
        admitted(&l, &[tokens(50)]).await,
        "the 60 given back were not"
    );
    l.adjust(&tokens(0), 1000).await.unwrap();
    let (_, retry) = refused(&l, &[tokens(1)]).await;
    assert!(
        retry > 9000,
        "1000 tokens taken back leave ~10 s of debt, not {retry} ms"
    );
    // Giving back more than was taken fills the bucket, no further.
    let fresh = unique("adjust-fresh");
    let t = |cost| bucket(&fresh, Unit::Tokens, 6000, cost);
    l.adjust(&t(0), -100_000).await.unwrap();
    match l.check(&[t(1)]).await.unwrap() {
        Decision::Admitted(states) => assert!(states[0].remaining <= 99, "{states:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn idle_buckets_expire_from_redis() {
    let Some(url) = redis_url("expiry") else {
        return;
    };
    let l = limiter(&url);
    let id = unique("expiry");
    let b = requests(&id, 120);
    assert!(admitted(&l, std::slice::from_ref(&b)).await);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(key_name(&b))
        .query_async(&mut c)
        .await
        .unwrap();
    // The bucket is full again 500 ms after its one request, and gone from Redis then.
    assert!((1..=500).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_share_each_limit() {
    let Some(url) = redis_url("two_nodes") else {
        return;
    };
    let (a, b) = (limiter(&url), limiter(&url));
    let id = unique("shared");
    // 600/min: one every 100 ms and a burst of 10, driven from both nodes for 3 s as fast as they go.
    let run = |l: RedisLimiter, id: String| async move {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut admits = 0u64;
        while Instant::now() < deadline {
            if admitted(&l, &[requests(&id, 600)]).await {
                admits += 1;
            }
        }
        admits
    };
    let start = Instant::now();
    let (x, y) = tokio::join!(run(a, id.clone()), run(b, id.clone()));
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = 10.0 + elapsed / 0.1;
    let total = (x + y) as f64;
    // At most the limit (+2%) together; each node alone would have admitted it all.
    assert!(
        total <= allowed * 1.02 + 1.0,
        "{x} + {y} admitted, limit {allowed:.0}"
    );
    assert!(
        total >= allowed * 0.9,
        "{x} + {y} admitted, limit {allowed:.0}"
    );
    assert!(x > 0 && y > 0, "one node admitted nothing: {x} + {y}");
}

/// A redis-server of this test's own on a TCP port, killed when dropped.
struct Server(Child);

/// The redis-server binary: `scripts/redis`'s, else the one on PATH; `None` (with a notice, or a panic under
/// `TOLLGATE_TEST_REDIS=1`) when there is none.
fn server_binary(test: &str) -> Option<String> {
    let bin = std::env::var("TOLLGATE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    if Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(bin);
    }
    if std::env::var("TOLLGATE_TEST_REDIS").as_deref() == Ok("1") {
        panic!("TOLLGATE_TEST_REDIS=1 but there is no redis-server to start ({bin})");
    }
    eprintln!("{test}: skipped, no redis-server binary to start and stop");
    None
}

impl Server {
    fn start(bin: &str, port: u16) -> Option<Self> {
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &std::env::temp_dir().display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self(child));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not listen on {port}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails within the deadline (connect + response timeouts, with room for a loaded machine).
async fn fails_fast(l: &RedisLimiter, id: &str) {
    let start = Instant::now();
    assert!(
        l.check(&[requests(id, 60)]).await.is_err(),
        "admitted without Redis"
    );
    assert!(l.ping().await.is_err());
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "took {:?}",
        start.elapsed()
    );
}

/// Checks until one succeeds (the pause after an error, then a reconnection), within 3 s.
async fn recovers(l: &RedisLimiter, id: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if l.check(&[requests(id, 6000)]).await.is_ok() {
            l.ping().await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the limiter did not recover within 3 s of Redis coming back");
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_at_once_and_the_limiter_recovers() {
    let Some(bin) = server_binary("outage") else {
        return;
    };
    let port = free_port();
    let l = limiter(&format!("redis://127.0.0.1:{port}"));
    let id = unique("outage");
    // Nothing listens yet: the server was down when the node started.
    fails_fast(&l, &id).await;
    let server = Server::start(&bin, port).expect("start redis-server");
    recovers(&l, &id).await;
    // Redis dies under a running node, then comes back.
    drop(server);
    fails_fast(&l, &id).await;
    let _server = Server::start(&bin, port).expect("restart redis-server");
    recovers(&l, &id).await;
}

#[tokio::test]
async fn a_redis_that_never_answers_is_an_error_within_the_timeout() {
    // No Redis needed: a listener that never answers stands for one that hangs.
    // Accepts connections (the kernel's backlog) and never answers a byte.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let l = limiter(&format!("redis://127.0.0.1:{port}"));
    let id = unique("silent");
    for _ in 0..3 {
        fails_fast(&l, &id).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}
