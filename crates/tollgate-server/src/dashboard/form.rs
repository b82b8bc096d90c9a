//! Form posts (`application/x-www-form-urlencoded`) as extractors whose failures are pages: [`Posted`] is a signed-in
//! member's post, its CSRF token checked before any field is read; [`PlainForm`] is the sign-in form, which checks
//! its own. [`Params`] and [`Ids`] are axum's `Query` and `Path` with the same kind of rejection. The body is read as the API reads one (`extract::RawBody`: the body limit, the read timeout), and a
//! field that does not parse is a 400 page, not axum's plain-text rejection. Form structs take text fields and let
//! their page check them, so a bad value is a message next to its field rather than an error page.

use super::csrf;
use super::errors::DashError;
use super::session::SignedIn;
use crate::app::AppState;
use crate::extract::RawBody;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The media type of a form post.
const FORM: &str = "application/x-www-form-urlencoded";

/// A form post from a signed-in member: the session, its CSRF token checked, and the fields.
#[derive(Debug, Clone)]
pub struct Posted<T> {
    /// Who posted it.
    pub me: SignedIn,
    /// The fields.
    pub form: T,
}

/// A form post that needs no session (the sign-in form).
#[derive(Debug, Clone)]
pub struct PlainForm<T>(pub T);

/// A form with nothing but its CSRF token (sign out, revoke, archive…).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct NoFields {}

/// The CSRF field of any form.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: Option<String>,
}

/// The body of a form post: 415 page for another media type; 413, 408 and 400 pages as the API's body reads.
async fn read(request: Request, state: &AppState) -> Result<bytes::Bytes, DashError> {
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(FORM));
    if !is_form {
        return Err(DashError::page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The dashboard takes its forms as the browser sends them (application/x-www-form-urlencoded).",
        ));
    }
    let body = RawBody::from_request(request, state).await?;
    Ok(body.into_bytes())
}

/// A form's fields as `T` (fields it does not name, the CSRF token among them, are ignored).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, DashError> {
    serde_urlencoded::from_bytes(body).map_err(|e| {
        DashError::page(
            StatusCode::BAD_REQUEST,
            format!("The form could not be read ({e}). Reload the page and send it again."),
        )
    })
}

/// The CSRF token a form carried, if any.
fn presented_csrf(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<CsrfField>(body)
        .ok()
        .and_then(|f| f.csrf)
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = DashError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, DashError> {
        let (mut parts, body) = request.into_parts();
        // The session first: without one, the answer is the sign-in page, whatever the form says.
        let me = SignedIn::from_request_parts(&mut parts, state).await?;
        let body = read(Request::from_parts(parts, body), state).await?;
        csrf::check(&me.csrf, presented_csrf(&body).as_deref())?;
        let form = parse(&body)?;
        Ok(Self { me, form })
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for PlainForm<T> {
    type Rejection = DashError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, DashError> {
        let body = read(request, state).await?;
        parse(&body).map(Self)
    }
}

/// A page's query string as `T`; one that does not parse is a 400 page (axum's rejection would be plain text).
#[derive(Debug, Clone, Default)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Params<T> {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, DashError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|_| {
                DashError::page(
                    StatusCode::BAD_REQUEST,
                    "The address has a query string this page cannot read. Start again from the navigation.",
                )
            })
    }
}

/// The ids in a page's path as `T`; ids that cannot be read are a 404 page.
#[derive(Debug, Clone)]
pub struct Ids<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Ids<T> {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, DashError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|_| DashError::not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Rename {
        #[serde(default)]
        name: String,
        #[serde(default)]
        description: Option<String>,
    }

    #[test]
    fn fields_parse_as_browsers_encode_them_and_the_csrf_token_is_read_apart() {
        let body = b"csrf=abc123&name=My+key+%C3%A9&description=";
        let form: Rename = parse(body).unwrap();
        assert_eq!(
            form,
            Rename {
                name: "My key é".into(),
                description: Some(String::new())
            }
        );
        assert_eq!(presented_csrf(body).as_deref(), Some("abc123"));
        assert_eq!(presented_csrf(b"name=x"), None);
        let empty: Rename = parse(b"").unwrap();
        assert_eq!(empty.name, "");
        let _: NoFields = parse(b"csrf=x&other=1").unwrap();
    }

    #[test]
    fn an_unreadable_form_is_a_400_page() {
        #[derive(Debug, Deserialize)]
        struct Number {
            #[expect(dead_code, reason = "only parsed")]
            n: u8,
        }
        let err = parse::<Number>(b"n=300").unwrap_err();
        let DashError::Page(page) = err else {
            panic!("not a page")
        };
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
}
