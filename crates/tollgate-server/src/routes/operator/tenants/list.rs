//! `GET /operator/v1/tenants`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ListParams;
use crate::middleware::auth::Operator;
use crate::objects::{ListObject, TenantObject};
use axum::Json;
use axum::extract::State;

/// Lists tenants, oldest first.
pub async fn handler(
    State(state): State<AppState>,
    _operator: Operator,
    ListParams(page): ListParams,
) -> Result<Json<ListObject<TenantObject>>, ApiError> {
    let tenants = state.store.list_tenants(&page).await?;
    Ok(Json(ListObject::from_page(
        &tenants,
        |t| &t.id,
        |t| TenantObject::from(t),
    )))
}
