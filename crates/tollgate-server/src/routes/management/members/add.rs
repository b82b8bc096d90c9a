//! `POST /v1/organization/members` `{"email","role","password"?}`: 201 with the member (owners only).

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::MemberObject;
use crate::service::Caller;
use crate::service::members::{self, AddMember};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// Adds a member.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    AppJson(input): AppJson<AddMember>,
) -> Result<(StatusCode, Json<MemberObject>), ApiError> {
    admin.require_owner()?;
    let member = members::add(
        &state,
        &Caller::member(&admin, origin),
        admin.tenant_id(),
        input,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(MemberObject::from(&member))))
}
