//! Credits: operator grants and the tenant's view of its balance and ledger.

use super::Caller;
use crate::app::App;
use crate::error::ApiError;
use crate::objects::CreditsObject;
use serde::Deserialize;
use serde_json::json;
use tollgate_core::audit::EventType;
use tollgate_core::credits::LedgerEntry;
use tollgate_core::money::Micros;
use tollgate_core::ports::{Page, PageRequest};

/// The body of `POST /operator/v1/tenants/{id}/credits` (and `tollgate credits grant`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Whole cents, positive.
    pub amount_cents: i64,
    /// Why, for the ledger.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Grants credits to a tenant (`credits.granted`: the amount and reason in its details, its ledger entry as the
/// target, which the store fills; `cost_cents` stays null, being what requests are charged) and returns its
/// credits object.
pub async fn grant(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    input: Grant,
) -> Result<CreditsObject, ApiError> {
    let amount = Some(input.amount_cents)
        .filter(|c| *c > 0)
        .and_then(Micros::from_cents)
        .ok_or_else(|| {
            ApiError::bad_request(
                "amount_cents must be a positive whole number of cents",
                Some("amount_cents"),
            )
        })?;
    if input
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 1024)
    {
        return Err(ApiError::bad_request(
            "reason must be at most 1024 characters",
            Some("reason"),
        ));
    }
    let now = app.clock.now();
    let event = by
        .event(EventType::CreditsGranted, tenant_id, now)
        .details(&json!({"amount_cents": input.amount_cents, "reason": input.reason}));
    app.store
        .grant(tenant_id, amount, input.reason.as_deref(), now, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("organization", tenant_id))?;
    credits(
        app,
        tenant_id,
        &PageRequest {
            after: None,
            limit: 20,
        },
    )
    .await
}

/// The tenant's balance (the ledger's sum; holds in flight are not deducted) and a page of its ledger.
pub async fn credits(
    app: &App,
    tenant_id: &str,
    page: &PageRequest,
) -> Result<CreditsObject, ApiError> {
    let (balance, ledger) = statement(app, tenant_id, page).await?;
    Ok(CreditsObject::new(balance, &ledger))
}

/// The tenant's balance and a page of its ledger, newest first, before rendering.
pub async fn statement(
    app: &App,
    tenant_id: &str,
    page: &PageRequest,
) -> Result<(Micros, Page<LedgerEntry>), ApiError> {
    let balance = app.store.balance(tenant_id).await?;
    let ledger = app.store.ledger(tenant_id, page).await?;
    Ok((balance.balance, ledger))
}
