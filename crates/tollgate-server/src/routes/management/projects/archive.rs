//! `POST /v1/organization/projects/{project_id}/archive`: the project's keys stop working at once.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::ProjectObject;
use crate::service::{Caller, projects};
use axum::Json;
use axum::extract::{Path, State};

/// Archives a project.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path(project_id): Path<String>,
    // No body is expected; reading it is what claims an `Idempotency-Key`, as for the routes that take one.
    _body: RawBody,
) -> Result<Json<ProjectObject>, ApiError> {
    admin.require_write()?;
    let project = projects::archive(
        &state,
        &Caller::member(&admin, origin),
        admin.tenant_id(),
        &project_id,
    )
    .await?;
    Ok(Json(ProjectObject::from(&project)))
}
