//! Chat completions: the request, the response and the stream chunk.
//!
//! Only the fields Tollgate reads or rewrites are typed; everything else is kept verbatim in `extra`, so tools,
//! `response_format`, `logprobs` and whatever OpenAI adds next pass through unchanged in both directions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// Public model id (rewritten to the upstream model before forwarding).
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Server-sent events instead of one JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options; `include_usage` asks for a final usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Legacy output cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Output cap (preferred over `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// How many choices to generate (default 1); each is held for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// Every other field, passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client itself asked for the final usage chunk.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The text of the last message whose role is `user`, if any.
    pub fn last_user_text(&self) -> Option<String> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .and_then(|m| m.content.as_ref())
            .map(MessageContent::text)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StreamOptions {
    /// Ask for a final chunk carrying `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, `developer`…
    pub role: String,
    /// Text, or a list of content parts; null for some assistant tool calls.
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// `name`, `tool_calls`, `refusal`…, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// An assistant message with plain text.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self {
            role: "assistant".to_owned(),
            content: Some(MessageContent::Text(text.into())),
            extra: Map::new(),
        }
    }

    /// A user message with plain text.
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: "user".to_owned(),
            content: Some(MessageContent::Text(text.into())),
            extra: Map::new(),
        }
    }
}

/// Message content: a string or an array of parts (`{"type":"text","text":…}`, images…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts, kept as JSON.
    Parts(Vec<Value>),
}

impl MessageContent {
    /// The text of this content: the string itself, or the `text` parts joined by spaces.
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// Token counts reported by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// Details (`prompt_tokens_details`…), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    /// Usage with `total_tokens` computed.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            extra: Map::new(),
        }
    }
}

/// A non-streamed chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model that answered (rewritten to the public id before the client sees it).
    pub model: String,
    /// The answers.
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `system_fingerprint`, `service_tier`…, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One answer of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The assistant's message.
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls`…
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// `logprobs`…, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One server-sent event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Same id on every chunk of one completion.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model (rewritten to the public id).
    pub model: String,
    /// Deltas; empty on the final usage-only chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Present on the final chunk when usage was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One delta of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice this delta extends.
    pub index: u32,
    /// The new part: `{"role"?, "content"?, "tool_calls"?}`, kept as JSON.
    #[serde(default)]
    pub delta: Map<String, Value>,
    /// Set on the last delta of a choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// `logprobs`…, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_request_fields_pass_through() {
        let raw = r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"bob"}],"temperature":0.5,"tools":[]}"#;
        let req: ChatCompletionRequest = serde_json::from_str(raw).unwrap();
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["temperature"], 0.5);
        assert_eq!(back["tools"], serde_json::json!([]));
        assert_eq!(back["messages"][0]["name"], "bob");
        assert!(back.get("stream").is_none());
    }

    #[test]
    fn last_user_text_reads_parts() {
        let raw = r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}]}"#;
        let req: ChatCompletionRequest = serde_json::from_str(raw).unwrap();
        assert_eq!(req.last_user_text().as_deref(), Some("x y"));
    }
}
