//! Credits: grants, exact charges for plain and streamed requests, 402 before the upstream is called, nothing
//! charged for failures, and a balance that never goes below zero under concurrency.

use futures::future::join_all;
use serde_json::{Value, json};
use tollgate_core::money::Micros;
use tollgate_mock::MockConfig;
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

const CREDITS: &str = "/v1/organization/credits";

async fn credits(app: &TestApp, t: &TestTenant) -> (Value, String) {
    let response = app.get(CREDITS, &t.admin_key).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

#[tokio::test]
async fn an_operator_grant_shows_in_the_balance_and_ledger() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 0).await;
    let (empty, text) = credits(&app, &t).await;
    assert_eq!(empty["object"], "organization.credits");
    assert!(text.contains(r#""balance_cents":0,"#), "{text}");
    assert_eq!(empty["ledger"]["data"], json!([]));

    let path = format!("/operator/v1/tenants/{}/credits", t.id);
    let granted = json_of(
        app.operator_post(&path, &json!({"amount_cents": 250, "reason": "welcome"}))
            .await,
        200,
    )
    .await;
    assert_eq!(granted["balance_cents"], 250);
    let entry = &granted["ledger"]["data"][0];
    assert_eq!(entry["object"], "organization.credits.entry");
    assert_eq!(
        (entry["kind"].as_str(), entry["amount_cents"].as_i64()),
        (Some("grant"), Some(250))
    );
    assert_eq!(
        (
            entry["balance_after_cents"].as_i64(),
            entry["reason"].as_str()
        ),
        (Some(250), Some("welcome"))
    );
    assert!(entry["id"].as_str().unwrap().starts_with("ledg_"));
    assert_eq!(credits(&app, &t).await.0, granted);

    for bad in [
        json!({"amount_cents": 0}),
        json!({"amount_cents": -5}),
        json!({"amount_cents": 1.5}),
        json!({}),
    ] {
        let err = error_of(app.operator_post(&path, &bad).await, 400).await;
        assert_eq!(err["param"], "amount_cents", "{bad}");
    }
    error_of(
        app.operator_post(
            "/operator/v1/tenants/org_nope/credits",
            &json!({"amount_cents": 1}),
        )
        .await,
        404,
    )
    .await;
    // A project key cannot read the organization's credits.
    error_of(app.get(CREDITS, &t.project_key).await, 401).await;
}

#[tokio::test]
async fn plain_and_streamed_requests_are_charged_exactly() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 100).await;
    // The mock counts words: 2 prompt tokens; its reply is 9 words. At 15/60 ¢ per million: 2×15 + 9×60 = 570 µ¢.
    let plain = app
        .chat(&t, &TestApp::chat_body("fast", "hello world"))
        .await;
    let request_id = plain.headers()["x-request-id"].to_str().unwrap().to_owned();
    let out = json_of(plain, 200).await;
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 9, "total_tokens": 11})
    );
    let (after, text) = credits(&app, &t).await;
    assert!(text.contains(r#""balance_cents":99.99943,"#), "{text}");
    let charge = &after["ledger"]["data"][0];
    assert_eq!(charge["kind"], "charge");
    assert_eq!(charge["reason"], request_id.as_str());
    assert!(
        text.contains(r#""amount_cents":-0.00057,"balance_after_cents":99.99943"#),
        "{text}"
    );

    // A stream is charged from the usage the gateway asked for, though the client did not: 2×15 + 5×60 = 330 µ¢.
    let mut streamed = TestApp::chat_body("fast", "mock:words=5 please");
    streamed["stream"] = json!(true);
    let body = app.chat(&t, &streamed).await.text().await.unwrap();
    assert!(
        body.ends_with("data: [DONE]\n\n") && !body.contains("usage"),
        "{body}"
    );
    let (_, text) = credits(&app, &t).await;
    assert!(text.contains(r#""balance_cents":99.9991,"#), "{text}");
    assert!(text.contains(r#""amount_cents":-0.00033,"#), "{text}");

    // The key's last use is recorded.
    let key = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        t.project_id, t.project_key_id
    );
    assert!(
        json_of(app.get(&key, &t.admin_key).await, 200).await["last_used_at"]
            .as_i64()
            .is_some()
    );
}

#[tokio::test]
async fn a_request_whose_hold_does_not_fit_is_402_before_the_upstream_is_called() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 1).await;
    // Hold: the body's bytes + 4 per message + 3 bound the prompt (× 15), plus 20 000 output tokens × 60.
    let mut big = TestApp::chat_body("fast", "hi");
    big["max_tokens"] = json!(20_000);
    let prompt_bound = serde_json::to_vec(&big).unwrap().len() as i64 + 4 + 3;
    let response = app.chat(&t, &big).await;
    assert_eq!(response.status(), 402);
    let text = response.text().await.unwrap();
    let held = Micros(prompt_bound * 15 + 20_000 * 60);
    assert_eq!(
        text,
        format!(
            r#"{{"error":{{"message":"Your API balance is insufficient","type":"insufficient_balance","param":null,"code":null,"details":{{"balance_before_cents":1,"cost_cents":{held}}}}}}}"#
        )
    );
    let seen = app
        .http
        .get(format!("{}/mock/requests/last", app.mock_url))
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 404, "the upstream was never called");
    // Without max_tokens the model's cap (4096) is held: 135 + 245 760 µ¢ fits in 1 cent.
    assert_eq!(
        app.chat(&t, &TestApp::chat_body("fast", "hi"))
            .await
            .status(),
        200
    );
    // A free model never needs a balance.
    let broke = app.funded_tenant("pro", 0).await;
    assert_eq!(
        app.chat(&broke, &TestApp::chat_body("echo", "hi"))
            .await
            .status(),
        200
    );
    let err = error_of(
        app.chat(&broke, &TestApp::chat_body("fast", "hi")).await,
        402,
    )
    .await;
    assert_eq!(err["details"]["balance_before_cents"], 0);
}

#[tokio::test]
async fn nothing_is_charged_when_the_upstream_fails() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 10).await;
    assert_eq!(
        app.chat(&t, &TestApp::chat_body("fast", "mock:fail=500"))
            .await
            .status(),
        502
    );
    let mut streamed = TestApp::chat_body("fast", "mock:fail=503");
    streamed["stream"] = json!(true);
    assert_eq!(app.chat(&t, &streamed).await.status(), 502);
    // A 200 whose body is no completion cannot be billed: a 502, and nothing is charged either.
    let garbage = error_of(
        app.chat(&t, &TestApp::chat_body("fast", "mock:garbage=1"))
            .await,
        502,
    )
    .await;
    assert_eq!(garbage["type"], "upstream_error");
    let (after, text) = credits(&app, &t).await;
    assert!(text.contains(r#""balance_cents":10,"#), "{text}");
    assert_eq!(
        after["ledger"]["data"].as_array().unwrap().len(),
        1,
        "only the grant"
    );
    let usage = json_of(app.get("/v1/organization/usage", &t.admin_key).await, 200).await;
    assert_eq!(usage["data"][0]["results"], json!([]));
}

#[tokio::test]
async fn the_balance_never_goes_below_zero_under_concurrent_requests() {
    // Every request waits upstream, so all holds are taken before any is settled.
    let app = TestApp::builder()
        .mock(MockConfig {
            latency_ms: 500,
            ..MockConfig::default()
        })
        .start()
        .await;
    let t = app.funded_tenant("pro", 1).await;
    // Hold per request: 9 prompt tokens × 15 + 3 000 output × 60 = 180 135 µ¢: 1 cent covers N = 5 of them.
    let n = 5;
    let mut body = TestApp::chat_body("fast", "hi");
    body["max_tokens"] = json!(3_000);
    let responses = join_all((0..3 * n).map(|_| app.chat(&t, &body))).await;
    let mut answered = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => answered += 1,
            402 => {
                let err = error_of(response, 402).await;
                assert_eq!(err["type"], "insufficient_balance");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        answered, n,
        "exactly the funded number of holds fit at once"
    );
    // Each answered request cost 1×15 + 9×60 = 555 µ¢ (the mock counts 1 prompt word).
    let (after, text) = credits(&app, &t).await;
    let expected = format!(r#""balance_cents":{},"#, 1.0 - 0.000555 * n as f64);
    assert!(text.contains(&expected), "{expected} in {text}");
    let charges = after["ledger"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "charge")
        .count();
    assert_eq!(charges, n);
    assert!(after["balance_cents"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_charged_for_what_the_upstream_produced() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 10).await;
    // Nine content chunks, 100 ms apart: the client reads the first event and hangs up.
    let mut body = TestApp::chat_body("fast", "mock:chunk_delay=100 mock:chunks=9");
    body["stream"] = json!(true);
    let mut response = app.chat(&t, &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    // The upstream is read to its end and its usage charged: 2 prompt words × 15 + 9 × 60 = 570 µ¢.
    let mut text = String::new();
    for _ in 0..100 {
        text = credits(&app, &t).await.1;
        if text.contains(r#""kind":"charge""#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(text.contains(r#""amount_cents":-0.00057,"#), "{text}");
}

#[tokio::test]
async fn a_stream_the_upstream_cuts_is_charged_for_the_output_it_produced() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 10).await;
    let text = "mock:fail_after=2 mock:words=10";
    let mut body = TestApp::chat_body("fast", text);
    body["stream"] = json!(true);
    let prompt_bound = serde_json::to_vec(&body).unwrap().len() as i64 + 4 + 3;
    let events = app.chat(&t, &body).await.text().await.unwrap();
    assert!(
        events.contains("upstream_error") && !events.contains("[DONE]"),
        "{events}"
    );
    // No usage chunk came: the prompt is charged at its bound (the body's bytes + 4 + 3 tokens × 15) and each of
    // the 2 content chunks as one token of output (× 60).
    let (_, credits_text) = credits(&app, &t).await;
    let charged = Micros(prompt_bound * 15 + 2 * 60);
    assert!(
        credits_text.contains(&format!(r#""amount_cents":-{charged},"#)),
        "{charged}: {credits_text}"
    );
}

#[tokio::test]
async fn credits_granted_by_another_process_are_picked_up() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 0).await;
    error_of(app.chat(&t, &TestApp::chat_body("fast", "hi")).await, 402).await;
    // The CLI writes to the same database, behind the server's back.
    let now = app.clock_now();
    app.state
        .store
        .grant(
            &t.id,
            Micros(1_000_000),
            Some("cli"),
            now,
            &tollgate_testkit::operator_event(
                tollgate_core::audit::EventType::CreditsGranted,
                &t.id,
            ),
        )
        .await
        .unwrap()
        .unwrap();
    // A refusal re-reads the store at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        app.chat(&t, &TestApp::chat_body("fast", "hi"))
            .await
            .status(),
        200
    );
}
