//! `POST /v1/organization/admin_api_keys` `{"name","member_id"?}`: 201 with the key and its value, shown once.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use crate::objects::KeyObject;
use crate::service::Caller;
use crate::service::admin_keys::{self, CreateAdminKey};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// Creates an admin key.
pub async fn handler(
    State(state): State<AppState>,
    admin: AdminKey,
    origin: RequestOrigin,
    AppJson(input): AppJson<CreateAdminKey>,
) -> Result<(StatusCode, Json<KeyObject>), ApiError> {
    let (key, secret) =
        admin_keys::create(&state, &admin, &Caller::member(&admin, origin), input).await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyObject::with_secret(&key, &secret, state.clock.now())),
    ))
}
