//! `DELETE /v1/organization/members/{member_id}`: owners only; revokes the member's admin keys at once; the last
//! owner cannot be removed (409).

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::Deleted;
use crate::service::{Caller, members};
use axum::Json;
use axum::extract::{Path, State};

/// Removes a member.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path(member_id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    admin.require_owner()?;
    let member = members::remove(
        &state,
        &Caller::member(&admin, origin),
        admin.tenant_id(),
        &member_id,
    )
    .await?;
    Ok(Json(Deleted::new("organization.member", &member.id)))
}
