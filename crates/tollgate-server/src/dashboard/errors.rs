//! The dashboard's failures as pages, never JSON: [`DashError`] is either a redirect to the sign-in page (no
//! session, or one that ended) or an HTML error page whose message says what to do next. An `ApiError` from a
//! service becomes the page of its status with the API's own (public) message; a 5xx's detail goes to the access
//! log, as the API's does, and never to the page.

use super::cookies;
use super::page::{self, Chrome};
use crate::error::{ApiError, ErrorDetail};
use askama::Template;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Why a dashboard request did not get its page.
#[derive(Debug)]
pub enum DashError {
    /// Not signed in, or the session ended: 303 to the sign-in page; `clear` also drops the stale cookie.
    SignIn {
        /// The request presented a session cookie that no longer works.
        clear: bool,
    },
    /// An error page.
    Page(Box<ErrorPage>),
}

/// What an error page says.
#[derive(Debug)]
pub struct ErrorPage {
    /// Its status.
    pub status: StatusCode,
    /// Its heading.
    pub heading: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// What to do about it.
    pub hint: &'static str,
    /// A server-side failure's detail, for the access log only.
    pub detail: Option<Arc<ApiError>>,
}

impl DashError {
    /// An error page of `status` saying `message`.
    pub fn page(status: StatusCode, message: impl Into<String>) -> Self {
        let (heading, hint) = wording(status);
        Self::Page(Box::new(ErrorPage {
            status,
            heading,
            message: message.into(),
            hint,
            detail: None,
        }))
    }

    /// The page for a form post whose CSRF token is missing or wrong.
    pub fn csrf() -> Self {
        Self::page(
            StatusCode::FORBIDDEN,
            "This form has expired or was not sent from this dashboard, so nothing was changed. Go back, reload \
             the page and submit the form again.",
        )
    }

    /// 404 page for a path the dashboard does not have.
    pub fn not_found() -> Self {
        Self::page(
            StatusCode::NOT_FOUND,
            "There is no dashboard page at this address.",
        )
    }
}

/// A heading and a hint for each kind of failure.
fn wording(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 | 413 | 415 | 422 => (
            "The form could not be used",
            "Go back, correct the form and send it again.",
        ),
        403 => (
            "Not allowed",
            "Your role does not allow this. Ask an owner of the organization if you need it done.",
        ),
        404 => (
            "Not found",
            "Check the address, or start again from the dashboard's navigation.",
        ),
        405 => (
            "Not found",
            "This address does not take that kind of request; start again from the dashboard.",
        ),
        408 => (
            "The request took too long",
            "Check your connection and send the form again.",
        ),
        409 => (
            "That conflicts",
            "Reload the page to see the current state.",
        ),
        429 => ("Too many requests", "Wait a little, then try again."),
        _ if status.is_server_error() => (
            "Something went wrong on our side",
            "Nothing was changed if the page did not say so. Try again in a moment; if it persists, tell the \
             operator of this deployment.",
        ),
        _ => ("That did not work", "Go back and try again."),
    }
}

impl From<ApiError> for DashError {
    fn from(error: ApiError) -> Self {
        let status = error.status();
        let message = error.body().error.message;
        let (heading, hint) = wording(status);
        let detail = status.is_server_error().then(|| Arc::new(error));
        Self::Page(Box::new(ErrorPage {
            status,
            heading,
            message,
            hint,
            detail,
        }))
    }
}

/// `error.html`.
#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorTemplate<'a> {
    chrome: Chrome,
    error: &'a ErrorPage,
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn { clear } => {
                let mut response = page::see_other(cookies::LOGIN_PATH);
                // Without `Secure`: a cookie is dropped by name and path, and this one must go either way.
                if clear && let Some(cookie) = cookies::clear_session(false) {
                    response.headers_mut().append(SET_COOKIE, cookie);
                }
                response
            }
            Self::Page(error) => {
                let template = ErrorTemplate {
                    chrome: Chrome::signed_out(error.heading),
                    error: &error,
                };
                let mut response = page::html(error.status, &template);
                if let Some(detail) = &error.detail {
                    response
                        .extensions_mut()
                        .insert(ErrorDetail(Arc::clone(detail)));
                }
                response
            }
        }
    }
}

/// The dashboard's 404 page (the router's fallback for `/dashboard/…`).
pub async fn not_found() -> DashError {
    DashError::not_found()
}

/// The dashboard's page for a known path with the wrong method.
pub async fn method_not_allowed() -> DashError {
    DashError::page(
        StatusCode::METHOD_NOT_ALLOWED,
        "This address does not take that kind of request.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn api_errors_become_pages_with_their_public_message() {
        let response = DashError::from(ApiError::not_found("project", "proj_x")).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        assert!(response.headers().contains_key("content-security-policy"));
        let html = body(response).await;
        assert!(
            html.contains("No project found with id &#39;proj_x&#39;"),
            "{html}"
        );
        assert!(
            html.contains("<title>Not found · Tollgate</title>"),
            "{html}"
        );

        let response =
            DashError::from(ApiError::Internal("disk on fire".to_owned())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.extensions().get::<ErrorDetail>().is_some());
        assert!(!body(response).await.contains("disk on fire"));
    }

    #[test]
    fn no_session_redirects_to_sign_in_and_drops_a_stale_cookie() {
        let response = DashError::SignIn { clear: true }.into_response();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()["location"], "/dashboard/login");
        assert!(
            response.headers()[SET_COOKIE]
                .to_str()
                .unwrap()
                .starts_with("tollgate_session=; ")
        );
        let response = DashError::SignIn { clear: false }.into_response();
        assert!(!response.headers().contains_key(SET_COOKIE));
    }
}
