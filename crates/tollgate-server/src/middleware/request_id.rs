//! `X-Request-Id` on every response, errors included: the client's when it is 1–128 visible ASCII characters,
//! else a new one.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use uuid::Uuid;

/// The header name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in the request's extensions for handlers and logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Whether a client-sent id may be echoed: 1–128 characters in 0x21–0x7E.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn generate() -> HeaderValue {
    let mut buf = [0u8; 4 + 32];
    buf[..4].copy_from_slice(b"req_");
    Uuid::now_v7().simple().encode_lower(&mut buf[4..]);
    // Only ASCII hex and "req_": always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("req_unknown"))
}

/// Gives `request` its id (the client's when acceptable, else a new one) in its extensions, and returns it for
/// [`stamp`].
pub fn assign(request: &mut Request) -> HeaderValue {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| acceptable(v))
        .cloned()
        .unwrap_or_else(generate);
    request.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// Puts the request's id on its response.
pub fn stamp(response: &mut Response, id: HeaderValue) {
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_ascii_up_to_128_is_echoed() {
        assert!(acceptable(&HeaderValue::from_static("abc-123")));
        assert!(acceptable(
            &HeaderValue::from_str(&"a".repeat(128)).unwrap()
        ));
        assert!(!acceptable(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
        assert!(!acceptable(&HeaderValue::from_static("has space")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        let g = generate();
        assert!(acceptable(&g) && g.to_str().unwrap().starts_with("req_"));
        assert_ne!(generate(), generate());
    }
}
