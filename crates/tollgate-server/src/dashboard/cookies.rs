//! The dashboard's two cookies, read and written here only: `tollgate_session` (the session token: `HttpOnly`, so no
//! script reads it; `SameSite=Lax`, so no other site's form posts carry it; `Path=/`; `Secure` when
//! `dashboard_secure_cookie` says the dashboard is served over HTTPS) and `tollgate_login` (the sign-in form's CSRF
//! token before there is a session, `SameSite=Strict` and scoped to the sign-in page).

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};

/// The session cookie's name.
pub const SESSION: &str = "tollgate_session";
/// The sign-in form's CSRF cookie.
pub const LOGIN: &str = "tollgate_login";
/// Where the sign-in form lives (and so where its cookie is sent).
pub const LOGIN_PATH: &str = "/dashboard/login";
/// How long a sign-in form stays usable: an hour, long enough to type a password, short enough to be fresh.
pub const LOGIN_MAX_AGE: i64 = 3_600;

/// The value of the cookie `name` in the request's `Cookie` headers (the first, if a browser sends it twice).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// A `Set-Cookie` value. Our values are base64url or hex, which a header always takes; anything else is refused
/// (`None`) rather than sent half-formed.
fn set(
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
    same_site: &str,
    secure: bool,
) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    ))
    .ok()
}

/// Sets the session cookie: it lasts as long as the session may (`max_age` seconds, its absolute expiry).
pub fn session(token: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    set(SESSION, token, "/", max_age.max(0), "Lax", secure)
}

/// Drops the session cookie (sign-out, or a session that ended).
pub fn clear_session(secure: bool) -> Option<HeaderValue> {
    set(SESSION, "", "/", 0, "Lax", secure)
}

/// Sets the sign-in form's CSRF cookie.
pub fn login(token: &str, secure: bool) -> Option<HeaderValue> {
    set(LOGIN, token, LOGIN_PATH, LOGIN_MAX_AGE, "Strict", secure)
}

/// Drops the sign-in form's CSRF cookie once signed in.
pub fn clear_login(secure: bool) -> Option<HeaderValue> {
    set(LOGIN, "", LOGIN_PATH, 0, "Strict", secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_has_its_attributes() {
        let cookie = session("tgs_abc", 43_200, false).unwrap();
        assert_eq!(
            cookie,
            "tollgate_session=tgs_abc; Path=/; Max-Age=43200; HttpOnly; SameSite=Lax"
        );
        let cookie = session("tgs_abc", 43_200, true).unwrap();
        assert!(cookie.to_str().unwrap().ends_with("; SameSite=Lax; Secure"));
        assert_eq!(
            clear_session(false).unwrap(),
            "tollgate_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            login("f00d", false).unwrap(),
            "tollgate_login=f00d; Path=/dashboard/login; Max-Age=3600; HttpOnly; SameSite=Strict"
        );
        assert!(session("bad\nvalue", 1, false).is_none());
    }

    #[test]
    fn cookies_are_found_among_others_and_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; tollgate_sessionx=no"),
        );
        headers.append(
            COOKIE,
            HeaderValue::from_static("theme=dark;tollgate_session=tgs_x ; b=2"),
        );
        assert_eq!(get(&headers, SESSION), Some("tgs_x"));
        assert_eq!(get(&headers, "a"), Some("1"));
        assert_eq!(get(&headers, LOGIN), None);
        assert_eq!(get(&HeaderMap::new(), SESSION), None);
    }
}
