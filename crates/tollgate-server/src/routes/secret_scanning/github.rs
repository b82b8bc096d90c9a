//! `POST /secret_scanning/v1/github`: GitHub's secret scanning partner program reports strings that look like our
//! keys; each one that is a key is revoked, and the answer labels every string (API.md, "Leaked keys").

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::middleware::origin::RequestOrigin;
use crate::service::Caller;
use crate::service::secret_scanning::{KEY_ID_HEADER, Label, SIGNATURE_HEADER, SignedBy, receive};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

/// Verifies, revokes, labels.
pub async fn handler(
    State(state): State<AppState>,
    origin: RequestOrigin,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Json<Vec<Label>>, ApiError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = SignedBy {
        key_id: header(KEY_ID_HEADER),
        signature: header(SIGNATURE_HEADER),
    };
    let labels = receive(&state, &Caller::secret_scanning(origin), signed, &body).await?;
    Ok(Json(labels))
}
