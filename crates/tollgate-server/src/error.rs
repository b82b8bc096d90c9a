//! `ApiError`: the one place where failures become HTTP responses, always in OpenAI's error shape
//! (`{"error":{"message","type","param","code"}}`). Server-side detail (storage, upstream) is never sent: the client
//! gets our own sentence, and the detail travels in the response's extensions ([`ErrorDetail`]) to the access-log
//! layer, which logs it with the request id.

use crate::pipeline::rate_limit::Quota;
use crate::service::secret_scanning::ReportError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use std::sync::Arc;
use tollgate_core::money::Micros;
use tollgate_core::ports::{ProviderError, StoreError};
use tollgate_openai::{ErrorBody, ErrorObject};

/// Why an authentication failed; each has the message API.md fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential at all.
    Missing,
    /// Not a key of ours (shape, prefix or checksum), or `Authorization` without `Bearer`.
    Malformed,
    /// Well-formed but unknown.
    Invalid,
    /// Revoked.
    Revoked,
    /// Past `expires_at`.
    Expired,
    /// The key's project is archived.
    ProjectArchived,
    /// A project key on a management route.
    NeedsAdminKey,
    /// An admin key on an inference route.
    NeedsProjectKey,
    /// Anything but the operator token on an operator route.
    NeedsOperatorToken,
    /// A dashboard session cookie (and no key) that names no live session.
    SessionEnded,
}

impl AuthFailure {
    fn message(self) -> &'static str {
        match self {
            Self::Missing => "Missing API key",
            Self::Malformed => "Malformed API key",
            Self::Invalid => "Invalid API key",
            Self::Revoked => "API key revoked",
            Self::Expired => "API key expired",
            Self::ProjectArchived => "API key belongs to an archived project",
            Self::NeedsAdminKey => "This route needs an admin API key",
            Self::NeedsProjectKey => "This route needs a project API key",
            Self::NeedsOperatorToken => "This route needs the operator token",
            Self::SessionEnded => "Dashboard session ended: sign in again",
        }
    }
}

/// Every error a route can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request_error`.
    #[error("{message}")]
    BadRequest {
        /// For people.
        message: String,
        /// The request field at fault.
        param: Option<String>,
    },
    /// 401 `authentication_error`.
    #[error("{}", .0.message())]
    Unauthorized(AuthFailure),
    /// 403 `permission_error`.
    #[error("{message}")]
    Forbidden {
        /// For people.
        message: String,
        /// The request field at fault.
        param: Option<String>,
    },
    /// 404 `invalid_request_error`, optionally with a code (`model_not_found`).
    #[error("{message}")]
    NotFound {
        /// For people.
        message: String,
        /// e.g. `model_not_found`.
        code: Option<&'static str>,
        /// The request field at fault.
        param: Option<String>,
    },
    /// 402 `insufficient_balance`: the request's hold does not fit the available balance.
    #[error("Your API balance is insufficient")]
    InsufficientBalance {
        /// The balance less other requests' holds.
        available: Micros,
        /// The hold this request needed.
        cost: Micros,
    },
    /// 402 `insufficient_balance`: the request's hold would take its key past its spend cap.
    #[error("This API key's spend limit of {limit} cents {per} is reached")]
    SpendLimitReached {
        /// The key's cap.
        limit: Micros,
        /// `per month` or `in total`, for the message.
        per: &'static str,
        /// What the key spent in the cap's period.
        spent: Micros,
        /// The tenant's balance less other requests' holds, as this node has it leased.
        available: Micros,
        /// The hold this request needed.
        cost: Micros,
    },
    /// 405 `invalid_request_error`.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 429 `rate_limit_error`, `code: "rate_limit_exceeded"`: the request does not fit a per-minute limit (or its
    /// source address sent too many bad keys); `Retry-After` says when it would.
    #[error("{message}")]
    RateLimited {
        /// Names the limit: whose (the organization's, the key's, the address's) and of what.
        message: String,
        /// Until a request would be admitted.
        retry_after_ms: u64,
        /// The `x-ratelimit-*` headers of a key's request (none for an address's failed authentications).
        quota: Option<Box<Quota>>,
    },
    /// 409 `invalid_request_error` with a code.
    #[error("{message}")]
    Conflict {
        /// For people.
        message: String,
        /// e.g. `last_owner`.
        code: Option<&'static str>,
    },
    /// 409 `idempotency_error`, `code: "idempotency_key_in_use"`: the first request with this `Idempotency-Key` is
    /// still running.
    #[error(
        "Another request with this Idempotency-Key is still being processed; retry once it has finished"
    )]
    IdempotencyKeyInUse,
    /// 422 `idempotency_error`, `code: "idempotency_key_reused"`: the key was first used with another request.
    #[error(
        "This Idempotency-Key was already used with a different request (method, path or body); use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// Not a failure: the `Idempotency-Key` was answered before, and the stored answer is sent again with
    /// `Idempotent-Replayed: true`. A variant here so that any stage (or extractor) can stop the request with it as
    /// with a refusal.
    #[error("replayed")]
    Replayed(Box<crate::idempotency::Replay>),
    /// 408 `invalid_request_error`: the body stalled longer than `body_read_timeout_seconds` between two reads.
    #[error("The request body stalled for more than {seconds} seconds between two reads")]
    BodyReadTimeout {
        /// `body_read_timeout_seconds`.
        seconds: u64,
    },
    /// 413 `invalid_request_error`.
    #[error("Request body too large: the limit is {limit} bytes")]
    PayloadTooLarge {
        /// `max_body_bytes`.
        limit: usize,
    },
    /// 415 `invalid_request_error`.
    #[error("Unsupported media type: send the body as application/json")]
    UnsupportedMediaType,
    /// A secret scanning report refused before it is read: 404 while the receiver is not configured, else 401
    /// `authentication_error` (the request is not GitHub's, as far as the signature tells).
    #[error(transparent)]
    SecretScanning(#[from] ReportError),
    /// 502 or 504 `upstream_error`.
    #[error("upstream: {0}")]
    Upstream(#[from] ProviderError),
    /// 503 `service_unavailable`: the store cannot be written or reached for now; nothing was executed or charged.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500 `api_error`: storage failed.
    #[error("storage: {0}")]
    Store(StoreError),
    /// 500 `api_error`: anything else that is our fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// 400 with a param.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// 403 with no param.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden {
            message: message.into(),
            param: None,
        }
    }

    /// 404 for an object of a kind (`project`, `API key`…) that this tenant does not have.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::NotFound {
            message: format!("No {kind} found with id '{}'", truncate_id(id)),
            code: None,
            param: None,
        }
    }

    /// 404 `model_not_found`, OpenAI's words.
    pub fn model_not_found(model: &str) -> Self {
        Self::NotFound {
            message: format!(
                "The model `{}` does not exist or you do not have access to it.",
                truncate_id(model)
            ),
            code: Some("model_not_found"),
            param: Some("model".to_owned()),
        }
    }

    /// Status, type, param and code of this error.
    fn parts(
        &self,
    ) -> (
        StatusCode,
        &'static str,
        Option<String>,
        Option<&'static str>,
    ) {
        const INVALID: &str = "invalid_request_error";
        match self {
            Self::BadRequest { param, .. } => {
                (StatusCode::BAD_REQUEST, INVALID, param.clone(), None)
            }
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "authentication_error", None, None),
            Self::Forbidden { param, .. } => (
                StatusCode::FORBIDDEN,
                "permission_error",
                param.clone(),
                None,
            ),
            Self::NotFound { code, param, .. } => {
                (StatusCode::NOT_FOUND, INVALID, param.clone(), *code)
            }
            Self::InsufficientBalance { .. } | Self::SpendLimitReached { .. } => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_balance",
                None,
                None,
            ),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, INVALID, None, None),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, INVALID, None, *code),
            Self::IdempotencyKeyInUse => (
                StatusCode::CONFLICT,
                "idempotency_error",
                None,
                Some("idempotency_key_in_use"),
            ),
            Self::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_error",
                None,
                Some("idempotency_key_reused"),
            ),
            Self::Replayed(replay) => (
                StatusCode::from_u16(replay.response.status).unwrap_or(StatusCode::OK),
                "replayed",
                None,
                None,
            ),
            Self::BodyReadTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, INVALID, None, None),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, None, None),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID, None, None),
            Self::SecretScanning(ReportError::Disabled) => {
                (StatusCode::NOT_FOUND, INVALID, None, None)
            }
            Self::SecretScanning(_) => {
                (StatusCode::UNAUTHORIZED, "authentication_error", None, None)
            }
            Self::Upstream(ProviderError::Timeout) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_error", None, None)
            }
            Self::Upstream(ProviderError::Failed(_)) => {
                (StatusCode::BAD_GATEWAY, "upstream_error", None, None)
            }
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                None,
                None,
            ),
            Self::Store(_) | Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "api_error", None, None)
            }
        }
    }

    /// What the client reads: for server-side failures our own sentence, never the detail.
    fn public_message(&self) -> String {
        match self {
            Self::Upstream(ProviderError::Timeout) => {
                "The model provider did not answer in time".to_owned()
            }
            Self::Upstream(ProviderError::Failed(_)) => {
                "The model provider failed to answer".to_owned()
            }
            Self::Unavailable(_) => {
                "The service cannot record usage right now; nothing was executed or charged. Retry shortly"
                    .to_owned()
            }
            Self::Store(_) | Self::Internal(_) => {
                "The server had an error while processing your request".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The `details` object of errors that have one, money written as exact decimals.
    fn details(&self) -> Option<Box<RawValue>> {
        match self {
            Self::InsufficientBalance { available, cost } => RawValue::from_string(format!(
                r#"{{"balance_before_cents":{available},"cost_cents":{cost}}}"#
            ))
            .ok(),
            Self::SpendLimitReached {
                limit,
                spent,
                available,
                cost,
                ..
            } => RawValue::from_string(format!(
                r#"{{"balance_before_cents":{available},"cost_cents":{cost},"spend_limit_cents":{limit},"spent_cents":{spent}}}"#
            ))
            .ok(),
            _ => None,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The error envelope for this error.
    pub fn body(&self) -> ErrorBody {
        let (_, kind, param, code) = self.parts();
        ErrorBody {
            error: ErrorObject {
                message: self.public_message(),
                kind: kind.to_owned(),
                param,
                code: code.map(str::to_owned),
                details: self.details(),
            },
        }
    }
}

/// Storage outcomes that are the client's business become their 4xx; the rest are ours (500).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LastOwner => Self::Conflict {
                message: "This change would leave the organization without an owner; make another member an \
                          owner first"
                    .to_owned(),
                code: Some("last_owner"),
            },
            StoreError::KeyLimitReached => {
                Self::forbidden("The organization's plan allows no more active API keys")
            }
            // The service names the key's state before it asks the store; this is a change that raced it.
            StoreError::KeyNotActive => Self::Conflict {
                message: "The API key is revoked or expired; only an active key can be changed or rolled"
                    .to_owned(),
                code: None,
            },
            StoreError::Conflict(_) => Self::Conflict {
                message: "The request conflicts with an existing object".to_owned(),
                code: None,
            },
            StoreError::Unavailable(detail) => Self::Unavailable(detail),
            StoreError::Backend(_) => Self::Store(e),
        }
    }
}

/// Ids and model names are echoed in messages; cap them so a huge one cannot bloat a response or a log line.
fn truncate_id(id: &str) -> &str {
    match id.char_indices().nth(64) {
        Some((at, _)) => &id[..at],
        None => id,
    }
}

/// A 5xx's server-side detail, in the response's extensions for `middleware::access_log` to log with the request
/// id; never sent. It never names a key: stores and providers only see digests and upstream statuses.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Replayed(replay) = self {
            return replayed(replay.response);
        }
        let (status, ..) = self.parts();
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, Self::Unavailable(_) | Self::IdempotencyKeyInUse) {
            // The recorder retries the store at least once a second; a key in use is worth asking about as often.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited {
            retry_after_ms,
            quota,
            ..
        } = &self
        {
            // Whole seconds, rounded up, at least 1: a client that waits this long is admitted.
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            if let Some(quota) = quota {
                quota.stamp(response.headers_mut());
            }
        }
        if matches!(self, Self::BodyReadTimeout { .. }) {
            // The rest of the body is never coming: HTTP/1 cannot find the next request's start, so hyper closes
            // the connection after this response.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status.is_server_error() {
            // Logged where the request id is known, not here.
            response
                .extensions_mut()
                .insert(ErrorDetail(Arc::new(self)));
        }
        response
    }
}

/// A stored response, sent again: its status, headers and body, and `Idempotent-Replayed: true`.
fn replayed(stored: tollgate_core::idempotency::StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        header::HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_key_body_is_exact() {
        let body =
            serde_json::to_string(&ApiError::Unauthorized(AuthFailure::Invalid).body()).unwrap();
        assert_eq!(
            body,
            r#"{"error":{"message":"Invalid API key","type":"authentication_error","param":null,"code":null}}"#
        );
    }

    #[test]
    fn the_402_body_has_exact_decimal_details() {
        let e = ApiError::InsufficientBalance {
            available: Micros(0),
            cost: Micros(7_000_600),
        };
        let body = serde_json::to_string(&e.body()).unwrap();
        assert_eq!(
            body,
            r#"{"error":{"message":"Your API balance is insufficient","type":"insufficient_balance","param":null,"code":null,"details":{"balance_before_cents":0,"cost_cents":7.0006}}}"#
        );
        assert_eq!(e.parts().0, StatusCode::PAYMENT_REQUIRED);
    }

    #[test]
    fn upstream_detail_never_reaches_the_client() {
        let e = ApiError::Upstream(ProviderError::Failed("http://10.0.0.1 said secret".into()));
        let body = serde_json::to_string(&e.body()).unwrap();
        assert!(
            !body.contains("secret") && !body.contains("10.0.0.1"),
            "{body}"
        );
        assert_eq!(e.parts().0, StatusCode::BAD_GATEWAY);
        assert_eq!(
            ApiError::Upstream(ProviderError::Timeout).parts().0,
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn a_stalled_body_is_408_and_closes_the_connection() {
        let e = ApiError::BodyReadTimeout { seconds: 30 };
        let body = serde_json::to_string(&e.body()).unwrap();
        assert_eq!(
            body,
            r#"{"error":{"message":"The request body stalled for more than 30 seconds between two reads","type":"invalid_request_error","param":null,"code":null}}"#
        );
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn long_ids_are_cut_in_messages() {
        let long = "x".repeat(10_000);
        assert!(ApiError::model_not_found(&long).to_string().len() < 200);
    }
}
