//! Authentication as extractors: a handler names the credential it needs (`ProjectKey`, `AdminKey`, `Operator`),
//! and the extractor runs the hot path: header → format and checksum (no I/O) → kind → digest → key cache → store
//! on a miss → status, tenant, project and source-address checks. Nothing here ever logs or echoes a key.

use crate::app::AppState;
use crate::config::ExposeSecret;
use crate::dashboard;
use crate::error::{ApiError, AuthFailure};
use crate::idempotency;
use crate::middleware::access_log::AccessRecord;
use crate::middleware::auth_failures;
use crate::middleware::client_ip::SourceIp;
use crate::middleware::origin::RequestOrigin;
use crate::pipeline::audit::AuditSlot;
use crate::pipeline::audit::Claim;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tollgate_core::audit::{Actor, AuditEvent, EventType};
use tollgate_core::catalog::ModelSpec;
use tollgate_core::idempotency::OPERATOR_SCOPE;
use tollgate_core::key::KeyKind;
use tollgate_core::role::Role;
use tollgate_core::tenant::{KeyStatus, Principal, ProjectStatus, TenantStatus};

/// The credential presented, if any: `Authorization: Bearer …` or `X-Api-Key: …` (both: they must agree).
fn presented_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let bearer = match headers.get(AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::Unauthorized(AuthFailure::Malformed))?;
            let (scheme, token) = value
                .split_once(' ')
                .ok_or(ApiError::Unauthorized(AuthFailure::Malformed))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(ApiError::Unauthorized(AuthFailure::Malformed));
            }
            Some(token.trim())
        }
    };
    let api_key = match headers.get("x-api-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::Unauthorized(AuthFailure::Malformed))?
                .trim(),
        ),
    };
    match (bearer, api_key) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_request(
            "Conflicting credentials: Authorization and X-Api-Key carry different keys",
            None,
        )),
        (Some(k), _) | (None, Some(k)) if !k.is_empty() => Ok(k),
        (Some(_), _) | (None, Some(_)) => Err(ApiError::Unauthorized(AuthFailure::Malformed)),
        (None, None) => Err(ApiError::Unauthorized(AuthFailure::Missing)),
    }
}

/// Authenticates a key of the `needed` kind and checks everything about it that does not depend on the route.
async fn authenticate(
    parts: &Parts,
    state: &AppState,
    needed: KeyKind,
) -> Result<Arc<Principal>, ApiError> {
    let raw = presented_key(&parts.headers)?;
    let (kind, key) = match state.prefixes.parse(raw) {
        Ok(parsed) => parsed,
        Err(_) => {
            auth_failures::count(state, parts).await?;
            return Err(ApiError::Unauthorized(AuthFailure::Malformed));
        }
    };
    if kind != needed {
        return Err(ApiError::Unauthorized(match needed {
            KeyKind::Admin => AuthFailure::NeedsAdminKey,
            KeyKind::Project => AuthFailure::NeedsProjectKey,
        }));
    }
    let digest = key.digest();
    let principal = match state.keys.cached(&digest).await {
        Some(Some(principal)) => principal,
        Some(None) => {
            auth_failures::count(state, parts).await?;
            return Err(ApiError::Unauthorized(AuthFailure::Invalid));
        }
        None => {
            // A miss reads the store: an address over its failure limit is refused before that read. Only a read
            // that finds nothing counts (a client's first requests with a new key, however many at once, do not).
            auth_failures::admit(state, parts).await?;
            match state.keys.lookup(&digest, state.store.as_ref()).await? {
                Some(principal) => principal,
                None => {
                    auth_failures::add(state, parts).await;
                    return Err(ApiError::Unauthorized(AuthFailure::Invalid));
                }
            }
        }
    };
    // From here on the request is attributable to a key, refused or not.
    if let Some(record) = parts.extensions.get::<AccessRecord>() {
        record.record_principal(&principal);
    }
    // The prefix said which kind the key is; the record must agree (a swapped prefix configuration or a bad import
    // could pair a project-prefixed value with an admin key's record, which must not act as a project key).
    if principal.key.kind() != needed {
        return Err(ApiError::Unauthorized(match needed {
            KeyKind::Admin => AuthFailure::NeedsAdminKey,
            KeyKind::Project => AuthFailure::NeedsProjectKey,
        }));
    }
    // An inference request with a project key leaves an audit event from here on, refused or not.
    if needed == KeyKind::Project
        && let Some(slot) = parts.extensions.get::<AuditSlot>()
    {
        slot.identify(&principal, || RequestOrigin::of(parts).0);
    }
    match principal.key.status(state.clock.now()) {
        KeyStatus::Active => {}
        KeyStatus::Revoked => return Err(ApiError::Unauthorized(AuthFailure::Revoked)),
        KeyStatus::Expired => {
            // Its first refusal is an `api_key.expired` event; once recorded, the cached record says so and no
            // later refusal touches the store.
            if needed == KeyKind::Project && principal.key.expiry_recorded_at.is_none() {
                crate::service::keys::record_expiry(
                    state,
                    &principal.key,
                    RequestOrigin::of(parts).0,
                )
                .await;
            }
            return Err(ApiError::Unauthorized(AuthFailure::Expired));
        }
    }
    if principal.tenant_status == TenantStatus::Suspended {
        return Err(ApiError::forbidden(
            "This organization is suspended; contact the operator of this deployment",
        ));
    }
    if principal.project_status == Some(ProjectStatus::Archived) {
        return Err(ApiError::Unauthorized(AuthFailure::ProjectArchived));
    }
    if !principal.key.allowed_ips.is_empty() {
        let source = parts.extensions.get::<SourceIp>().copied().ok_or_else(|| {
            ApiError::Internal("no source address: the client_ip layer is missing".to_owned())
        })?;
        if !source.is_in(&principal.key.allowed_ips) {
            return Err(ApiError::forbidden(match source {
                SourceIp::Known(ip) => format!("Requests from {ip} are not allowed for this API key"),
                SourceIp::Unknown => "This API key is limited to allowed_ips, and the request's source address \
                                      is unknown (a trusted proxy sent an unreadable X-Forwarded-For)"
                    .to_owned(),
            }));
        }
    }
    Ok(principal)
}

/// A request made with an active project key (and where to record, for the access log and the audit event, what
/// it asked for).
#[derive(Debug, Clone)]
pub struct ProjectKey(
    pub Arc<Principal>,
    Option<AccessRecord>,
    Option<AuditSlot>,
    Option<idempotency::Slot>,
);

impl FromRequestParts<AppState> for ProjectKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(parts, state, KeyKind::Project).await?;
        // The pipeline's idempotency stage claims the key, after the rate limit.
        Ok(Self(
            principal,
            parts.extensions.get::<AccessRecord>().cloned(),
            parts.extensions.get::<AuditSlot>().cloned(),
            parts.extensions.get::<idempotency::Slot>().cloned(),
        ))
    }
}

impl ProjectKey {
    /// Records the public model this request uses, for its access-log line and its audit event.
    pub fn record_model(&self, spec: &Arc<ModelSpec>) {
        if let Some(record) = &self.1 {
            record.record_model(&spec.id);
        }
        if let Some(slot) = &self.2 {
            slot.record_model(spec);
        }
    }

    /// Hands this request's audit event to its bill (see [`AuditSlot::claim`]).
    pub fn claim_audit(&self) -> Claim {
        self.2
            .as_ref()
            .map_or_else(Claim::default, AuditSlot::claim)
    }

    /// The request's `Idempotency-Key` slot, if it sent one.
    pub fn idempotency(&self) -> Option<&idempotency::Slot> {
        self.3.as_ref()
    }

    /// The request's audit slot, if the edge opened one.
    pub fn audit(&self) -> Option<&AuditSlot> {
        self.2.as_ref()
    }

    /// Whether this key may use the public model `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.0
            .key
            .models
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|m| m == model))
    }
}

/// A management request with `Idempotency-Key` is authenticated in `scope`: the key is claimed once its body is read
/// (`extract::RawBody`). A member's replay (`member`: the member's id, and the admin key used, if one was) writes a
/// `request.replayed` event in the tenant's log; the operator's requests belong to no tenant's log.
fn claim_at_body(
    parts: &Parts,
    state: &AppState,
    scope: &str,
    member: Option<(&str, Option<&tollgate_core::tenant::ApiKey>)>,
) {
    let Some(slot) = parts.extensions.get::<idempotency::Slot>() else {
        return;
    };
    let replay_event = member.map(|(member_id, key)| {
        let event = AuditEvent::new(
            EventType::RequestReplayed,
            scope,
            Actor::member(member_id),
            state.clock.now(),
            &RequestOrigin::of(parts).0,
        );
        match key {
            Some(key) => event.key(&key.id, &key.last4),
            None => event,
        }
    });
    slot.claim_at_body(scope, replay_event);
}

/// A management request made as a member: with an active admin key, or with a dashboard session's cookie (and,
/// for anything but a read, the session's CSRF token in `X-CSRF-Token`). Either way it acts with the member's
/// current role.
#[derive(Debug, Clone)]
pub struct AdminKey {
    /// The tenant it acts in.
    tenant_id: String,
    /// The tenant's plan (what key settings it allows).
    pub tenant_plan: String,
    /// The member's current role.
    pub role: Role,
    /// The member it acts as.
    pub member_id: String,
}

/// The header a dashboard session's management API requests that change anything carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let has_key =
            parts.headers.contains_key(AUTHORIZATION) || parts.headers.contains_key("x-api-key");
        if !has_key
            && dashboard::cookies::get(&parts.headers, dashboard::cookies::SESSION).is_some()
        {
            return Self::from_session(parts, state).await;
        }
        let principal = authenticate(parts, state, KeyKind::Admin).await?;
        let member_id = match &principal.key.owner {
            tollgate_core::tenant::KeyOwner::Member(id) => id.clone(),
            tollgate_core::tenant::KeyOwner::Project(_) => {
                return Err(ApiError::Unauthorized(AuthFailure::NeedsAdminKey));
            }
        };
        // An admin key whose member is gone (the store returns no role) acts as nobody.
        let role = principal
            .role
            .ok_or(ApiError::Unauthorized(AuthFailure::Revoked))?;
        let key = &principal.key;
        claim_at_body(parts, state, &key.tenant_id, Some((&member_id, Some(key))));
        Ok(Self {
            tenant_id: key.tenant_id.clone(),
            tenant_plan: principal.tenant_plan.clone(),
            role,
            member_id,
        })
    }
}

impl AdminKey {
    /// A request with a session cookie and no key: the session's member, if the session is live (else 401) and, for
    /// a request that may change something, the session's CSRF token came with it (else 403: a cookie alone is what
    /// another site's form would send).
    async fn from_session(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let me = match dashboard::session::SignedIn::lookup(parts, state).await? {
            dashboard::session::Lookup::Live(me) => me,
            dashboard::session::Lookup::Absent | dashboard::session::Lookup::Ended => {
                return Err(ApiError::Unauthorized(AuthFailure::SessionEnded));
            }
        };
        if !parts.method.is_safe() {
            let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !dashboard::csrf::matches(&me.csrf, presented) {
                return Err(ApiError::forbidden(
                    "A dashboard session's requests that change anything must send its CSRF token in X-CSRF-Token",
                ));
            }
        }
        claim_at_body(parts, state, &me.tenant_id, Some((&me.member_id, None)));
        Ok(Self {
            tenant_id: me.tenant_id,
            tenant_plan: me.plan,
            role: me.role,
            member_id: me.member_id,
        })
    }

    /// The tenant this request acts in.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// 403 unless the member may create, change or delete keys and projects.
    pub fn require_write(&self) -> Result<(), ApiError> {
        require_write(self.role)
    }

    /// 403 unless the member is an owner (members and other members' admin keys are the owners' to manage).
    pub fn require_owner(&self) -> Result<(), ApiError> {
        require_owner(self.role)
    }
}

/// 403 unless `role` may create, change or delete keys and projects. The one check (and message) for every way a
/// member acts: an admin key ([`AdminKey::require_write`]) and a dashboard session.
pub fn require_write(role: Role) -> Result<(), ApiError> {
    if role.can_write_keys() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "Your role ({}) may read but not create, change or delete; ask an admin or owner",
            role.as_str()
        )))
    }
}

/// 403 unless `role` is an owner's (members and other members' admin keys are the owners' to manage); shared as
/// [`require_write`] is.
pub fn require_owner(role: Role) -> Result<(), ApiError> {
    if role.can_manage_members() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "Only owners may do this; your role is {}",
            role.as_str()
        )))
    }
}

/// A request made with the operator token.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state
            .config
            .operator_token
            .as_ref()
            .map(ExposeSecret::expose_secret)
        else {
            return Err(ApiError::NotFound {
                message: "The operator API is disabled: set operator_token".to_owned(),
                code: None,
                param: None,
            });
        };
        let presented = presented_key(&parts.headers)?;
        // Compare digests so neither the token's content nor its length leaks through timing.
        let a = Sha256::digest(presented.as_bytes());
        let b = Sha256::digest(expected.as_bytes());
        if bool::from(a.ct_eq(&b)) {
            // The operator's requests belong to no tenant's log: a replay is in the access log only.
            claim_at_body(parts, state, OPERATOR_SCOPE, None);
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized(AuthFailure::NeedsOperatorToken))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn status(r: Result<&str, ApiError>) -> String {
        match r {
            Ok(k) => format!("ok:{k}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn credentials_come_from_bearer_or_x_api_key() {
        assert_eq!(
            status(presented_key(&headers(&[("authorization", "Bearer k1")]))),
            "ok:k1"
        );
        assert_eq!(
            status(presented_key(&headers(&[("authorization", "bearer k1")]))),
            "ok:k1"
        );
        assert_eq!(
            status(presented_key(&headers(&[("x-api-key", "k2")]))),
            "ok:k2"
        );
        assert_eq!(
            status(presented_key(&headers(&[
                ("authorization", "Bearer k"),
                ("x-api-key", "k")
            ]))),
            "ok:k"
        );
        assert!(
            status(presented_key(&headers(&[
                ("authorization", "Bearer a"),
                ("x-api-key", "b")
            ])))
            .starts_with("Conflicting")
        );
        assert_eq!(
            status(presented_key(&headers(&[("authorization", "Basic abc")]))),
            "Malformed API key"
        );
        assert_eq!(
            status(presented_key(&headers(&[("authorization", "k1")]))),
            "Malformed API key"
        );
        assert_eq!(
            status(presented_key(&headers(&[("authorization", "Bearer ")]))),
            "Malformed API key"
        );
        assert_eq!(status(presented_key(&HeaderMap::new())), "Missing API key");
    }
}
