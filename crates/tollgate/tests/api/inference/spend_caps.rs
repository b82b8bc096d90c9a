//! Spend caps: a key with `spend_limit_cents` holds against its cap as against the tenant's balance, so no mix of
//! concurrent requests, on one node or several, takes it past the cap; `spent_cents` counts the period's charges,
//! a key update changes the cap for the next request, and a `month` cap starts afresh with the UTC month.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::money::Micros;
use tollgate_mock::MockConfig;
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

/// Each request's charge on `fast` (15/60 ¢ per million): 2 prompt words, 50 completion words.
const CHARGE: i64 = 2 * 15 + 50 * 60;

/// A request that answers 50 words and may answer no more.
fn body() -> Value {
    let mut body = TestApp::chat_body("fast", "mock:words=50 hi");
    body["max_tokens"] = json!(50);
    body
}

/// Its hold: the body's bytes and the chat template at the input price, 50 tokens at the output price.
fn hold() -> Micros {
    let prompt = serde_json::to_vec(&body()).unwrap().len() as i64 + 4 + 3;
    Micros(prompt * 15 + 50 * 60)
}

/// Creates a project key in `t`'s Default project with `cap` (µ¢) per `period`; returns its id and value.
async fn capped_key(app: &TestApp, t: &TestTenant, cap: i64, period: &str) -> (String, String) {
    let key = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "capped", "spend_limit_cents": num(Micros(cap)),
                   "spend_limit_period": period}),
        )
        .await;
    (
        key["id"].as_str().unwrap().to_owned(),
        key["value"].as_str().unwrap().to_owned(),
    )
}

/// An amount as the JSON number API.md writes it.
fn num(amount: Micros) -> Value {
    serde_json::from_str(&amount.to_string()).unwrap()
}

fn key_path(t: &TestTenant, key_id: &str) -> String {
    format!(
        "/v1/organization/projects/{}/api_keys/{key_id}",
        t.project_id
    )
}

/// The key object as management shows it.
async fn key_object(app: &TestApp, t: &TestTenant, key_id: &str) -> Value {
    json_of(app.get(&key_path(t, key_id), &t.admin_key).await, 200).await
}

/// What the key has spent, exactly, from its object.
async fn spent(app: &TestApp, t: &TestTenant, key_id: &str) -> Micros {
    let key = key_object(app, t, key_id).await;
    Micros::parse_cents(&key["spent_cents"].to_string()).unwrap()
}

async fn chat(app: &TestApp, key: &str) -> reqwest::Response {
    app.post("/v1/chat/completions", key, &body()).await
}

async fn update(app: &TestApp, t: &TestTenant, key_id: &str, change: Value) -> Value {
    json_of(
        app.post(&key_path(t, key_id), &t.admin_key, &change).await,
        200,
    )
    .await
}

#[tokio::test]
async fn a_cap_refuses_with_its_402_charges_nothing_and_spent_grows_with_each_charge() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 10).await;
    // Room for two requests' holds, not three: the third is refused though the tenant has plenty.
    let cap = 2 * hold().get() + CHARGE / 2;
    let (key_id, key) = capped_key(&app, &t, cap, "month").await;
    let fresh = key_object(&app, &t, &key_id).await;
    assert_eq!(fresh["spend_limit_cents"], num(Micros(cap)), "{fresh}");
    assert_eq!(fresh["spend_limit_period"], "month");
    assert_eq!(fresh["spent_cents"], json!(0));

    for n in 1..=2 {
        assert_eq!(chat(&app, &key).await.status(), 200);
        assert_eq!(
            spent(&app, &t, &key_id).await,
            Micros(n * CHARGE),
            "after {n}"
        );
    }
    // The listing shows the same, as an exact decimal.
    let list = json_of(
        app.get(
            &format!("/v1/organization/projects/{}/api_keys", t.project_id),
            &t.admin_key,
        )
        .await,
        200,
    )
    .await;
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["spent_cents"], num(Micros(2 * CHARGE)), "{listed}");

    // cap - 2 charges is less than a hold: refused, in the tenant 402's shape plus the cap and what was spent.
    let balance_before = json_of(app.get("/v1/organization/credits", &t.admin_key).await, 200)
        .await["balance_cents"]
        .clone();
    let response = chat(&app, &key).await;
    let body: Value = {
        assert_eq!(response.status(), 402);
        response.json().await.unwrap()
    };
    let err = &body["error"];
    assert_eq!(
        err["message"],
        format!(
            "This API key's spend limit of {} cents per month is reached",
            Micros(cap)
        )
    );
    assert_eq!(err["type"], "insufficient_balance");
    assert_eq!(err["param"], Value::Null);
    assert_eq!(err["code"], Value::Null);
    let details = err["details"].as_object().unwrap();
    let mut fields: Vec<&str> = details.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "balance_before_cents",
            "cost_cents",
            "spend_limit_cents",
            "spent_cents"
        ]
    );
    assert_eq!(details["cost_cents"], num(hold()), "{err}");
    assert_eq!(details["spend_limit_cents"], num(Micros(cap)));
    assert_eq!(details["spent_cents"], num(Micros(2 * CHARGE)));
    let available = Micros::parse_cents(&details["balance_before_cents"].to_string()).unwrap();
    assert!(
        available >= hold() && available <= Micros(10_000_000),
        "the tenant could have paid: {err}"
    );
    // Nothing charged: neither the tenant nor the key's spending moved.
    let balance_after = json_of(app.get("/v1/organization/credits", &t.admin_key).await, 200).await
        ["balance_cents"]
        .clone();
    assert_eq!(balance_before, balance_after);
    assert_eq!(spent(&app, &t, &key_id).await, Micros(2 * CHARGE));
    // Its request.completed event is written as for any 402: with the recorder's next batch (a refusal's answer
    // never waits for that commit), so it may take a moment to show.
    let path =
        format!("/v1/organization/audit_logs?key_id={key_id}&event_type=request.completed&limit=1");
    let mut events = Value::Null;
    for _ in 0..100 {
        events = json_of(app.get(&path, &t.admin_key).await, 200).await;
        if events["data"][0]["status"] == 402 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let last = &events["data"][0];
    assert_eq!(last["status"], 402, "{events}");
    assert_eq!(last["cost_cents"], Value::Null, "{last}");

    // The tenant's own key has no cap: it still works, and shows no spending of its own.
    assert_eq!(chat(&app, &t.project_key).await.status(), 200);
    let uncapped = key_object(&app, &t, &t.project_key_id).await;
    assert_eq!(uncapped["spend_limit_cents"], Value::Null);
    assert_eq!(uncapped["spent_cents"], json!(0));
}

/// A node whose upstream is slow, so a burst's holds are all taken before any is settled.
async fn slow_node(of: Option<&TestApp>) -> TestApp {
    let builder = TestApp::builder().mock(MockConfig {
        latency_ms: 300,
        ..MockConfig::default()
    });
    match of {
        Some(app) => builder.node_of(app).start().await,
        None => builder.start().await,
    }
}

/// Fires `n` requests with `key` at each of `nodes` at once; returns how many were served, after checking that
/// every one was served or refused with 402.
async fn burst(nodes: &[&TestApp], key: &str, n: usize) -> usize {
    let requests = (0..n).flat_map(|_| nodes.iter().map(|app| chat(app, key)));
    let statuses: Vec<u16> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 402),
        "{statuses:?}"
    );
    statuses.iter().filter(|s| **s == 200).count()
}

#[tokio::test]
async fn forty_requests_at_once_never_take_a_key_past_its_cap() {
    let app = slow_node(None).await;
    let t = app.funded_tenant("pro", 100).await;
    // About ten holds' worth.
    let cap = 10 * hold().get() + 1_000;
    let (key_id, key) = capped_key(&app, &t, cap, "total").await;
    let served = burst(&[&app], &key, 40).await;
    assert!((1..=10).contains(&served), "{served} served at once");
    // Then one at a time until the cap refuses: the charges, less than their holds, fit a few more.
    let mut more = 0;
    while chat(&app, &key).await.status() == 200 {
        more += 1;
        assert!(more < 40, "the cap never refused");
    }
    let total = spent(&app, &t, &key_id).await;
    assert_eq!(total, Micros((served + more) as i64 * CHARGE));
    assert!(total <= Micros(cap), "{total} spent of {cap}");
    assert!(
        Micros(cap).minus(total) < hold(),
        "refused only once a hold no longer fitted: {total} of {cap}"
    );
}

#[tokio::test]
async fn two_nodes_sharing_a_cap_never_exceed_it_together() {
    let a = slow_node(None).await;
    let b = slow_node(Some(&a)).await;
    let t = a.funded_tenant("pro", 100).await;
    let cap = 8 * hold().get() + 1_000;
    let (key_id, key) = capped_key(&a, &t, cap, "month").await;
    // Each node serves one first, so each holds a lease on the key when the burst comes.
    assert_eq!(chat(&a, &key).await.status(), 200);
    assert_eq!(chat(&b, &key).await.status(), 200);
    let served = burst(&[&a, &b], &key, 12).await;
    assert!((1..=6).contains(&served), "{served} served at once");
    let total = spent(&a, &t, &key_id).await;
    assert_eq!(total, Micros((served + 2) as i64 * CHARGE));
    assert!(total <= Micros(cap), "{total} of {cap}");
    assert_eq!(
        spent(&b, &t, &key_id).await,
        total,
        "both nodes show one count"
    );
    // Lowering the cap on node a reaches node b within a second: b refuses, though it leased under the old cap.
    update(
        &a,
        &t,
        &key_id,
        json!({"spend_limit_cents": num(total), "spend_limit_period": "month"}),
    )
    .await;
    assert_eq!(chat(&a, &key).await.status(), 402);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    assert_eq!(chat(&b, &key).await.status(), 402);
    assert_eq!(spent(&a, &t, &key_id).await, total);
}

#[tokio::test]
async fn raising_lowering_and_clearing_the_cap_take_effect_on_the_next_request() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 10).await;
    let (key_id, key) = capped_key(&app, &t, 0, "month").await;
    let err = error_of(chat(&app, &key).await, 402).await;
    assert_eq!(
        err["message"],
        "This API key's spend limit of 0 cents per month is reached"
    );
    // Raised: served at once.
    let raised = update(
        &app,
        &t,
        &key_id,
        json!({"spend_limit_cents": 1, "spend_limit_period": "month"}),
    )
    .await;
    assert_eq!(raised["spend_limit_cents"], json!(1));
    assert_eq!(chat(&app, &key).await.status(), 200);
    // Lowered below what this node has leased on the key: refused on the next request.
    let lowered = update(
        &app,
        &t,
        &key_id,
        json!({"spend_limit_cents": num(Micros(CHARGE)), "spend_limit_period": "month"}),
    )
    .await;
    assert_eq!(lowered["spent_cents"], num(Micros(CHARGE)), "{lowered}");
    let err = error_of(chat(&app, &key).await, 402).await;
    assert_eq!(err["details"]["spent_cents"], num(Micros(CHARGE)), "{err}");
    // Cleared: no cap, no spending shown, served.
    let cleared = update(
        &app,
        &t,
        &key_id,
        json!({"spend_limit_cents": null, "spend_limit_period": null}),
    )
    .await;
    assert_eq!(cleared["spend_limit_cents"], Value::Null);
    assert_eq!(cleared["spent_cents"], json!(0));
    assert_eq!(chat(&app, &key).await.status(), 200);
    // A cap set again counts what the key already spent this month, from its usage.
    let again = update(
        &app,
        &t,
        &key_id,
        json!({"spend_limit_cents": 1, "spend_limit_period": "month"}),
    )
    .await;
    assert_eq!(again["spent_cents"], num(Micros(2 * CHARGE)), "{again}");
    // A member may read the key but not change its cap.
    let (_, member_key) = app.member(&t, "m@acme.io", "member").await;
    let refused = app
        .with_key(Method::POST, &key_path(&t, &key_id), &member_key)
        .json(&json!({"spend_limit_cents": 100, "spend_limit_period": "month"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn a_month_cap_starts_afresh_with_the_utc_month_and_a_total_cap_never_does() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 10).await;
    // Room for one hold, not two.
    let cap = hold().get() + CHARGE / 2;
    let (month_id, month) = capped_key(&app, &t, cap, "month").await;
    let (total_id, total) = capped_key(&app, &t, cap, "total").await;
    for key in [&month, &total] {
        assert_eq!(chat(&app, key).await.status(), 200);
        assert_eq!(chat(&app, key).await.status(), 402);
    }
    // 32 days on is in another UTC month, whatever day this is.
    app.clock.advance(32 * 86_400);
    assert_eq!(
        spent(&app, &t, &month_id).await,
        Micros::ZERO,
        "a new month, nothing spent in it yet"
    );
    assert_eq!(spent(&app, &t, &total_id).await, Micros(CHARGE));
    assert_eq!(chat(&app, &month).await.status(), 200);
    assert_eq!(spent(&app, &t, &month_id).await, Micros(CHARGE));
    let err = error_of(chat(&app, &total).await, 402).await;
    assert_eq!(
        err["message"],
        format!(
            "This API key's spend limit of {} cents in total is reached",
            Micros(cap)
        )
    );
    assert_eq!(err["details"]["spent_cents"], num(Micros(CHARGE)));
}
