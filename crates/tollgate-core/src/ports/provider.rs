//! The model provider port: something that answers OpenAI-shaped chat requests.

use async_trait::async_trait;
use futures::stream::BoxStream;
use tollgate_openai::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};

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

/// A model server. The request's `model` is already the upstream model name.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// One completion, whole.
    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError>;

    /// A streamed completion; the stream ends after the last chunk (the `[DONE]` marker is not a chunk).
    async fn chat_stream(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<ChunkStream, ProviderError>;
}
