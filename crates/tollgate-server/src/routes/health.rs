//! `/healthz` (the process is alive) and `/readyz` (the store answers, and what the rate limiter's state means).

use crate::app::AppState;
use crate::error::ApiError;
use crate::rate_limit::FailPolicy;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready to serve: the store answers a round trip, and the rate limiter answers a ping (`"rate_limiter": "ok"`).
/// A limiter that cannot answer (Redis unreachable) reads `"unavailable"`: still ready with `rate_limit_fail =
/// "open"`, since requests are served without limits, but 503 with `"closed"`, where inference requests get 503
/// too, so a load balancer sends them to a node that can serve them.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.store.ping().await?;
    let limiter_up = state.limiter.ping().await.is_ok();
    if limiter_up || state.config.rate_limit_fail == FailPolicy::Open {
        let limiter = if limiter_up { "ok" } else { "unavailable" };
        return Ok(Json(json!({"status": "ready", "rate_limiter": limiter})).into_response());
    }
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "unavailable", "rate_limiter": "unavailable"})),
    )
        .into_response();
    // The limiter tries Redis again within a second.
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Ok(response)
}
