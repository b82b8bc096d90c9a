//! Issuing, finding, updating, rolling and revoking keys, and recording a key's expiry. Every rule about a key's
//! fields is checked here, once, for creation and update alike.

use super::{Caller, excerpt};
use crate::app::App;
use crate::error::ApiError;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use serde_json::value::RawValue;
use std::net::IpAddr;
use std::sync::Arc;
use tollgate_core::audit::{Actor, AuditEvent, Cause, EventType, Origin};
use tollgate_core::key::PlainKey;
use tollgate_core::money::Micros;
use tollgate_core::ports::{KeyLimit, StoreError};
use tollgate_core::tenant::{
    ApiKey, KeyChanges, KeyOwner, KeySpec, KeyStatus, Principal, ProjectStatus, RateLimits,
    SpendLimit, SpendPeriod, Timestamp,
};

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
    /// The key's own per-minute limits.
    #[serde(default)]
    pub rate_limits: Option<RateLimitsInput>,
    /// A spend cap in cents; with `spend_limit_period`.
    #[serde(default)]
    pub spend_limit_cents: Option<CentsInput>,
    /// `month` or `total`; with `spend_limit_cents`.
    #[serde(default)]
    pub spend_limit_period: Option<String>,
}

/// The body of `POST /v1/organization/projects/{id}/api_keys/{key_id}`: any of the creation fields; an absent one
/// stays as it is, `null` clears a nullable one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectKey {
    /// Display name (not nullable).
    #[serde(default, deserialize_with = "nullable")]
    pub name: Option<Option<String>>,
    /// Free text.
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    /// Unix seconds, in the future; `null`: never.
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<i64>>,
    /// CIDRs; `null` or `[]`: any source.
    #[serde(default, deserialize_with = "nullable")]
    pub allowed_ips: Option<Option<Vec<String>>>,
    /// Public model ids; `null`: all.
    #[serde(default, deserialize_with = "nullable")]
    pub models: Option<Option<Vec<String>>>,
    /// Replaces the key's rate limits whole (a field left out is null); `null`: the plan's.
    #[serde(default, deserialize_with = "nullable")]
    pub rate_limits: Option<Option<RateLimitsInput>>,
    /// The cap; `null` (with `spend_limit_period` `null`): none.
    #[serde(default, deserialize_with = "nullable")]
    pub spend_limit_cents: Option<Option<CentsInput>>,
    /// The cap's period.
    #[serde(default, deserialize_with = "nullable")]
    pub spend_limit_period: Option<Option<String>>,
}

/// The body of `POST /v1/organization/projects/{id}/api_keys/{key_id}/roll`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollProjectKey {
    /// How long the old key keeps working, 0 (the default) to [`MAX_GRACE_PERIOD_SECONDS`].
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
}

/// The longest grace period a roll grants the old key: 30 days, long enough to redeploy anything, short enough
/// that a roll is never a way to keep a key alive.
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 30 * 86_400;

/// `rate_limits` as sent: either limit may be null or left out.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsInput {
    /// Requests per minute, positive.
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute, positive.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// A money field as sent: a JSON number of cents, read from its text, so an amount is exact (no float on the way)
/// and one finer than a micro-cent is refused, never rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CentsInput(pub Micros);

impl<'de> Deserialize<'de> for CentsInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Micros::parse_cents(raw.get())
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// Reads a present field as `Some(value)`, `null` as `Some(None)`; with `#[serde(default)]` an absent one is
/// `None`, so an update can tell "leave it" from "clear it".
pub(super) fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
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

/// A description: at most 1024 characters.
fn description(raw: Option<String>) -> Result<Option<String>, ApiError> {
    if raw.as_ref().is_some_and(|d| d.chars().count() > 1024) {
        return Err(ApiError::bad_request(
            "description must be at most 1024 characters",
            Some("description"),
        ));
    }
    Ok(raw)
}

/// An expiry: in the future.
fn expiry(app: &App, at: Option<Timestamp>) -> Result<Option<Timestamp>, ApiError> {
    if let Some(at) = at
        && at <= app.clock.now()
    {
        return Err(ApiError::bad_request(
            "expires_at must be in the future",
            Some("expires_at"),
        ));
    }
    Ok(at)
}

/// `allowed_ips`, parsed, and only on a plan that includes IP allow-lists (403 naming the plan).
fn networks(app: &App, tenant_plan: &str, entries: &[String]) -> Result<Vec<IpNet>, ApiError> {
    let allowed_ips = parse_networks(entries)?;
    if !allowed_ips.is_empty() && !app.plans.get(tenant_plan).is_some_and(|p| p.ip_allowlist) {
        return Err(ApiError::Forbidden {
            message: format!(
                "The {tenant_plan} plan does not include IP allow-lists (allowed_ips)"
            ),
            param: Some("allowed_ips".to_owned()),
        });
    }
    Ok(allowed_ips)
}

/// A model allow-list: models of this deployment.
fn models(app: &App, models: Option<Vec<String>>) -> Result<Option<Vec<String>>, ApiError> {
    if let Some(unknown) = models
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
    Ok(models)
}

/// `rate_limits`: each limit a positive integer (that the store can hold) or null; both null is none.
fn rate_limits(input: Option<RateLimitsInput>) -> Result<Option<RateLimits>, ApiError> {
    let Some(input) = input else {
        return Ok(None);
    };
    for (value, param) in [
        (input.requests_per_minute, "rate_limits.requests_per_minute"),
        (input.tokens_per_minute, "rate_limits.tokens_per_minute"),
    ] {
        if value.is_some_and(|v| v == 0 || i64::try_from(v).is_err()) {
            return Err(ApiError::bad_request(
                format!("{param} must be a positive integer or null"),
                Some(param),
            ));
        }
    }
    let limits = RateLimits {
        requests_per_minute: input.requests_per_minute,
        tokens_per_minute: input.tokens_per_minute,
    };
    Ok((limits != RateLimits::default()).then_some(limits))
}

/// `spend_limit_period`: `month` or `total`.
fn spend_period(raw: Option<String>) -> Result<Option<SpendPeriod>, ApiError> {
    raw.map(|p| {
        SpendPeriod::parse(&p).ok_or_else(|| {
            ApiError::bad_request(
                format!(
                    "spend_limit_period must be \"month\" or \"total\", not '{}'",
                    excerpt(&p)
                ),
                Some("spend_limit_period"),
            )
        })
    })
    .transpose()
}

/// A spend cap from its two fields, which are set together and cleared together.
fn spend_limit(
    amount: Option<Micros>,
    period: Option<SpendPeriod>,
) -> Result<Option<SpendLimit>, ApiError> {
    match (amount, period) {
        (None, None) => Ok(None),
        (Some(amount), Some(period)) => Ok(Some(SpendLimit { amount, period })),
        (Some(_), None) => Err(ApiError::bad_request(
            "spend_limit_period (\"month\" or \"total\") is required with spend_limit_cents",
            Some("spend_limit_period"),
        )),
        (None, Some(_)) => Err(ApiError::bad_request(
            "spend_limit_cents is required with spend_limit_period; clear both together with null",
            Some("spend_limit_cents"),
        )),
    }
}

/// Checks a key request against the deployment and the tenant's plan and turns it into a `KeySpec`.
fn validate(app: &App, tenant_plan: &str, input: CreateProjectKey) -> Result<KeySpec, ApiError> {
    Ok(KeySpec {
        name: super::name(&input.name, "name")?,
        description: description(input.description)?,
        expires_at: expiry(app, input.expires_at)?,
        allowed_ips: networks(
            app,
            tenant_plan,
            input.allowed_ips.as_deref().unwrap_or_default(),
        )?,
        models: models(app, input.models)?,
        rate_limits: rate_limits(input.rate_limits)?,
        spend_limit: spend_limit(
            input.spend_limit_cents.map(|c| c.0),
            spend_period(input.spend_limit_period)?,
        )?,
    })
}

/// Checks an update against the deployment, the tenant's plan and `key` as it is (a spend cap's other half) and
/// turns it into `KeyChanges`.
fn validate_changes(
    app: &App,
    tenant_plan: &str,
    key: &ApiKey,
    input: UpdateProjectKey,
) -> Result<KeyChanges, ApiError> {
    let name = match input.name {
        None => None,
        Some(None) => {
            return Err(ApiError::bad_request("name cannot be null", Some("name")));
        }
        Some(Some(name)) => Some(super::name(&name, "name")?),
    };
    // Either half of the cap may change alone; the other half is the key's, and the pair must still be whole.
    let spend = match (input.spend_limit_cents, input.spend_limit_period) {
        (None, None) => None,
        (amount, period) => {
            let amount = match amount {
                None => key.spend_limit.map(|l| l.amount),
                Some(amount) => amount.map(|c| c.0),
            };
            let period = match period {
                None => key.spend_limit.map(|l| l.period),
                Some(period) => spend_period(period)?,
            };
            Some(spend_limit(amount, period)?)
        }
    };
    Ok(KeyChanges {
        name,
        description: input.description.map(description).transpose()?,
        expires_at: input.expires_at.map(|at| expiry(app, at)).transpose()?,
        allowed_ips: input
            .allowed_ips
            .map(|ips| networks(app, tenant_plan, ips.as_deref().unwrap_or_default()))
            .transpose()?,
        models: input.models.map(|m| models(app, m)).transpose()?,
        rate_limits: input.rate_limits.map(rate_limits).transpose()?,
        spend_limit: spend,
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

/// The event of `kind` about the project key `key` with `cause`: it names the key (`key_id`, `key_last4`), its
/// project and, as the target, the key (a roll re-targets it to the successor). Never the secret.
fn project_key_event(cause: &Cause, kind: EventType, key: &ApiKey, project_id: &str) -> AuditEvent {
    cause
        .event(kind, &key.tenant_id)
        .target(&key.id)
        .key(&key.id, &key.last4)
        .project(project_id)
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
        KeyOwner::Project(project_id) => {
            project_key_event(&by.at(at), project_kind, key, project_id)
        }
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

/// 409 unless `key` is active at `now`: a revoked or expired key is final.
fn ensure_active(key: &ApiKey, now: Timestamp, action: &str) -> Result<(), ApiError> {
    match key.status(now) {
        KeyStatus::Active => Ok(()),
        status => Err(ApiError::Conflict {
            message: format!(
                "API key '{}' is {}; only an active key can be {action}",
                key.id,
                status.as_str()
            ),
            code: None,
        }),
    }
}

/// The project of a project key (an admin key has none: 404, as any key this route does not know).
fn project_of(key: &ApiKey) -> Result<&str, ApiError> {
    match &key.owner {
        KeyOwner::Project(project_id) => Ok(project_id),
        KeyOwner::Member(_) => Err(ApiError::not_found("API key", &key.id)),
    }
}

/// Updates a project key's fields (never its secret) and forgets it in the key cache, so its next request on this
/// node sees the change (other nodes: the change log, within a second). `api_key.updated` names the fields that
/// changed; an update that changes nothing writes no event. A revoked or expired key cannot be updated (409).
pub async fn update_project_key(
    app: &App,
    by: &Caller,
    tenant_plan: &str,
    key: &ApiKey,
    input: UpdateProjectKey,
) -> Result<ApiKey, ApiError> {
    let project_id = project_of(key)?;
    let changes = validate_changes(app, tenant_plan, key, input)?;
    let now = app.clock.now();
    ensure_active(key, now, "updated")?;
    let event = project_key_event(&by.at(now), EventType::ApiKeyUpdated, key, project_id);
    let updated = app
        .store
        .update_key(&key.tenant_id, &key.id, &changes, now, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("API key", &key.id))?;
    app.keys.invalidate(&key.digest).await;
    Ok(updated)
}

/// Rolls a project key: a successor with a new secret (returned this once) and the same settings, and the old key
/// expiring `grace_period_seconds` from now (or at its own expiry, if sooner), in one transaction with
/// `api_key.rolled` (the old key as `key_id`, the successor as the target). The plan's key limit does not refuse
/// a roll: the old key is on its way out. A revoked or expired key cannot be rolled (409).
pub async fn roll(
    app: &App,
    by: &Caller,
    key: &ApiKey,
    input: RollProjectKey,
) -> Result<(ApiKey, PlainKey), ApiError> {
    let project_id = project_of(key)?;
    let grace = input.grace_period_seconds.unwrap_or(0);
    if !(0..=MAX_GRACE_PERIOD_SECONDS).contains(&grace) {
        return Err(ApiError::bad_request(
            format!("grace_period_seconds must be 0 to {MAX_GRACE_PERIOD_SECONDS} (30 days)"),
            Some("grace_period_seconds"),
        ));
    }
    let project = super::projects::get(app, &key.tenant_id, project_id).await?;
    if project.status == ProjectStatus::Archived {
        return Err(ApiError::bad_request(
            format!("Project '{project_id}' is archived; its keys cannot be rolled"),
            None,
        ));
    }
    let now = app.clock.now();
    ensure_active(key, now, "rolled")?;
    let (successor, secret) = key.successor(&app.prefixes, by.member_id().map(str::to_owned), now);
    let event = project_key_event(&by.at(now), EventType::ApiKeyRolled, key, project_id)
        .target(&successor.id)
        .details(&json!({"grace_period_seconds": grace}));
    let old = app
        .store
        .roll_key(
            &key.tenant_id,
            &key.id,
            &successor,
            now.saturating_add(grace),
            now,
            &event,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("API key", &key.id))?;
    app.keys.invalidate(&old.digest).await;
    // As for a created key: no earlier miss for the new digest may linger in the negative cache.
    app.keys.invalidate(&successor.digest).await;
    Ok((successor, secret))
}

/// Records that a project key was found expired by a request from `origin` (`api_key.expired`, its actor the key,
/// as for its requests), unless that is already recorded: the store writes it once, whichever node asks first.
/// Then the key is forgotten in this node's cache, so its next lookup reads the record and asks no more. A failure
/// is logged, not answered: the request is refused as expired either way, and the next refusal asks again.
pub async fn record_expiry(app: &App, key: &ApiKey, origin: Origin) {
    let Ok(project_id) = project_of(key) else {
        return;
    };
    let now = app.clock.now();
    let cause = Cause {
        actor: Actor::project_key(&key.id),
        at: now,
        origin,
    };
    let event = project_key_event(&cause, EventType::ApiKeyExpired, key, project_id)
        .details(&json!({"expires_at": key.expires_at}));
    match app
        .store
        .record_key_expiry(&key.tenant_id, &key.id, now, &event)
        .await
    {
        Ok(_) => app.keys.invalidate(&key.digest).await,
        Err(error) => tracing::warn!(
            key_id = %key.id,
            %error,
            "could not record a key's expiry in the audit log; its next refused request tries again"
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    fn param(e: ApiError) -> Option<String> {
        match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("not a 400: {other}"),
        }
    }

    #[test]
    fn money_fields_are_read_exactly_from_their_text() {
        let update: UpdateProjectKey =
            parse_json(br#"{"spend_limit_cents": 0.000001, "spend_limit_period": "month"}"#)
                .unwrap();
        assert_eq!(update.spend_limit_cents, Some(Some(CentsInput(Micros(1)))));
        let update: UpdateProjectKey = parse_json(br#"{"spend_limit_cents": null}"#).unwrap();
        assert_eq!(update.spend_limit_cents, Some(None));
        let update: UpdateProjectKey = parse_json(br#"{"name": "x"}"#).unwrap();
        assert_eq!(update.spend_limit_cents, None);
        let create: CreateProjectKey =
            parse_json(br#"{"name": "x", "spend_limit_cents": 1e2}"#).unwrap();
        assert_eq!(
            create.spend_limit_cents,
            Some(CentsInput(Micros(100_000_000)))
        );
    }

    #[test]
    fn a_bad_field_is_named_even_beside_a_money_field() {
        // The failure path parses again, tracking the path: the money field must read the same way there.
        for (body, at) in [
            (
                &br#"{"spend_limit_cents": 0.0000001}"#[..],
                "spend_limit_cents",
            ),
            (br#"{"spend_limit_cents": -1}"#, "spend_limit_cents"),
            (br#"{"spend_limit_cents": "5"}"#, "spend_limit_cents"),
            (br#"{"spend_limit_cents": 5, "models": 3}"#, "models"),
            (br#"{"spend_limit_cents": 5, "nope": 3}"#, "nope"),
            (
                br#"{"rate_limits": {"requests_per_minute": -1}}"#,
                "rate_limits.requests_per_minute",
            ),
            (br#"{"rate_limits": {"rpm": 1}}"#, "rate_limits.rpm"),
        ] {
            let e = parse_json::<UpdateProjectKey>(body).unwrap_err();
            let shown = e.to_string();
            assert_eq!(param(e).as_deref(), Some(at), "{shown}");
        }
    }
}
