//! `request.completed` audit events: one per inference request that identified a key, written with its charge when
//! it was answered and with its status when it was refused; none for a request whose key is unknown.

use super::sse_data;
use reqwest::Method;
use serde_json::json;
use tollgate_core::audit::{AuditEvent, EventType};
use tollgate_core::key::KeyKind;
use tollgate_core::money::Micros;
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

const USER_AGENT: &str = "audit-test/1.0";

/// `t`'s `request.completed` events, oldest first. Call [`sync`] first: refusals are written with the next batch.
pub(super) async fn events(app: &TestApp, t: &TestTenant) -> Vec<AuditEvent> {
    app.audit_events(&t.id, Some(EventType::RequestCompleted))
        .await
}

/// Once a request of `key` has been settled, every refusal's event queued before it has been committed too (the
/// recorder writes in queue order).
async fn sync(app: &TestApp, key: &str) {
    let r = app
        .post(
            "/v1/chat/completions",
            key,
            &TestApp::chat_body("echo", "sync"),
        )
        .await;
    json_of(r, 200).await;
}

/// What the store charged and counted for `t`: (prompt tokens, completion tokens, cost).
async fn usage(app: &TestApp, t: &TestTenant) -> (u64, u64, Micros) {
    let u = app.usage_totals(&t.id).await.unwrap();
    (u.prompt_tokens, u.completion_tokens, u.cost)
}

/// Every event's Debug text, checked for the key's secret.
fn assert_no_secret(events: &[AuditEvent], key: &str) {
    let secret = &key[12..key.len() - 4];
    for e in events {
        let text = format!("{e:?}");
        assert!(!text.contains(key) && !text.contains(secret), "{text}");
    }
}

#[tokio::test]
async fn an_answered_request_writes_one_event_with_its_charge_and_origin() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let response = app
        .with_key(Method::POST, "/v1/chat/completions", &t.project_key)
        .header("user-agent", USER_AGENT)
        .json(&TestApp::chat_body(
            "fast",
            "mock:latency=30 mock:words=4 hi",
        ))
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let out = json_of(response, 200).await;
    let events = events(&app, &t).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    let (prompt, completion, cost) = usage(&app, &t).await;
    assert_eq!(out["usage"]["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(
        (e.prompt_tokens, e.completion_tokens, e.cost),
        (Some(prompt), Some(completion), Some(cost))
    );
    assert!(cost > Micros::ZERO);
    assert_eq!(e.status, Some(200));
    assert_eq!(e.model.as_deref(), Some("fast"));
    assert!(e.latency_ms.unwrap() >= 30, "{e:?}");
    assert_eq!(e.origin.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(e.origin.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(e.origin.user_agent.as_deref(), Some(USER_AGENT));
    assert_eq!(e.actor.id.as_deref(), Some(t.project_key_id.as_str()));
    assert_eq!(e.key_id.as_deref(), Some(t.project_key_id.as_str()));
    assert_eq!(
        e.key_last4.as_deref(),
        Some(&t.project_key[t.project_key.len() - 4..])
    );
    assert_eq!(e.project_id.as_deref(), Some(t.project_id.as_str()));
    assert_eq!(e.effective_at, app.clock_now());
    assert_no_secret(&events, &t.project_key);
}

#[tokio::test]
async fn a_streamed_request_writes_its_event_with_its_final_settlement() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let mut body = TestApp::chat_body("fast", "mock:chunks=3 mock:words=6 hi");
    body["stream"] = json!(true);
    let response = app
        .with_key(Method::POST, "/v1/chat/completions", &t.project_key)
        .header("user-agent", USER_AGENT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));
    let events = events(&app, &t).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    let (prompt, completion, cost) = usage(&app, &t).await;
    assert_eq!(
        (e.status, e.prompt_tokens, e.completion_tokens, e.cost),
        (Some(200), Some(prompt), Some(completion), Some(cost))
    );
    assert!(completion > 0 && e.latency_ms.is_some());
    assert_eq!(e.origin.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(e.origin.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(e.origin.user_agent.as_deref(), Some(USER_AGENT));
    assert_no_secret(&events, &t.project_key);
}

/// What a test reads of an event: status, model, prompt tokens, cost.
type Seen<'a> = (Option<u16>, Option<&'a str>, Option<u64>, Option<Micros>);

/// The status, model, prompt tokens and cost of each event, the [`sync`] requests' left out.
fn refusals(events: &[AuditEvent]) -> Vec<Seen<'_>> {
    events
        .iter()
        .filter(|e| e.model.as_deref() != Some("echo") || e.status != Some(200))
        .map(|e| (e.status, e.model.as_deref(), e.prompt_tokens, e.cost))
        .collect()
}

#[tokio::test]
async fn refused_requests_that_identified_a_key_write_their_status_and_charge_nothing() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let fast = TestApp::chat_body("fast", "hi");
    let key = |body: serde_json::Value| {
        let app = &app;
        let t = &t;
        async move {
            let k = app
                .create_project_key(&t.admin_key, &t.project_id, body)
                .await;
            (
                k["value"].as_str().unwrap().to_owned(),
                k["id"].as_str().unwrap().to_owned(),
            )
        }
    };

    // Revoked.
    let (revoked, revoked_id) = key(json!({"name": "revoked"})).await;
    let path = format!(
        "/v1/organization/projects/{}/api_keys/{revoked_id}",
        t.project_id
    );
    json_of(app.delete(&path, &t.admin_key).await, 200).await;
    error_of(app.post("/v1/chat/completions", &revoked, &fast).await, 401).await;
    // Expired.
    let (expired, _) = key(json!({"name": "expired", "expires_at": app.clock_now() + 10})).await;
    app.clock.advance(11);
    error_of(app.post("/v1/chat/completions", &expired, &fast).await, 401).await;
    // Source address not allowed.
    let (office, _) = key(json!({"name": "office", "allowed_ips": ["203.0.113.0/24"]})).await;
    error_of(app.post("/v1/chat/completions", &office, &fast).await, 403).await;
    // Model not allowed for the key.
    let (echo_only, _) = key(json!({"name": "echo-only", "models": ["echo"]})).await;
    error_of(
        app.post("/v1/chat/completions", &echo_only, &fast).await,
        403,
    )
    .await;
    // The upstream failed.
    let failing = TestApp::chat_body("fast", "mock:fail=500 hi");
    error_of(app.chat(&t, &failing).await, 502).await;
    // The models routes are inference requests too.
    json_of(app.get("/v1/models", &t.project_key).await, 200).await;
    error_of(app.get("/v1/models/nope", &t.project_key).await, 404).await;
    sync(&app, &t.project_key).await;

    let all = events(&app, &t).await;
    assert_eq!(
        refusals(&all),
        vec![
            // Refused before the policy stage: no model yet.
            (Some(401), None, None, None),
            (Some(401), None, None, None),
            (Some(403), None, None, None),
            (Some(403), Some("fast"), None, None),
            (Some(502), Some("fast"), None, None),
            (Some(200), None, None, None),
            (Some(404), None, None, None),
        ]
    );
    assert_eq!(
        usage(&app, &t).await.2,
        Micros::ZERO,
        "only the free sync requests were answered"
    );
    for (e, k) in all.iter().zip([&revoked, &expired, &office, &echo_only]) {
        assert_no_secret(std::slice::from_ref(e), k);
        assert!(e.latency_ms.is_some());
        assert_eq!(e.origin.source_ip.as_deref(), Some("127.0.0.1"));
    }
    assert_no_secret(&all, &t.project_key);

    // 402: the balance cannot hold the request.
    let poor = app.funded_tenant("pro", 0).await;
    error_of(app.chat(&poor, &fast).await, 402).await;
    sync(&app, &poor.project_key).await;
    let poor_events = events(&app, &poor).await;
    assert_eq!(
        refusals(&poor_events),
        vec![(Some(402), Some("fast"), None, None)]
    );
    assert_no_secret(&poor_events, &poor.project_key);
}

#[tokio::test]
async fn a_request_whose_key_is_unknown_or_malformed_writes_nothing() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let unknown = app.state.prefixes.generate(KeyKind::Project);
    let heads = || async {
        let chains = app.state.store.audit_chains(None).await.unwrap();
        chains.iter().map(|c| c.head.seq).sum::<i64>()
    };
    let before = heads().await;
    let fast = TestApp::chat_body("fast", "hi");
    error_of(
        app.post("/v1/chat/completions", unknown.expose_secret(), &fast)
            .await,
        401,
    )
    .await;
    error_of(
        app.post("/v1/chat/completions", "sk_live_garbage", &fast)
            .await,
        401,
    )
    .await;
    sync(&app, &t.project_key).await;
    let events = events(&app, &t).await;
    assert_eq!(events.len(), 1, "only the sync request's: {events:?}");
    assert_eq!(
        heads().await,
        before + 1,
        "no tenant's chain holds anything else"
    );
}
