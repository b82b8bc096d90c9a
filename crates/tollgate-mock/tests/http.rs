//! The mock over real HTTP: what tests and benchmarks rely on it to do.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test helpers: a failing step should stop the test"
)]

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tollgate_mock::{DEFAULT_REPLY, MockConfig};

struct Mock {
    url: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

async fn start(config: MockConfig) -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tollgate_mock::serve(listener, config, async {
        let _ = stopped.await;
    }));
    Mock {
        url,
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

impl Mock {
    async fn chat(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn body(text: &str) -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": text}]})
}

/// The `data:` payloads of an SSE body.
fn events(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_plain_completion_is_deterministic_with_usage() {
    let mock = start(MockConfig::default()).await;
    let out: Value = mock.chat(body("two words")).await.json().await.unwrap();
    assert_eq!(out["choices"][0]["message"]["content"], DEFAULT_REPLY);
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 9, "total_tokens": 11})
    );

    let mut capped = body("mock:words=10");
    capped["max_tokens"] = json!(4);
    let out: Value = mock.chat(capped).await.json().await.unwrap();
    assert_eq!(out["choices"][0]["message"]["content"], "w1 w2 w3 w4");
    assert_eq!(out["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn a_stream_reassembles_and_reports_usage_only_when_asked() {
    let mock = start(MockConfig::default()).await;
    let mut request = body("mock:chunks=3");
    request["stream"] = json!(true);
    let text = mock.chat(request.clone()).await.text().await.unwrap();
    let data = events(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, DEFAULT_REPLY);
    assert_eq!(chunks.len(), 5, "role, 3 content chunks, finish");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));

    request["stream_options"] = json!({"include_usage": true});
    let data = events(&mock.chat(request).await.text().await.unwrap());
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 9);
}

#[tokio::test]
async fn failures_and_cut_streams_on_request() {
    let mock = start(MockConfig::default()).await;
    let response = mock.chat(body("mock:fail=503")).await;
    assert_eq!(response.status(), 503);
    let mut cut = body("mock:fail_after=2 mock:words=10");
    cut["stream"] = json!(true);
    let response = mock.chat(cut).await;
    assert_eq!(response.status(), 200);
    // The connection drops mid-body: reading it fails, and no [DONE] was ever sent.
    assert!(response.text().await.is_err());
}

#[tokio::test]
async fn a_configured_key_is_required_and_requests_are_recorded() {
    let mock = start(MockConfig {
        api_key: Some("upstream-secret".into()),
        ..MockConfig::default()
    })
    .await;
    assert_eq!(mock.chat(body("hi")).await.status(), 401);
    let ok = mock
        .http
        .post(format!("{}/v1/chat/completions", mock.url))
        .bearer_auth("upstream-secret")
        .json(&body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let last: Value = mock
        .http
        .get(format!("{}/mock/requests/last", mock.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last["body"]["model"], "mock-model");
    assert_eq!(last["headers"]["authorization"], "Bearer upstream-secret");
    let unknown = mock
        .http
        .post(format!("{}/v1/chat/completions", mock.url))
        .bearer_auth("upstream-secret")
        .json(&json!({"model": "other", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
