//! `/v1/models` and `/v1/chat/completions`.

mod audit;
mod chat;
mod holds;
mod models;
mod rate_limits;
mod recording;
mod spend_caps;

/// The SSE `data:` payloads of a stream body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}
