//! The dashboard's static files, compiled into the binary (no CDN, no build step): one stylesheet and one small
//! script, served from `/dashboard/assets/…` with their content types and a year's cache. Pages link them with a
//! `?v=` of their content's digest, so a new release's files are fetched at once despite the long cache.

use super::page;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The stylesheet.
pub const CSS: &str = include_str!("../../assets/dashboard/dashboard.css");
/// The script: opens dialogs, copies a new key's value.
pub const JS: &str = include_str!("../../assets/dashboard/dashboard.js");

/// The stylesheet's path.
pub const CSS_PATH: &str = "/dashboard/assets/dashboard.css";
/// The script's path.
pub const JS_PATH: &str = "/dashboard/assets/dashboard.js";

/// `path?v=<first 12 hex digits of the content's SHA-256>`.
fn versioned(path: &str, content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let version: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{path}?v={version}")
}

static CSS_HREF: LazyLock<String> = LazyLock::new(|| versioned(CSS_PATH, CSS));
static JS_HREF: LazyLock<String> = LazyLock::new(|| versioned(JS_PATH, JS));

/// The stylesheet's versioned URL.
pub fn css_href() -> &'static str {
    &CSS_HREF
}

/// The script's versioned URL.
pub fn js_href() -> &'static str {
    &JS_HREF
}

/// A static file: its content type, a year's cache (`immutable`: the URL changes with the content).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    page::stamp(headers);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

/// `GET /dashboard/assets/dashboard.css`.
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /dashboard/assets/dashboard.js`.
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn assets_have_their_types_and_a_long_cache() {
        let response = css().await;
        assert_eq!(response.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(
            response.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let response = js().await;
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(css_href().starts_with("/dashboard/assets/dashboard.css?v="));
        assert_eq!(js_href().len(), JS_PATH.len() + 3 + 12);
    }

    #[test]
    fn the_script_and_styles_need_nothing_the_csp_forbids() {
        // No eval, no inline handlers it would inject, no remote loads.
        for forbidden in [
            "eval(",
            "new Function",
            "innerHTML",
            "http://",
            "https://",
            "@import",
        ] {
            assert!(!JS.contains(forbidden), "{forbidden}");
            assert!(!CSS.contains(forbidden), "{forbidden}");
        }
    }
}
