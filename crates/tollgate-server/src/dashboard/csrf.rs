//! Cross-site request forgery: every dashboard form that changes something carries a hidden `csrf` field, and the
//! post is refused (403 page) unless it equals the token this request's cookie entitles it to, compared in constant
//! time. Signed in, that token is [`SessionToken::csrf_token`] (derived from the session's secret, so it needs no
//! storage and only the cookie's holder can know it); on the sign-in form, a random token that the same response
//! also sets as the `tollgate_login` cookie (double submit), so another site cannot sign a browser in to an account
//! of its choosing.

use super::errors::DashError;
use subtle::ConstantTimeEq;
use tollgate_core::session::SessionToken;

/// The hidden field's name.
pub const FIELD: &str = "csrf";

/// Whether the presented token is the expected one. Constant time in the tokens' content (their length, 64 hex
/// digits, is no secret).
pub fn matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|presented| bool::from(expected.as_bytes().ct_eq(presented.as_bytes())))
}

/// 403 page unless the presented token is the expected one.
pub fn check(expected: &str, presented: Option<&str>) -> Result<(), DashError> {
    if matches(expected, presented) {
        Ok(())
    } else {
        Err(DashError::csrf())
    }
}

/// A fresh token for a sign-in form: 256 random bits as 64 hex digits (a session token's derived token, from a
/// session that is never stored: the same generator, so the same strength).
pub fn login_token() -> String {
    SessionToken::generate().csrf_token()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    #[test]
    fn only_the_expected_token_passes() {
        let token = SessionToken::generate();
        let expected = token.csrf_token();
        assert!(matches(&expected, Some(&expected)));
        assert!(!matches(&expected, None));
        assert!(!matches(&expected, Some("")));
        assert!(!matches(&expected, Some(&expected[..63])));
        assert!(!matches(
            &expected,
            Some(&SessionToken::generate().csrf_token())
        ));
        assert!(!matches(&expected, Some(&format!("{expected}0"))));
        assert!(check(&expected, Some(&expected)).is_ok());
        let refused = check(&expected, Some("forged"))
            .unwrap_err()
            .into_response();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_ne!(login_token(), login_token());
        assert_eq!(login_token().len(), 64);
    }
}
