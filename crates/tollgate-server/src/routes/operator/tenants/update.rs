//! `POST /operator/v1/tenants/{id}` `{"plan"?, "status"?}`: change plan, suspend or reactivate.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::Operator;
use crate::middleware::origin::RequestOrigin;
use crate::objects::TenantObject;
use crate::service::Caller;
use crate::service::tenants::{self, UpdateTenant};
use axum::Json;
use axum::extract::{Path, State};

/// Updates a tenant.
pub async fn handler(
    State(state): State<AppState>,
    _operator: Operator,
    origin: RequestOrigin,
    Path(id): Path<String>,
    AppJson(input): AppJson<UpdateTenant>,
) -> Result<Json<TenantObject>, ApiError> {
    let tenant = tenants::update(&state, &Caller::operator(origin), &id, input).await?;
    Ok(Json(TenantObject::from(&tenant)))
}
