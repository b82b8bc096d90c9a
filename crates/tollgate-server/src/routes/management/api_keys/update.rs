//! `POST /v1/organization/projects/{project_id}/api_keys/{key_id}`: changes any of a key's fields (never its
//! secret); 200 with the key.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::KeyObject;
use crate::service::Caller;
use crate::service::keys::{UpdateProjectKey, project_key, update_project_key};
use axum::Json;
use axum::extract::{Path, State};

/// Updates a project key.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path((project_id, key_id)): Path<(String, String)>,
    AppJson(input): AppJson<UpdateProjectKey>,
) -> Result<Json<KeyObject>, ApiError> {
    admin.require_write()?;
    let key = project_key(&state, admin.tenant_id(), &project_id, &key_id).await?;
    let key = update_project_key(
        &state,
        &Caller::member(&admin, origin),
        &admin.tenant_plan,
        &key,
        input,
    )
    .await?;
    Ok(Json(KeyObject::new(&key, state.clock.now())))
}
