//! `GET /v1/organization/projects`: oldest first, archived projects included.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ListParams;
use crate::middleware::auth::AdminKey;
use crate::objects::{ListObject, ProjectObject};
use axum::Json;
use axum::extract::State;

/// Lists the tenant's projects.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    ListParams(page): ListParams,
) -> Result<Json<ListObject<ProjectObject>>, ApiError> {
    let projects = state.store.list_projects(admin.tenant_id(), &page).await?;
    Ok(Json(ListObject::from_page(
        &projects,
        |p| &p.id,
        |p| ProjectObject::from(p),
    )))
}
