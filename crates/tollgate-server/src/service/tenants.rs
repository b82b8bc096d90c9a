//! Creating tenants.

use super::keys::{KeyChange, key_event};
use super::members::hash_password;
use super::{Caller, excerpt};
use crate::app::App;
use crate::error::ApiError;
use serde::Deserialize;
use tollgate_core::key::PlainKey;
use tollgate_core::ports::TenantUpdate;
use tollgate_core::tenant::{NewTenant, Tenant, TenantStatus, normalize_email};

/// `POST /operator/v1/tenants` and `tollgate tenant create`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name.
    pub name: String,
    /// A plan the config defines.
    pub plan: String,
    /// The owner's email.
    pub owner_email: String,
    /// The owner's dashboard password.
    #[serde(default)]
    pub owner_password: Option<String>,
}

/// Validates and writes a tenant with its Default project, owner and the owner's admin key (whose secret is
/// returned this once), and the events of their creation: `project.created`, `member.added`,
/// `admin_api_key.created` (API.md has no event for the tenant itself).
pub async fn create(
    app: &App,
    by: &Caller,
    input: CreateTenant,
) -> Result<(NewTenant, PlainKey), ApiError> {
    let name = super::name(&input.name, "name")?;
    known_plan(app, &input.plan)?;
    let email = normalize_email(&input.owner_email).ok_or_else(|| {
        ApiError::bad_request(
            "owner_email is not a valid email address",
            Some("owner_email"),
        )
    })?;
    let password_hash = match input.owner_password {
        None => None,
        Some(pw) => Some(hash_password(pw, "owner_password").await?),
    };
    let (tenant, secret) = NewTenant::build(
        &app.prefixes,
        name,
        input.plan,
        email,
        password_hash,
        app.clock.now(),
    );
    let events = [
        super::projects::created_event(by, &tenant.project),
        super::members::added_event(by, &tenant.owner),
        key_event(
            by,
            KeyChange::Created,
            &tenant.admin_key,
            tenant.admin_key.created_at,
        ),
    ];
    app.store.create_tenant(&tenant, &events).await?;
    Ok((tenant, secret))
}

/// 400 unless the deployment defines `plan`.
fn known_plan(app: &App, plan: &str) -> Result<(), ApiError> {
    if app.plans.contains_key(plan) {
        return Ok(());
    }
    let offered: Vec<&str> = app.plans.keys().map(String::as_str).collect();
    Err(ApiError::bad_request(
        format!(
            "Unknown plan '{}'; this deployment offers: {}",
            excerpt(plan),
            offered.join(", ")
        ),
        Some("plan"),
    ))
}

/// `POST /operator/v1/tenants/{id}`: what may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// A plan the config defines.
    #[serde(default)]
    pub plan: Option<String>,
    /// `active` or `suspended`.
    #[serde(default)]
    pub status: Option<String>,
    /// Overrides the plan's requests per minute for this tenant; `null` goes back to the plan's.
    #[serde(default, deserialize_with = "super::keys::nullable")]
    pub requests_per_minute: Option<Option<u64>>,
    /// Overrides the plan's tokens per minute for this tenant; `null` goes back to the plan's.
    #[serde(default, deserialize_with = "super::keys::nullable")]
    pub tokens_per_minute: Option<Option<u64>>,
}

/// Changes a tenant's plan, status or its override of the plan's rate limits (the store writes `tenant.plan_changed`, `tenant.suspended` or
/// `tenant.reactivated` for what actually changes). Its cached keys are forgotten here at once (and on other
/// nodes through the change log), so the change holds from the next request.
pub async fn update(
    app: &App,
    by: &Caller,
    id: &str,
    input: UpdateTenant,
) -> Result<Tenant, ApiError> {
    if let Some(plan) = &input.plan {
        known_plan(app, plan)?;
    }
    let status = input
        .status
        .as_deref()
        .map(|s| {
            TenantStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("status must be 'active' or 'suspended'", Some("status"))
            })
        })
        .transpose()?;
    for (value, param) in [
        (input.requests_per_minute, "requests_per_minute"),
        (input.tokens_per_minute, "tokens_per_minute"),
    ] {
        if value
            .flatten()
            .is_some_and(|v| v == 0 || i64::try_from(v).is_err())
        {
            return Err(ApiError::bad_request(
                format!("{param} must be a positive integer or null"),
                Some(param),
            ));
        }
    }
    let update = TenantUpdate {
        plan: input.plan,
        status,
        requests_per_minute: input.requests_per_minute,
        tokens_per_minute: input.tokens_per_minute,
    };
    let tenant = app
        .store
        .update_tenant(id, &update, &by.at(app.clock.now()))
        .await?
        .ok_or_else(|| ApiError::not_found("organization", id))?;
    app.keys.invalidate_tenant(id);
    Ok(tenant)
}
