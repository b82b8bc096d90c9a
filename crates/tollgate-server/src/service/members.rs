//! Members and roles: add, change role, set a dashboard password, remove. Only owners do these; the last owner
//! stays.

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

/// The body of `POST /v1/organization/members/{id}`: a new role, a new dashboard password (`null` clears it), or
/// both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    /// The new role.
    #[serde(default)]
    pub role: Option<String>,
    /// The new password; `null`: none (the member can no longer sign in to the dashboard).
    #[serde(default, deserialize_with = "super::keys::nullable")]
    pub password: Option<Option<String>>,
}

/// A role by its name, or 400 naming `role`.
pub fn parse_role(raw: &str) -> Result<Role, ApiError> {
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
    let role = parse_role(&input.role)?;
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

/// Applies an update: the password is checked (and hashed) and the role parsed before either is written, so a bad
/// value changes nothing; then the role, then the password. 400 when the update names neither.
pub async fn update(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    member_id: &str,
    input: UpdateMember,
) -> Result<Member, ApiError> {
    let role = input.role.as_deref().map(parse_role).transpose()?;
    let password_hash = match input.password {
        None => None,
        Some(None) => Some(None),
        Some(Some(pw)) => Some(Some(hash_password(pw, "password").await?)),
    };
    let mut member = match role {
        Some(role) => set_role(app, by, tenant_id, member_id, role).await?,
        None if password_hash.is_none() => {
            return Err(ApiError::bad_request(
                "Send a role, a password, or both",
                None,
            ));
        }
        None => get(app, tenant_id, member_id).await?,
    };
    if let Some(hash) = password_hash {
        member = store_password(app, by, tenant_id, &member.id, hash).await?;
    }
    Ok(member)
}

/// Sets (or, with `None`, clears) a member's dashboard password, after checking it (400 naming `password`).
pub async fn set_password(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    member_id: &str,
    password: Option<String>,
) -> Result<Member, ApiError> {
    let hash = match password {
        None => None,
        Some(pw) => Some(hash_password(pw, "password").await?),
    };
    store_password(app, by, tenant_id, member_id, hash).await
}

/// Writes a password hash with its `member.password_changed` event (`{"password": "set" | "cleared"}`, never the
/// hash).
async fn store_password(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    member_id: &str,
    hash: Option<String>,
) -> Result<Member, ApiError> {
    let event = by
        .event(EventType::MemberPasswordChanged, tenant_id, app.clock.now())
        .target(member_id)
        .details(&json!({"password": if hash.is_some() { "set" } else { "cleared" }}));
    app.store
        .set_password(tenant_id, member_id, hash.as_deref(), &event)
        .await?
        .ok_or_else(|| ApiError::not_found("member", member_id))
}

/// Changes a member's role (`member.role_changed`, whose `{"from", "to"}` the store fills; none for the role it
/// has); the member's admin keys act with it from their next request.
pub async fn set_role(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    member_id: &str,
    role: Role,
) -> Result<Member, ApiError> {
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
