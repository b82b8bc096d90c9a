//! `GET /v1/organization/audit_logs`: a page of the tenant's events, newest first (filters `event_type`,
//! `actor_id`, `key_id`, `since`, `until`; `after`, `limit`), or with `format=jsonl|csv` every match, streamed.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::service::audit::{self, AuditParams, Format};
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The tenant's audit log.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::bad_request("Invalid query string", None))?;
    let (query, format) = params.query(admin.tenant_id())?;
    let content_type = match format {
        Format::List => return Ok(Json(audit::list(&state, &query).await?).into_response()),
        Format::Jsonl => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let body = Body::from_stream(audit::export(Arc::clone(&state.0), query, format));
    Ok(([(CONTENT_TYPE, content_type)], body).into_response())
}
