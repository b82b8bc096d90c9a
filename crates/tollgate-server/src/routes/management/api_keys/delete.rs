//! `DELETE /v1/organization/projects/{project_id}/api_keys/{key_id}`: revokes at once. The key stays readable.

use super::OBJECT;
use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::objects::Deleted;
use crate::service::keys::{project_key, revoke};
use axum::Json;
use axum::extract::{Path, State};

/// Revokes a project key.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    Path((project_id, key_id)): Path<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    admin.require_write()?;
    let key = project_key(&state, admin.tenant_id(), &project_id, &key_id).await?;
    revoke(&state, admin.tenant_id(), &key.id).await?;
    Ok(Json(Deleted::new(OBJECT, &key.id)))
}
