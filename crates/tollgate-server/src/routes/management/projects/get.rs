//! `GET /v1/organization/projects/{project_id}`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::objects::ProjectObject;
use crate::service::projects;
use axum::Json;
use axum::extract::{Path, State};

/// One project.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    Path(project_id): Path<String>,
) -> Result<Json<ProjectObject>, ApiError> {
    let project = projects::get(&state, admin.tenant_id(), &project_id).await?;
    Ok(Json(ProjectObject::from(&project)))
}
