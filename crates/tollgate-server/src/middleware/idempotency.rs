//! The edge's two idempotency steps (see [`crate::idempotency`]): [`open`] before the route, for a POST that sends
//! `Idempotency-Key` (400 for a bad key), and [`finish`] once the route has answered: a key the route kept (a management request) is completed with a 2xx response, secrets removed,
//! or released for anything else. A request without the header costs one header lookup.

use crate::app::AppState;
use crate::error::ApiError;
use crate::idempotency::Slot;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use tollgate_core::idempotency::{StoredResponse, validate_key};
use tollgate_core::key::KeyPrefixes;

/// The request header.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// Opens the request's slot if it is a POST with `Idempotency-Key` (400 for a key that is empty, over 255 characters
/// or not printable ASCII).
pub fn open(request: &mut Request, request_id: &HeaderValue) -> Result<Option<Slot>, ApiError> {
    if request.method() != Method::POST {
        return Ok(None);
    }
    let Some(value) = request.headers().get(&HEADER) else {
        return Ok(None);
    };
    let key = validate_key(value.as_bytes())
        .map_err(|e| ApiError::bad_request(e.to_string(), None))?
        .to_owned();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path(), |p| p.as_str());
    let slot = Slot::new(key, path, request_id.to_str().unwrap_or_default());
    request.extensions_mut().insert(slot.clone());
    Ok(Some(slot))
}

/// Ends the slot once the route has answered: a kept key is completed with the answer (stored without secrets),
/// or released when the answer is not one to store (a 5xx, a malformed request).
pub async fn finish(state: &AppState, slot: Option<Slot>, response: Response) -> Response {
    let Some(held) = slot.as_ref().and_then(Slot::take) else {
        return response;
    };
    if !crate::idempotency::is_stored(response.status()) {
        held.release().await;
        return response;
    }
    let (parts, body) = response.into_parts();
    // A management answer is a small JSON object already in memory.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        held.release().await;
        return Response::from_parts(parts, Body::empty());
    };
    held.complete(StoredResponse {
        status: parts.status.as_u16(),
        headers: replayed_headers(&parts.headers),
        body: without_secrets(&state.prefixes, &bytes),
    })
    .await;
    Response::from_parts(parts, Body::from(bytes))
}

/// The headers a replay repeats: what describes the body and the rate limits, never the request's own
/// (`X-Request-Id`), the connection's or a length that the body gives again.
pub fn replayed_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            matches!(name, "content-type" | "cache-control" | "location")
                || name.starts_with("x-ratelimit-")
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// A JSON body with every string that is one of our keys (by format and checksum) replaced by `null`: a key's
/// value is shown once, never stored, so its replay carries `"value": null`. A body that is not JSON is kept as is
/// (no route answers a POST with anything else).
fn without_secrets(prefixes: &KeyPrefixes, body: &Bytes) -> Vec<u8> {
    let Ok(mut json) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if !scrub(prefixes, &mut json) {
        return body.to_vec();
    }
    serde_json::to_vec(&json).unwrap_or_default()
}

/// Replaces keys in `value` by `null`; whether it found any.
fn scrub(prefixes: &KeyPrefixes, value: &mut Value) -> bool {
    match value {
        Value::String(s) if prefixes.parse(s).is_ok() => {
            *value = Value::Null;
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |found, v| scrub(prefixes, v) | found),
        Value::Object(members) => members
            .values_mut()
            .fold(false, |found, v| scrub(prefixes, v) | found),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::key::KeyKind;

    #[test]
    fn keys_anywhere_in_a_body_become_null_and_nothing_else_changes() {
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let project = prefixes.generate(KeyKind::Project);
        let admin = prefixes.generate(KeyKind::Admin);
        let body = serde_json::json!({
            "object": "organization.project.api_key",
            "value": project.expose_secret(),
            "redacted_value": "sk_live_a1B2…wxyz",
            "nested": {"admin_key": {"value": admin.expose_secret()}, "list": [admin.expose_secret(), 7]},
        });
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
        let stored = String::from_utf8(without_secrets(&prefixes, &bytes)).unwrap();
        assert!(!stored.contains(project.expose_secret()), "{stored}");
        assert!(!stored.contains(admin.expose_secret()), "{stored}");
        let stored: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored["value"], Value::Null);
        assert_eq!(stored["nested"]["admin_key"]["value"], Value::Null);
        assert_eq!(stored["nested"]["list"], serde_json::json!([null, 7]));
        assert_eq!(stored["redacted_value"], "sk_live_a1B2…wxyz");
        // Without a key the bytes are kept exactly.
        let plain = Bytes::from_static(br#"{"id":"proj_1",  "name":"x"}"#);
        assert_eq!(without_secrets(&prefixes, &plain), plain.to_vec());
    }
}
