//! `GET /v1/organization/members`: current members, oldest first.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ListParams;
use crate::middleware::auth::AdminKey;
use crate::objects::{ListObject, MemberObject};
use axum::Json;
use axum::extract::State;

/// Lists the tenant's members.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    ListParams(page): ListParams,
) -> Result<Json<ListObject<MemberObject>>, ApiError> {
    let members = state.store.list_members(admin.tenant_id(), &page).await?;
    Ok(Json(ListObject::from_page(
        &members,
        |m| &m.id,
        |m| MemberObject::from(m),
    )))
}
