//! `GET /operator/v1/tenants/{id}`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::Operator;
use crate::objects::TenantObject;
use axum::Json;
use axum::extract::{Path, State};

/// One tenant.
pub async fn handler(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<TenantObject>, ApiError> {
    let tenant = state
        .store
        .get_tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization", &id))?;
    Ok(Json(TenantObject::from(&tenant)))
}
