//! `POST /v1/chat/completions`: parse, admit through the pipeline (policy, rate limit, idempotency, hold), forward
//! with the upstream model name, settle the actual cost from the provider's usage (with the response, for an
//! `Idempotency-Key`), answer with the public id.
//! The body goes upstream as the client wrote it and the completion comes back as the upstream wrote it, with only
//! `model` (and a stream's `stream_options`) rewritten (`tollgate_openai::raw`).
//!
//! The upstream call runs in its own task, so a client that goes away does not cut it short: what the provider
//! produces is charged, and the charge is durable before the response (or a stream's last event) is sent. Streams
//! pass through chunk by chunk; the upstream is always asked for usage, and usage is removed from what the client
//! sees unless it asked for it.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::SizedJson;
use crate::middleware::auth::ProjectKey;
use crate::middleware::request_id::RequestId;
use crate::pipeline::settle::Bill;
use crate::pipeline::{self, Admission};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tollgate_core::ports::{ChatCall, ChunkStream, ProviderError};
use tollgate_openai::raw::{self, UpstreamCompletion};
use tollgate_openai::{ChatCompletionChunk, ChatCompletionRequest};

/// Stream events buffered between the upstream and a slow client.
const STREAM_BUFFER: usize = 32;

/// A stream's last event.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// Forwards a chat completion.
pub async fn handler(
    State(state): State<AppState>,
    key: ProjectKey,
    Extension(RequestId(request_id)): Extension<RequestId>,
    SizedJson {
        value: mut request,
        raw,
    }: SizedJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must contain at least one message",
            Some("messages"),
        ));
    }
    let request_id = request_id.to_str().unwrap_or_default();
    let Admission {
        spec,
        provider,
        bill,
        quota,
    } = pipeline::admit(&state, &key, request_id, &request, raw.len()).await?;
    let stream = request.is_stream();
    let client_wants_usage = request.wants_stream_usage();
    // The upstream is always asked for a stream's usage: that is what it is charged by.
    let body = raw::forward_request(&raw, &spec.upstream_model, stream)
        .map_err(|e| ApiError::Internal(format!("re-reading a parsed body failed: {e}")))?;
    request.model.clone_from(&spec.upstream_model);
    if stream {
        request
            .stream_options
            .get_or_insert_with(Default::default)
            .include_usage = Some(true);
    }
    let call = ChatCall {
        request,
        body: body.into(),
    };

    if !stream {
        let mut bill = bill;
        let answer = state.tasks.spawn(async move {
            let answered = async {
                let bytes = provider.chat(call).await?;
                let completion = UpstreamCompletion::parse(&bytes).map_err(invalid)?;
                let usage = match completion.usage() {
                    Some(u) => (u.prompt_tokens, u.completion_tokens),
                    None => (
                        bill.worst().prompt_tokens,
                        completion.output_text_bytes().map_err(invalid)?,
                    ),
                };
                Ok::<_, ApiError>((completion.with_model(&spec.id), usage))
            }
            .await;
            let (body, (prompt, completion_tokens)) = match answered {
                Ok(answered) => answered,
                Err(error) => {
                    bill.release_key().await;
                    return Err(error);
                }
            };
            if bill.is_replayable() {
                bill.keep_response(false, body.clone());
            }
            bill.settle(prompt, completion_tokens).await?;
            Ok::<_, ApiError>(body)
        });
        let completion = answer
            .await
            .map_err(|e| ApiError::Internal(format!("chat task failed: {e}")))??;
        return Ok((quota, [(CONTENT_TYPE, "application/json")], completion).into_response());
    }
    // A failure before the first chunk is an HTTP error, and the hold is released: nothing was produced.
    let upstream = match provider.chat_stream(call).await {
        Ok(upstream) => upstream,
        Err(error) => {
            let mut bill = bill;
            bill.release_key().await;
            return Err(error.into());
        }
    };
    let (events, body) = mpsc::channel(STREAM_BUFFER);
    state.tasks.spawn(pump(
        upstream,
        events,
        bill,
        client_wants_usage,
        Duration::from_secs(state.config.idle_timeout_seconds),
    ));
    let body = Body::from_stream(ReceiverStream::new(body).map(Ok::<_, Infallible>));
    Ok((
        quota,
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// An upstream answer that is not a completion we can bill: a 502, nothing charged (the hold is released).
fn invalid(error: serde_json::Error) -> ApiError {
    ApiError::Upstream(ProviderError::Failed(format!(
        "upstream sent an invalid completion: {error}"
    )))
}

/// Whether a chunk carries generated text.
fn has_content(chunk: &ChatCompletionChunk) -> bool {
    chunk.choices.iter().any(|c| {
        c.delta
            .get("content")
            .and_then(|v| v.as_str())
            .is_some_and(|s| !s.is_empty())
    })
}

/// Moves a stream from the upstream to the client, then settles it and sends the last event. When the client goes
/// away, or takes nothing for `stall` (the connection's idle timeout: its buffers and the channel are full), the
/// upstream is still read to its end, so what it produced is charged and no upstream connection or hold waits on a
/// silent client. (The connection's own idle timeout does not cover a response that is being written.)
async fn pump(
    mut upstream: ChunkStream,
    events: mpsc::Sender<Bytes>,
    mut bill: Bill,
    keep_usage: bool,
    stall: Duration,
) {
    let model = bill.model().to_owned();
    let mut client = Some(events);
    // For an `Idempotency-Key`: every event as sent, stored with the charge.
    let mut sent = bill.is_replayable().then(Vec::new);
    let mut usage = None;
    let mut content_chunks = 0u64;
    let ended = loop {
        match upstream.next().await {
            Some(Ok(chunk)) => {
                if let Some(u) = &chunk.usage {
                    usage = Some((u.prompt_tokens, u.completion_tokens));
                }
                content_chunks += u64::from(has_content(&chunk));
                if let Some(chunk) = for_client(chunk, &model, keep_usage) {
                    let bytes = event(&chunk);
                    if let Some(sent) = &mut sent {
                        sent.extend_from_slice(&bytes);
                    }
                    send(&mut client, bytes, stall).await;
                }
            }
            Some(Err(error)) => break Err(ApiError::Upstream(error)),
            None => break Ok(()),
        }
    };
    // Without a usage chunk (a broken stream), each content chunk counts as one token of output.
    let produced = usage
        .or_else(|| (content_chunks > 0).then_some((bill.worst().prompt_tokens, content_chunks)));
    let request_id = bill.request_id().to_owned();
    // Only a stream that ended well is replayed: one cut short fails (like a 5xx), so a retry runs again.
    if let (Ok(()), Some(mut sent)) = (&ended, sent) {
        sent.extend_from_slice(DONE);
        bill.keep_response(true, sent);
    }
    let settled = match produced {
        Some((prompt, completion)) => bill.settle(prompt, completion).await,
        None => {
            // Nothing produced, nothing charged; the event still says how the request ended.
            let status = ended.as_ref().err().map_or(200, |e| e.status().as_u16());
            bill.abandon(status).await;
            Ok(())
        }
    };
    let last = match (ended, settled) {
        (Ok(()), Ok(())) => Bytes::from_static(DONE),
        (Err(error), _) | (Ok(()), Err(error)) => {
            tracing::warn!(%error, %request_id, "stream ended early");
            event(&error.body())
        }
    };
    send(&mut client, last, stall).await;
}

/// Sends an event to the client, forgetting the client once it has gone or has taken nothing for `stall`.
async fn send(client: &mut Option<mpsc::Sender<Bytes>>, bytes: Bytes, stall: Duration) {
    if let Some(events) = client
        && !matches!(
            tokio::time::timeout(stall, events.send(bytes)).await,
            Ok(Ok(()))
        )
    {
        *client = None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_openai::Usage;

    fn chunk(choices: bool, usage: bool) -> ChatCompletionChunk {
        serde_json::from_value(serde_json::json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "upstream-name",
            "choices": if choices { serde_json::json!([{"index":0,"delta":{"content":"hi"},"finish_reason":null}]) } else { serde_json::json!([]) },
            "usage": if usage { serde_json::to_value(Usage::new(3, 4)).unwrap() } else { serde_json::Value::Null },
        }))
        .unwrap()
    }

    #[test]
    fn usage_is_stripped_unless_asked_and_model_is_public() {
        assert!(
            for_client(chunk(false, true), "fast", false).is_none(),
            "usage-only chunk dropped"
        );
        let kept = for_client(chunk(true, true), "fast", false).unwrap();
        assert_eq!((kept.model.as_str(), kept.usage.is_none()), ("fast", true));
        assert!(
            for_client(chunk(false, true), "fast", true)
                .unwrap()
                .usage
                .is_some()
        );
        assert!(
            for_client(chunk(true, true), "fast", true)
                .unwrap()
                .usage
                .is_some()
        );
        assert!(has_content(&chunk(true, false)) && !has_content(&chunk(false, true)));
    }
}
