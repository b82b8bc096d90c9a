//! The error shape and the request plumbing: request ids, body limits, media types, unknown routes.

use reqwest::Method;
use tollgate_testkit::{TestApp, json_of};

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::start().await;
    let echoed = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "my-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "my-id-42");
    // Errors too, and a bad client id is replaced.
    let replaced = app
        .request(Method::GET, "/v1/models")
        .header("x-request-id", "has space")
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 401);
    let id = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_"), "{id}");
    let again = app.request(Method::GET, "/v1/models").send().await.unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id);
    let too_long = "a".repeat(129);
    let r = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", &too_long)
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"].to_str().unwrap(), too_long);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_our_shape() {
    let app = TestApp::start().await;
    let body = json_of(
        app.request(Method::GET, "/v2/nothing")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let body = json_of(
        app.request(Method::PUT, "/v1/chat/completions")
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_by_length_or_while_streaming() {
    let app = TestApp::builder()
        .configure(|c| c.max_body_bytes = 1024)
        .start()
        .await;
    let t = app.tenant("pro").await;
    let big = format!(
        r#"{{"model":"echo","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let declared = app
        .with_key(Method::POST, "/v1/chat/completions", &t.project_key)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let body = json_of(declared, 413).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Chunked: no Content-Length, cut off while reading.
    let chunks = futures::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = app
        .with_key(Method::POST, "/v1/chat/completions", &t.project_key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    json_of(chunked, 413).await;
}

#[tokio::test]
async fn bad_bodies_are_400_or_415_with_the_field_named() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let post = |body: &'static str, ct: &'static str| {
        app.with_key(Method::POST, "/v1/chat/completions", &t.project_key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let j = "application/json";
    for (raw, param) in [
        ("", None),
        ("{", None),
        ("[]", None),
        (r#"{"messages":[]}"#, Some("model")),
        (r#"{"model":5,"messages":[]}"#, Some("model")),
        (r#"{"model":"echo","messages":"hi"}"#, Some("messages")),
        (r#"{"model":"echo","messages":[]}"#, Some("messages")),
    ] {
        let body = json_of(post(raw, j).await.unwrap(), 400).await;
        assert_eq!(body["error"]["type"], "invalid_request_error", "{raw}");
        assert_eq!(body["error"]["param"].as_str(), param, "{raw}: {body}");
    }
    json_of(
        post(r#"{"model":"echo"}"#, "text/plain").await.unwrap(),
        415,
    )
    .await;
    let ok = post(
        r#"{"model":"echo","messages":[{"role":"user","content":"x"}]}"#,
        "application/json; charset=utf-8",
    );
    assert_eq!(ok.await.unwrap().status(), 200);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::start().await;
    assert_eq!(
        app.request(Method::GET, "/healthz")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = json_of(
        app.request(Method::GET, "/readyz").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["rate_limiter"], "ok");
}
