//! Usage reports: `since`, `until` and `group_by` from the query string, totals from the store, buckets per UTC
//! day or one for the whole window.

use crate::app::App;
use crate::error::ApiError;
use crate::objects::{UsageBucketObject, UsagePageObject, UsageResultObject};
use serde::Deserialize;
use tollgate_core::credits::{UsageGrouping, UsageQuery, UsageTotals};
use tollgate_core::tenant::Timestamp;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// The default window: the last 30 days.
const DEFAULT_WINDOW: i64 = 30 * DAY;
/// The most daily buckets one report may have.
const MAX_DAYS: i64 = 366;
/// The latest instant a window may name: 9999-12-31T23:59:59Z + 1 s. Far past any real usage, and small enough that
/// every sum below stays far from `i64::MAX`.
const MAX_TIMESTAMP: Timestamp = 253_402_300_800;

/// The raw query string (`?since=…&until=…&group_by=…`), parsed here so each bad value names its parameter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UsageParams {
    /// Unix seconds; default 30 days before `until`.
    pub since: Option<String>,
    /// Unix seconds, exclusive; default now.
    pub until: Option<String>,
    /// Comma-separated: any of `day`, `model`, `project`, `key`.
    pub group_by: Option<String>,
}

/// A usage report before it is rendered: its window and the store's totals, one per group.
#[derive(Debug, Clone)]
pub struct Report {
    /// The window's start.
    pub since: Timestamp,
    /// The window's end (exclusive).
    pub until: Timestamp,
    /// The start of the UTC day `since` falls in.
    pub first_day: Timestamp,
    /// How many UTC days the window touches.
    pub days: i64,
    /// What the totals are grouped by.
    pub group: UsageGrouping,
    /// The totals, one per group (none for a group without usage).
    pub totals: Vec<UsageTotals>,
}

impl Report {
    /// The start of each UTC day the window touches, in order.
    pub fn day_starts(&self) -> impl Iterator<Item = Timestamp> + '_ {
        (0..self.days).map(|n| self.first_day + n * DAY)
    }
}

/// A window bound: Unix seconds from 0 to [`MAX_TIMESTAMP`]; anything else (negative, past the year 9999, past
/// `i64`, not a number) is a 400 naming the parameter.
pub(crate) fn seconds(
    raw: Option<&str>,
    param: &str,
    default: Timestamp,
) -> Result<Timestamp, ApiError> {
    match raw {
        None | Some("") => Ok(default),
        Some(s) => s
            .parse::<Timestamp>()
            .ok()
            .filter(|t| (0..=MAX_TIMESTAMP).contains(t))
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("{param} must be Unix seconds from 0 to {MAX_TIMESTAMP}"),
                    Some(param),
                )
            }),
    }
}

fn grouping(raw: Option<&str>) -> Result<UsageGrouping, ApiError> {
    let mut group = UsageGrouping::default();
    for field in raw
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        match field {
            "day" => group.day = true,
            "model" => group.model = true,
            "project" => group.project = true,
            "key" => group.key = true,
            other => {
                return Err(ApiError::bad_request(
                    format!(
                        "group_by: unknown field '{}'; use any of day, model, project, key",
                        super::excerpt(other)
                    ),
                    Some("group_by"),
                ));
            }
        }
    }
    Ok(group)
}

/// The usage of a tenant, or of one of its projects, as API.md's page of buckets.
pub async fn report(
    app: &App,
    tenant_id: &str,
    project_id: Option<&str>,
    params: &UsageParams,
) -> Result<UsagePageObject, ApiError> {
    let report = totals(app, tenant_id, project_id, params).await?;
    if !report.group.day {
        let results = report.totals.iter().map(UsageResultObject::from).collect();
        return Ok(UsagePageObject::new(vec![UsageBucketObject::new(
            report.since,
            report.until,
            results,
        )]));
    }
    let buckets = report
        .day_starts()
        .map(|day| {
            let results = report
                .totals
                .iter()
                .filter(|t| t.day == Some(day))
                .map(UsageResultObject::from)
                .collect();
            UsageBucketObject::new(
                day.max(report.since),
                (day + DAY).min(report.until),
                results,
            )
        })
        .collect();
    Ok(UsagePageObject::new(buckets))
}

/// The usage of a tenant, or of one of its projects: the window `params` name, checked, and the store's totals.
pub async fn totals(
    app: &App,
    tenant_id: &str,
    project_id: Option<&str>,
    params: &UsageParams,
) -> Result<Report, ApiError> {
    // `until` is exclusive: by default the end of the current second, so what just happened is included.
    let now = app.clock.now();
    let until = seconds(
        params.until.as_deref(),
        "until",
        now.saturating_add(1).clamp(1, MAX_TIMESTAMP),
    )?;
    let since = seconds(
        params.since.as_deref(),
        "since",
        until.saturating_sub(DEFAULT_WINDOW).max(0),
    )?;
    if since >= until {
        return Err(ApiError::bad_request(
            "since must be before until",
            Some("since"),
        ));
    }
    let group = grouping(params.group_by.as_deref())?;
    // Both bounds are validated to [0, MAX_TIMESTAMP], so this arithmetic cannot overflow; the day count bounds the
    // bucket loop below.
    let first_day = since - since.rem_euclid(DAY);
    let days = (until - first_day + DAY - 1) / DAY;
    if group.day && days > MAX_DAYS {
        return Err(ApiError::bad_request(
            format!("grouped by day, a report covers at most {MAX_DAYS} days"),
            Some("since"),
        ));
    }
    let totals = app
        .store
        .usage(&UsageQuery {
            tenant_id: tenant_id.to_owned(),
            project_id: project_id.map(str::to_owned),
            since,
            until,
            group,
        })
        .await?;
    Ok(Report {
        since,
        until,
        first_day,
        days,
        group,
        totals,
    })
}
