//! Route handlers, one file per action: `inference/` (project keys), `management/` (admin keys), `operator/`
//! (the operator token), `secret_scanning/` (a scanner's signature) and `health` (no credential); the dashboard's
//! pages are in `crate::dashboard`. Handlers are thin: parse, call the domain and ports, render.

pub mod health;
pub mod inference;
pub mod management;
pub mod operator;
pub mod secret_scanning;

use crate::dashboard::{self, is_dashboard_path};
use crate::error::ApiError;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};

/// Unknown route: 404 in our shape (under `/dashboard`, the dashboard's 404 page).
pub async fn not_found(uri: Uri) -> Response {
    if is_dashboard_path(uri.path()) {
        return dashboard::errors::not_found().await.into_response();
    }
    ApiError::NotFound {
        message: "Unknown request URL; check the method and path".to_owned(),
        code: None,
        param: None,
    }
    .into_response()
}

/// Known route, wrong method: 405 in our shape (under `/dashboard`, a page).
pub async fn method_not_allowed(uri: Uri) -> Response {
    if is_dashboard_path(uri.path()) {
        return dashboard::errors::method_not_allowed()
            .await
            .into_response();
    }
    ApiError::MethodNotAllowed.into_response()
}
