//! `GET /v1/organization/admin_api_keys`: every admin key of the tenant, oldest first, revoked ones included.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ListParams;
use crate::middleware::auth::AdminKey;
use crate::objects::{KeyObject, ListObject};
use axum::Json;
use axum::extract::State;
use tollgate_core::ports::KeyScope;

/// Lists admin keys.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    ListParams(page): ListParams,
) -> Result<Json<ListObject<KeyObject>>, ApiError> {
    let keys = state
        .store
        .list_keys(admin.tenant_id(), &KeyScope::AdminKeys, &page)
        .await?;
    let now = state.clock.now();
    Ok(Json(ListObject::from_page(
        &keys,
        |k| &k.id,
        |k| KeyObject::new(k, now),
    )))
}
