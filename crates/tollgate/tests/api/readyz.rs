//! `/readyz` and the rate limiter: a node whose Redis cannot be reached says so, and is not ready only when
//! `rate_limit_fail = "closed"` makes it refuse inference requests anyway.

use reqwest::Method;
use tollgate_server::limiter::FailPolicy;
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
    let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL") else {
        assert_ne!(
            std::env::var("TOLLGATE_TEST_REDIS").as_deref(),
            Ok("1"),
            "TOLLGATE_TEST_REDIS=1 but TOLLGATE_TEST_REDIS_URL is unset: run under scripts/redis"
        );
        eprintln!("a_reachable_redis_is_ready: skipped, no Redis (run under scripts/redis)");
        return;
    };
    let ready = json_of(readyz_with(url, FailPolicy::Closed).await, 200).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["rate_limiter"], "ok");
}
