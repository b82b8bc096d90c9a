//! `GET /v1/organization/projects/{project_id}/api_keys`: oldest first, revoked and expired keys included.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ListParams;
use crate::middleware::auth::AdminKey;
use crate::objects::{KeyObject, ListObject};
use crate::service::projects;
use axum::Json;
use axum::extract::{Path, State};
use tollgate_core::ports::KeyScope;

/// Lists a project's keys.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    Path(project_id): Path<String>,
    ListParams(page): ListParams,
) -> Result<Json<ListObject<KeyObject>>, ApiError> {
    let project = projects::get(&state, admin.tenant_id(), &project_id).await?;
    let keys = state
        .store
        .list_keys(admin.tenant_id(), &KeyScope::Project(project.id), &page)
        .await?;
    let now = state.clock.now();
    Ok(Json(ListObject::from_page(
        &keys,
        |k| &k.id,
        |k| KeyObject::new(k, now),
    )))
}
