//! Rate limits: per-minute request and token limits of a tenant (its plan, or the operator's override) and of a key
//! (`rate_limits`, tightening), GCRA with one second's burst (a slow limit: one unit and a second of slack) on the
//! server's clock; the 429 (shape, `Retry-After` that tells the truth), the `x-ratelimit-*` headers on plain and
//! streamed answers, tokens taken at the hold's bound and corrected to the usage, nothing sent upstream or charged on
//! a 429, its audit event, and the per-address limit on failed authentications, which answers 429 before any store
//! read.

use super::sse_data;
use reqwest::Response;
use serde_json::{Value, json};
use tollgate_core::plan::Plan;
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

/// A server whose `limited` plan allows `rpm` requests and `tpm` tokens a minute.
async fn app_with(rpm: u32, tpm: u64) -> TestApp {
    TestApp::builder()
        .configure(move |c| {
            c.plans.insert(
                "limited".to_owned(),
                Plan {
                    max_keys: None,
                    requests_per_minute: rpm,
                    tokens_per_minute: tpm,
                    ip_allowlist: false,
                },
            );
        })
        .start()
        .await
}

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The six `x-ratelimit-*` headers: (limit, remaining, reset) for requests, then for tokens.
fn limits(r: &Response) -> [String; 6] {
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ]
    .map(|h| header(r, h).to_owned())
}

/// An `echo` body (free, answered in process) whose token bound is `max_tokens` plus its prompt bound.
fn echo(text: &str, max_tokens: u64) -> Value {
    let mut body = TestApp::chat_body("echo", text);
    body["max_tokens"] = json!(max_tokens);
    body
}

/// The prompt bound the hold (and so the rate limit) counts for `body`: its bytes and the chat template.
fn prompt_bound(body: &Value) -> u64 {
    serde_json::to_vec(body).unwrap().len() as u64 + 4 + 3
}

async fn ok(r: Response) -> Response {
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r
}

#[tokio::test]
async fn the_429_has_the_exact_shape_and_a_retry_after_that_tells_the_truth() {
    let app = app_with(60, 1_000_000).await;
    let t = app.tenant("limited").await;
    let body = echo("hi", 10);
    // 60 a minute: one second's worth is one request, and the bucket holds a second of slack beside it.
    for _ in 0..2 {
        ok(app.chat(&t, &body).await).await;
    }
    let refused = app.chat(&t, &body).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "x-ratelimit-limit-requests"), "60");
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&refused, "x-ratelimit-reset-requests"), "2s");
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"error":{"message":"Rate limit reached for the organization's requests per minute (limit: 60, requested: 1). Please try again in 1s","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#
    );
    // Just before Retry-After: still refused; at it: admitted.
    app.clock.advance_ms(999);
    assert_eq!(app.chat(&t, &body).await.status(), 429);
    app.clock.advance_ms(1);
    ok(app.chat(&t, &body).await).await;
}

#[tokio::test]
async fn plain_and_streamed_answers_carry_the_headers_in_openais_formats() {
    // 600 requests a minute (10 a second, 100 ms each); 60 000 tokens (1 000 a second, 1 ms each).
    let app = app_with(600, 60_000).await;
    let t = app.tenant("limited").await;
    let body = echo("count me", 100);
    let bound = prompt_bound(&body) + 100;
    let r = ok(app.chat(&t, &body).await).await;
    assert_eq!(
        limits(&r),
        [
            "600".to_owned(),
            "9".to_owned(),
            "100ms".to_owned(),
            "60000".to_owned(),
            (1_000 - bound).to_string(),
            format!("{bound}ms"),
        ]
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = ok(app.chat(&t, &streamed).await).await;
    let [limit, remaining, reset, tlimit, ..] = limits(&r);
    assert_eq!(
        (
            limit.as_str(),
            remaining.as_str(),
            reset.as_str(),
            tlimit.as_str()
        ),
        ("600", "8", "200ms", "60000")
    );
    assert_eq!(sse_data(&r.text().await.unwrap()).last().unwrap(), "[DONE]");
    // Models are not metered: the catalog answers without the headers.
    let models = app.get("/v1/models", &t.project_key).await;
    assert!(models.headers().get("x-ratelimit-limit-requests").is_none());
}

#[tokio::test]
async fn a_keys_limit_tightens_the_tenants_and_the_tenants_is_shared_by_its_keys() {
    let app = app_with(120, 1_000_000).await;
    let t = app.tenant("limited").await;
    let (_, tight) = app
        .key_in(
            &t,
            json!({"name": "tight", "rate_limits": {"requests_per_minute": 30}}),
        )
        .await;
    let body = echo("hi", 10);
    let r = ok(app.post("/v1/chat/completions", &tight, &body).await).await;
    // The key's 30 a minute is the tighter limit; its bucket refills in 2 s, and has room for the next request
    // (2 s of a bucket of 3: one unit and a second of slack) after 1 s.
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "30");
    assert_eq!(header(&r, "x-ratelimit-reset-requests"), "2s");
    let refused = app.post("/v1/chat/completions", &tight, &body).await;
    assert_eq!(header(&refused, "retry-after"), "1");
    let e = error_of(refused, 429).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit reached for this API key's requests per minute (limit: 30"),
        "{e}"
    );
    // The tenant (two a second) has room for one more, from another key; then it is the tenant that refuses.
    ok(app.chat(&t, &body).await).await;
    let e = error_of(app.chat(&t, &body).await, 429).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("the organization's requests per minute (limit: 120"),
        "{e}"
    );
}

#[tokio::test]
async fn tokens_are_taken_at_the_bound_and_corrected_to_the_usage() {
    // 1 000 tokens a second; a request bound of most of that.
    let app = app_with(6_000, 60_000).await;
    let t = app.tenant("limited").await;
    let body = echo("say this back", 850);
    let bound = prompt_bound(&body) + 850;
    assert!(bound < 1_000 && 2 * bound > 1_000);
    let r = ok(app.chat(&t, &body).await).await;
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        (1_000 - bound).to_string(),
        "the bound is taken up front"
    );
    let used = json_of(r, 200).await["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    assert!(used + bound <= 1_000, "{used}");
    // Corrected to what was used, the bucket has room for the same bound again at once.
    let r = ok(app.chat(&t, &body).await).await;
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        (1_000 - used - bound).to_string()
    );
    // A bound larger than the whole bucket waits for a full bucket (the usage refills in `used` ms), then runs
    // into debt.
    let big = echo("big", 5_000);
    let refused = app.chat(&t, &big).await;
    assert_eq!(header(&refused, "retry-after"), "1");
    let e = error_of(refused, 429).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("the organization's tokens per minute (limit: 60000"),
        "{e}"
    );
    app.clock.advance(1);
    ok(app.chat(&t, &big).await).await;
}

#[tokio::test]
async fn a_429_reaches_no_upstream_charges_nothing_and_is_audited() {
    // 30 a minute: one request at once.
    let app = app_with(30, 1_000_000).await;
    let t = app.tenant("limited").await;
    ok(app
        .chat(&t, &TestApp::chat_body("fast", "mock:words=3 first"))
        .await)
    .await;
    let credits = "/v1/organization/credits";
    let before = json_of(app.get(credits, &t.admin_key).await, 200).await["balance_cents"].clone();
    let refused = app
        .chat(&t, &TestApp::chat_body("fast", "mock:words=3 refused"))
        .await;
    assert_eq!(refused.status(), 429);
    let last = app.last_upstream_request().await;
    assert!(
        last["body"]["messages"][0]["content"] == "mock:words=3 first",
        "the upstream saw the refused request: {last}"
    );
    let after = json_of(app.get(credits, &t.admin_key).await, 200).await["balance_cents"].clone();
    assert_eq!(before, after, "nothing charged");
    // A settled request after it: the refusal's event, queued earlier, is committed by then.
    app.clock.advance(1);
    ok(app.chat(&t, &echo("sync", 1)).await).await;
    let events = super::audit::events(&app, &t).await;
    let statuses: Vec<Option<u16>> = events.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Some(200), Some(429), Some(200)]);
    let refusal = events.iter().find(|e| e.status == Some(429)).unwrap();
    assert_eq!(refusal.key_id.as_deref(), Some(t.project_key_id.as_str()));
    assert_eq!(refusal.model.as_deref(), Some("fast"));
    assert_eq!(refusal.prompt_tokens, None);
}

#[tokio::test]
async fn a_flood_of_bad_keys_from_one_address_gets_429_before_any_store_read() {
    let app = TestApp::builder()
        .configure(|c| {
            c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            // One every 2 s (a bucket of one and a second of slack): a second failure at once is one too many.
            c.auth_failures_per_minute = 30;
        })
        .start()
        .await;
    let t = app.tenant("pro").await;
    let (_, fresh) = app.key_in(&t, json!({"name": "never used"})).await;
    let from = |ip: &str, key: &str| {
        app.with_key(reqwest::Method::GET, "/v1/models", key)
            .header("x-forwarded-for", ip)
            .send()
    };
    // Well-formed keys that do not exist: each a store read, then 401; the second takes the address past its
    // limit, since a read's failure is counted once it is known.
    for _ in 0..2 {
        let unknown = app
            .state
            .prefixes
            .generate(tollgate_core::key::KeyKind::Project);
        let r = from("203.0.113.7", unknown.expose_secret()).await.unwrap();
        assert_eq!(error_of(r, 401).await["message"], "Invalid API key");
    }
    // Over the limit: malformed and unknown keys alike get 429 with Retry-After.
    let r = from("203.0.113.7", "sk_live_garbage").await.unwrap();
    assert_eq!(header(&r, "retry-after"), "3");
    let e = error_of(r, 429).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );
    // A valid key never looked up before is refused too from that address: the limit is checked before the read.
    let r = from("203.0.113.7", &fresh).await.unwrap();
    assert_eq!(r.status(), 429);
    // Another address is not concerned, and a known (cached) key still works from the flooding one.
    assert_eq!(from("203.0.113.8", &fresh).await.unwrap().status(), 200);
    assert_eq!(from("203.0.113.7", &fresh).await.unwrap().status(), 200);
    // Two failures counted, 4 s of a bucket of 3: a malformed key, itself a failure (2 s), fits again in 3 s.
    app.clock.advance_ms(2_999);
    assert_eq!(
        from("203.0.113.7", "sk_live_garbage")
            .await
            .unwrap()
            .status(),
        429
    );
    app.clock.advance_ms(1);
    assert_eq!(
        from("203.0.113.7", "sk_live_garbage")
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn the_operator_overrides_a_tenants_limits_and_can_clear_the_override() {
    let app = app_with(600, 1_000_000).await;
    let t: TestTenant = app.tenant("limited").await;
    let body = echo("hi", 10);
    let path = format!("/operator/v1/tenants/{}", t.id);
    let r = ok(app.chat(&t, &body).await).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "600");
    json_of(
        app.operator_post(
            &path,
            &json!({"requests_per_minute": 60, "tokens_per_minute": 6000}),
        )
        .await,
        200,
    )
    .await;
    let r = app.chat(&t, &body).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "60");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "6000");
    assert_eq!(app.chat(&t, &body).await.status(), 429);
    let e = error_of(
        app.operator_post(&path, &json!({"requests_per_minute": 0}))
            .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "requests_per_minute");
    json_of(
        app.operator_post(
            &path,
            &json!({"requests_per_minute": null, "tokens_per_minute": null}),
        )
        .await,
        200,
    )
    .await;
    app.clock.advance(1);
    let r = ok(app.chat(&t, &body).await).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "600");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "1000000");
}
