//! `DELETE /v1/organization/projects/{project_id}/api_keys/{key_id}`: revokes at once. The key stays readable.

use super::OBJECT;
use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::Deleted;
use crate::service::Caller;
use crate::service::keys::{project_key, revoke};
use axum::Json;
use axum::extract::{Path, State};

/// Revokes a project key.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path((project_id, key_id)): Path<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    admin.require_write()?;
    let key = project_key(&state, admin.tenant_id(), &project_id, &key_id).await?;
    revoke(&state, &Caller::member(&admin, origin), &key).await?;
    Ok(Json(Deleted::new(OBJECT, &key.id)))
}
