//! Admin API keys: each acts as one member, with that member's current role.

use super::Caller;
use super::keys::{KeyChange, key_event};
use crate::app::App;
use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use serde::Deserialize;
use tollgate_core::key::PlainKey;
use tollgate_core::tenant::{ApiKey, KeyOwner, KeySpec};

/// The body of `POST /v1/organization/admin_api_keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminKey {
    /// Display name.
    pub name: String,
    /// The member the key acts as; the caller by default.
    #[serde(default)]
    pub member_id: Option<String>,
}

/// An admin key of the tenant, or 404.
pub async fn get(app: &App, tenant_id: &str, key_id: &str) -> Result<ApiKey, ApiError> {
    app.store
        .get_key(tenant_id, key_id)
        .await?
        .filter(|k| matches!(k.owner, KeyOwner::Member(_)))
        .ok_or_else(|| ApiError::not_found("admin API key", key_id))
}

/// 403 unless `caller` may manage admin keys of `member_id`: admins their own, owners anyone's.
fn may_manage(caller: &AdminKey, member_id: &str) -> Result<(), ApiError> {
    caller.require_write()?;
    if member_id != caller.member_id {
        caller.require_owner()?;
    }
    Ok(())
}

/// Issues an admin key for the caller or (owners only) another member; the secret is returned this once.
pub async fn create(
    app: &App,
    caller: &AdminKey,
    by: &Caller,
    input: CreateAdminKey,
) -> Result<(ApiKey, PlainKey), ApiError> {
    let member_id = input.member_id.unwrap_or_else(|| caller.member_id.clone());
    may_manage(caller, &member_id)?;
    let name = super::name(&input.name, "name")?;
    let member = super::members::get(app, caller.tenant_id(), &member_id).await?;
    let (key, secret) = ApiKey::issue(
        &app.prefixes,
        caller.tenant_id(),
        KeyOwner::Member(member.id),
        KeySpec {
            name,
            ..KeySpec::default()
        },
        Some(caller.member_id.clone()),
        app.clock.now(),
    );
    let event = key_event(by, KeyChange::Created, &key, key.created_at);
    app.store.insert_key(&key, None, &event).await?;
    app.keys.invalidate(&key.digest).await;
    Ok((key, secret))
}

/// Revokes an admin key of the caller or (owners only) of another member.
pub async fn revoke(
    app: &App,
    caller: &AdminKey,
    by: &Caller,
    key_id: &str,
) -> Result<ApiKey, ApiError> {
    let key = get(app, caller.tenant_id(), key_id).await?;
    if let KeyOwner::Member(member_id) = &key.owner {
        may_manage(caller, member_id)?;
    }
    super::keys::revoke(app, by, &key).await
}
