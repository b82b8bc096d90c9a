//! `POST /operator/v1/tenants/{id}/credits` `{"amount_cents","reason"?}`: grants credits; 200 with the tenant's
//! credits object.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::Operator;
use crate::middleware::origin::RequestOrigin;
use crate::objects::CreditsObject;
use crate::service::Caller;
use crate::service::credits::{self, Grant};
use axum::Json;
use axum::extract::{Path, State};

/// Grants credits.
pub async fn handler(
    State(state): State<AppState>,
    _operator: Operator,
    origin: RequestOrigin,
    Path(id): Path<String>,
    AppJson(input): AppJson<Grant>,
) -> Result<Json<CreditsObject>, ApiError> {
    Ok(Json(
        credits::grant(&state, &Caller::operator(origin), &id, input).await?,
    ))
}
