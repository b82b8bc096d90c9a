//! Usage (`/dashboard/usage`): requests and cost per UTC day by model over the last 30 days, as two stacked bar
//! charts drawn on the server, and each model's totals. The numbers are the management API's usage report
//! (`service::usage`, grouped by day and model); money is shown exactly, as the API writes it.

use super::chart::{self, BarChart, PALETTE};
use super::errors::DashError;
use super::format;
use super::page::{self, Chrome, Section};
use super::session::SignedIn;
use crate::app::AppState;
use crate::service::usage::{self as service, DAY, UsageParams};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::BTreeMap;
use tollgate_core::money::Micros;

/// Days shown, today included.
const DAYS: i64 = 30;

/// A model's totals over the window.
struct ModelTotals {
    model: String,
    class: String,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost: String,
}

/// One day's totals, for the table under the charts.
struct DayRow {
    date: String,
    requests: u64,
    cost: String,
}

/// `usage.html`.
#[derive(Template)]
#[template(path = "dashboard/usage.html")]
struct UsageTemplate {
    chrome: Chrome,
    since: String,
    until: String,
    requests_chart: String,
    cost_chart: String,
    models: Vec<ModelTotals>,
    days: Vec<DayRow>,
    total_requests: u64,
    total_cost: String,
}

/// Cents from micro-cents, exactly (`0.0006 ¢`).
fn cents(micros: u64) -> String {
    format!("{} ¢", Micros(i64::try_from(micros).unwrap_or(i64::MAX)))
}

/// `GET /dashboard/usage`.
pub async fn page(State(state): State<AppState>, me: SignedIn) -> Result<Response, DashError> {
    let now = state.clock.now();
    let since = (now - now.rem_euclid(DAY) - (DAYS - 1) * DAY).max(0);
    let report = service::totals(
        &state,
        &me.tenant_id,
        None,
        &UsageParams {
            since: Some(since.to_string()),
            until: None,
            group_by: Some("day,model".to_owned()),
        },
    )
    .await?;
    // Models in name order: each keeps its colour from one day to the next.
    let mut by_model: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    for t in &report.totals {
        let entry = by_model
            .entry(t.model.clone().unwrap_or_default())
            .or_default();
        entry.0 += t.requests;
        entry.1 += t.prompt_tokens;
        entry.2 += t.completion_tokens;
        entry.3 = entry
            .3
            .saturating_add(u64::try_from(t.cost.get()).unwrap_or(0));
    }
    let series: Vec<String> = by_model.keys().cloned().collect();
    let day_starts: Vec<i64> = report.day_starts().collect();
    let labels: Vec<String> = day_starts.iter().map(|&d| format::month_day(d)).collect();
    let mut requests = vec![vec![0_u64; series.len()]; day_starts.len()];
    let mut cost = vec![vec![0_u64; series.len()]; day_starts.len()];
    for t in &report.totals {
        let (Some(day), Some(model)) = (t.day, &t.model) else {
            continue;
        };
        let d = usize::try_from((day - report.first_day) / DAY).unwrap_or(usize::MAX);
        let Some(s) = series.iter().position(|m| m == model) else {
            continue;
        };
        if let (Some(r), Some(c)) = (
            requests.get_mut(d).and_then(|row| row.get_mut(s)),
            cost.get_mut(d).and_then(|row| row.get_mut(s)),
        ) {
            *r += t.requests;
            *c = c.saturating_add(u64::try_from(t.cost.get()).unwrap_or(0));
        }
    }
    let count = |v: u64| v.to_string();
    let requests_chart = chart::bar_chart(&BarChart {
        id: "requests-chart",
        title: "Requests per day by model, last 30 days",
        series: &series,
        labels: &labels,
        values: &requests,
        format: &count,
    });
    let cost_chart = chart::bar_chart(&BarChart {
        id: "cost-chart",
        title: "Cost per day by model, last 30 days, in cents",
        series: &series,
        labels: &labels,
        values: &cost,
        format: &cents,
    });
    let days = day_starts
        .iter()
        .enumerate()
        .rev()
        .map(|(i, &day)| DayRow {
            date: format::date(day),
            requests: requests.get(i).map_or(0, |r| r.iter().sum()),
            cost: cents(cost.get(i).map_or(0, |c| c.iter().sum())),
        })
        .collect();
    let total_requests = by_model.values().map(|t| t.0).sum();
    let total_cost = cents(by_model.values().map(|t| t.3).sum());
    let models = by_model
        .into_iter()
        .enumerate()
        .map(|(i, (model, t))| ModelTotals {
            model,
            class: format!("series-{}", i % PALETTE),
            requests: t.0,
            prompt_tokens: t.1,
            completion_tokens: t.2,
            cost: cents(t.3),
        })
        .collect();
    let template = UsageTemplate {
        chrome: Chrome::page(&me, Section::Usage, &me.tenant_name),
        since: format::date(report.since),
        until: format::date(now),
        requests_chart,
        cost_chart,
        models,
        days,
        total_requests,
        total_cost,
    };
    Ok(page::html(StatusCode::OK, &template))
}
