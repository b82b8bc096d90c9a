//! 413 before reading a byte of a body whose `Content-Length` is over `max_body_bytes`. Chunked bodies are cut off
//! while being read (axum's `DefaultBodyLimit`, mapped to the same 413 by the JSON extractor).

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Middleware: refuse declared oversize bodies up front.
pub async fn reject_oversize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.config.max_body_bytes;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    next.run(request).await
}
