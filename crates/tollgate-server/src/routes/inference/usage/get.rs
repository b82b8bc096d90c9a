//! `GET /v1/usage?since&until&group_by`: the calling key's project's usage, shaped as the organization's.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;
use crate::objects::UsagePageObject;
use crate::service::usage::{self, UsageParams};
use axum::Json;
use axum::extract::{Query, State};
use tollgate_core::tenant::KeyOwner;

/// The project's usage.
pub async fn handler(
    State(state): State<AppState>,
    key: ProjectKey,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsagePageObject>, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::bad_request("Invalid query string", None))?;
    let project = match &key.0.key.owner {
        KeyOwner::Project(p) => p.as_str(),
        KeyOwner::Member(_) => {
            return Err(ApiError::Internal("a project key without a project".into()));
        }
    };
    let report = usage::report(&state, &key.0.key.tenant_id, Some(project), &params).await?;
    Ok(Json(report))
}
