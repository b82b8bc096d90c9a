//! `GET /v1/models`: every catalog model this key may use.

use super::render;
use crate::app::AppState;
use crate::middleware::auth::ProjectKey;
use axum::Json;
use axum::extract::State;
use tollgate_openai::ModelList;

/// Lists the models.
pub async fn handler(State(state): State<AppState>, key: ProjectKey) -> Json<ModelList> {
    let data = state
        .catalog
        .iter()
        .filter(|m| key.may_use(&m.id))
        .map(|m| render(m))
        .collect();
    Json(ModelList::new(data))
}
