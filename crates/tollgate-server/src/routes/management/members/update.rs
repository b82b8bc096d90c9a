//! `POST /v1/organization/members/{member_id}` `{"role"?, "password"?}`: owners only; the last owner cannot be
//! demoted (409).

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::MemberObject;
use crate::service::Caller;
use crate::service::members::{self, UpdateMember};
use axum::Json;
use axum::extract::{Path, State};

/// Changes a member's role or dashboard password.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path(member_id): Path<String>,
    AppJson(input): AppJson<UpdateMember>,
) -> Result<Json<MemberObject>, ApiError> {
    admin.require_owner()?;
    let member = members::update(
        &state,
        &Caller::member(&admin, origin),
        admin.tenant_id(),
        &member_id,
        input,
    )
    .await?;
    Ok(Json(MemberObject::from(&member)))
}
