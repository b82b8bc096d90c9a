//! `GET /v1/organization/projects/{project_id}/api_keys/{key_id}`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::objects::KeyObject;
use crate::service::keys::project_key;
use axum::Json;
use axum::extract::{Path, State};

/// One key of a project, without its value.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    Path((project_id, key_id)): Path<(String, String)>,
) -> Result<Json<KeyObject>, ApiError> {
    let key = project_key(&state, admin.tenant_id(), &project_id, &key_id).await?;
    Ok(Json(KeyObject::new(&key, state.clock.now())))
}
