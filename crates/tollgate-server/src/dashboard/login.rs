//! Signing in and out: `GET /dashboard/login` (the form, with its double-submit CSRF cookie), `POST
//! /dashboard/login` (email and password, throttled per account and per source address, Argon2id off the async
//! workers; the first tenant whose member's password matches gets the session) and `POST /dashboard/logout`.
//!
//! Every way a sign-in can fail that would tell an email's owner from a stranger (no such email, no password set,
//! a wrong password) reads the same, "Email or password is wrong", and costs about the same time. A known member's
//! wrong password is a `login.failed` event in its tenant's log.

use super::cookies;
use super::csrf;
use super::errors::DashError;
use super::form::{NoFields, Params, PlainForm, Posted};
use super::page::{self, Chrome};
use super::session::{self, SignedIn};
use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth_failures;
use crate::middleware::client_ip::SourceIp;
use crate::middleware::origin::RequestOrigin;
use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use tollgate_core::audit::{Actor, AuditEvent, EventType};
use tollgate_core::password;
use tollgate_core::ports::{Bucket, Decision, Scope, Unit};
use tollgate_core::session::LoginCandidate;
use tollgate_core::tenant::{TenantStatus, normalize_email};

/// Failed sign-ins an account (an email) may have per minute before it must wait.
pub const ACCOUNT_FAILURES_PER_MINUTE: u64 = 10;
/// Failed sign-ins a source address may have per minute (several people may share one address).
pub const ADDRESS_FAILURES_PER_MINUTE: u64 = 30;
/// What every sign-in that did not match says.
pub const WRONG: &str = "Email or password is wrong";

/// The sign-in form's fields. No `Debug`: it holds a password.
#[derive(Deserialize)]
pub struct LoginInput {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// `GET /dashboard/login`'s query.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Set after signing out: the page says so.
    #[serde(default)]
    signed_out: Option<String>,
}

/// `login.html`.
#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginTemplate {
    chrome: Chrome,
    csrf: String,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
}

/// The sign-in page with `status`, its form carrying `token` (and the response setting it as the form's cookie).
fn form_page(
    state: &AppState,
    status: StatusCode,
    token: String,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
) -> Response {
    let cookie = cookies::login(&token, state.config.dashboard_secure_cookie);
    let mut response = page::html(
        status,
        &LoginTemplate {
            chrome: Chrome::signed_out("Sign in"),
            csrf: token,
            email,
            error,
            notice,
        },
    );
    if let Some(cookie) = cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// `GET /dashboard/login`: the form, or the dashboard for someone signed in already.
pub async fn page(
    State(state): State<AppState>,
    mut parts: Parts,
    Params(query): Params<LoginQuery>,
) -> Response {
    if SignedIn::from_request_parts(&mut parts, &state)
        .await
        .is_ok()
    {
        return page::see_other(super::PREFIX);
    }
    let notice = query.signed_out.is_some().then_some("You have signed out.");
    form_page(
        &state,
        StatusCode::OK,
        csrf::login_token(),
        String::new(),
        None,
        notice,
    )
}

/// The two buckets of failed sign-ins a sign-in counts against: its account's and its address's.
struct Throttle {
    /// Hex SHA-256 of the normalised email (no email in the limiter's keys), or `None` for a string that is no
    /// email at all, which counts against its address only.
    account: Option<String>,
    address: String,
}

impl Throttle {
    fn new(email: Option<&str>, source: Option<SourceIp>) -> Self {
        Self {
            account: email.map(|e| {
                Sha256::digest(e.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            }),
            address: auth_failures::address_of(source),
        }
    }

    fn buckets(&self, cost: u64) -> Vec<Bucket<'_>> {
        let mut buckets = vec![Bucket {
            scope: Scope::LoginAddress,
            id: &self.address,
            unit: Unit::Requests,
            per_minute: ADDRESS_FAILURES_PER_MINUTE,
            cost,
        }];
        if let Some(account) = &self.account {
            buckets.push(Bucket {
                scope: Scope::LoginAccount,
                id: account,
                unit: Unit::Requests,
                per_minute: ACCOUNT_FAILURES_PER_MINUTE,
                cost,
            });
        }
        buckets
    }

    /// The seconds to wait, if the account or the address is over its limit now (a check of cost 0: it counts
    /// nothing, so the limits count failures only).
    async fn wait(&self, state: &AppState) -> Option<u64> {
        match state.limiter.check(&self.buckets(0)).await {
            Ok(Decision::Refused { retry_after_ms, .. }) => {
                Some(retry_after_ms.div_ceil(1000).max(1))
            }
            Ok(Decision::Admitted(_)) => None,
            Err(error) => {
                // As for bad API keys: a limiter that cannot answer must not lock every member out.
                tracing::warn!(%error, "sign-in limit unavailable; not checked");
                None
            }
        }
    }

    /// Counts one failed sign-in against both buckets.
    async fn fail(&self, state: &AppState) {
        for bucket in self.buckets(1) {
            if let Err(error) = state.limiter.adjust(&bucket, 1).await {
                tracing::warn!(%error, "sign-in limit unavailable; failure not counted");
            }
        }
    }
}

/// What checking a password against an email's members found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Verdict {
    /// The first candidate of an active tenant whose password matches.
    matched: Option<usize>,
    /// Whether the password matched only in suspended tenants.
    suspended: bool,
}

/// A hash no password matches in practice, verified when an email has no candidate, so that an unknown email
/// takes as long to refuse as a known one.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| password::hash("tollgate decoy password, never set").unwrap_or_default())
}

/// Checks `password` against each candidate in order, off the async workers (Argon2id takes tens of
/// milliseconds of CPU).
async fn verify(password: String, candidates: Vec<(String, bool)>) -> Result<Verdict, ApiError> {
    tokio::task::spawn_blocking(move || {
        if candidates.is_empty() {
            password::verify(&password, decoy_hash());
            return Verdict::default();
        }
        let mut verdict = Verdict::default();
        for (i, (hash, active)) in candidates.iter().enumerate() {
            if password::verify(&password, hash) {
                if *active {
                    verdict.matched = Some(i);
                    return verdict;
                }
                verdict.suspended = true;
            }
        }
        verdict
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `login.failed` in each candidate's tenant: its member's password did not match.
async fn record_failures(state: &AppState, candidates: &[LoginCandidate], origin: &RequestOrigin) {
    if candidates.is_empty() {
        return;
    }
    let now = state.clock.now();
    let events: Vec<AuditEvent> = candidates
        .iter()
        .map(|c| {
            AuditEvent::new(
                EventType::LoginFailed,
                &c.tenant_id,
                Actor::member(&c.member_id),
                now,
                &origin.0,
            )
            .target(&c.member_id)
            .details(&json!({"reason": "wrong_password"}))
        })
        .collect();
    if let Err(error) = state.store.append_audit(&events).await {
        tracing::warn!(%error, "could not record failed dashboard sign-ins in the audit log");
    }
}

/// `POST /dashboard/login`.
pub async fn submit(
    State(state): State<AppState>,
    parts: Parts,
    PlainForm(input): PlainForm<LoginInput>,
) -> Result<Response, DashError> {
    // The form's token must be the one its page set as a cookie: another site's form cannot know it, and a
    // cross-site post does not carry the (SameSite=Strict) cookie.
    let expected = cookies::get(&parts.headers, cookies::LOGIN).unwrap_or_default();
    if expected.is_empty() || !csrf::matches(expected, input.csrf.as_deref()) {
        return Err(DashError::page(
            StatusCode::FORBIDDEN,
            "This sign-in form has expired or was not sent from this dashboard. Open the sign-in page again \
             and sign in from there.",
        ));
    }
    let token = expected.to_owned();
    let email = normalize_email(&input.email);
    let typed = input.email.trim().to_owned();
    let throttle = Throttle::new(
        email.as_deref(),
        parts.extensions.get::<SourceIp>().copied(),
    );
    if let Some(seconds) = throttle.wait(&state).await {
        let unit = if seconds == 1 { "second" } else { "seconds" };
        return Ok(form_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            token,
            typed,
            Some(format!(
                "Too many failed sign-ins. Wait {seconds} {unit}, then try again."
            )),
            None,
        ));
    }
    let Some(email) = email else {
        throttle.fail(&state).await;
        return Ok(form_page(
            &state,
            StatusCode::UNAUTHORIZED,
            token,
            typed,
            Some(format!(
                "{WRONG}. Enter the email address you were added with."
            )),
            None,
        ));
    };
    let candidates = state
        .store
        .login_candidates(&email)
        .await
        .map_err(ApiError::from)?;
    let verdict = verify(
        input.password,
        candidates
            .iter()
            .map(|c| {
                (
                    c.password_hash.clone(),
                    c.tenant_status == TenantStatus::Active,
                )
            })
            .collect(),
    )
    .await?;
    let origin = RequestOrigin::of(&parts);
    let Some(found) = verdict.matched.and_then(|i| candidates.get(i)) else {
        if verdict.suspended {
            // The password was right: saying why it does not work tells the member nothing they may not know.
            return Err(DashError::from(ApiError::forbidden(
                "This organization is suspended; contact the operator of this deployment",
            )));
        }
        throttle.fail(&state).await;
        record_failures(&state, &candidates, &origin).await;
        return Ok(form_page(
            &state,
            StatusCode::UNAUTHORIZED,
            token,
            email,
            Some(WRONG.to_owned()),
            None,
        ));
    };
    let (session_token, session) =
        session::start(&state, &found.tenant_id, &found.member_id, &origin.0).await?;
    let secure = state.config.dashboard_secure_cookie;
    let mut response = page::see_other(super::PREFIX);
    let max_age = session.expires_at.saturating_sub(state.clock.now());
    for cookie in [
        cookies::session(session_token.expose_secret(), max_age, secure),
        cookies::clear_login(secure),
    ]
    .into_iter()
    .flatten()
    {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `POST /dashboard/logout`: ends the session everywhere and drops its cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    Posted { me, .. }: Posted<NoFields>,
) -> Result<Response, DashError> {
    session::end(&state, &me).await?;
    let mut response = page::see_other("/dashboard/login?signed_out=1");
    if let Some(cookie) = cookies::clear_session(state.config.dashboard_secure_cookie) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_active_match_wins_and_suspended_ones_are_told_apart() {
        let a = password::hash("password-a").unwrap();
        let b = password::hash("password-b").unwrap();
        let verdict = verify(
            "password-b".into(),
            vec![(a.clone(), true), (b.clone(), true)],
        )
        .await
        .unwrap();
        assert_eq!(verdict.matched, Some(1));
        let verdict = verify("password-b".into(), vec![(b.clone(), false), (b, true)])
            .await
            .unwrap();
        assert_eq!(verdict.matched, Some(1));
        let verdict = verify("password-a".into(), vec![(a.clone(), false)])
            .await
            .unwrap();
        assert_eq!(
            verdict,
            Verdict {
                matched: None,
                suspended: true
            }
        );
        assert_eq!(
            verify("nope-nope".into(), vec![(a, true)]).await.unwrap(),
            Verdict::default()
        );
        assert_eq!(
            verify("anything".into(), Vec::new()).await.unwrap(),
            Verdict::default()
        );
    }

    #[test]
    fn sign_ins_count_per_account_digest_and_per_address() {
        let source = Some(SourceIp::Known("2001:db8:1:2:3:4:5:6".parse().unwrap()));
        let throttle = Throttle::new(Some("a@example.com"), source);
        let buckets = throttle.buckets(1);
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].scope, Scope::LoginAddress);
        assert_eq!(buckets[0].id, "2001:db8:1:2::/64");
        assert_eq!(buckets[0].per_minute, 30);
        assert_eq!(buckets[1].scope, Scope::LoginAccount);
        assert_eq!(buckets[1].id.len(), 64);
        assert!(!buckets[1].id.contains("example"));
        assert_eq!(buckets[1].per_minute, 10);
        assert_eq!(Throttle::new(None, None).buckets(0).len(), 1);
    }
}
