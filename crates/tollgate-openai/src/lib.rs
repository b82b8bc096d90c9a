#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`chat`]: chat completion requests, responses and stream chunks.
//! - [`models`]: `GET /v1/models` objects.
//! - [`raw`]: chat JSON forwarded as bytes, with only the members Tollgate owns rewritten.
//! - [`error`]: the `{"error":{…}}` envelope every error response carries.

pub mod chat;
pub mod error;
pub mod models;
pub mod raw;

pub use chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    MessageContent, StreamOptions, Usage,
};
pub use error::{ErrorBody, ErrorObject};
pub use models::{Model, ModelList};
