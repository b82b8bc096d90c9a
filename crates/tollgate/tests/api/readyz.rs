//! `/readyz` and the rate limiter: a node whose Redis cannot be reached says so, and is not ready only when
//! `rate_limit_fail = "closed"` makes it refuse inference requests anyway.

use reqwest::Method;
use tollgate_server::rate_limit::FailPolicy;
use tollgate_testkit::{TestApp, json_of};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn readyz_with(redis_url: String, policy: FailPolicy) -> reqwest::Response {
    let app = TestApp::builder()
        .configure(move |c| {
            c.redis_url = Some(redis_url.into());
            c.rate_limit_fail = policy;
        })
        .start()
        .await;
    app.request(Method::GET, "/readyz").send().await.unwrap()
}

/// The throwaway Redis `scripts/redis` started, or `None` (the test named `test` is skipped, saying so) when there
/// is none; with `TOLLGATE_TEST_REDIS=1` (CI) a missing one fails the test instead.
fn test_redis(test: &str) -> Option<String> {
    let url = std::env::var("TOLLGATE_TEST_REDIS_URL").ok();
    if url.is_none() {
        assert_ne!(
            std::env::var("TOLLGATE_TEST_REDIS").as_deref(),
            Ok("1"),
            "TOLLGATE_TEST_REDIS=1 but TOLLGATE_TEST_REDIS_URL is unset: run under scripts/redis"
        );
        eprintln!("{test}: skipped, no Redis (run under scripts/redis)");
    }
    url
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_and_stays_ready() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let ready = json_of(readyz_with(url, FailPolicy::Open).await, 200).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["rate_limiter"], "unavailable");
}

#[tokio::test]
async fn an_unreachable_redis_failing_closed_is_not_ready() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let response = readyz_with(url, FailPolicy::Closed).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let body = json_of(response, 503).await;
    assert_eq!(body["rate_limiter"], "unavailable");
}

#[tokio::test]
async fn a_reachable_redis_is_ready() {
    let Some(url) = test_redis("a_reachable_redis_is_ready") else {
        return;
    };
    let ready = json_of(readyz_with(url, FailPolicy::Closed).await, 200).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["rate_limiter"], "ok");
}

/// A plan allowing `rpm` requests a minute, for the limiter tests below.
fn limited(c: &mut tollgate_server::Config, rpm: u32) {
    c.plans.insert(
        "limited".to_owned(),
        tollgate_core::plan::Plan {
            max_keys: None,
            requests_per_minute: rpm,
            tokens_per_minute: 10_000_000,
            ip_allowlist: false,
        },
    );
}

/// What an unreachable Redis means for an inference request: answered without limits when failing open, 503 when
/// failing closed.
#[tokio::test]
async fn an_unreachable_redis_admits_or_refuses_inference_as_rate_limit_fail_says() {
    for (policy, status) in [(FailPolicy::Open, 200), (FailPolicy::Closed, 503)] {
        let url = format!("redis://127.0.0.1:{}", closed_port());
        let app = TestApp::builder()
            .configure(move |c| {
                c.redis_url = Some(url.into());
                c.rate_limit_fail = policy;
                limited(c, 60);
            })
            .start()
            .await;
        let t = app.tenant("limited").await;
        // Three times: the third request would be over a working limiter's burst (one unit and a second of slack).
        for _ in 0..3 {
            let r = app.chat(&t, &TestApp::chat_body("echo", "hi")).await;
            assert_eq!(r.status(), status, "{policy:?}");
        }
    }
}

/// Two nodes on one Redis share a tenant's limit: together they admit what one would, where two in-process limiters
/// would each admit their own burst.
#[tokio::test]
async fn two_nodes_on_one_redis_share_a_tenants_limit() {
    let Some(url) = test_redis("two_nodes_on_one_redis_share_a_tenants_limit") else {
        return;
    };
    let shared = url.clone();
    let a = TestApp::builder()
        .configure(move |c| {
            c.redis_url = Some(shared.into());
            limited(c, 600);
        })
        .start()
        .await;
    let b = TestApp::builder()
        .node_of(&a)
        .configure(move |c| {
            c.redis_url = Some(url.into());
            limited(c, 600);
        })
        .start()
        .await;
    let t = a.tenant("limited").await;
    let body = TestApp::chat_body("echo", "hi");
    let started = std::time::Instant::now();
    let mut admitted = 0u32;
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = node.chat(&t, &body).await;
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // One second's burst (10 of 600 a minute) and the rate since: what one limiter admits, whichever node asks.
    let bound = 10 + (elapsed * 10.0).ceil() as u32;
    assert!(
        admitted <= bound,
        "{admitted} admitted in {elapsed:.2} s, bound {bound}"
    );
    assert!(admitted >= 10, "{admitted} admitted: the burst must pass");
}
