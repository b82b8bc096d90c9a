//! The audit log (`/dashboard/audit`): the tenant's events, newest first, filtered by type, actor, key and dates,
//! and the same selection exported as JSON lines or CSV (`/dashboard/audit/export?format=…`), streamed by the
//! audit service as the management API streams it, under the session instead of an admin key. The filter form is
//! a GET (it changes nothing), so it carries no CSRF token: the token never lands in a URL.

use super::errors::DashError;
use super::form::Params;
use super::format;
use super::page::{self, Chrome, FieldErrors, Section};
use super::session::SignedIn;
use crate::app::AppState;
use crate::service::audit::{self as service, AuditParams, Format};
use crate::service::usage::DAY;
use askama::Template;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tollgate_core::audit::{AuditEvent, EventType};

/// Events per page.
const PAGE: &str = "50";

/// The filters, as the form and the links send them (dates as `YYYY-MM-DD`, `until` inclusive).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    event_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    actor_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    since: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    until: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    after: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    format: String,
}

impl Filters {
    /// This selection as a query string, with `after` and `format` replaced.
    fn query_string(&self, after: &str, format: &str) -> String {
        let link = Self {
            after: after.to_owned(),
            format: format.to_owned(),
            ..self.clone()
        };
        serde_urlencoded::to_string(&link).unwrap_or_default()
    }

    /// The audit service's parameters: a date's start, and the end of `until`'s day; a date that is not one is an
    /// error next to its field.
    fn params(&self) -> Result<AuditParams, FieldErrors> {
        let date = |raw: &str, field: &'static str, plus: i64| {
            let raw = raw.trim();
            if raw.is_empty() {
                return Ok(None);
            }
            format::parse_date(raw)
                .map(|at| Some((at + plus).to_string()))
                .ok_or_else(|| FieldErrors::field(field, "Enter a date such as 2026-12-01"))
        };
        let text = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        Ok(AuditParams {
            event_type: text(&self.event_type),
            actor_id: text(&self.actor_id),
            key_id: text(&self.key_id),
            since: date(&self.since, "since", 0)?,
            until: date(&self.until, "until", DAY)?,
            after: text(&self.after),
            limit: Some(PAGE.to_owned()),
            format: text(&self.format),
        })
    }
}

/// One event, as the table shows it.
struct Row {
    when: String,
    kind: &'static str,
    actor: String,
    target: String,
    key: String,
    project: String,
    status: String,
    source: String,
    details: String,
}

impl Row {
    fn of(e: &AuditEvent) -> Self {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            when: format::datetime(e.effective_at),
            kind: e.kind.as_str(),
            actor: match &e.actor.id {
                Some(id) => format!("{} {id}", e.actor.kind.as_str()),
                None => e.actor.kind.as_str().to_owned(),
            },
            target: text(&e.target_id),
            key: match (&e.key_id, &e.key_last4) {
                (Some(id), Some(last4)) => format!("{id} (…{last4})"),
                (Some(id), None) => id.clone(),
                _ => String::new(),
            },
            project: text(&e.project_id),
            status: e.status.map(|s| s.to_string()).unwrap_or_default(),
            source: text(&e.origin.source_ip),
            details: text(&e.details),
        }
    }
}

/// An event type in the filter's `<select>`.
struct TypeOption {
    value: &'static str,
    selected: bool,
}

/// `audit.html`.
#[derive(Template)]
#[template(path = "dashboard/audit.html")]
struct AuditTemplate {
    chrome: Chrome,
    filters: Filters,
    types: Vec<TypeOption>,
    errors: FieldErrors,
    rows: Vec<Row>,
    older: Option<String>,
    csv_href: String,
    jsonl_href: String,
}

/// Maps the audit service's parameter names to the form's fields.
const FIELDS: [(&str, &str); 5] = [
    ("event_type", "event_type"),
    ("actor_id", "actor_id"),
    ("key_id", "key_id"),
    ("since", "since"),
    ("until", "until"),
];

/// `GET /dashboard/audit`.
pub async fn page(
    State(state): State<AppState>,
    me: SignedIn,
    Params(filters): Params<Filters>,
) -> Result<Response, DashError> {
    let checked = match filters.params() {
        Err(errors) => Err(errors),
        Ok(params) => match params.query(&me.tenant_id) {
            Ok(query) => Ok(query),
            Err(error) => Err(FieldErrors::from_api(error, &FIELDS)?),
        },
    };
    let (rows, older, errors) = match checked {
        Ok((query, _)) => {
            let events = service::events(&state, &query).await?;
            let older = events
                .has_more
                .then(|| events.items.last())
                .flatten()
                .map(|e| format!("?{}", filters.query_string(&e.event.id, "")));
            let rows = events.items.iter().map(|e| Row::of(&e.event)).collect();
            (rows, older, FieldErrors::default())
        }
        Err(errors) => (Vec::new(), None, errors),
    };
    let template = AuditTemplate {
        chrome: Chrome::page(&me, Section::Audit, &me.tenant_name),
        types: EventType::ALL
            .iter()
            .map(|t| TypeOption {
                value: t.as_str(),
                selected: t.as_str() == filters.event_type,
            })
            .collect(),
        csv_href: format!(
            "/dashboard/audit/export?{}",
            filters.query_string("", "csv")
        ),
        jsonl_href: format!(
            "/dashboard/audit/export?{}",
            filters.query_string("", "jsonl")
        ),
        filters,
        rows,
        older,
        errors: errors.clone(),
    };
    Ok(page::html(errors.status(), &template))
}

/// `GET /dashboard/audit/export?format=csv|jsonl&…`: every event the filters select, streamed as a download.
pub async fn export(
    State(state): State<AppState>,
    me: SignedIn,
    Params(filters): Params<Filters>,
) -> Result<Response, DashError> {
    let params = filters.params().map_err(|errors| {
        DashError::page(
            StatusCode::BAD_REQUEST,
            errors
                .get("since")
                .or(errors.get("until"))
                .unwrap_or("Check the filters")
                .to_owned(),
        )
    })?;
    let (query, format) = params.query(&me.tenant_id)?;
    let (content_type, file) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "audit-log.csv"),
        Format::Jsonl => ("application/x-ndjson", "audit-log.jsonl"),
        Format::List => {
            return Err(DashError::page(
                StatusCode::BAD_REQUEST,
                "Choose an export format: format=csv or format=jsonl.",
            ));
        }
    };
    let body = Body::from_stream(service::export(Arc::clone(&state.0), query, format));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    page::stamp(headers);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_become_the_services_bounds_and_links_keep_the_filters() {
        let filters = Filters {
            event_type: "api_key.revoked".into(),
            since: "2026-12-01".into(),
            until: "2026-12-01".into(),
            ..Filters::default()
        };
        let params = filters.params().unwrap();
        assert_eq!(params.since.as_deref(), Some("1796083200"));
        assert_eq!(params.until.as_deref(), Some("1796169600"), "the whole day");
        assert_eq!(params.event_type.as_deref(), Some("api_key.revoked"));
        assert_eq!(params.actor_id, None);
        assert_eq!(
            filters.query_string("evt_1", "csv"),
            "event_type=api_key.revoked&since=2026-12-01&until=2026-12-01&after=evt_1&format=csv"
        );
        let bad = Filters {
            until: "yesterday".into(),
            ..Filters::default()
        };
        assert!(bad.params().unwrap_err().get("until").is_some());
    }
}
