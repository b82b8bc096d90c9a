//! `POST /v1/chat/completions`: route by public model id, forward with the upstream model name, answer with the
//! public id. Streams pass through chunk by chunk; the upstream is always asked for usage, and usage is removed
//! from what the client sees unless it asked for it.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::ProjectKey;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tollgate_core::ports::ChunkStream;
use tollgate_openai::{ChatCompletionChunk, ChatCompletionRequest};

/// Forwards a chat completion.
pub async fn handler(
    State(state): State<AppState>,
    key: ProjectKey,
    AppJson(mut request): AppJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must contain at least one message",
            Some("messages"),
        ));
    }
    let spec = Arc::clone(
        state
            .catalog
            .get(&request.model)
            .ok_or_else(|| ApiError::model_not_found(&request.model))?,
    );
    if !key.may_use(&spec.id) {
        return Err(ApiError::Forbidden {
            message: format!("This API key may not use the model `{}`", spec.id),
            param: Some("model".to_owned()),
        });
    }
    let provider = state.providers.get(&spec.provider).ok_or_else(|| {
        ApiError::Internal(format!(
            "no provider {:?} for model {:?}",
            spec.provider, spec.id
        ))
    })?;
    request.model.clone_from(&spec.upstream_model);

    if !request.is_stream() {
        let mut completion = provider.chat(request).await?;
        completion.model.clone_from(&spec.id);
        return Ok(Json(completion).into_response());
    }
    let client_wants_usage = request.wants_stream_usage();
    request
        .stream_options
        .get_or_insert_with(Default::default)
        .include_usage = Some(true);
    let upstream = provider.chat_stream(request).await?;
    let body = Body::from_stream(sse_events(upstream, spec.id.clone(), client_wants_usage));
    Ok((
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// One `data: …\n\n` event.
fn event(json: &impl serde::Serialize) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serializing our own types into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Rewrites a chunk for the client; `None` drops it (a usage-only chunk the client did not ask for).
fn for_client(
    mut chunk: ChatCompletionChunk,
    model: &str,
    keep_usage: bool,
) -> Option<ChatCompletionChunk> {
    if !keep_usage {
        if chunk.choices.is_empty() && chunk.usage.is_some() {
            return None;
        }
        chunk.usage = None;
    }
    model.clone_into(&mut chunk.model);
    Some(chunk)
}

/// The client's event stream: rewritten chunks as they arrive, then `[DONE]`; on an upstream failure mid-stream,
/// an error event in our shape and no `[DONE]`, so the client knows the answer is incomplete.
fn sse_events(
    upstream: ChunkStream,
    model: String,
    keep_usage: bool,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(Some(upstream), move |state| {
        let model = model.clone();
        async move {
            let mut upstream = state?;
            loop {
                match upstream.next().await {
                    Some(Ok(chunk)) => {
                        if let Some(chunk) = for_client(chunk, &model, keep_usage) {
                            return Some((Ok(event(&chunk)), Some(upstream)));
                        }
                    }
                    Some(Err(error)) => {
                        let api_error = ApiError::Upstream(error);
                        tracing::warn!(error = %api_error, "upstream stream failed");
                        return Some((Ok(event(&api_error.body())), None));
                    }
                    None => return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), None)),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use tollgate_core::ports::ProviderError;
    use tollgate_openai::Usage;

    fn chunk(choices: bool, usage: bool) -> ChatCompletionChunk {
        serde_json::from_value(serde_json::json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "upstream-name",
            "choices": if choices { serde_json::json!([{"index":0,"delta":{"content":"hi"},"finish_reason":null}]) } else { serde_json::json!([]) },
            "usage": if usage { serde_json::to_value(Usage::new(3, 4)).unwrap() } else { serde_json::Value::Null },
        }))
        .unwrap()
    }

    async fn collect(
        items: Vec<Result<ChatCompletionChunk, ProviderError>>,
        keep_usage: bool,
    ) -> String {
        let s: ChunkStream = Box::pin(stream::iter(items));
        let parts: Vec<_> = sse_events(s, "fast".into(), keep_usage).collect().await;
        parts
            .into_iter()
            .map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn usage_is_stripped_unless_asked_and_model_is_public() {
        let items = || {
            vec![
                Ok(chunk(true, false)),
                Ok(chunk(true, true)),
                Ok(chunk(false, true)),
            ]
        };
        let out = collect(items(), false).await;
        assert_eq!(out.matches("data: ").count(), 3, "{out}");
        assert!(!out.contains("usage"), "{out}");
        assert!(!out.contains("upstream-name") && out.contains("\"model\":\"fast\""));
        assert!(out.ends_with("data: [DONE]\n\n"));
        let kept = collect(items(), true).await;
        assert_eq!(kept.matches("\"usage\"").count(), 2, "{kept}");
    }

    #[tokio::test]
    async fn a_mid_stream_failure_ends_with_an_error_event_not_done() {
        let out = collect(
            vec![Ok(chunk(true, false)), Err(ProviderError::Timeout)],
            false,
        )
        .await;
        assert!(out.contains("\"type\":\"upstream_error\""), "{out}");
        assert!(!out.contains("[DONE]"));
    }
}
