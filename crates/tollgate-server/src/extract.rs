//! Request extractors whose failures are `ApiError`s, so even a malformed body or query gets our error shape:
//! `AppJson<T>` (media type, size, a body that stalls between two reads, JSON syntax, field types, with `param`
//! naming the field at fault), `RawBody` (the same, for a route that checks the exact bytes before parsing them)
//! and `ListParams` (cursor pagination).

use crate::app::AppState;
use crate::error::ApiError;
use crate::idempotency::Slot;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tollgate_core::ports::PageRequest;
use tower_http::timeout::TimeoutError;

/// A JSON body, parsed into `T`.
#[derive(Debug, Clone)]
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        SizedJson::from_request(request, state)
            .await
            .map(|json| Self(json.value))
    }
}

/// A JSON body parsed into `T`, with the body itself: its length bounds its tokens (for holds), and a proxied
/// request is forwarded from it rather than serialised again.
#[derive(Debug, Clone)]
pub struct SizedJson<T> {
    /// The parsed body.
    pub value: T,
    /// The raw body.
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<AppState> for SizedJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let body = RawBody::from_request(request, state).await?;
        body.require_json()?;
        parse_json(&body.bytes).map(|value| Self {
            value,
            raw: body.bytes,
        })
    }
}

/// A request body read whole but not parsed yet, for a route that must look at the exact bytes first (a signature
/// over them); reading it fails as [`AppJson`] does (413, 408, 400). Its `Debug` shows the length only: such a
/// body may carry secrets (leaked keys).
#[derive(Clone)]
pub struct RawBody {
    bytes: Bytes,
    /// Whether `Content-Type` is `application/json` (`None`: absent or not text).
    is_json: Option<bool>,
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBody")
            .field("len", &self.bytes.len())
            .field("is_json", &self.is_json)
            .finish()
    }
}

impl RawBody {
    /// The bytes as received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes as received, owned.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// 415 for a non-empty body that is not `application/json`.
    pub fn require_json(&self) -> Result<(), ApiError> {
        if !self.bytes.is_empty() && self.is_json != Some(true) {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok(())
    }

    /// The body as a JSON array of `T`: 415 as [`RawBody::require_json`], 400 as [`parse_json`] (naming the
    /// element and field at fault, e.g. `[1].token`) for anything but an array.
    pub fn json_array<T: DeserializeOwned>(&self) -> Result<Vec<T>, ApiError> {
        self.require_json()?;
        parse_body(&self.bytes, b'[', "The request body must be a JSON array")
    }
}

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            });
        let limit = state.config.max_body_bytes;
        // A POST with `Idempotency-Key`: its fingerprint is taken from the body read here (and a management
        // request's key is claimed), so no body is read twice, nor before the route's authentication.
        let idempotency = request.extensions().get::<Slot>().cloned();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else if caused_by_body_timeout(&rejection) {
                    ApiError::BodyReadTimeout {
                        seconds: state.config.body_read_timeout_seconds,
                    }
                } else {
                    ApiError::bad_request("Could not read the request body", None)
                }
            })?;
        if let Some(slot) = idempotency {
            slot.body_read(state, &bytes).await?;
        }
        Ok(Self { bytes, is_json })
    }
}

/// Whether a body read failed because the router's `RequestBodyTimeoutLayer` gave up waiting for the next frame;
/// axum wraps that error a few layers deep in the rejection.
fn caused_by_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<TimeoutError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Parses a request body: 400 for an empty body, bad syntax, a non-object, or a missing or wrong-typed field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_body(bytes, b'{', "The request body must be a JSON object")
}

/// [`parse_json`] for a body whose JSON value must open with `opening` (`{` or `[`); `wrong_kind` is the 400's
/// message for any other value.
fn parse_body<T: DeserializeOwned>(
    bytes: &[u8],
    opening: u8,
    wrong_kind: &str,
) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => {
            return Err(ApiError::bad_request(
                "We could not parse the JSON body of your request: the body is empty",
                None,
            ));
        }
        Some(&b) if b == opening => {}
        Some(_) => return Err(ApiError::bad_request(wrong_kind, None)),
    }
    // A valid body needs no path tracking: only a failure is parsed again, to name the field at fault.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(
                format!("We could not parse the JSON body of your request: {inner}"),
                None,
            );
        }
        let path = e.path().to_string();
        let message = inner.to_string();
        // serde reports a missing field at its parent's path; name the field itself.
        let param = match message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            Some(field) if path == "." => field.to_owned(),
            Some(field) => format!("{path}.{field}"),
            None => path,
        };
        let message = strip_position(&message);
        ApiError::bad_request(format!("Invalid body: {param}: {message}"), Some(&param))
    })?;
    // Trailing characters after the object are a syntax error too.
    de.end().map_err(|e| {
        ApiError::bad_request(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; drop it, the param says where.
fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at])
}

#[derive(Debug, Deserialize)]
struct RawListParams {
    after: Option<String>,
    limit: Option<String>,
}

/// `?after=…&limit=…` (limit 1–100, default 20).
#[derive(Debug, Clone)]
pub struct ListParams(pub PageRequest);

impl FromRequestParts<AppState> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawListParams>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::bad_request("Invalid query string", None))?;
        Ok(Self(PageRequest {
            after: raw.after.filter(|a| !a.is_empty()),
            limit: page_limit(raw.limit.as_deref())?,
        }))
    }
}

/// A list's `limit` parameter: 1–100, 20 when absent or empty; anything else is a 400 naming it.
pub fn page_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    match raw {
        None | Some("") => Ok(20),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request("limit must be an integer from 1 to 100", Some("limit"))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[expect(dead_code, reason = "fields exist to be parsed")]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[expect(dead_code, reason = "fields exist to be parsed")]
    struct Inner {
        n: u32,
    }

    fn param(raw: &str) -> (Option<String>, String) {
        match parse_json::<Body>(raw.as_bytes()) {
            Ok(_) => (None, "ok".into()),
            Err(e) => match &e {
                ApiError::BadRequest { param, message } => (param.clone(), message.clone()),
                other => (None, other.to_string()),
            },
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        assert_eq!(param(r#"{"name":"x"}"#).1, "ok");
        assert_eq!(param(r#"{}"#).0.as_deref(), Some("name"));
        assert_eq!(param(r#"{"name":5}"#).0.as_deref(), Some("name"));
        assert_eq!(
            param(r#"{"name":"x","inner":{}}"#).0.as_deref(),
            Some("inner.n")
        );
        assert_eq!(
            param(r#"{"name":"x","inner":{"n":"a"}}"#).0.as_deref(),
            Some("inner.n")
        );
        assert!(param("").1.contains("empty"));
        assert!(param("{").1.contains("could not parse"));
        assert!(param("[1]").1.contains("JSON object"));
        assert!(
            param(r#"{"name":"x"} trailing"#)
                .1
                .contains("could not parse")
        );
    }
}
