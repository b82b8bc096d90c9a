//! The built-in `echo` model: free, deterministic, needs no other process.

use crate::tokens::{prompt_words, words};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_core::ports::{ChatCall, ChunkStream, Provider, ProviderError};
use tollgate_openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    Usage,
};

/// Replies with the last user message, cut to the request's output cap (in words); usage counts words.
#[derive(Debug, Default)]
pub struct EchoProvider {
    counter: AtomicU64,
}

impl EchoProvider {
    /// A new echo model.
    pub fn new() -> Self {
        Self::default()
    }

    fn next_id(&self) -> String {
        format!(
            "chatcmpl-echo-{}",
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// The reply's words and finish reason: the last user message, at most the request's cap.
fn reply(request: &ChatCompletionRequest) -> (Vec<String>, &'static str) {
    let text = request.last_user_text().unwrap_or_default();
    let all: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let cap = request
        .max_completion_tokens
        .or(request.max_tokens)
        .and_then(|c| usize::try_from(c).ok());
    match cap {
        Some(cap) if all.len() > cap => (all.into_iter().take(cap).collect(), "length"),
        _ => (all, "stop"),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn chunk(id: &str, created: i64, model: &str, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: id.to_owned(),
        object: "chat.completion.chunk".to_owned(),
        created,
        model: model.to_owned(),
        choices,
        usage: None,
        extra: Default::default(),
    }
}

fn delta(content: Option<String>, role: bool, finish: Option<&str>) -> ChunkChoice {
    let mut delta = serde_json::Map::new();
    if role {
        delta.insert("role".to_owned(), "assistant".into());
    }
    if let Some(c) = content {
        delta.insert("content".to_owned(), c.into());
    }
    ChunkChoice {
        index: 0,
        delta,
        finish_reason: finish.map(str::to_owned),
        extra: Default::default(),
    }
}

impl EchoProvider {
    /// The whole completion for `request`.
    fn completion(&self, request: ChatCompletionRequest) -> ChatCompletion {
        let (words_out, finish) = reply(&request);
        let text = words_out.join(" ");
        let usage = Usage::new(prompt_words(&request), words(&text));
        ChatCompletion {
            id: self.next_id(),
            object: "chat.completion".to_owned(),
            created: now(),
            model: request.model,
            choices: vec![Choice {
                index: 0,
                message: ChatMessage::assistant(text),
                finish_reason: Some(finish.to_owned()),
                extra: Default::default(),
            }],
            usage: Some(usage),
            extra: Default::default(),
        }
    }
}

#[async_trait]
impl Provider for EchoProvider {
    async fn chat(&self, call: ChatCall) -> Result<Bytes, ProviderError> {
        serde_json::to_vec(&self.completion(call.request))
            .map(Bytes::from)
            .map_err(|e| ProviderError::Failed(format!("echo could not write its completion: {e}")))
    }

    async fn chat_stream(&self, call: ChatCall) -> Result<ChunkStream, ProviderError> {
        let request = call.request;
        let (words_out, finish) = reply(&request);
        let id = self.next_id();
        let created = now();
        let model = request.model.as_str();
        let mut chunks = Vec::with_capacity(words_out.len() + 3);
        chunks.push(chunk(
            &id,
            created,
            model,
            vec![delta(Some(String::new()), true, None)],
        ));
        for (i, w) in words_out.iter().enumerate() {
            let piece = if i == 0 { w.clone() } else { format!(" {w}") };
            chunks.push(chunk(
                &id,
                created,
                model,
                vec![delta(Some(piece), false, None)],
            ));
        }
        chunks.push(chunk(
            &id,
            created,
            model,
            vec![delta(None, false, Some(finish))],
        ));
        if request.wants_stream_usage() {
            let mut last = chunk(&id, created, model, Vec::new());
            last.usage = Some(Usage::new(prompt_words(&request), words_out.len() as u64));
            chunks.push(last);
        }
        Ok(Box::pin(stream::iter(chunks.into_iter().map(Ok))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn request(text: &str, cap: Option<u64>, usage: bool) -> ChatCall {
        let body = serde_json::json!({
            "model": "echo",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
            "max_tokens": cap,
            "stream_options": {"include_usage": usage},
        });
        ChatCall {
            request: serde_json::from_value(body.clone()).unwrap(),
            body: serde_json::to_vec(&body).unwrap().into(),
        }
    }

    async fn chat(call: ChatCall) -> ChatCompletion {
        let bytes = EchoProvider::new().chat(call).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn echoes_the_last_user_message_with_word_usage() {
        let out = chat(request("hello there world", None, false)).await;
        assert_eq!(
            out.choices[0].message.content.as_ref().unwrap().text(),
            "hello there world"
        );
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(out.usage, Some(Usage::new(5, 3)));
    }

    #[tokio::test]
    async fn caps_output_at_max_tokens() {
        let out = chat(request("a b c d", Some(2), false)).await;
        assert_eq!(
            out.choices[0].message.content.as_ref().unwrap().text(),
            "a b"
        );
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("length"));
    }

    #[tokio::test]
    async fn streams_word_by_word_with_optional_usage() {
        let p = EchoProvider::new();
        let chunks: Vec<_> = p
            .chat_stream(request("one two", None, true))
            .await
            .unwrap()
            .collect()
            .await;
        let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
        // role, "one", " two", finish, usage
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[2].choices[0].delta["content"], " two");
        assert_eq!(chunks[3].choices[0].finish_reason.as_deref(), Some("stop"));
        assert!(chunks[4].choices.is_empty());
        assert_eq!(chunks[4].usage, Some(Usage::new(4, 2)));
        let no_usage: Vec<_> = p
            .chat_stream(request("one two", None, false))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(no_usage.len(), 4);
    }
}
