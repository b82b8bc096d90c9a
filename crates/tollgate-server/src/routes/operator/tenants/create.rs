//! `POST /operator/v1/tenants` → 201 `{"tenant","project","owner","admin_key"}`, the admin key's value shown once.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::Operator;
use crate::middleware::origin::RequestOrigin;
use crate::objects::CreatedTenant;
use crate::service::Caller;
use crate::service::tenants::{CreateTenant, create};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// Creates a tenant.
pub async fn handler(
    State(state): State<AppState>,
    _operator: Operator,
    origin: RequestOrigin,
    AppJson(input): AppJson<CreateTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    let (new, secret) = create(&state, &Caller::operator(origin), input).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant::new(&new, &secret, state.clock.now())),
    ))
}
