//! `POST /v1/chat/completions` through the echo model and the mock upstream.

use super::sse_data;
use serde_json::{Value, json};
use tollgate_testkit::{TestApp, json_of};

#[tokio::test]
async fn echo_replies_with_the_last_user_message() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let out = json_of(
        app.chat(&t, &TestApp::chat_body("echo", "hello tollgate"))
            .await,
        200,
    )
    .await;
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "echo");
    assert_eq!(out["choices"][0]["message"]["content"], "hello tollgate");
    assert_eq!(out["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn the_upstream_sees_its_model_name_and_credential_never_the_clients_key() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let out = json_of(app.chat(&t, &TestApp::chat_body("fast", "ping")).await, 200).await;
    assert_eq!(
        out["model"], "fast",
        "the public id, not the upstream model"
    );
    assert!(out["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(
        !out["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let seen = app.last_upstream_request().await;
    assert_eq!(seen["body"]["model"], "mock-model");
    let headers = seen["headers"].to_string();
    assert!(
        !headers.contains(&t.project_key),
        "client key forwarded: {headers}"
    );
    assert!(seen["headers"].get("x-api-key").is_none());
}

#[tokio::test]
async fn unknown_fields_pass_through_to_the_upstream() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "x"}], "temperature": 0.25, "user": "u-1"});
    json_of(app.chat(&t, &body).await, 200).await;
    let seen = app.last_upstream_request().await;
    assert_eq!(seen["body"]["temperature"], 0.25);
    assert_eq!(seen["body"]["user"], "u-1");
}

#[tokio::test]
async fn the_upstream_receives_the_clients_bytes_with_only_the_model_rewritten() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    // Number formats, escapes and member order that a parse-and-serialise round trip would change.
    let raw = r#"{"model":"fast","temperature":0.50,"messages":[{"role":"user","content":"caf\u00e9 \/ x"}],"logit_bias":{"50256":-1.0e2},"user":"u"}"#;
    let response = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(&t.project_key)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    json_of(response, 200).await;
    let seen = app.last_upstream_request().await;
    assert_eq!(
        seen["raw"],
        raw.replace(r#""model":"fast""#, r#""model":"mock-model""#)
    );
}

#[tokio::test]
async fn an_unknown_model_is_404_model_not_found() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let body = json_of(
        app.chat(&t, &TestApp::chat_body("gpt-nope", "x")).await,
        404,
    )
    .await;
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
}

#[tokio::test]
async fn streams_pass_through_with_the_public_model_and_without_unasked_usage() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let mut body = TestApp::chat_body("fast", "stream me please");
    body["stream"] = json!(true);
    let response = app.chat(&t, &body.clone()).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(response.headers().contains_key("x-request-id"));
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.len() >= 3, "{chunks:?}");
    assert!(chunks.iter().all(|c| c["model"] == "fast"));
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage not asked for: {chunks:?}"
    );
    // The upstream was asked for usage all the same.
    let seen = app.last_upstream_request().await;
    assert_eq!(seen["body"]["stream_options"]["include_usage"], true);

    body["stream_options"] = json!({"include_usage": true});
    let events = sse_data(&app.chat(&t, &body).await.text().await.unwrap());
    let last_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last_chunk["choices"], json!([]));
    assert!(last_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn echo_streams_too() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let mut body = TestApp::chat_body("echo", "one two three");
    body["stream"] = json!(true);
    let events = sse_data(&app.chat(&t, &body).await.text().await.unwrap());
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "one two three");
}

#[tokio::test]
async fn upstream_failures_are_502_without_the_upstreams_words() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let response = app
        .chat(&t, &TestApp::chat_body("fast", "mock:fail=500"))
        .await;
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "upstream_error", "{text}");
    assert!(!text.contains("mock upstream internal detail"), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
    let mut streamed = TestApp::chat_body("fast", "mock:fail=503");
    streamed["stream"] = json!(true);
    let response = app.chat(&t, &streamed).await;
    assert_eq!(response.status(), 502);
}

#[tokio::test]
async fn a_slow_upstream_is_504() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    // "slow" goes through a provider with a 300 ms timeout.
    let response = app
        .chat(&t, &TestApp::chat_body("slow", "mock:latency=2000"))
        .await;
    let body = json_of(response, 504).await;
    assert_eq!(body["error"]["type"], "upstream_error");
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_an_error_event() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let mut body = TestApp::chat_body("fast", "mock:fail_after=2 mock:words=10");
    body["stream"] = json!(true);
    let response = app.chat(&t, &body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_ne!(events.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_is_left_behind_and_the_stream_still_charged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::builder()
        .configure(|c| c.idle_timeout_seconds = 1)
        .start()
        .await;
    let t = app.funded_tenant("pro", 100).await;
    // About 7 MB of events: more than the channel and the server's send buffer hold, with the client's receive
    // buffer kept small.
    let mut body = TestApp::chat_body(
        "fast",
        "mock:ignore_caps=1 mock:words=1000000 mock:chunks=500",
    );
    body["stream"] = json!(true);
    let body = body.to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket
        .connect(app.url.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: tollgate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        t.project_key,
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 64];
    let n = client.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    // The client keeps its connection open and reads nothing more. Once it has taken nothing for
    // `idle_timeout_seconds` (1 s here), the stream's pump leaves it behind, reads the upstream to its end and
    // charges the request. (Without that, the pump waited for the client for ever: checked.)
    let started = std::time::Instant::now();
    let recorded = loop {
        let usage = json_of(app.get("/v1/organization/usage", &t.admin_key).await, 200).await;
        let requests = usage["data"][0]["results"][0]["requests"]
            .as_u64()
            .unwrap_or(0);
        if requests == 1 || started.elapsed() > std::time::Duration::from_secs(10) {
            break requests;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        recorded, 1,
        "the stream of a client that stopped reading was never settled"
    );
    drop(client);
}
