//! Holds bound everything a request can cost: `n` choices, tools and schemas in the body, image parts, absurd caps;
//! an upstream that ignores its caps is charged no more than the hold, and its usage is still recorded as reported.

use serde_json::{Value, json};
use tollgate_core::money::Micros;
use tollgate_testkit::{TestApp, error_of, json_of};

/// What the hold of `body` is for the test model `fast` (15/60 ¢ per million), with `output` tokens of output.
fn hold_of(body: &Value, messages: i64, output: i64) -> Micros {
    let prompt = serde_json::to_vec(body).unwrap().len() as i64 + 4 * messages + 3;
    Micros(prompt * 15 + output * 60)
}

#[tokio::test]
async fn every_choice_is_held_and_n_past_the_maximum_is_refused() {
    let app = TestApp::start().await;
    // 1 cent = 1 000 000 µ¢.
    let t = app.funded_tenant("pro", 1).await;
    let mut body = TestApp::chat_body("fast", "mock:words=3 hi");
    body["max_tokens"] = json!(2_100);
    body["n"] = json!(8);
    // 8 × 2 100 output tokens × 60 µ¢ = 1 008 000 µ¢, plus the prompt bound: more than the 1 cent there is.
    let err = error_of(app.chat(&t, &body).await, 402).await;
    assert_eq!(
        err["details"]["cost_cents"].to_string(),
        hold_of(&body, 1, 16_800).to_string(),
        "{err}"
    );
    // One choice of the same request fits: n is what made it too dear.
    body["n"] = json!(1);
    let answer = json_of(app.chat(&t, &body).await, 200).await;
    assert_eq!(answer["choices"].as_array().unwrap().len(), 1);

    body["n"] = json!(3);
    body["max_tokens"] = json!(10);
    let answer = json_of(app.chat(&t, &body).await, 200).await;
    assert_eq!(answer["choices"].as_array().unwrap().len(), 3);
    assert_eq!(
        answer["usage"]["completion_tokens"], 9,
        "3 words × 3 choices"
    );
    assert_eq!(
        app.last_upstream_request().await["body"]["n"],
        3,
        "n is passed on"
    );

    for n in [json!(0), json!(9), json!(1_000_000)] {
        body["n"] = n.clone();
        let err = error_of(app.chat(&t, &body).await, 400).await;
        assert_eq!(err["param"], "n", "{n}: {err}");
        assert_eq!(err["message"], "n must be an integer from 1 to 8");
    }
    body["n"] = json!("3");
    assert_eq!(error_of(app.chat(&t, &body).await, 400).await["param"], "n");
}

#[tokio::test]
async fn max_choices_is_the_operators_to_set() {
    let app = TestApp::builder()
        .configure(|c| c.max_choices = 2)
        .start()
        .await;
    let t = app.tenant("pro").await;
    let mut body = TestApp::chat_body("fast", "hi");
    body["n"] = json!(3);
    let err = error_of(app.chat(&t, &body).await, 400).await;
    assert_eq!(err["message"], "n must be an integer from 1 to 2");
}

#[tokio::test]
async fn tools_and_schemas_in_the_body_are_held_as_input() {
    let app = TestApp::start().await;
    // 1 cent: enough for a small request's worst case, not for 100 000 bytes of tool schema at 15 µ¢ a byte.
    let t = app.funded_tenant("pro", 1).await;
    let mut body = TestApp::chat_body("fast", "hi");
    body["max_tokens"] = json!(10);
    assert_eq!(app.chat(&t, &body).await.status(), 200);
    let schema = "x".repeat(100_000);
    body["tools"] = json!([{"type": "function", "function": {"name": "f", "description": schema,
        "parameters": {"type": "object"}}}]);
    let err = error_of(app.chat(&t, &body).await, 402).await;
    assert_eq!(
        err["details"]["cost_cents"].to_string(),
        hold_of(&body, 1, 10).to_string()
    );
    // The same goes for a response_format schema and for tool-call arguments in the history.
    let mut body = TestApp::chat_body("fast", "hi");
    body["max_tokens"] = json!(10);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "s",
        "schema": {"description": "y".repeat(100_000)}}});
    assert_eq!(app.chat(&t, &body).await.status(), 402);
    let body = json!({"model": "fast", "max_tokens": 10, "messages": [
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "z".repeat(100_000)}}]},
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
        {"role": "user", "content": "hi"}]});
    let err = error_of(app.chat(&t, &body).await, 402).await;
    assert_eq!(
        err["details"]["cost_cents"].to_string(),
        hold_of(&body, 3, 10).to_string()
    );
}

#[tokio::test]
async fn images_are_held_at_the_models_worst_case_or_refused() {
    let app = TestApp::builder()
        .configure(|c| c.models[0].max_image_tokens = Some(50_000))
        .start()
        .await;
    let t = app.funded_tenant("pro", 1).await;
    let image = json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}});
    let body = json!({"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, image]}]});
    // 50 000 tokens × 15 µ¢ = 750 000 µ¢ for the image: with the rest it still fits 1 cent, twice it does not.
    assert_eq!(app.chat(&t, &body).await.status(), 200);
    let two = json!({"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "and these?"}, image, image]}]});
    let err = error_of(app.chat(&t, &two).await, 402).await;
    let expected = hold_of(&two, 1, 10).plus(Micros(2 * 50_000 * 15));
    assert_eq!(
        err["details"]["cost_cents"].to_string(),
        expected.to_string()
    );

    // `slow` declares no image worst case: its images are refused, naming the part.
    let mut refused = two.clone();
    refused["model"] = json!("slow");
    let err = error_of(app.chat(&t, &refused).await, 400).await;
    assert_eq!(err["param"], "messages[0].content[1]", "{err}");
    assert_eq!(
        err["message"],
        "The model `slow` does not accept image input"
    );
    // Parts whose cost cannot be bounded up front are refused on every model.
    let audio = json!({"model": "fast", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]});
    let err = error_of(app.chat(&t, &audio).await, 400).await;
    assert_eq!(err["param"], "messages[0].content[0]", "{err}");
}

#[tokio::test]
async fn absurd_output_caps_are_a_clean_400_never_a_wrap() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    for (field, value) in [
        ("max_tokens", json!(u64::MAX)),
        ("max_completion_tokens", json!(u64::MAX / 60)),
        ("max_tokens", json!(1_u64 << 60)),
    ] {
        let mut body = TestApp::chat_body("fast", "hi");
        body[field] = value.clone();
        let err = error_of(app.chat(&t, &body).await, 400).await;
        assert_eq!(err["param"], field, "{value}: {err}");
    }
    // Past u64 it is not a number of tokens at all; negative neither.
    for raw in [
        r#"{"model":"fast","max_tokens":18446744073709551616,"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"fast","max_tokens":-1,"messages":[{"role":"user","content":"hi"}]}"#,
    ] {
        let response = app
            .with_key(
                reqwest::Method::POST,
                "/v1/chat/completions",
                &t.project_key,
            )
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(response, 400).await["param"], "max_tokens");
    }
    // A large cap that can be represented is held, and refused for want of money, not wrapped into a small one.
    let mut body = TestApp::chat_body("fast", "hi");
    body["max_tokens"] = json!(1_u64 << 40);
    let err = error_of(app.chat(&t, &body).await, 402).await;
    assert_eq!(
        err["details"]["cost_cents"].to_string(),
        hold_of(&body, 1, 1 << 40).to_string()
    );
}

#[tokio::test]
async fn an_upstream_that_ignores_its_cap_is_charged_the_hold_and_its_usage_recorded() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let mut body = TestApp::chat_body("fast", "mock:ignore_caps=1 mock:words=50 hi");
    body["max_tokens"] = json!(5);
    let answer = json_of(app.chat(&t, &body).await, 200).await;
    assert_eq!(
        answer["usage"]["completion_tokens"], 50,
        "the upstream overran"
    );
    let held = hold_of(&body, 1, 5);
    let credits = app.get("/v1/organization/credits", &t.admin_key).await;
    let credits: Value = credits.json().await.unwrap();
    assert_eq!(
        credits["ledger"]["data"][0]["amount_cents"].to_string(),
        format!("-{held}"),
        "the charge is the hold, not the overrun: {credits}"
    );
    let usage = json_of(app.get("/v1/organization/usage", &t.admin_key).await, 200).await;
    let result = &usage["data"][0]["results"][0];
    assert_eq!(
        result["completion_tokens"], 50,
        "usage shows what was reported: {usage}"
    );
    assert_eq!(result["cost_cents"].to_string(), held.to_string());
}
