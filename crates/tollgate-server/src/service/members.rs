//! Members and roles: add, change role, remove. Only owners do these; the last owner stays.

use super::Caller;
use crate::app::App;
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::json;
use tollgate_core::audit::{AuditEvent, EventType};
use tollgate_core::ports::StoreError;
use tollgate_core::role::Role;
use tollgate_core::tenant::{Member, normalize_email};
use tollgate_core::{id, password};

/// The body of `POST /v1/organization/members`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Email, unique among the tenant's members.
    pub email: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    /// For the dashboard.
    #[serde(default)]
    pub password: Option<String>,
}

/// The body of `POST /v1/organization/members/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    /// The new role.
    pub role: String,
}

fn role(raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw).ok_or_else(|| {
        ApiError::bad_request("role must be 'owner', 'admin' or 'member'", Some("role"))
    })
}

/// A current member of the tenant, or 404.
pub async fn get(app: &App, tenant_id: &str, member_id: &str) -> Result<Member, ApiError> {
    app.store
        .get_member(tenant_id, member_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member", member_id))
}

/// An Argon2id hash of a new password, or 400 naming `param` if the password is unacceptable.
pub async fn hash_password(password: String, param: &str) -> Result<String, ApiError> {
    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(param)))
}

/// The `member.added` event of `member` (added to a tenant, or a new tenant's owner): its role in the details, and
/// nothing of its password.
pub(super) fn added_event(by: &Caller, member: &Member) -> AuditEvent {
    by.event(EventType::MemberAdded, &member.tenant_id, member.created_at)
        .target(&member.id)
        .details(&json!({"role": member.role.as_str()}))
}

/// Adds a member; 409 if a current member already has the email.
pub async fn add(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    input: AddMember,
) -> Result<Member, ApiError> {
    let email = normalize_email(&input.email).ok_or_else(|| {
        ApiError::bad_request("email is not a valid email address", Some("email"))
    })?;
    let role = role(&input.role)?;
    let password_hash = match input.password {
        None => None,
        Some(pw) => Some(hash_password(pw, "password").await?),
    };
    let member = Member {
        id: id::new_id(id::MEMBER),
        tenant_id: tenant_id.to_owned(),
        email,
        role,
        password_hash,
        created_at: app.clock.now(),
    };
    let event = added_event(by, &member);
    app.store
        .add_member(&member, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict {
                message: format!("{} is already a member of this organization", member.email),
                code: Some("member_exists"),
            },
            other => other.into(),
        })?;
    Ok(member)
}

/// Changes a member's role (`member.role_changed`, whose `{"from", "to"}` the store fills; none for the role it
/// has); the member's admin keys act with it from their next request.
pub async fn set_role(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    member_id: &str,
    input: UpdateMember,
) -> Result<Member, ApiError> {
    let role = role(&input.role)?;
    let event = by
        .event(EventType::MemberRoleChanged, tenant_id, app.clock.now())
        .target(member_id);
    let member = app
        .store
        .set_role(tenant_id, member_id, role, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("member", member_id))?;
    app.keys.invalidate_tenant(tenant_id);
    Ok(member)
}

/// Removes a member and revokes its admin keys at once (`member.removed`, and `admin_api_key.revoked` for each key,
/// which the store adds).
pub async fn remove(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    member_id: &str,
) -> Result<Member, ApiError> {
    let now = app.clock.now();
    let event = by
        .event(EventType::MemberRemoved, tenant_id, now)
        .target(member_id);
    let removed = app
        .store
        .remove_member(tenant_id, member_id, now, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("member", member_id))?;
    for digest in &removed.revoked {
        app.keys.invalidate(digest).await;
    }
    Ok(removed.member)
}
