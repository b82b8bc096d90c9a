//! `GET /v1/organization/usage?since&until&group_by`: the whole tenant's usage.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::objects::UsagePageObject;
use crate::service::usage::{self, UsageParams};
use axum::Json;
use axum::extract::{Query, State};

/// The tenant's usage.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsagePageObject>, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::bad_request("Invalid query string", None))?;
    Ok(Json(
        usage::report(&state, admin.tenant_id(), None, &params).await?,
    ))
}
