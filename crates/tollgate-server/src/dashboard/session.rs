//! Dashboard sessions on the server side: [`SignedIn`], the extractor every page and form post starts from (the
//! cookie → [`SessionToken::parse`] → the store's live session and its member as they are now → touched at most
//! once a minute), and starting and ending sessions. A session acts as its member with the member's current role,
//! exactly as an admin key does: the role checks are the API's own (`middleware::auth::require_*`), and the
//! changes are the services' own, with the member as their actor.

use super::cookies;
use super::errors::DashError;
use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth;
use crate::middleware::origin::RequestOrigin;
use crate::service::Caller;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tollgate_core::audit::{Actor, AuditEvent, EventType, Origin};
use tollgate_core::id;
use tollgate_core::role::Role;
use tollgate_core::session::{Session, SessionToken};
use tollgate_core::tenant::{TenantStatus, Timestamp};

/// Sessions' ids (`sess_…`): how events name a session, never its token.
pub const SESSION_ID_PREFIX: &str = "sess_";

/// A session's `last_seen_at` moves forward at most this often (seconds): idle expiry needs no finer grain, and
/// most requests then cost no write.
pub const TOUCH_AFTER: Timestamp = 60;

/// The member a dashboard request acts as: a live session's, with the member's role as it is now.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session's id.
    pub session_id: String,
    /// When the session ends whatever its use.
    pub expires_at: Timestamp,
    /// The tenant.
    pub tenant_id: String,
    /// The tenant's name.
    pub tenant_name: String,
    /// The tenant's plan (what key settings it allows).
    pub plan: String,
    /// The member.
    pub member_id: String,
    /// The member's email.
    pub email: String,
    /// The member's current role.
    pub role: Role,
    /// The session's CSRF token: every form it posts carries it.
    pub csrf: String,
    /// Where the request came from, for the audit events its changes write.
    pub origin: RequestOrigin,
}

impl SignedIn {
    /// Who acts, for the services: this member, from this request.
    pub fn caller(&self) -> Caller {
        Caller::acting_member(&self.member_id, self.origin.clone())
    }

    /// Whether the role may create, change and delete keys and projects (pages show those controls only then).
    pub fn can_write(&self) -> bool {
        auth::require_write(self.role).is_ok()
    }

    /// Whether the role may manage members.
    pub fn is_owner(&self) -> bool {
        auth::require_owner(self.role).is_ok()
    }

    /// 403 page unless the role may write: the API's check and message.
    pub fn require_write(&self) -> Result<(), DashError> {
        auth::require_write(self.role).map_err(DashError::from)
    }

    /// 403 page unless the member is an owner: the API's check and message.
    pub fn require_owner(&self) -> Result<(), DashError> {
        auth::require_owner(self.role).map_err(DashError::from)
    }
}

/// `dashboard_session_idle_minutes` in seconds.
fn idle_seconds(state: &AppState) -> Timestamp {
    Timestamp::try_from(
        state
            .config
            .dashboard_session_idle_minutes
            .saturating_mul(60),
    )
    .unwrap_or(Timestamp::MAX)
}

/// What a request's session cookie names.
#[derive(Debug)]
pub enum Lookup {
    /// No session cookie.
    Absent,
    /// A cookie that names no live session (signed out, expired, idle, its member removed, or not a token at all).
    Ended,
    /// A live session.
    Live(Box<SignedIn>),
}

impl SignedIn {
    /// The session the request's cookie names, touched when its last use is over a minute old; a suspended
    /// tenant's is refused (403). Shared by the dashboard's pages and the management API, which a session may call
    /// as an admin key would.
    pub async fn lookup(parts: &Parts, state: &AppState) -> Result<Lookup, ApiError> {
        let Some(raw) = cookies::get(&parts.headers, cookies::SESSION) else {
            return Ok(Lookup::Absent);
        };
        // A cookie that is not a token's shape costs no store read.
        let Some(token) = SessionToken::parse(raw) else {
            return Ok(Lookup::Ended);
        };
        let now = state.clock.now();
        let found = state
            .store
            .session_by_digest(
                &token.digest(),
                now,
                now.saturating_sub(idle_seconds(state)),
            )
            .await?;
        let Some(found) = found else {
            return Ok(Lookup::Ended);
        };
        if found.tenant_status == TenantStatus::Suspended {
            return Err(ApiError::forbidden(
                "This organization is suspended; contact the operator of this deployment",
            ));
        }
        let session = found.session;
        if now.saturating_sub(session.last_seen_at) >= TOUCH_AFTER
            && let Err(error) = state.store.touch_session(&session.id, now).await
        {
            // The request is served either way; a session not touched may end a minute early.
            tracing::warn!(%error, "could not record a dashboard session's use");
        }
        Ok(Lookup::Live(Box::new(Self {
            session_id: session.id,
            expires_at: session.expires_at,
            tenant_id: session.tenant_id,
            tenant_name: found.tenant_name,
            plan: found.tenant_plan,
            member_id: session.member_id,
            email: found.email,
            role: found.role,
            csrf: token.csrf_token(),
            origin: RequestOrigin::of(parts),
        })))
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, DashError> {
        match Self::lookup(parts, state).await? {
            Lookup::Live(me) => Ok(*me),
            Lookup::Absent => Err(DashError::SignIn { clear: false }),
            Lookup::Ended => Err(DashError::SignIn { clear: true }),
        }
    }
}

/// Starts a session for `member_id` of `tenant_id`, signed in from `origin`: a new token (returned, for the cookie;
/// the store keeps its digest) and the session with its `login.succeeded` event, written together.
pub async fn start(
    state: &AppState,
    tenant_id: &str,
    member_id: &str,
    origin: &Origin,
) -> Result<(SessionToken, Session), ApiError> {
    let now = state.clock.now();
    let hours = Timestamp::try_from(state.config.dashboard_session_hours).unwrap_or(1);
    let token = SessionToken::generate();
    let session = Session {
        id: id::new_id(SESSION_ID_PREFIX),
        digest: token.digest(),
        tenant_id: tenant_id.to_owned(),
        member_id: member_id.to_owned(),
        created_at: now,
        last_seen_at: now,
        expires_at: now.saturating_add(hours.saturating_mul(3_600)),
        revoked_at: None,
    };
    let event = AuditEvent::new(
        EventType::LoginSucceeded,
        tenant_id,
        Actor::member(member_id),
        now,
        origin,
    )
    .target(&session.id);
    state.store.create_session(&session, &event).await?;
    Ok((token, session))
}

/// Signs `me`'s session out, with its `session.revoked` event: the cookie stops working on every node at once.
pub async fn end(state: &AppState, me: &SignedIn) -> Result<(), ApiError> {
    let now = state.clock.now();
    let event = me
        .caller()
        .event(EventType::SessionRevoked, &me.tenant_id, now)
        .target(&me.session_id);
    state
        .store
        .revoke_session(&me.session_id, now, &event)
        .await?;
    Ok(())
}
