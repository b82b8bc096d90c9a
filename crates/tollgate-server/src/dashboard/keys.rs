//! API keys, per project (`/dashboard/projects/{project_id}/keys`; `/dashboard` leads to the first active
//! project's): the table (name, description, redacted value, created, last used, status, requests per day over the
//! last 7 days, so a rotation can be watched until the old key's traffic is zero), and for admins and owners
//! create, edit, roll and revoke, through `service::keys` as the management API does. A new or rolled key's value
//! is in the response to that post alone, in a dialog; never in a URL, a redirect or any later page.

use super::chart;
use super::errors::DashError;
use super::form::{Ids, NoFields, Params, Posted};
use super::format;
use super::page::{self, Chrome, FieldErrors, Section};
use super::session::SignedIn;
use crate::app::AppState;
use crate::service::keys::{
    self as service, CreateProjectKey, MAX_GRACE_PERIOD_SECONDS, RateLimitsInput, RollProjectKey,
    UpdateProjectKey,
};
use crate::service::projects;
use crate::service::usage::{self, DAY, UsageParams};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use std::collections::HashMap;
use tollgate_core::ports::{KeyScope, PageRequest};
use tollgate_core::tenant::{ApiKey, KeyStatus, Project, ProjectStatus};

/// Days of traffic shown per key.
const TRAFFIC_DAYS: usize = 7;
/// Keys per page (the store's largest page).
const PAGE: u32 = 100;

/// The path of a project's keys page.
pub fn keys_path(project_id: &str) -> String {
    format!("/dashboard/projects/{project_id}/keys")
}

/// `GET /dashboard`: the first active project's keys (the projects page when there is none).
pub async fn home(State(state): State<AppState>, me: SignedIn) -> Result<Response, DashError> {
    let projects = all_projects(&state, &me).await?;
    Ok(
        match projects.iter().find(|p| p.status == ProjectStatus::Active) {
            Some(project) => page::see_other(&keys_path(&project.id)),
            None => page::see_other(Section::Projects.href()),
        },
    )
}

/// The tenant's projects (the first page of 100: the switcher's and the redirect's).
pub(super) async fn all_projects(
    state: &AppState,
    me: &SignedIn,
) -> Result<Vec<Project>, DashError> {
    Ok(state
        .store
        .list_projects(
            &me.tenant_id,
            &PageRequest {
                after: None,
                limit: PAGE,
            },
        )
        .await
        .map_err(crate::error::ApiError::from)?
        .items)
}

/// The keys page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct KeysQuery {
    /// The previous page's last key.
    #[serde(default)]
    after: Option<String>,
    /// What the last post did, for the page to say.
    #[serde(default)]
    notice: Option<String>,
}

/// A key's value, shown once.
struct Shown {
    heading: String,
    value: String,
    note: Option<String>,
}

/// One row of the table, with its dialogs' fields.
struct Row {
    id: String,
    name: String,
    description: String,
    redacted: String,
    created: String,
    last_used: String,
    expires: String,
    status: &'static str,
    active: bool,
    rolled_from: Option<String>,
    requests: u64,
    spark: String,
    edit: EditValues,
    edit_open: bool,
    edit_errors: FieldErrors,
    grace: String,
    roll_open: bool,
    roll_errors: FieldErrors,
}

/// The edit form's fields, as text.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EditValues {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// One CIDR per line (or comma-separated).
    #[serde(default)]
    allowed_ips: String,
    /// Model ids, comma-separated; empty: all.
    #[serde(default)]
    models: String,
    #[serde(default)]
    requests_per_minute: String,
    #[serde(default)]
    tokens_per_minute: String,
}

impl EditValues {
    fn of(key: &ApiKey) -> Self {
        let limits = key.rate_limits.unwrap_or_default();
        let number = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        Self {
            name: key.name.clone(),
            description: key.description.clone().unwrap_or_default(),
            allowed_ips: key
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            models: key.models.as_deref().unwrap_or_default().join(", "),
            requests_per_minute: number(limits.requests_per_minute),
            tokens_per_minute: number(limits.tokens_per_minute),
        }
    }
}

/// A project in the switcher.
struct ProjectLink {
    name: String,
    href: String,
    current: bool,
}

/// `keys.html`.
#[derive(Template)]
#[template(path = "dashboard/keys.html")]
struct KeysTemplate {
    chrome: Chrome,
    project_id: String,
    project_name: String,
    archived: bool,
    can_write: bool,
    ip_allowlist: bool,
    projects: Vec<ProjectLink>,
    rows: Vec<Row>,
    next: Option<String>,
    notice: Option<&'static str>,
    shown: Option<Shown>,
    create: CreateForm,
    create_errors: FieldErrors,
    csrf: String,
    max_grace: i64,
}

/// What the page shows besides the keys: the outcome of the post it answers.
#[derive(Default)]
struct Outcome {
    notice: Option<&'static str>,
    shown: Option<Shown>,
    create: CreateForm,
    create_errors: FieldErrors,
    /// A key's edit form sent back: the key, the values sent, the errors.
    edit: Option<(String, EditValues, FieldErrors)>,
    /// A key's roll form sent back.
    roll: Option<(String, String, FieldErrors)>,
}

impl Outcome {
    fn status(&self) -> StatusCode {
        let failed = self.create_errors.any()
            || self.edit.as_ref().is_some_and(|e| e.2.any())
            || self.roll.as_ref().is_some_and(|r| r.2.any());
        if failed {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        }
    }
}

/// Requests per key and day over the last [`TRAFFIC_DAYS`] days (today included), from the usage report the API
/// serves, grouped by key and day.
async fn traffic(
    state: &AppState,
    me: &SignedIn,
    project_id: &str,
) -> Result<HashMap<String, [u64; TRAFFIC_DAYS]>, DashError> {
    let now = state.clock.now();
    let since = now - now.rem_euclid(DAY) - (TRAFFIC_DAYS as i64 - 1) * DAY;
    let report = usage::totals(
        state,
        &me.tenant_id,
        Some(project_id),
        &UsageParams {
            since: Some(since.max(0).to_string()),
            until: None,
            group_by: Some("key,day".to_owned()),
        },
    )
    .await?;
    let mut by_key: HashMap<String, [u64; TRAFFIC_DAYS]> = HashMap::new();
    for total in &report.totals {
        let (Some(key), Some(day)) = (&total.key_id, total.day) else {
            continue;
        };
        let index = usize::try_from((day - report.first_day) / DAY).unwrap_or(usize::MAX);
        if let Some(slot) = by_key.entry(key.clone()).or_default().get_mut(index) {
            *slot += total.requests;
        }
    }
    Ok(by_key)
}

/// Renders a project's keys page.
async fn render(
    state: &AppState,
    me: &SignedIn,
    project_id: &str,
    after: Option<String>,
    outcome: Outcome,
) -> Result<Response, DashError> {
    let project = projects::get(state, &me.tenant_id, project_id).await?;
    let projects = all_projects(state, me).await?;
    let keys = state
        .store
        .list_keys(
            &me.tenant_id,
            &KeyScope::Project(project.id.clone()),
            &PageRequest {
                after: after.filter(|a| !a.is_empty()),
                limit: PAGE,
            },
        )
        .await
        .map_err(crate::error::ApiError::from)?;
    let traffic = traffic(state, me, &project.id).await?;
    let now = state.clock.now();
    let status = outcome.status();
    let Outcome {
        notice,
        shown,
        create,
        create_errors,
        edit,
        roll,
    } = outcome;
    let (mut edit, mut roll) = (edit, roll);
    let rows = keys
        .items
        .iter()
        .map(|key| {
            let days = traffic.get(&key.id).copied().unwrap_or_default();
            let key_status = key.status(now);
            let (edit_values, edit_open, edit_errors) = match edit.take_if(|e| e.0 == key.id) {
                Some((_, values, errors)) => (values, true, errors),
                None => (EditValues::of(key), false, FieldErrors::default()),
            };
            let (grace, roll_open, roll_errors) = match roll.take_if(|r| r.0 == key.id) {
                Some((_, grace, errors)) => (grace, true, errors),
                None => ("3600".to_owned(), false, FieldErrors::default()),
            };
            Row {
                id: key.id.clone(),
                name: key.name.clone(),
                description: key.description.clone().unwrap_or_default(),
                redacted: format!("{}…{}", key.prefix, key.last4),
                created: format::datetime(key.created_at),
                last_used: format::maybe_datetime(key.last_used_at),
                expires: key.expires_at.map(format::datetime).unwrap_or_default(),
                status: key_status.as_str(),
                active: key_status == KeyStatus::Active,
                rolled_from: key.rolled_from.clone(),
                requests: days.iter().sum(),
                spark: chart::sparkline(&days, "Requests per day, last 7 days"),
                edit: edit_values,
                edit_open,
                edit_errors,
                grace,
                roll_open,
                roll_errors,
            }
        })
        .collect();
    let template = KeysTemplate {
        chrome: Chrome::page(me, Section::Keys, &project.name),
        archived: project.status == ProjectStatus::Archived,
        can_write: me.can_write(),
        ip_allowlist: state.plans.get(&me.plan).is_some_and(|p| p.ip_allowlist),
        projects: projects
            .iter()
            .filter(|p| p.status == ProjectStatus::Active || p.id == project.id)
            .map(|p| ProjectLink {
                name: p.name.clone(),
                href: keys_path(&p.id),
                current: p.id == project.id,
            })
            .collect(),
        rows,
        next: keys
            .has_more
            .then(|| keys.items.last().map(|k| k.id.clone()))
            .flatten(),
        notice,
        shown,
        create,
        create_errors,
        csrf: me.csrf.clone(),
        max_grace: MAX_GRACE_PERIOD_SECONDS,
        project_id: project.id,
        project_name: project.name,
    };
    Ok(page::html(status, &template))
}

/// `GET /dashboard/projects/{project_id}/keys`.
pub async fn page(
    State(state): State<AppState>,
    me: SignedIn,
    Ids(project_id): Ids<String>,
    Params(query): Params<KeysQuery>,
) -> Result<Response, DashError> {
    let notice = match query.notice.as_deref() {
        Some("revoked") => Some("The key is revoked: requests with it fail from now on."),
        Some("updated") => Some("The key's settings are saved."),
        _ => None,
    };
    render(
        &state,
        &me,
        &project_id,
        query.after,
        Outcome {
            notice,
            ..Outcome::default()
        },
    )
    .await
}

/// The create form's fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

/// Empty text is no value.
fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// `POST /dashboard/projects/{project_id}/keys`: creates a key and shows its value, once.
pub async fn create(
    State(state): State<AppState>,
    Ids(project_id): Ids<String>,
    Posted { me, form }: Posted<CreateForm>,
) -> Result<Response, DashError> {
    me.require_write()?;
    let input = CreateProjectKey {
        name: form.name.clone(),
        description: non_empty(&form.description),
        ..CreateProjectKey::default()
    };
    let outcome = match service::create_project_key(
        &state,
        &me.caller(),
        &me.tenant_id,
        &me.plan,
        &project_id,
        input,
    )
    .await
    {
        Ok((key, secret)) => Outcome {
            shown: Some(Shown {
                heading: format!("Your new API key “{}”", key.name),
                value: secret.expose_secret().to_owned(),
                note: None,
            }),
            ..Outcome::default()
        },
        Err(error) => Outcome {
            create_errors: FieldErrors::from_api(
                error,
                &[("name", "name"), ("description", "description")],
            )?,
            create: form,
            ..Outcome::default()
        },
    };
    render(&state, &me, &project_id, None, outcome).await
}

/// `POST /dashboard/projects/{project_id}/keys/{key_id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Ids((project_id, key_id)): Ids<(String, String)>,
    Posted { me, .. }: Posted<NoFields>,
) -> Result<Response, DashError> {
    me.require_write()?;
    let key = service::project_key(&state, &me.tenant_id, &project_id, &key_id).await?;
    service::revoke(&state, &me.caller(), &key).await?;
    Ok(page::see_other(&format!(
        "{}?notice=revoked",
        keys_path(&project_id)
    )))
}

/// The roll form's field.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RollForm {
    #[serde(default)]
    grace_period_seconds: String,
}

/// `POST /dashboard/projects/{project_id}/keys/{key_id}/roll`: the successor's value, once; the old key works for
/// the grace period.
pub async fn roll(
    State(state): State<AppState>,
    Ids((project_id, key_id)): Ids<(String, String)>,
    Posted { me, form }: Posted<RollForm>,
) -> Result<Response, DashError> {
    me.require_write()?;
    let key = service::project_key(&state, &me.tenant_id, &project_id, &key_id).await?;
    let raw = form.grace_period_seconds.trim();
    let grace = if raw.is_empty() {
        Ok(0)
    } else {
        raw.parse::<i64>().map_err(|_| {
            FieldErrors::field(
                "grace_period_seconds",
                format!("Enter a whole number of seconds, 0 to {MAX_GRACE_PERIOD_SECONDS}"),
            )
        })
    };
    let result = match grace {
        Ok(grace) => service::roll(
            &state,
            &me.caller(),
            &key,
            RollProjectKey {
                grace_period_seconds: Some(grace),
            },
        )
        .await
        .map(|(successor, secret)| (successor, secret, grace))
        .map_err(|e| FieldErrors::from_api(e, &[("grace_period_seconds", "grace_period_seconds")])),
        Err(errors) => Err(Ok(errors)),
    };
    let outcome = match result {
        Ok((successor, secret, grace)) => Outcome {
            shown: Some(Shown {
                heading: format!("The successor of “{}”", successor.name),
                value: secret.expose_secret().to_owned(),
                note: Some(if grace == 0 {
                    "The old key stopped working now.".to_owned()
                } else {
                    format!(
                        "The old key keeps working until {}; its requests per day are in the table.",
                        format::datetime(state.clock.now().saturating_add(grace))
                    )
                }),
            }),
            ..Outcome::default()
        },
        Err(errors) => Outcome {
            roll: Some((key.id.clone(), form.grace_period_seconds, errors?)),
            ..Outcome::default()
        },
    };
    render(&state, &me, &project_id, None, outcome).await
}

/// Splits a list typed as lines or commas.
fn list(text: &str) -> Vec<String> {
    text.split([',', '\n', '\r', ' ', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A limit field: empty is none; anything else must be a positive whole number.
fn limit(text: &str, field: &'static str) -> Result<Option<u64>, FieldErrors> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u64>() {
        Ok(v) if v > 0 => Ok(Some(v)),
        _ => Err(FieldErrors::field(
            field,
            "Enter a positive whole number, or leave it empty for the plan's limit",
        )),
    }
}

/// The edit form as the API's update: every field sent, so what the form shows is what the key gets (the store
/// writes an event only for fields that change).
fn update_of(form: &EditValues) -> Result<UpdateProjectKey, FieldErrors> {
    let requests = limit(&form.requests_per_minute, "requests_per_minute")?;
    let tokens = limit(&form.tokens_per_minute, "tokens_per_minute")?;
    let models = list(&form.models);
    Ok(UpdateProjectKey {
        name: Some(Some(form.name.clone())),
        description: Some(non_empty(&form.description)),
        allowed_ips: Some(Some(list(&form.allowed_ips))),
        models: Some((!models.is_empty()).then_some(models)),
        rate_limits: Some(
            (requests.is_some() || tokens.is_some()).then_some(RateLimitsInput {
                requests_per_minute: requests,
                tokens_per_minute: tokens,
            }),
        ),
        ..UpdateProjectKey::default()
    })
}

/// `POST /dashboard/projects/{project_id}/keys/{key_id}/edit`.
pub async fn edit(
    State(state): State<AppState>,
    Ids((project_id, key_id)): Ids<(String, String)>,
    Posted { me, form }: Posted<EditValues>,
) -> Result<Response, DashError> {
    me.require_write()?;
    let key = service::project_key(&state, &me.tenant_id, &project_id, &key_id).await?;
    let errors = match update_of(&form) {
        Err(errors) => errors,
        Ok(input) => {
            match service::update_project_key(&state, &me.caller(), &me.plan, &key, input).await {
                Ok(_) => {
                    return Ok(page::see_other(&format!(
                        "{}?notice=updated",
                        keys_path(&project_id)
                    )));
                }
                Err(error) => FieldErrors::from_api(
                    error,
                    &[
                        ("name", "name"),
                        ("description", "description"),
                        ("allowed_ips", "allowed_ips"),
                        ("models", "models"),
                        ("rate_limits.requests_per_minute", "requests_per_minute"),
                        ("rate_limits.tokens_per_minute", "tokens_per_minute"),
                    ],
                )?,
            }
        }
    };
    render(
        &state,
        &me,
        &project_id,
        None,
        Outcome {
            edit: Some((key.id, form, errors)),
            ..Outcome::default()
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edit_form_becomes_a_whole_update() {
        let form = EditValues {
            name: "ci".into(),
            description: "  ".into(),
            allowed_ips: "203.0.113.0/24\n198.51.100.7, ".into(),
            models: "fast, echo".into(),
            requests_per_minute: "60".into(),
            tokens_per_minute: String::new(),
        };
        let update = update_of(&form).unwrap();
        assert_eq!(update.name, Some(Some("ci".into())));
        assert_eq!(update.description, Some(None));
        assert_eq!(
            update.allowed_ips,
            Some(Some(vec!["203.0.113.0/24".into(), "198.51.100.7".into()]))
        );
        assert_eq!(
            update.models,
            Some(Some(vec!["fast".into(), "echo".into()]))
        );
        let limits = update.rate_limits.unwrap().unwrap();
        assert_eq!(limits.requests_per_minute, Some(60));
        assert_eq!(limits.tokens_per_minute, None);

        let cleared = update_of(&EditValues {
            name: "ci".into(),
            ..EditValues::default()
        })
        .unwrap();
        assert_eq!(cleared.allowed_ips, Some(Some(Vec::new())));
        assert_eq!(cleared.models, Some(None));
        assert!(matches!(cleared.rate_limits, Some(None)));
        assert!(cleared.spend_limit_cents.is_none(), "untouched by the form");

        let bad = update_of(&EditValues {
            tokens_per_minute: "0".into(),
            ..EditValues::default()
        })
        .unwrap_err();
        assert!(bad.get("tokens_per_minute").is_some());
    }
}
