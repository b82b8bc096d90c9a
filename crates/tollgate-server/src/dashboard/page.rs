//! What every page shares: the layout's data ([`Chrome`]: title, navigation, the signed-in member's bar) and the
//! response around a rendered template, with the headers every page carries: the Content-Security-Policy (no
//! inline script or style, no framing, forms only to us), `nosniff`, and `no-store` (pages show tenant data and,
//! once, key values: no cache may keep them).

use super::assets;
use super::session::SignedIn;
use crate::error::{ApiError, ErrorDetail};
use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The policy on every page: our own scripts, styles and images (and `data:` images) only, never framed, forms
/// posted only back to us.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                       frame-ancestors 'none'; form-action 'self'";

/// The product's name, last in every title.
const PRODUCT: &str = "Tollgate";

/// A part of the dashboard, as the navigation names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// A project's API keys.
    Keys,
    /// The tenant's projects.
    Projects,
    /// The tenant's members.
    Members,
    /// Usage per day and model.
    Usage,
    /// The audit log.
    Audit,
    /// Balance and ledger.
    Credits,
}

impl Section {
    /// In navigation order.
    const ALL: [Self; 6] = [
        Self::Keys,
        Self::Projects,
        Self::Members,
        Self::Usage,
        Self::Audit,
        Self::Credits,
    ];

    /// The link text (browser tests find the links by it).
    pub fn label(self) -> &'static str {
        match self {
            Self::Keys => "API keys",
            Self::Projects => "Projects",
            Self::Members => "Members",
            Self::Usage => "Usage",
            Self::Audit => "Audit log",
            Self::Credits => "Credits",
        }
    }

    /// Where the link goes (API keys: the first active project's, which `/dashboard` redirects to).
    pub fn href(self) -> &'static str {
        match self {
            Self::Keys => "/dashboard",
            Self::Projects => "/dashboard/projects",
            Self::Members => "/dashboard/members",
            Self::Usage => "/dashboard/usage",
            Self::Audit => "/dashboard/audit",
            Self::Credits => "/dashboard/credits",
        }
    }
}

/// One navigation link.
#[derive(Debug, Clone)]
pub struct NavItem {
    /// Link text.
    pub label: &'static str,
    /// Target.
    pub href: &'static str,
    /// The page being shown (`aria-current="page"`).
    pub current: bool,
}

/// The signed-in member, as the page's header shows them, with the sign-out form's CSRF token.
#[derive(Debug, Clone)]
pub struct UserBar {
    /// Their email.
    pub email: String,
    /// Their organization.
    pub tenant_name: String,
    /// Their role.
    pub role: &'static str,
    /// The session's CSRF token.
    pub csrf: String,
}

/// The layout around every page.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The document title: "API keys · Default · Tollgate".
    pub title: String,
    /// Navigation (empty when signed out).
    pub nav: Vec<NavItem>,
    /// The signed-in member, if any.
    pub user: Option<UserBar>,
    /// The stylesheet's URL (versioned, so it can be cached for good).
    pub css: &'static str,
    /// The script's URL.
    pub js: &'static str,
}

impl Chrome {
    /// A page shown to nobody in particular (sign-in, errors before sign-in): "Sign in · Tollgate".
    pub fn signed_out(heading: &str) -> Self {
        Self {
            title: format!("{heading} · {PRODUCT}"),
            nav: Vec::new(),
            user: None,
            css: assets::css_href(),
            js: assets::js_href(),
        }
    }

    /// A page of `section` for `me`; the title names the section, then `context` (a project, or the organization).
    pub fn page(me: &SignedIn, section: Section, context: &str) -> Self {
        Self::titled(me, section, &format!("{} · {context}", section.label()))
    }

    /// A page of `section` for `me` with its own `heading` in the title.
    pub fn titled(me: &SignedIn, section: Section, heading: &str) -> Self {
        Self {
            title: format!("{heading} · {PRODUCT}"),
            nav: Section::ALL
                .into_iter()
                .map(|s| NavItem {
                    label: s.label(),
                    href: s.href(),
                    current: s == section,
                })
                .collect(),
            user: Some(UserBar {
                email: me.email.clone(),
                tenant_name: me.tenant_name.clone(),
                role: me.role.as_str(),
                csrf: me.csrf.clone(),
            }),
            css: assets::css_href(),
            js: assets::js_href(),
        }
    }
}

/// What a form sent back with its errors shows: a message next to each field at fault, and one for the form as a
/// whole (a failure no field explains, such as a conflict).
#[derive(Debug, Clone, Default)]
pub struct FieldErrors {
    fields: Vec<(&'static str, String)>,
    general: Option<String>,
}

impl FieldErrors {
    /// One field's message.
    pub fn field(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            fields: vec![(name, message.into())],
            general: None,
        }
    }

    /// A message for the whole form.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            fields: Vec::new(),
            general: Some(message.into()),
        }
    }

    /// The message for `field`, if it is at fault.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, message)| message.as_str())
    }

    /// The message for the whole form, if any.
    pub fn form(&self) -> Option<&str> {
        self.general.as_deref()
    }

    /// Whether there is anything to show.
    pub fn any(&self) -> bool {
        !self.fields.is_empty() || self.general.is_some()
    }

    /// A service's refusal as the form's errors: a 400 or 403 naming a parameter that `fields` maps to a form field
    /// goes next to it; any other 4xx a service answers for the input (400, 403, 409) is the form's message; the
    /// rest (404, 5xx…) is an error page.
    pub fn from_api(
        error: ApiError,
        fields: &[(&str, &'static str)],
    ) -> Result<Self, super::DashError> {
        let param = match &error {
            ApiError::BadRequest { param, .. } | ApiError::Forbidden { param, .. } => param.clone(),
            ApiError::Conflict { .. } => None,
            _ => return Err(super::DashError::from(error)),
        };
        let message = error.to_string();
        let field = param.and_then(|p| fields.iter().find(|(api, _)| *api == p).map(|(_, f)| *f));
        Ok(match field {
            Some(field) => Self::field(field, message),
            None => Self::general(message),
        })
    }

    /// The status a form sent back with these errors answers with.
    pub fn status(&self) -> StatusCode {
        if self.any() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        }
    }
}

/// Sets the headers every page carries.
pub fn stamp(headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Our URLs carry ids, never secrets, but nobody else needs to learn which pages a member visits.
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// A rendered page with `status`. A template that fails to render (a bug) is a bare 500 page, its detail left for
/// the access log.
pub fn html(status: StatusCode, template: &impl Template) -> Response {
    let mut response = match template.render() {
        Ok(body) => (status, body).into_response(),
        Err(error) => {
            let mut response = (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error · Tollgate</title><p>The page could not be shown. Reload it; if \
                 this persists, tell the operator of this deployment.</p>",
            )
                .into_response();
            response
                .extensions_mut()
                .insert(ErrorDetail(Arc::new(ApiError::Internal(format!(
                    "dashboard template: {error}"
                )))));
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    stamp(headers);
    response
}

/// 303 to `location` (after a form post: the browser gets the page, and reloading it posts nothing again).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(LOCATION, value);
    }
    stamp(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_forbids_inline_code_framing_and_caching() {
        let mut headers = HeaderMap::new();
        stamp(&mut headers);
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
    }

    #[test]
    fn refusals_land_next_to_their_field_or_on_the_form() {
        let fields = [("rate_limits.requests_per_minute", "requests_per_minute")];
        let errors = FieldErrors::from_api(
            ApiError::bad_request("too big", Some("rate_limits.requests_per_minute")),
            &fields,
        )
        .unwrap();
        assert_eq!(errors.get("requests_per_minute"), Some("too big"));
        assert_eq!(errors.form(), None);
        assert_eq!(errors.status(), StatusCode::BAD_REQUEST);
        let errors =
            FieldErrors::from_api(ApiError::bad_request("archived", None), &fields).unwrap();
        assert_eq!(errors.form(), Some("archived"));
        let errors = FieldErrors::from_api(ApiError::forbidden("plan"), &fields).unwrap();
        assert_eq!(errors.form(), Some("plan"));
        assert!(FieldErrors::from_api(ApiError::not_found("API key", "key_x"), &fields).is_err());
        assert!(!FieldErrors::default().any());
        assert_eq!(FieldErrors::default().status(), StatusCode::OK);
    }

    #[test]
    fn navigation_labels_are_the_browser_tests_hooks() {
        let labels: Vec<_> = Section::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            [
                "API keys",
                "Projects",
                "Members",
                "Usage",
                "Audit log",
                "Credits"
            ]
        );
        let redirect = see_other("/dashboard/login");
        assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
        assert_eq!(redirect.headers()[LOCATION], "/dashboard/login");
    }
}
