//! 413 before reading a byte of a body whose `Content-Length` is over `max_body_bytes`. Chunked bodies are cut off
//! while being read (axum's `DefaultBodyLimit`, mapped to the same 413 by the JSON extractor).

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;

/// Refuses `request` (413) when its `Content-Length` is over `max_body_bytes`.
pub fn check(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let limit = state.config.max_body_bytes;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(())
}
