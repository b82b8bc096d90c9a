//! `POST /v1/organization/projects/{project_id}/api_keys`: 201 with the key and its value, shown this once.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::KeyObject;
use crate::service::Caller;
use crate::service::keys::{CreateProjectKey, create_project_key};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// Creates a project key.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path(project_id): Path<String>,
    AppJson(input): AppJson<CreateProjectKey>,
) -> Result<(StatusCode, Json<KeyObject>), ApiError> {
    admin.require_write()?;
    let (key, secret) = create_project_key(
        &state,
        &Caller::member(&admin, origin),
        admin.tenant_id(),
        &admin.tenant_plan,
        &project_id,
        input,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyObject::with_secret(&key, &secret, state.clock.now())),
    ))
}
