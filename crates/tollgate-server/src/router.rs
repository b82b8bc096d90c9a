//! Every route, and the layers every request passes: request id (outermost, so every response carries one, errors
//! included), the declared-size check, and axum's body limit for chunked bodies.

use crate::app::AppState;
use crate::middleware::{body_limit, request_id};
use crate::routes::{health, inference, management, method_not_allowed, not_found, operator};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

/// The application's router.
pub fn router(state: AppState) -> Router {
    use management::api_keys;
    use operator::tenants;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/models", get(inference::models::list::handler))
        // Model ids may contain '/' (e.g. "meta-llama/Llama-3.1-8B").
        .route("/v1/models/{*id}", get(inference::models::get::handler))
        .route(
            "/v1/chat/completions",
            post(inference::chat::completions::handler),
        )
        .route(
            "/v1/organization",
            get(management::organization::get::handler),
        )
        .route(
            "/v1/organization/projects/{project_id}/api_keys",
            get(api_keys::list::handler).post(api_keys::create::handler),
        )
        .route(
            "/v1/organization/projects/{project_id}/api_keys/{key_id}",
            get(api_keys::get::handler).delete(api_keys::delete::handler),
        )
        .route(
            "/operator/v1/tenants",
            get(tenants::list::handler).post(tenants::create::handler),
        )
        .route("/operator/v1/tenants/{id}", get(tenants::get::handler))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(from_fn_with_state(
            state.clone(),
            body_limit::reject_oversize,
        ))
        .layer(from_fn(request_id::request_id))
        .with_state(state)
}
