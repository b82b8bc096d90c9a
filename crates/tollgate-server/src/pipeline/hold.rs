//! Hold: the request's worst case is taken from this node's lease on its tenant's balance before the provider is
//! called (402 when neither the lease nor the balance no node has reserved covers it), and, for a key with a spend
//! cap, from this node's lease on the key's remaining cap too (402 naming the cap); refused outright (503) while
//! the recorder cannot write, since whatever the upstream did then could not be charged.

use crate::app::AppState;
use crate::credits::HoldError;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;
use crate::pipeline::rate_limit::TokenCharge;
use crate::pipeline::settle::Bill;
use std::sync::Arc;
use tollgate_core::catalog::ModelSpec;
use tollgate_core::credits::{HoldEstimate, Settlement};
use tollgate_core::ports::Account;
use tollgate_core::tenant::{KeyOwner, SpendPeriod};

/// Holds `worst` for the request and returns the bill its settlement will go through.
pub async fn take(
    state: &AppState,
    key: &ProjectKey,
    request_id: &str,
    spec: &Arc<ModelSpec>,
    worst: HoldEstimate,
    tokens: TokenCharge,
) -> Result<Bill, ApiError> {
    if !state.recorder.is_writable() {
        return Err(ApiError::Unavailable(
            "the recorder cannot write to the store".to_owned(),
        ));
    }
    let principal = &key.0;
    let tenant_id = principal.key.tenant_id.clone();
    let hold = state
        .wallets
        .hold(Account::Tenant(&tenant_id), worst.cost)
        .await
        .map_err(|e| match e {
            HoldError::Insufficient {
                available, cost, ..
            } => ApiError::InsufficientBalance { available, cost },
            HoldError::Store(e) => e.into(),
        })?;
    // A capped key holds against its cap as well (both must fit; a refusal drops the tenant's hold with it). A key
    // without a cap costs nothing more here.
    let cap = match principal.key.spend_limit {
        None => None,
        Some(limit) => Some(
            state
                .wallets
                .hold_capped(&principal.key.id, limit, worst.cost)
                .await
                .map_err(|e| match e {
                    HoldError::Insufficient { spent, cost, .. } => {
                        // The tenant's hold fit: what this node had leased for it before this request.
                        let available = state
                            .wallets
                            .available(Account::Tenant(&tenant_id))
                            .unwrap_or_default()
                            .plus(hold.amount());
                        ApiError::SpendLimitReached {
                            limit: limit.amount,
                            per: match limit.period {
                                SpendPeriod::Month => "per month",
                                SpendPeriod::Total => "in total",
                            },
                            spent,
                            available,
                            cost,
                        }
                    }
                    HoldError::Store(e) => e.into(),
                })?,
        ),
    };
    let settlement = Settlement {
        request_id: request_id.to_owned(),
        tenant_id,
        project_id: match &principal.key.owner {
            KeyOwner::Project(p) => p.clone(),
            KeyOwner::Member(_) => String::new(),
        },
        key_id: principal.key.id.clone(),
        key_last4: principal.key.last4.clone(),
        model: spec.id.clone(),
        prompt_tokens: 0,
        completion_tokens: 0,
        cost: Default::default(),
        at: 0,
        status: 0,
        latency_ms: 0,
        origin: Default::default(),
        spend_period: principal.key.spend_limit.map(|l| l.period),
        idempotency: None,
    };
    Ok(Bill::new(
        state.clone(),
        Arc::clone(spec),
        hold,
        cap,
        worst,
        settlement,
        key.claim_audit(),
        tokens,
    ))
}
