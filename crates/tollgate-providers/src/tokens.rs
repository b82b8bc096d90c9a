//! A deterministic token count for text we produce ourselves: one token per whitespace-separated word.
//!
//! Real upstreams report their own usage; this is only for the echo model, whose answers are ours.

use tollgate_openai::ChatCompletionRequest;

/// Words in `text`.
pub fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Words across every message's text.
pub fn prompt_words(request: &ChatCompletionRequest) -> u64 {
    request
        .messages
        .iter()
        .filter_map(|m| m.content.as_ref())
        .map(|c| words(&c.text()))
        .sum()
}
