#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`openai`]: the OpenAI-compatible HTTP provider.
//! - [`echo`]: the built-in echo model.
//! - [`tokens`]: the word-count token estimate the echo model reports.

pub mod echo;
pub mod openai;
pub mod tokens;

pub use echo::EchoProvider;
pub use openai::{OpenAiProvider, OpenAiProviderError};
