//! `GET /v1/organization/audit_logs`: a page of the tenant's own events, newest first, with filters and a cursor;
//! bad parameters are 400s naming themselves; exports in JSON lines and CSV parse with standard parsers (their
//! memory is measured on a server process of its own: `tests/export_memory.rs`). The events are appended through the store, dated far in
//! the future so that `since` picks them alone from whatever else the tenant's actions logged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test setup: a failing step should stop the test"
)]

use serde_json::{Value, json};
use tollgate_core::audit::{Actor, AuditEvent, EventType, Origin};
use tollgate_core::money::Micros;
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

/// Far past anything the tenant's own actions log in a test.
const FUTURE: i64 = 4_000_000_000;

fn event(t: &TestTenant, kind: EventType, at: i64) -> AuditEvent {
    AuditEvent::new(
        kind,
        &t.id,
        Actor::project_key(&t.project_key_id),
        at,
        &Origin::new(
            Some(format!("req_{at}")),
            Some("10.0.0.7".into()),
            Some("sdk, \"quoted\""),
        ),
    )
    .key(&t.project_key_id, "wxyz")
    .project(&t.project_id)
}

async fn list(app: &TestApp, t: &TestTenant, query: &str) -> Value {
    json_of(
        app.get(
            &format!("/v1/organization/audit_logs?since={FUTURE}&{query}"),
            &t.admin_key,
        )
        .await,
        200,
    )
    .await
}

fn ids(list: &Value) -> Vec<i64> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["effective_at"].as_i64().unwrap() - FUTURE)
        .collect()
}

#[tokio::test]
async fn events_list_newest_first_filtered_and_paged_within_the_tenant() {
    let app = TestApp::start().await;
    let (a, b) = (app.tenant("pro").await, app.tenant("pro").await);
    let mut events: Vec<AuditEvent> = (0..5)
        .map(|i| event(&a, EventType::RequestCompleted, FUTURE + i))
        .collect();
    events[1].kind = EventType::ApiKeyRevoked;
    events[2].status = Some(402);
    events[2].cost = Some(Micros(1_500));
    events[2].details = Some(json!({"url": "https://example.com/leak"}).to_string());
    app.state.store.append_audit(&events).await.unwrap();
    app.state
        .store
        .append_audit(&[event(&b, EventType::RequestCompleted, FUTURE + 9)])
        .await
        .unwrap();

    let all = list(&app, &a, "").await;
    assert_eq!(all["object"], "list");
    assert_eq!(
        ids(&all),
        [4, 3, 2, 1, 0],
        "newest first, B's event not among them"
    );
    let e = &all["data"][2];
    let expected = json!({
        "object": "organization.audit_log", "id": e["id"], "type": "request.completed",
        "effective_at": FUTURE + 2, "actor_type": "project_key", "actor_id": a.project_key_id,
        "target_id": null, "project_id": a.project_id, "key_id": a.project_key_id, "key_last4": "wxyz",
        "model": null, "status": 402, "prompt_tokens": null, "completion_tokens": null, "cost_cents": 0.0015,
        "latency_ms": null, "source_ip": "10.0.0.7", "user_agent": "sdk, \"quoted\"", "request_id": "req_4000000002",
        "details": {"url": "https://example.com/leak"}
    });
    assert_eq!(e, &expected);
    let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 20, "every field of API.md, nulls included");

    assert_eq!(
        ids(&list(&app, &a, "event_type=api_key.revoked").await),
        [1]
    );
    assert_eq!(
        ids(&list(&app, &a, &format!("actor_id={}", a.project_key_id)).await).len(),
        5
    );
    assert_eq!(
        ids(&list(&app, &a, &format!("key_id={}", a.project_key_id)).await).len(),
        5
    );
    assert_eq!(
        ids(&list(&app, &a, &format!("until={}", FUTURE + 2)).await),
        [1, 0]
    );
    // Another tenant's ids match nothing: an empty list, not an error.
    for filter in [
        format!("actor_id={}", b.project_key_id),
        format!("key_id={}", b.project_key_id),
    ] {
        let found = list(&app, &a, &filter).await;
        assert_eq!(found["data"], json!([]), "{filter}");
    }

    let first = list(&app, &a, "limit=2").await;
    assert_eq!(ids(&first), [4, 3]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["first_id"], first["data"][0]["id"]);
    let last = first["last_id"].as_str().unwrap();
    let second = list(&app, &a, &format!("limit=2&after={last}")).await;
    assert_eq!(ids(&second), [2, 1]);
    let third = list(
        &app,
        &a,
        &format!("limit=2&after={}", second["last_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(ids(&third), [0]);
    assert_eq!(third["has_more"], false);
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_the_parameter() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    for (query, param) in [
        ("event_type=api_key.exploded", "event_type"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("since=-1", "since"),
        ("until=99999999999999999999", "until"),
        ("format=xml", "format"),
    ] {
        let response = app
            .get(
                &format!("/v1/organization/audit_logs?{query}"),
                &t.admin_key,
            )
            .await;
        let error = error_of(response, 400).await;
        assert_eq!(error["param"], param, "{query}: {error}");
    }
    // A project key is not an admin key.
    let response = app.get("/v1/organization/audit_logs", &t.project_key).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn exports_parse_as_json_lines_and_csv_in_api_order() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let mut events: Vec<AuditEvent> = (0..1_203)
        .map(|i| event(&t, EventType::RequestCompleted, FUTURE + i))
        .collect();
    events[7].details = Some(json!({"url": "https://x.test/a,b", "source": "github"}).to_string());
    events[7].cost = Some(Micros(12));
    app.state.store.append_audit(&events).await.unwrap();

    let export = |format: &str| {
        let url = format!("/v1/organization/audit_logs?since={FUTURE}&format={format}");
        let app = &app;
        let key = t.admin_key.clone();
        async move { app.get(&url, &key).await }
    };
    let response = export("jsonl").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        1_203,
        "every match, past the store's pages of 500"
    );
    assert_eq!(lines[0]["effective_at"], FUTURE + 1_202, "newest first");
    assert_eq!(lines[1_202 - 7]["details"]["source"], "github");

    let response = export("csv").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "object",
            "id",
            "type",
            "effective_at",
            "actor_type",
            "actor_id",
            "target_id",
            "project_id",
            "key_id",
            "key_last4",
            "model",
            "status",
            "prompt_tokens",
            "completion_tokens",
            "cost_cents",
            "latency_ms",
            "source_ip",
            "user_agent",
            "request_id",
            "details"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1_203);
    let row = &rows[1_202 - 7];
    let cell = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
    assert_eq!(cell("target_id"), "", "null is an empty cell");
    assert_eq!(cell("user_agent"), "sdk, \"quoted\"", "quoting round-trips");
    assert_eq!(cell("cost_cents"), "0.000012");
    let details: Value = serde_json::from_str(cell("details")).unwrap();
    assert_eq!(
        details,
        json!({"url": "https://x.test/a,b", "source": "github"}),
        "details as JSON text"
    );
    assert_eq!(cell("id"), lines[1_202 - 7]["id"].as_str().unwrap());
}

#[tokio::test]
async fn retention_prunes_old_events_and_the_rest_still_verifies() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let now = app.clock_now();
    let day = 86_400;
    // Ten events a day apart, 20.5 to 11.5 days old (half a day off the cut, so a node whose clock reads a few
    // seconds later than this one's prunes the same ones)… and one of now.
    let mut events: Vec<AuditEvent> = (0..10)
        .map(|i| {
            event(
                &t,
                EventType::RequestCompleted,
                now - (20 - i) * day - day / 2,
            )
        })
        .collect();
    events.push(event(&t, EventType::RequestCompleted, now));
    app.state.store.append_audit(&events).await.unwrap();
    let old = |store: std::sync::Arc<dyn tollgate_core::ports::Store>, tenant: String| async move {
        let query = tollgate_core::audit::AuditQuery {
            tenant_id: tenant,
            until: Some(now - 15 * day),
            limit: 100,
            ..Default::default()
        };
        store.audit_events(&query).await.unwrap().items.len()
    };
    assert_eq!(old(app.state.store.clone(), t.id.clone()).await, 6);

    // A node keeping 15 days prunes as it starts.
    let pruner = TestApp::builder()
        .node_of(&app)
        .configure(|c| c.audit_retention_days = 15)
        .start()
        .await;
    let since = std::time::Instant::now();
    while old(app.state.store.clone(), t.id.clone()).await > 0 {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "not pruned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let reports = tollgate_server::service::audit::verify(&pruner.state, Some(&t.id))
        .await
        .unwrap();
    assert_eq!(reports[0].broken, None, "the rest verifies from the anchor");
    // The 4 events younger than 15 days, the one of now, and the tenant's own (its creation's).
    assert!(reports[0].events >= 5, "{reports:?}");
    let recent = json_of(
        app.get(
            &format!("/v1/organization/audit_logs?since={now}"),
            &t.admin_key,
        )
        .await,
        200,
    )
    .await;
    assert!(
        recent["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == events[10].id.as_str()),
        "the recent event stays"
    );
}
