//! The inference pipeline: DESIGN.md's stages, in order, for every inference route.
//!
//! A handler parses its request, then calls [`admit`]: authenticate has already run (the `ProjectKey` extractor),
//! then [`policy`] → [`rate_limit`] → [`idempotency`] → [`hold`]. It runs the provider call on `App::tasks` and
//! settles through the [`settle::Bill`] it was given (settle → record). Around all of it, the [`audit::AuditSlot`] sees
//! that every request that identified a key leaves one `request.completed` event. A new feature is a stage here,
//! never code inside a handler.

pub mod audit;
pub mod hold;
pub mod idempotency;
pub mod policy;
pub mod rate_limit;
pub mod settle;

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;
use settle::Bill;
use std::sync::Arc;
use tollgate_core::catalog::ModelSpec;
use tollgate_core::credits::{EstimateError, HoldEstimate, estimate};
use tollgate_core::ports::Provider;
use tollgate_openai::ChatCompletionRequest;

/// What an inference request tells the pipeline about itself.
pub trait Metered {
    /// The public model id it asks for.
    fn model(&self) -> &str;
    /// Its worst case, from its parsed form and its raw body's length.
    fn worst_case(
        &self,
        body_bytes: usize,
        model: &ModelSpec,
        max_choices: u64,
    ) -> Result<HoldEstimate, EstimateError>;
}

impl Metered for ChatCompletionRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn worst_case(
        &self,
        body_bytes: usize,
        model: &ModelSpec,
        max_choices: u64,
    ) -> Result<HoldEstimate, EstimateError> {
        estimate(self, body_bytes, model, max_choices)
    }
}

/// An admitted request: the model and provider it goes to, the bill to settle once the provider has answered, and
/// its rate-limit headers.
pub struct Admission {
    /// The public model.
    pub spec: Arc<ModelSpec>,
    /// Who serves it.
    pub provider: Arc<dyn Provider>,
    /// The hold taken, and what the charge will be recorded as.
    pub bill: Bill,
    /// The `x-ratelimit-*` headers its response carries.
    pub quota: rate_limit::Quota,
}

/// Runs the admission stages for an authenticated request: each may refuse it, and none calls the upstream.
pub async fn admit(
    state: &AppState,
    key: &ProjectKey,
    request_id: &str,
    request: &impl Metered,
    body_bytes: usize,
) -> Result<Admission, ApiError> {
    let (spec, provider) = policy::route(state, key, request.model())?;
    // The worst case bounds the tokens the rate limit takes up front as well as the hold.
    let worst = request
        .worst_case(body_bytes, &spec, state.config.max_choices)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(&e.param())))?;
    let limited = rate_limit::admit(
        state,
        key,
        worst.prompt_tokens.saturating_add(worst.output_tokens),
    )
    .await?;
    // A replay or a refusal here drops the rate limit's token charge, which gives the tokens back.
    let replayable = idempotency::admit(state, key, &limited.quota).await?;
    let mut bill = match hold::take(state, key, request_id, &spec, worst, limited.tokens).await {
        Ok(bill) => bill,
        Err(refusal) => {
            if let Some(replayable) = replayable {
                replayable.refused(&refusal).await;
            }
            return Err(refusal);
        }
    };
    if let Some(replayable) = replayable {
        bill.store_response(replayable);
    }
    Ok(Admission {
        spec,
        provider,
        bill,
        quota: limited.quota,
    })
}
