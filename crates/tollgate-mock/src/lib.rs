//! A deterministic OpenAI-compatible model server, for tests, demos and benchmarks.
//!
//! Answers are a fixed sentence (or `N` numbered words), usage counts whitespace-separated words, and the last
//! user message can ask for behaviour with `mock:NAME=VALUE` tokens:
//!
//! | token | effect |
//! |---|---|
//! | `mock:fail=N` | answer HTTP `N` with an error body (before any stream bytes) |
//! | `mock:latency=MS` | wait `MS` before answering (overrides `--latency-ms`) |
//! | `mock:words=N` | reply with exactly `N` words |
//! | `mock:chunks=N` | stream the reply in `N` content chunks |
//! | `mock:fail_after=N` | stream `N` content chunks, then cut the connection without `[DONE]` |
//! | `mock:chunk_delay=MS` | wait `MS` before each streamed content chunk |
//! | `mock:ignore_caps=1` | ignore `max_tokens` / `max_completion_tokens`, as a misbehaving upstream would |
//! | `mock:garbage=1` | answer a non-streamed request 200 with a body that is not a completion |
//!
//! `n` is honoured: `n` identical choices, and usage counts the output of all of them.
//!
//! `GET /mock/requests/last` returns the last chat request's headers, body, and body as sent (`raw`, a string),
//! and how many chat requests arrived in all (`count`), so tests can see what an upstream received.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a cut stream pauses before dropping the connection.
const CUT_DELAY: Duration = Duration::from_millis(50);

/// The reply when no `mock:words` is asked for.
pub const DEFAULT_REPLY: &str = "This is a deterministic reply from the mock upstream.";

/// How the mock behaves when a request asks for nothing special.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Wait before every answer, in milliseconds.
    pub latency_ms: u64,
    /// Content chunks per streamed reply.
    pub stream_chunks: usize,
    /// Fail every chat request with this status.
    pub fail_status: Option<u16>,
    /// Require `Authorization: Bearer <this>`.
    pub api_key: Option<String>,
    /// Model ids served.
    pub models: Vec<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            stream_chunks: 4,
            fail_status: None,
            api_key: None,
            models: vec!["mock-model".to_owned()],
        }
    }
}

/// Command-line options of `tollgate mock-upstream`.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Wait before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Content chunks per streamed reply.
    #[arg(long, default_value_t = 4)]
    pub stream_chunks: usize,
    /// Fail every chat request with this HTTP status.
    #[arg(long)]
    pub fail_status: Option<u16>,
    /// Require this bearer key.
    #[arg(long, env = "MOCK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A model id to serve (repeatable).
    #[arg(long = "model", default_value = "mock-model")]
    pub models: Vec<String>,
}

impl From<MockArgs> for MockConfig {
    fn from(a: MockArgs) -> Self {
        Self {
            latency_ms: a.latency_ms,
            stream_chunks: a.stream_chunks,
            fail_status: a.fail_status,
            api_key: a.api_key,
            models: a.models,
        }
    }
}

struct Shared {
    config: MockConfig,
    last: Mutex<Option<Value>>,
    counter: AtomicU64,
    /// Chat requests received (well-formed JSON objects), for `count` in `/mock/requests/last`.
    received: AtomicU64,
}

/// The mock's routes.
pub fn router(config: MockConfig) -> Router {
    let shared = Arc::new(Shared {
        config,
        last: Mutex::new(None),
        counter: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/mock/requests/last", get(last_request))
        .with_state(shared)
}

/// Serves the mock on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

async fn models(State(s): State<Arc<Shared>>) -> Json<Value> {
    let data: Vec<Value> = s
        .config
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "tollgate-mock"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn last_request(State(s): State<Arc<Shared>>) -> Response {
    let last = s.last.lock().map(|l| l.clone()).unwrap_or(None);
    match last {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no request yet",
            "invalid_request_error",
            None,
        ),
    }
}

/// What the last user message asked of the mock.
#[derive(Debug, Default)]
struct Knobs {
    fail: Option<u16>,
    latency_ms: Option<u64>,
    words: Option<usize>,
    chunks: Option<usize>,
    fail_after: Option<usize>,
    chunk_delay_ms: Option<u64>,
    ignore_caps: bool,
    garbage: bool,
}

impl Knobs {
    fn parse(text: &str) -> Self {
        let mut k = Self::default();
        for token in text.split_whitespace() {
            let Some((name, value)) = token.strip_prefix("mock:").and_then(|t| t.split_once('='))
            else {
                continue;
            };
            match name {
                "fail" => k.fail = value.parse().ok(),
                "latency" => k.latency_ms = value.parse().ok(),
                "words" => k.words = value.parse().ok(),
                "chunks" => k.chunks = value.parse().ok(),
                "fail_after" => k.fail_after = value.parse().ok(),
                "chunk_delay" => k.chunk_delay_ms = value.parse().ok(),
                "ignore_caps" => k.ignore_caps = value == "1",
                "garbage" => k.garbage = value == "1",
                _ => {}
            }
        }
        k
    }
}

/// A message's text: a string, or the `text` parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(expected) = &s.config.api_key {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(expected.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided",
                "invalid_request_error",
                Some("invalid_api_key"),
            );
        }
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            );
        }
    };
    let seen_headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    if let Ok(mut last) = s.last.lock() {
        let count = s.received.fetch_add(1, Ordering::Relaxed) + 1;
        *last = Some(json!({"headers": seen_headers, "body": request.clone(),
                            "raw": String::from_utf8_lossy(&body), "count": count}));
    }

    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !s.config.models.contains(&model) {
        let message = format!("The model `{model}` does not exist");
        return error(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            Some("model_not_found"),
        );
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default();
    let knobs = Knobs::parse(&last_user);

    if let Some(status) = knobs.fail.or(s.config.fail_status) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(
            status,
            "mock upstream internal detail: forced failure",
            "server_error",
            None,
        );
    }
    let latency = knobs.latency_ms.unwrap_or(s.config.latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    let mut words: Vec<String> = match knobs.words {
        Some(n) => (1..=n).map(|i| format!("w{i}")).collect(),
        None => DEFAULT_REPLY
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };
    let cap = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| request.get(*f).and_then(Value::as_u64))
        .and_then(|c| usize::try_from(c).ok())
        .filter(|_| !knobs.ignore_caps);
    let n = request
        .get("n")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1)
        .max(1);
    let finish = match cap {
        Some(cap) if words.len() > cap => {
            words.truncate(cap);
            "length"
        }
        _ => "stop",
    };
    let prompt_tokens = messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(|c| text_of(c).split_whitespace().count())
        .sum::<usize>()
        .max(1);
    let completion_tokens = words.len() * n;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = format!(
        "chatcmpl-mock-{}",
        s.counter.fetch_add(1, Ordering::Relaxed)
    );
    let created = now();

    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        if knobs.garbage {
            return Json(
                json!({"id": id, "choices": "not a list", "usage": {"prompt_tokens": "many"}}),
            )
            .into_response();
        }
        let choices: Vec<Value> = (0..n)
            .map(|index| {
                json!({"index": index, "message": {"role": "assistant", "content": words.join(" ")},
                       "logprobs": null, "finish_reason": finish})
            })
            .collect();
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices,
            "usage": usage,
        }))
        .into_response();
    }

    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunks = knobs.chunks.unwrap_or(s.config.stream_chunks).max(1);
    let chunk = |delta: Value, finish: Option<&str>| {
        let choices: Vec<Value> = (0..n)
            .map(|index| json!({"index": index, "delta": delta, "finish_reason": finish}))
            .collect();
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": choices})
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(
        split(&words, chunks)
            .into_iter()
            .map(|text| chunk(json!({"content": text}), None)),
    );
    let cut_at = knobs.fail_after.map(|n| n + 1);
    events.push(chunk(json!({}), Some(finish)));
    if include_usage {
        events.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [], "usage": usage}),
        );
    }
    let mut frames: Vec<Result<Bytes, std::io::Error>> = events
        .iter()
        .map(|e| Ok(Bytes::from(format!("data: {e}\n\n"))))
        .collect();
    frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    let cut = cut_at.map(|n| {
        frames.truncate(n);
        // An error from the body stream makes the server drop the connection mid-response. The pause first
        // lets the frames before it reach the client, as they would from a real upstream that dies mid-answer.
        futures::stream::once(async {
            tokio::time::sleep(CUT_DELAY).await;
            Err(std::io::Error::other("mock: connection cut on request"))
        })
    });
    let delay = Duration::from_millis(knobs.chunk_delay_ms.unwrap_or(0));
    let frames = futures::stream::iter(frames).then(move |frame| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        frame
    });
    let body = frames.chain(futures::stream::iter(cut).flatten());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `words` in `n` groups of near-equal size (fewer if there are fewer words), concatenating back to the words
/// joined by single spaces: every group after the first starts with the separating space.
fn split(words: &[String], n: usize) -> Vec<String> {
    if words.is_empty() {
        return vec![String::new()];
    }
    let n = n.min(words.len());
    let (base, extra) = (words.len() / n, words.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let len = base + usize::from(i < extra);
        let text = words[start..start + len].join(" ");
        out.push(if start == 0 { text } else { format!(" {text}") });
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_concatenate_to_the_reply() {
        let words: Vec<String> = DEFAULT_REPLY
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for n in 1..12 {
            let parts = split(&words, n);
            assert_eq!(parts.len(), n.min(words.len()));
            assert_eq!(parts.concat(), DEFAULT_REPLY);
        }
    }

    #[test]
    fn knobs_are_read_from_tokens() {
        let k = Knobs::parse(
            "hello mock:fail=503 mock:latency=20 mock:words=3 mock:chunks=2 mock:fail_after=1 x",
        );
        assert_eq!(
            (k.fail, k.latency_ms, k.words, k.chunks, k.fail_after),
            (Some(503), Some(20), Some(3), Some(2), Some(1))
        );
        assert!(Knobs::parse("mock:fail=abc").fail.is_none());
        assert_eq!(Knobs::parse("mock:chunk_delay=15").chunk_delay_ms, Some(15));
    }
}
