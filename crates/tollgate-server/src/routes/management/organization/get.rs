//! `GET /v1/organization`: the caller's tenant.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::objects::TenantObject;
use axum::Json;
use axum::extract::State;

/// The caller's tenant.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
) -> Result<Json<TenantObject>, ApiError> {
    let tenant = state
        .store
        .get_tenant(admin.tenant_id())
        .await?
        .ok_or_else(|| ApiError::not_found("organization", admin.tenant_id()))?;
    Ok(Json(TenantObject::from(&tenant)))
}
