//! `GET /v1/organization/credits`: the balance and a page of the ledger, newest first (`after`, `limit`).

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ListParams;
use crate::middleware::auth::AdminKey;
use crate::objects::CreditsObject;
use crate::service::credits;
use axum::Json;
use axum::extract::State;

/// The tenant's credits.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    ListParams(page): ListParams,
) -> Result<Json<CreditsObject>, ApiError> {
    Ok(Json(
        credits::credits(&state, admin.tenant_id(), &page).await?,
    ))
}
