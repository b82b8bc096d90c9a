//! The model provider port: something that answers OpenAI-shaped chat requests.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tollgate_openai::{ChatCompletionChunk, ChatCompletionRequest};

/// Chunks of a streamed completion, in order, as they arrive.
pub type ChunkStream = BoxStream<'static, Result<ChatCompletionChunk, ProviderError>>;

/// Why a provider could not answer. The detail is for logs; callers only ever see our own message.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer (or no next chunk) within the provider's timeout.
    #[error("upstream timed out")]
    Timeout,
    /// Refused, unreachable, or answered something that is not a completion.
    #[error("upstream failed: {0}")]
    Failed(String),
}

/// A chat request on its way to a provider, in both forms: parsed, for a provider that answers from its fields,
/// and as the JSON an OpenAI-compatible upstream is sent (the client's body with the upstream model name, see
/// `tollgate_openai::raw`), so a proxying provider sends bytes without serialising anything.
#[derive(Debug, Clone)]
pub struct ChatCall {
    /// The request; its `model` is the upstream model name.
    pub request: ChatCompletionRequest,
    /// The same request as JSON.
    pub body: Bytes,
}

/// A model server.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// One completion, whole: the JSON of an OpenAI chat completion, as the provider wrote it.
    async fn chat(&self, call: ChatCall) -> Result<Bytes, ProviderError>;

    /// A streamed completion; the stream ends after the last chunk (the `[DONE]` marker is not a chunk).
    async fn chat_stream(&self, call: ChatCall) -> Result<ChunkStream, ProviderError>;
}
