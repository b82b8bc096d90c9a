//! Route handlers, one file per action: `inference/` (project keys), `management/` (admin keys), `operator/`
//! (the operator token), `secret_scanning/` (a scanner's signature) and `health` (no credential). Handlers are
//! thin: parse, call the domain and ports, render.

pub mod health;
pub mod inference;
pub mod management;
pub mod operator;
pub mod secret_scanning;

use crate::error::ApiError;

/// Unknown route: 404 in our shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "Unknown request URL; check the method and path".to_owned(),
        code: None,
        param: None,
    }
}

/// Known route, wrong method: 405 in our shape.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
