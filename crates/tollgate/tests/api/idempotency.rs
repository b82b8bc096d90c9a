//! `Idempotency-Key` on POST requests: a retry replays the first answer (status, body, the headers that matter,
//! `Idempotent-Replayed: true`) and executes, charges and counts nothing; another request under the same key is
//! 422, one while the first runs is 409; 5xx and refusals are not stored; streams replay as the same events; a
//! replay of a key-creating request carries no secret, and the database holds none; keys expire with their window;
//! a claim whose holder stopped renewing is taken over; two nodes given one key at once execute it once.

use super::inference::sse_data;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_core::audit::{AuditEvent, EventType};
use tollgate_core::idempotency::{CLAIM_LEASE_SECONDS, Claim, ClaimOutcome, Fingerprint};
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

const CHAT: &str = "/v1/chat/completions";
const CREDITS: &str = "/v1/organization/credits";

/// `POST path` with `key` and `Idempotency-Key: idem`.
async fn post(app: &TestApp, path: &str, key: &str, idem: &str, body: &Value) -> Response {
    app.with_key(Method::POST, path, key)
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn replayed(r: &Response) -> bool {
    match r.headers().get("idempotent-replayed") {
        None => false,
        Some(v) => {
            assert_eq!(v, "true");
            true
        }
    }
}

fn header(r: &Response, name: &str) -> String {
    r.headers()[name].to_str().unwrap().to_owned()
}

async fn balance(app: &TestApp, t: &TestTenant) -> Value {
    json_of(app.get(CREDITS, &t.admin_key).await, 200).await["balance_cents"].clone()
}

/// Answered requests the store counted for `t`.
async fn requests_counted(app: &TestApp, t: &TestTenant) -> u64 {
    app.usage_totals(&t.id).await.map_or(0, |u| u.requests)
}

/// `t`'s events of `kind`, oldest first.
async fn events(app: &TestApp, t: &TestTenant, kind: EventType) -> Vec<AuditEvent> {
    app.audit_events(&t.id, Some(kind)).await
}

/// Once a request of `t` has been settled, events queued before it are committed too.
async fn sync(app: &TestApp, t: &TestTenant) {
    json_of(app.chat(t, &TestApp::chat_body("echo", "sync")).await, 200).await;
}

#[tokio::test]
async fn a_retried_completion_is_replayed_and_executes_charges_and_counts_nothing() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 100).await;
    let body = TestApp::chat_body("fast", "mock:words=3 hello");
    let first = post(&app, CHAT, &t.project_key, "retry-1", &body).await;
    assert_eq!(first.status(), 200);
    assert!(!replayed(&first), "a first execution is not marked");
    let first_id = header(&first, "x-request-id");
    let limit = header(&first, "x-ratelimit-limit-requests");
    let first_body = first.text().await.unwrap();
    let (upstream, charged) = (app.upstream_requests().await, balance(&app, &t).await);
    assert_eq!(upstream, 1);

    for key in [
        t.project_key.clone(),
        app.key_in(&t, json!({"name": "other"})).await.1,
    ] {
        // Any key of the tenant replays it.
        let again = post(&app, CHAT, &key, "retry-1", &body).await;
        assert_eq!(again.status(), 200);
        assert!(replayed(&again));
        assert_eq!(header(&again, "content-type"), "application/json");
        assert_eq!(header(&again, "x-ratelimit-limit-requests"), limit);
        assert_ne!(
            header(&again, "x-request-id"),
            first_id,
            "a replay is a request of its own"
        );
        assert_eq!(again.text().await.unwrap(), first_body);
    }
    assert_eq!(
        app.upstream_requests().await,
        upstream,
        "nothing went upstream"
    );
    assert_eq!(balance(&app, &t).await, charged, "nothing charged twice");
    assert_eq!(
        requests_counted(&app, &t).await,
        1,
        "the replays are not usage"
    );
    sync(&app, &t).await;
    let replays = events(&app, &t, EventType::RequestReplayed).await;
    assert_eq!(replays.len(), 2, "{replays:?}");
    assert_eq!(replays[0].status, Some(200));
    assert_eq!(replays[0].cost, None);
    let details: Value = serde_json::from_str(replays[0].details.as_deref().unwrap()).unwrap();
    assert_eq!(details["replay_of"], first_id.as_str());

    // Another tenant's key of the same name is its own.
    let other = app.funded_tenant("pro", 100).await;
    let r = post(&app, CHAT, &other.project_key, "retry-1", &body).await;
    assert_eq!(r.status(), 200);
    assert!(!replayed(&r));
    assert_eq!(app.upstream_requests().await, upstream + 1);
}

#[tokio::test]
async fn another_request_under_the_key_is_422_and_one_while_the_first_runs_is_409() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 100).await;
    let slow = TestApp::chat_body("fast", "mock:latency=1500 take your time");
    let running = {
        let (http, url, key, body) = (
            app.http.clone(),
            format!("{}{CHAT}", app.url),
            t.project_key.clone(),
            slow.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .header("idempotency-key", "slow-1")
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let busy = post(&app, CHAT, &t.project_key, "slow-1", &slow).await;
    assert_eq!(header(&busy, "retry-after"), "1");
    let e = error_of(busy, 409).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("idempotency_error"), Some("idempotency_key_in_use"))
    );
    // A different body under the key is a reuse, running or not.
    let other = TestApp::chat_body("fast", "something else");
    let e = error_of(
        post(&app, CHAT, &t.project_key, "slow-1", &other).await,
        422,
    )
    .await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("idempotency_error"), Some("idempotency_key_reused"))
    );
    let first = running.await.unwrap();
    assert_eq!(first.status(), 200);
    let first_body = first.text().await.unwrap();
    let again = post(&app, CHAT, &t.project_key, "slow-1", &slow).await;
    assert!(replayed(&again));
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(app.upstream_requests().await, 1);
    // Another path, or the same bytes with other whitespace, is another request.
    let e = error_of(
        post(
            &app,
            "/v1/organization/projects",
            &t.admin_key,
            "slow-1",
            &json!({"name": "p"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(e["code"], "idempotency_key_reused");
    let spaced = app
        .with_key(Method::POST, CHAT, &t.project_key)
        .header("idempotency-key", "slow-1")
        .header("content-type", "application/json")
        .body(format!(" {}", serde_json::to_string(&slow).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(spaced.status(), 422);
}

#[tokio::test]
async fn failures_and_malformed_requests_are_not_stored_other_refusals_are() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 0).await;
    // A refusal after the claim is the key's final answer (API.md: only 5xx are not stored): the tenant had no
    // credit, and the same key replays the 402 after a grant; a new key executes.
    let failing = TestApp::chat_body("fast", "mock:fail=500 no");
    error_of(
        post(&app, CHAT, &t.project_key, "broke-1", &failing).await,
        402,
    )
    .await;
    app.grant(&t.id, 100).await;
    let again = post(&app, CHAT, &t.project_key, "broke-1", &failing).await;
    assert!(replayed(&again));
    assert_eq!(error_of(again, 402).await["type"], "insufficient_balance");
    assert_eq!(app.upstream_requests().await, 0);
    // An upstream failure: 502 each time, each an execution.
    for attempt in 1..=2 {
        let r = post(&app, CHAT, &t.project_key, "fail-1", &failing).await;
        assert_eq!(r.status(), 502, "attempt {attempt}");
        assert!(!replayed(&r));
        assert_eq!(app.upstream_requests().await, attempt);
    }
    // A request refused by validation is not stored: the key then runs a valid request, not a 422.
    let invalid = json!({"model": "fast", "messages": []});
    error_of(
        post(&app, CHAT, &t.project_key, "fix-1", &invalid).await,
        400,
    )
    .await;
    let fixed = TestApp::chat_body("fast", "mock:words=2 fixed");
    let r = post(&app, CHAT, &t.project_key, "fix-1", &fixed).await;
    assert_eq!(r.status(), 200);
    assert!(!replayed(&r));
    // The same for management: a malformed body is not stored; a 404 is, and replays.
    let projects = "/v1/organization/projects";
    let bad = app
        .with_key(Method::POST, projects, &t.admin_key)
        .header("idempotency-key", "proj-1")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    error_of(bad, 400).await;
    let r = post(
        &app,
        projects,
        &t.admin_key,
        "proj-1",
        &json!({"name": "Idempotent"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert!(!replayed(&r));
    let missing = "/v1/organization/projects/proj_missing/api_keys";
    error_of(
        post(
            &app,
            missing,
            &t.admin_key,
            "missing-1",
            &json!({"name": "k"}),
        )
        .await,
        404,
    )
    .await;
    let again = post(
        &app,
        missing,
        &t.admin_key,
        "missing-1",
        &json!({"name": "k"}),
    )
    .await;
    assert!(replayed(&again));
    error_of(again, 404).await;
}

#[tokio::test]
async fn a_streamed_completion_is_replayed_as_the_same_event_stream() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 100).await;
    let mut body = TestApp::chat_body("fast", "mock:words=6 mock:chunks=3 stream me");
    body["stream"] = json!(true);
    let first = post(&app, CHAT, &t.project_key, "stream-1", &body).await;
    assert_eq!(first.status(), 200);
    let text = first.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(events.len() >= 4, "{events:?}");
    let charged = balance(&app, &t).await;
    let again = post(&app, CHAT, &t.project_key, "stream-1", &body).await;
    assert!(replayed(&again));
    assert_eq!(header(&again, "content-type"), "text/event-stream");
    assert_eq!(
        again.text().await.unwrap(),
        text,
        "the same events, byte for byte"
    );
    assert_eq!(app.upstream_requests().await, 1);
    assert_eq!(balance(&app, &t).await, charged);

    // A stream the upstream cuts short is a failure: not stored, a retry runs again.
    let mut broken = TestApp::chat_body("fast", "mock:chunks=4 mock:fail_after=1 cut");
    broken["stream"] = json!(true);
    for attempt in 2..=3 {
        let r = post(&app, CHAT, &t.project_key, "stream-2", &broken).await;
        assert!(!replayed(&r));
        r.text().await.unwrap();
        assert_eq!(app.upstream_requests().await, attempt);
    }
}

/// Every text and byte string in the test's database, for looking for secrets.
async fn database_contents(app: &TestApp) -> Vec<u8> {
    use tollgate_server::config::ExposeSecret as _;
    let url = app.state.config.database_url.expose_secret().to_owned();
    if app.database.is_postgres() {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut all = Vec::new();
        for table in tables {
            // Each row as text; BYTEA columns as their bytes too (text shows them as hex).
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM \"{table}\" t"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            for row in rows {
                all.extend_from_slice(row.as_bytes());
            }
        }
        let bodies: Vec<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT body FROM idempotency_records")
                .fetch_all(&pool)
                .await
                .unwrap();
        for body in bodies.into_iter().flatten() {
            all.extend_from_slice(&body);
        }
        all
    } else {
        let path = url.trim_start_matches("sqlite://");
        let dir = std::path::Path::new(path).parent().unwrap();
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        all
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn replays_of_key_creating_requests_carry_no_secret_and_the_database_holds_none() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let keys = format!("/v1/organization/projects/{}/api_keys", t.project_id);
    let mut secrets = Vec::new();
    let mut cases = vec![
        (keys.clone(), t.admin_key.clone(), json!({"name": "once"})),
        (
            "/v1/organization/admin_api_keys".to_owned(),
            t.admin_key.clone(),
            json!({"name": "ci"}),
        ),
        (
            format!("{keys}/{}/roll", t.project_key_id),
            t.admin_key.clone(),
            json!({"grace_period_seconds": 60}),
        ),
    ];
    cases.push((
        "/operator/v1/tenants".to_owned(),
        tollgate_testkit::OPERATOR_TOKEN.to_owned(),
        json!({"name": "Replayed", "plan": "free", "owner_email": "replay@example.com"}),
    ));
    for (i, (path, key, body)) in cases.iter().enumerate() {
        let idem = format!("create-{i}");
        let first = json_of(post(&app, path, key, &idem, body).await, 201).await;
        let again = post(&app, path, key, &idem, body).await;
        assert!(replayed(&again), "{path}");
        let again = json_of(again, 201).await;
        // The key object is found where each route puts it.
        let (first_key, again_key) = match path.as_str() {
            "/operator/v1/tenants" => (&first["admin_key"], &again["admin_key"]),
            _ => (&first, &again),
        };
        let secret = first_key["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {first}"));
        secrets.push(secret.to_owned());
        assert_eq!(again_key["value"], Value::Null, "{path}: {again}");
        assert_eq!(again_key["id"], first_key["id"], "{path}");
        assert_eq!(
            again_key["redacted_value"], first_key["redacted_value"],
            "{path}"
        );
        let mut without = first.clone();
        match path.as_str() {
            "/operator/v1/tenants" => without["admin_key"]["value"] = Value::Null,
            _ => without["value"] = Value::Null,
        }
        assert_eq!(again, without, "{path}: the same object but the value");
    }
    // One key was created, not two.
    let listed = json_of(app.get(&keys, &t.admin_key).await, 200).await;
    let named = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "once")
        .count();
    assert_eq!(named, 1);
    let db = database_contents(&app).await;
    assert!(db.len() > 1000, "the database was read");
    for secret in &secrets {
        assert!(!contains(&db, secret), "a key value is in the database");
        // Nor its tail after the visible prefix (a hex or escaped copy would still show it).
        assert!(
            !contains(&db, &secret[12..]),
            "part of a key value is in the database"
        );
    }
}

#[tokio::test]
async fn the_header_is_checked_and_only_posts_use_it() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let body = TestApp::chat_body("echo", "hi");
    for bad in ["".to_owned(), "x".repeat(256), "tab\tinside".to_owned()] {
        let e = error_of(post(&app, CHAT, &t.project_key, &bad, &body).await, 400).await;
        assert_eq!(e["type"], "invalid_request_error", "{bad:?}");
        assert!(
            e["message"].as_str().unwrap().contains("Idempotency-Key"),
            "{e}"
        );
    }
    let longest = "k".repeat(255);
    assert_eq!(
        post(&app, CHAT, &t.project_key, &longest, &body)
            .await
            .status(),
        200
    );
    assert!(replayed(
        &post(&app, CHAT, &t.project_key, &longest, &body).await
    ));
    // A GET with the header is answered as ever, every time.
    for _ in 0..2 {
        let r = app
            .with_key(Method::GET, "/v1/models", &t.project_key)
            .header("idempotency-key", "get-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(!replayed(&r));
    }
}

#[tokio::test]
async fn a_key_is_free_again_after_its_window() {
    let app = TestApp::builder()
        .configure(|c| c.idempotency_window_hours = 1)
        .start()
        .await;
    let t = app.funded_tenant("pro", 100).await;
    let body = TestApp::chat_body("fast", "mock:words=2 window");
    assert_eq!(
        post(&app, CHAT, &t.project_key, "window-1", &body)
            .await
            .status(),
        200
    );
    app.clock.advance(3_599);
    assert!(replayed(
        &post(&app, CHAT, &t.project_key, "window-1", &body).await
    ));
    app.clock.advance(1);
    // Past the window the key is new: it executes, even for another request.
    let other = TestApp::chat_body("fast", "mock:words=2 another");
    let r = post(&app, CHAT, &t.project_key, "window-1", &other).await;
    assert_eq!(r.status(), 200);
    assert!(!replayed(&r));
    assert_eq!(app.upstream_requests().await, 2);
    // Expired records are pruned.
    app.clock.advance(3_600);
    let pruned = app
        .state
        .store
        .prune_idempotency(app.clock_now(), 100)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
}

#[tokio::test]
async fn a_management_request_creates_once_and_its_replay_is_audited() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let body = json!({"name": "Once only"});
    let path = "/v1/organization/projects";
    let first = post(&app, path, &t.admin_key, "project-1", &body).await;
    let first_id = header(&first, "x-request-id");
    let first = json_of(first, 201).await;
    let again = post(&app, path, &t.admin_key, "project-1", &body).await;
    assert!(replayed(&again));
    assert_eq!(json_of(again, 201).await, first);
    let listed = json_of(app.get(path, &t.admin_key).await, 200).await;
    let named = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "Once only")
        .count();
    assert_eq!(named, 1);
    let id = first["id"].as_str().unwrap();
    let created = events(&app, &t, EventType::ProjectCreated).await;
    assert_eq!(
        created
            .iter()
            .filter(|e| e.target_id.as_deref() == Some(id))
            .count(),
        1
    );
    sync(&app, &t).await;
    let replays = events(&app, &t, EventType::RequestReplayed).await;
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0].actor.id.as_deref(), Some(t.owner_id.as_str()));
    assert_eq!(replays[0].status, Some(201));
    let details: Value = serde_json::from_str(replays[0].details.as_deref().unwrap()).unwrap();
    assert_eq!(details["replay_of"], first_id.as_str());
    // A body-less POST holds its key too.
    let archive = format!("/v1/organization/projects/{id}/archive");
    let archived = app
        .with_key(Method::POST, &archive, &t.admin_key)
        .header("idempotency-key", "archive-1")
        .send()
        .await
        .unwrap();
    assert_eq!(archived.status(), 200);
    let again = app
        .with_key(Method::POST, &archive, &t.admin_key)
        .header("idempotency-key", "archive-1")
        .send()
        .await
        .unwrap();
    assert!(replayed(&again));
    assert_eq!(events(&app, &t, EventType::ProjectArchived).await.len(), 1);
}

#[tokio::test]
async fn a_claim_whose_holder_stopped_renewing_is_taken_over_after_its_lease() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 100).await;
    let body = TestApp::chat_body("fast", "mock:words=2 orphan");
    // A node that died holding the key: its claim, as the store has it.
    let now = app.clock_now();
    let claim = Claim {
        scope: t.id.clone(),
        key: "orphan-1".to_owned(),
        fingerprint: Fingerprint::of("POST", CHAT, &serde_json::to_vec(&body).unwrap()),
        claim_id: "idem_dead".to_owned(),
        node_id: "node_dead".to_owned(),
        instance: "elsewhere/10.0.0.9:8080".to_owned(),
        request_id: "req_dead".to_owned(),
        now,
        locked_until: now + CLAIM_LEASE_SECONDS,
        expires_at: now + 86_400,
    };
    assert_eq!(
        app.state.store.claim_idempotency(&claim).await.unwrap(),
        ClaimOutcome::Claimed
    );
    error_of(
        post(&app, CHAT, &t.project_key, "orphan-1", &body).await,
        409,
    )
    .await;
    app.clock.advance(CLAIM_LEASE_SECONDS);
    let r = post(&app, CHAT, &t.project_key, "orphan-1", &body).await;
    assert_eq!(r.status(), 200);
    assert!(!replayed(&r));
    assert!(replayed(
        &post(&app, CHAT, &t.project_key, "orphan-1", &body).await
    ));
    assert_eq!(app.upstream_requests().await, 1);
}

#[tokio::test]
async fn two_nodes_given_one_key_at_once_execute_it_once() {
    let a = TestApp::start().await;
    let b = a.another_node().await;
    let t = a.funded_tenant("pro", 100).await;
    let body = TestApp::chat_body("fast", "mock:latency=300 mock:words=2 race");
    let send = |app: &TestApp| {
        let (http, url, key, body) = (
            app.http.clone(),
            format!("{}{CHAT}", app.url),
            t.project_key.clone(),
            body.clone(),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "race-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            let replay = r.headers().contains_key("idempotent-replayed");
            (r.status().as_u16(), replay)
        })
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        tasks.push(send(if i % 2 == 0 { &a } else { &b }));
    }
    let mut executed = 0;
    for task in tasks {
        match task.await.unwrap() {
            (200, false) => executed += 1,
            (200, true) | (409, false) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(executed, 1);
    assert_eq!(a.upstream_requests().await + b.upstream_requests().await, 1);
    assert_eq!(requests_counted(&a, &t).await, 1);
}
