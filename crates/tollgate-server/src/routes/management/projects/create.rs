//! `POST /v1/organization/projects` `{"name"}`: 201 with the new project.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::ProjectObject;
use crate::service::Caller;
use crate::service::projects::{self, ProjectInput};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// Creates a project.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    AppJson(input): AppJson<ProjectInput>,
) -> Result<(StatusCode, Json<ProjectObject>), ApiError> {
    admin.require_write()?;
    let project = projects::create(
        &state,
        &Caller::member(&admin, origin),
        admin.tenant_id(),
        input,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(ProjectObject::from(&project))))
}
