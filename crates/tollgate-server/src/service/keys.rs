//! Issuing, finding and revoking keys.

use super::{Caller, excerpt};
use crate::app::App;
use crate::error::ApiError;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use tollgate_core::audit::{AuditEvent, EventType};
use tollgate_core::key::PlainKey;
use tollgate_core::ports::{KeyLimit, StoreError};
use tollgate_core::tenant::Timestamp;
use tollgate_core::tenant::{ApiKey, KeyOwner, KeySpec, Principal, ProjectStatus};

/// The body of `POST /v1/organization/projects/{id}/api_keys` (and `tollgate key create`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectKey {
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Unix seconds; must be in the future.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// CIDRs (a bare address means just that address).
    #[serde(default)]
    pub allowed_ips: Option<Vec<String>>,
    /// Public model ids this key may use.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A key of this project, or 404.
pub async fn project_key(
    app: &App,
    tenant_id: &str,
    project_id: &str,
    key_id: &str,
) -> Result<ApiKey, ApiError> {
    app.store
        .get_key(tenant_id, key_id)
        .await?
        .filter(|k| k.owner == KeyOwner::Project(project_id.to_owned()))
        .ok_or_else(|| ApiError::not_found("API key", key_id))
}

/// Parses `allowed_ips`: every entry a CIDR or a bare address.
fn parse_networks(entries: &[String]) -> Result<Vec<IpNet>, ApiError> {
    entries
        .iter()
        .map(|raw| {
            let raw = raw.trim();
            raw.parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ApiError::bad_request(
                        format!(
                            "allowed_ips: '{}' is not a CIDR such as 203.0.113.0/24",
                            excerpt(raw)
                        ),
                        Some("allowed_ips"),
                    )
                })
        })
        .collect()
}

/// Checks a key request against the deployment and the tenant's plan and turns it into a `KeySpec`.
fn validate(app: &App, tenant_plan: &str, input: CreateProjectKey) -> Result<KeySpec, ApiError> {
    let name = super::name(&input.name, "name")?;
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1024)
    {
        return Err(ApiError::bad_request(
            "description must be at most 1024 characters",
            Some("description"),
        ));
    }
    if let Some(at) = input.expires_at
        && at <= app.clock.now()
    {
        return Err(ApiError::bad_request(
            "expires_at must be in the future",
            Some("expires_at"),
        ));
    }
    let allowed_ips = parse_networks(input.allowed_ips.as_deref().unwrap_or_default())?;
    if !allowed_ips.is_empty() && !app.plans.get(tenant_plan).is_some_and(|p| p.ip_allowlist) {
        return Err(ApiError::Forbidden {
            message: format!(
                "The {tenant_plan} plan does not include IP allow-lists (allowed_ips)"
            ),
            param: Some("allowed_ips".to_owned()),
        });
    }
    if let Some(unknown) = input
        .models
        .iter()
        .flatten()
        .find(|m| app.catalog.get(m).is_none())
    {
        return Err(ApiError::bad_request(
            format!(
                "models: '{}' is not a model of this deployment",
                excerpt(unknown)
            ),
            Some("models"),
        ));
    }
    Ok(KeySpec {
        name,
        description: input.description,
        expires_at: input.expires_at,
        allowed_ips,
        models: input.models,
    })
}

/// What happened to a key, as either kind of key names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyChange {
    /// `api_key.created` / `admin_api_key.created`.
    Created,
    /// `api_key.revoked` / `admin_api_key.revoked`.
    Revoked,
}

/// The event of `change` to `key` by `by` at `at`. A project key's event names the key (`key_id`, `key_last4`),
/// its project and, as the target, the key; an admin key's names the key only as its target (API.md keeps
/// `key_id` and `key_last4` for project keys) and the member it acts as in its details. Never the secret.
pub(super) fn key_event(by: &Caller, change: KeyChange, key: &ApiKey, at: Timestamp) -> AuditEvent {
    let (project_kind, admin_kind) = match change {
        KeyChange::Created => (EventType::ApiKeyCreated, EventType::AdminApiKeyCreated),
        KeyChange::Revoked => (EventType::ApiKeyRevoked, EventType::AdminApiKeyRevoked),
    };
    match &key.owner {
        KeyOwner::Project(project_id) => by
            .event(project_kind, &key.tenant_id, at)
            .target(&key.id)
            .key(&key.id, &key.last4)
            .project(project_id),
        KeyOwner::Member(member_id) => by
            .event(admin_kind, &key.tenant_id, at)
            .target(&key.id)
            .details(&json!({"member_id": member_id})),
    }
}

/// Issues a project key in an active project of the tenant (created by the calling member, if a member calls); the
/// secret is returned this once.
pub async fn create_project_key(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    tenant_plan: &str,
    project_id: &str,
    input: CreateProjectKey,
) -> Result<(ApiKey, PlainKey), ApiError> {
    let project = super::projects::get(app, tenant_id, project_id).await?;
    if project.status == ProjectStatus::Archived {
        return Err(ApiError::bad_request(
            format!("Project '{project_id}' is archived; create keys in an active project"),
            None,
        ));
    }
    let spec = validate(app, tenant_plan, input)?;
    let (key, secret) = ApiKey::issue(
        &app.prefixes,
        tenant_id,
        KeyOwner::Project(project.id),
        spec,
        by.member_id().map(str::to_owned),
        app.clock.now(),
    );
    let plan = app.plans.get(tenant_plan);
    let limit = plan.and_then(|p| p.max_keys).map(|max_active| KeyLimit {
        max_active,
        now: app.clock.now(),
    });
    let event = key_event(by, KeyChange::Created, &key, key.created_at);
    app.store
        .insert_key(&key, limit, &event)
        .await
        .map_err(|e| match (e, limit) {
            (StoreError::KeyLimitReached, Some(limit)) => ApiError::forbidden(format!(
                "The {tenant_plan} plan allows {} active API keys; revoke one or upgrade the plan",
                limit.max_active
            )),
            (other, _) => other.into(),
        })?;
    // A digest is unguessable, but make sure no earlier miss for it lingers in the negative cache.
    app.keys.invalidate(&key.digest).await;
    Ok((key, secret))
}

/// Revokes a key (project or admin, as found) and forgets it in the key cache, so its very next request fails.
/// Revoking a revoked key is harmless and writes no event.
pub async fn revoke(app: &App, by: &Caller, key: &ApiKey) -> Result<ApiKey, ApiError> {
    let now = app.clock.now();
    let event = key_event(by, KeyChange::Revoked, key, now);
    let key = app
        .store
        .revoke_key(&key.tenant_id, &key.id, now, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("API key", &key.id))?;
    app.keys.invalidate(&key.digest).await;
    Ok(key)
}

/// Which tenant, project and key a found string is (for `tollgate key lookup`); `None` if it is not one of ours.
pub async fn lookup(app: &App, raw: &str) -> Result<Option<Arc<Principal>>, ApiError> {
    let Ok((_, key)) = app.prefixes.parse(raw.trim()) else {
        return Ok(None);
    };
    Ok(app
        .store
        .principal_by_digest(&key.digest())
        .await?
        .map(Arc::new))
}
