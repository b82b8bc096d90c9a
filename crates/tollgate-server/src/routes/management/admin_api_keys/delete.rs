//! `DELETE /v1/organization/admin_api_keys/{key_id}`: revokes at once; the key stays readable.

use super::OBJECT;
use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::Deleted;
use crate::service::{Caller, admin_keys};
use axum::Json;
use axum::extract::{Path, State};

/// Revokes an admin key.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    Path(key_id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let key = admin_keys::revoke(&state, &admin, &Caller::member(&admin, origin), &key_id).await?;
    Ok(Json(Deleted::new(OBJECT, &key.id)))
}
