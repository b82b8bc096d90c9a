//! `GET /v1/models/{id}`.

use super::render;
use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;
use axum::Json;
use axum::extract::{Path, State};
use tollgate_openai::Model;

/// One model; 404 `model_not_found` for an unknown one or one this key may not use.
pub async fn handler(
    State(state): State<AppState>,
    key: ProjectKey,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    state
        .catalog
        .get(&id)
        .filter(|m| key.may_use(&m.id))
        .map(|m| Json(render(m)))
        .ok_or_else(|| ApiError::model_not_found(&id))
}
