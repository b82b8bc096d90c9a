//! `GET /v1/organization/members/{member_id}`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::objects::MemberObject;
use crate::service::members;
use axum::Json;
use axum::extract::{Path, State};

/// One member.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    Path(member_id): Path<String>,
) -> Result<Json<MemberObject>, ApiError> {
    let member = members::get(&state, admin.tenant_id(), &member_id).await?;
    Ok(Json(MemberObject::from(&member)))
}
