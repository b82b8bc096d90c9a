//! The tenant dashboard at `/dashboard`: HTML rendered on the server for members signed in with their email and
//! password. One module per page (`login`, `keys`, `projects`, `members`, `usage`, `audit`, `credits`), with
//! `session` (the signed-in member, an extractor), `cookies`, `csrf`, `form` (form posts) and `errors` (the HTML
//! error page) beside them. Handlers are thin: parse, call the same `service` functions as the management API with
//! the same role checks, render an askama template (`templates/dashboard/`). A key's value appears only in the
//! response that creates or rolls it; no page carries inline script or style (the CSP forbids both), and none is
//! ever answered in JSON.

pub mod assets;
pub mod audit;
mod chart;
pub mod cookies;
pub mod credits;
pub mod csrf;
pub mod errors;
pub mod form;
mod format;
pub mod keys;
pub mod login;
pub mod members;
mod page;
pub mod projects;
pub mod session;
pub mod usage;

pub use errors::DashError;
pub use session::SignedIn;

/// Where every dashboard path starts.
pub const PREFIX: &str = "/dashboard";

/// Whether a request path belongs to the dashboard (whose errors are pages, never JSON).
pub fn is_dashboard_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/dashboard/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_paths_are_told_from_the_api() {
        assert!(is_dashboard_path("/dashboard"));
        assert!(is_dashboard_path("/dashboard/nope"));
        assert!(!is_dashboard_path("/dashboards"));
        assert!(!is_dashboard_path("/v1/organization"));
    }
}
