//! `POST /v1/organization/projects/{project_id}/api_keys/{key_id}/roll` `{"grace_period_seconds"?}`: 201 with the
//! successor and its value, shown this once; the old key expires when the grace period ends.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::KeyObject;
use crate::service::Caller;
use crate::service::keys::{RollProjectKey, project_key, roll};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// Rolls a project key.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path((project_id, key_id)): Path<(String, String)>,
    AppJson(input): AppJson<RollProjectKey>,
) -> Result<(StatusCode, Json<KeyObject>), ApiError> {
    admin.require_write()?;
    let key = project_key(&state, admin.tenant_id(), &project_id, &key_id).await?;
    let (successor, secret) = roll(&state, &Caller::member(&admin, origin), &key, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyObject::with_secret(
            &successor,
            &secret,
            state.clock.now(),
        )),
    ))
}
