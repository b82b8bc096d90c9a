//! `GET /v1/organization/usage` and `GET /v1/usage`: totals grouped by day, model, project and key.

use serde_json::{Value, json};
use tollgate_testkit::{TestApp, error_of, json_of};

async fn usage(app: &TestApp, path: &str, key: &str) -> Value {
    json_of(app.get(path, key).await, 200).await
}

#[tokio::test]
async fn usage_is_reported_per_group_for_the_tenant_and_per_project() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let sandbox = app.create_project(&t.admin_key, "S").await;
    let sandbox_key = app
        .create_project_key(
            &t.admin_key,
            sandbox["id"].as_str().unwrap(),
            json!({"name": "s"}),
        )
        .await;
    let sandbox_key = sandbox_key["value"].as_str().unwrap();
    for (key, model, text) in [
        (t.project_key.as_str(), "fast", "hello world"),
        (t.project_key.as_str(), "fast", "one two three"),
        (t.project_key.as_str(), "echo", "four five"),
        (sandbox_key, "fast", "six"),
    ] {
        let body = TestApp::chat_body(model, text);
        assert_eq!(
            app.post("/v1/chat/completions", key, &body).await.status(),
            200
        );
    }
    // Refused and failed requests are not usage.
    assert_eq!(
        app.post(
            "/v1/chat/completions",
            sandbox_key,
            &TestApp::chat_body("nope", "x")
        )
        .await
        .status(),
        404
    );

    let all = usage(&app, "/v1/organization/usage", &t.admin_key).await;
    assert_eq!(all["object"], "page");
    assert_eq!(
        (all["has_more"].as_bool(), all["next_page"].is_null()),
        (Some(false), true)
    );
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        1,
        "one bucket for the window"
    );
    let bucket = &all["data"][0];
    assert_eq!(bucket["object"], "bucket");
    assert_eq!(
        bucket["end_time"].as_i64().unwrap() - bucket["start_time"].as_i64().unwrap(),
        30 * 86_400
    );
    let result = &bucket["results"][0];
    assert_eq!(result["object"], "organization.usage.result");
    // Prompt words 2 + 3 + 2 + 1; replies 9 + 9 + 2 (echo) + 9.
    assert_eq!(
        (
            result["requests"].as_u64(),
            result["prompt_tokens"].as_u64(),
            result["completion_tokens"].as_u64()
        ),
        (Some(4), Some(8), Some(29))
    );
    assert_eq!(result["model"], Value::Null);

    let by_model = usage(&app, "/v1/organization/usage?group_by=model", &t.admin_key).await;
    let text = by_model.to_string();
    let results = by_model["data"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(
        (
            results[0]["model"].as_str(),
            results[0]["requests"].as_u64()
        ),
        (Some("echo"), Some(1))
    );
    assert_eq!(results[0]["cost_cents"], 0);
    // fast: prompt 2 + 3 + 1 = 6 × 15 + 27 × 60 = 1 710 µ¢.
    assert_eq!(
        (
            results[1]["model"].as_str(),
            results[1]["requests"].as_u64()
        ),
        (Some("fast"), Some(3))
    );
    assert!(text.contains(r#""cost_cents":0.00171"#), "{text}");

    let by_project_key = usage(
        &app,
        "/v1/organization/usage?group_by=project,key",
        &t.admin_key,
    )
    .await;
    assert_eq!(
        by_project_key["data"][0]["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        by_project_key["data"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key_id"].is_string() && r["project_id"].is_string())
    );

    // A project key sees its own project only.
    let mine = usage(&app, "/v1/usage", sandbox_key).await;
    let result = &mine["data"][0]["results"][0];
    assert_eq!(
        (
            result["requests"].as_u64(),
            result["prompt_tokens"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(mine["data"][0]["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn daily_buckets_cover_the_window_and_parameters_are_checked() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    assert_eq!(
        app.post(
            "/v1/chat/completions",
            &t.project_key,
            &TestApp::chat_body("fast", "x")
        )
        .await
        .status(),
        200
    );
    let now = app.clock_now();
    let since = now - 2 * 86_400;
    let path = format!(
        "/v1/organization/usage?group_by=day&since={since}&until={}",
        now + 1
    );
    let daily = usage(&app, &path, &t.admin_key).await;
    let buckets = daily["data"].as_array().unwrap();
    assert!((3..=4).contains(&buckets.len()), "{daily}");
    assert_eq!(buckets[0]["start_time"], since);
    assert_eq!(buckets.last().unwrap()["end_time"], now + 1);
    let used: Vec<usize> = buckets
        .iter()
        .map(|b| b["results"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        used.iter().sum::<usize>(),
        1,
        "one day has the request, the others are empty: {used:?}"
    );
    assert_eq!(buckets.last().unwrap()["results"][0]["model"], Value::Null);

    for (query, param) in [
        ("group_by=week", "group_by"),
        ("since=yesterday", "since"),
        ("since=10&until=5", "since"),
        ("until=-1", "until"),
    ] {
        let err = error_of(
            app.get(&format!("/v1/organization/usage?{query}"), &t.admin_key)
                .await,
            400,
        )
        .await;
        assert_eq!(err["param"], param, "{query}");
    }
    error_of(
        app.get("/v1/organization/usage?group_by=day&since=0", &t.admin_key)
            .await,
        400,
    )
    .await;
}

/// A window at the edge of `i64` once pinned a worker and grew memory without bound: every such bound is a quick 400
/// naming its parameter, on both usage routes, and the server keeps answering.
#[tokio::test]
async fn windows_at_the_edge_of_i64_are_refused_quickly() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let max = i64::MAX;
    let cases = [
        (format!("until={max}&group_by=day"), "until"),
        (format!("until={max}"), "until"),
        (
            format!("since={}&until={max}&group_by=day", max - 86_400),
            "until",
        ),
        (format!("since={max}"), "since"),
        ("until=9223372036854775808&group_by=day".to_owned(), "until"),
        ("since=-9223372036854775808".to_owned(), "since"),
        ("since=-1&group_by=day".to_owned(), "since"),
        ("until=253402300801".to_owned(), "until"),
    ];
    for (query, param) in &cases {
        for (path, key) in [
            ("/v1/organization/usage", &t.admin_key),
            ("/v1/usage", &t.project_key),
        ] {
            let err = error_of(app.get(&format!("{path}?{query}"), key).await, 400).await;
            assert_eq!(err["param"], *param, "{path}?{query}: {err}");
            assert_eq!(err["type"], "invalid_request_error");
        }
    }
    // The latest accepted bound still answers, with one bucket per day of a year-long window at most.
    let last = 253_402_300_800_i64;
    let path = format!(
        "/v1/organization/usage?group_by=day&since={}&until={last}",
        last - 3 * 86_400
    );
    let daily = usage(&app, &path, &t.admin_key).await;
    assert_eq!(daily["data"].as_array().unwrap().len(), 3, "{daily}");
}
