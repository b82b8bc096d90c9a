//! `POST /v1/organization/projects/{project_id}` `{"name"}`: renames.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::ProjectObject;
use crate::service::Caller;
use crate::service::projects::{self, ProjectInput};
use axum::Json;
use axum::extract::{Path, State};

/// Renames a project.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path(project_id): Path<String>,
    AppJson(input): AppJson<ProjectInput>,
) -> Result<Json<ProjectObject>, ApiError> {
    admin.require_write()?;
    let project = projects::rename(
        &state,
        &Caller::member(&admin, origin),
        admin.tenant_id(),
        &project_id,
        input,
    )
    .await?;
    Ok(Json(ProjectObject::from(&project)))
}
