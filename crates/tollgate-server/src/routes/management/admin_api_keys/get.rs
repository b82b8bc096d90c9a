//! `GET /v1/organization/admin_api_keys/{key_id}`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::objects::KeyObject;
use crate::service::admin_keys;
use axum::Json;
use axum::extract::{Path, State};

/// One admin key, without its value.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    Path(key_id): Path<String>,
) -> Result<Json<KeyObject>, ApiError> {
    let key = admin_keys::get(&state, admin.tenant_id(), &key_id).await?;
    Ok(Json(KeyObject::new(&key, state.clock.now())))
}
