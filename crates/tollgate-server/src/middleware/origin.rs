//! [`RequestOrigin`]: where a request came from, as the audit log records it (request id, source address, user
//! agent), read from what the request id and client address middlewares put in the request's extensions.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::client_ip::SourceIp;
use crate::middleware::request_id::RequestId;
use axum::extract::FromRequestParts;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use tollgate_core::audit::Origin;

/// The request's [`Origin`]. Never fails: what is missing is recorded as unknown (`None`).
#[derive(Debug, Clone, Default)]
pub struct RequestOrigin(pub Origin);

impl RequestOrigin {
    /// The origin of a request with these parts.
    pub fn of(parts: &Parts) -> Self {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .and_then(|id| id.0.to_str().ok())
            .map(str::to_owned);
        let source_ip = match parts.extensions.get::<SourceIp>() {
            Some(SourceIp::Known(ip)) => Some(ip.to_string()),
            Some(SourceIp::Unknown) | None => None,
        };
        // A user agent that is not visible ASCII is kept as far as it is readable text, never as raw bytes.
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut origin = Origin::new(request_id, source_ip, user_agent.as_deref());
        // A request with Idempotency-Key: the claim it makes later rides on the events its change writes.
        if let Some(slot) = parts.extensions.get::<crate::idempotency::Slot>() {
            origin.claim = slot.mark();
        }
        Self(origin)
    }
}

impl FromRequestParts<AppState> for RequestOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Self::of(parts))
    }
}
