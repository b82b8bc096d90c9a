//! Credits (`/dashboard/credits`): the balance and the ledger, newest first, paged, from `service::credits` as the
//! management API reads them. Amounts are cents, exact to the micro-cent, as API.md writes them.

use super::errors::DashError;
use super::form::Params;
use super::format;
use super::page::{self, Chrome, Section};
use super::session::SignedIn;
use crate::app::AppState;
use crate::service::credits as service;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tollgate_core::ports::PageRequest;

/// Ledger entries per page.
const PAGE: u32 = 50;

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct CreditsQuery {
    /// The previous page's last (oldest) entry.
    #[serde(default)]
    after: Option<String>,
}

/// One ledger entry.
struct Row {
    when: String,
    kind: &'static str,
    amount: String,
    balance_after: String,
    reason: String,
}

/// `credits.html`.
#[derive(Template)]
#[template(path = "dashboard/credits.html")]
struct CreditsTemplate {
    chrome: Chrome,
    balance: String,
    rows: Vec<Row>,
    older: Option<String>,
}

/// `GET /dashboard/credits`.
pub async fn page(
    State(state): State<AppState>,
    me: SignedIn,
    Params(query): Params<CreditsQuery>,
) -> Result<Response, DashError> {
    let (balance, ledger) = service::statement(
        &state,
        &me.tenant_id,
        &PageRequest {
            after: query.after.filter(|a| !a.is_empty()),
            limit: PAGE,
        },
    )
    .await?;
    let older = ledger
        .has_more
        .then(|| ledger.items.last())
        .flatten()
        .map(|e| e.id.clone());
    let rows = ledger
        .items
        .iter()
        .map(|e| Row {
            when: format::datetime(e.created_at),
            kind: e.kind.as_str(),
            amount: format!("{} ¢", e.amount),
            balance_after: format!("{} ¢", e.balance_after),
            reason: e.reason.clone().unwrap_or_default(),
        })
        .collect();
    let template = CreditsTemplate {
        chrome: Chrome::page(&me, Section::Credits, &me.tenant_name),
        balance: format!("{balance} ¢"),
        rows,
        older,
    };
    Ok(page::html(StatusCode::OK, &template))
}
