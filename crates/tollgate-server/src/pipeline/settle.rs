//! Settle and record: the provider's reported usage becomes the request's charge, capped at its hold (an overrun is
//! logged, never hidden), recorded durably by the group-committing recorder (which takes it off this node's lease
//! in the same transaction, with the request's `request.completed` audit event, and for a capped key adds it to the
//! key's spending and takes it off this node's lease on the key); only then do the holds end and the response (or a
//! stream's last event) go out.

use crate::app::AppState;
use crate::credits::Hold;
use crate::error::ApiError;
use crate::pipeline::audit::Claim;
use crate::pipeline::idempotency::Replayable;
use crate::pipeline::rate_limit::TokenCharge;
use std::sync::Arc;
use tollgate_core::catalog::ModelSpec;
use tollgate_core::credits::{HoldEstimate, Settlement};
use tollgate_core::money::cost;
use tollgate_core::ports::StoreError;

/// A request's hold and what its charge will be recorded as.
pub struct Bill {
    state: AppState,
    spec: Arc<ModelSpec>,
    hold: Hold,
    /// The hold on the key's spend cap, if it has one.
    cap: Option<Hold>,
    worst: HoldEstimate,
    settlement: Settlement,
    audit: Claim,
    /// The tokens the rate limit took up front, corrected to the usage once it is known.
    tokens: TokenCharge,
    /// The request's `Idempotency-Key`, held: its response is stored with the charge.
    replay: Option<Replayable>,
}

impl Bill {
    /// A bill for a request that holds `hold` (and `cap` on its key's cap) against its worst case `worst`, and took
    /// `tokens` from its rate limits.
    #[expect(
        clippy::too_many_arguments,
        reason = "one bill gathers what each admission stage took"
    )]
    pub fn new(
        state: AppState,
        spec: Arc<ModelSpec>,
        hold: Hold,
        cap: Option<Hold>,
        worst: HoldEstimate,
        settlement: Settlement,
        audit: Claim,
        tokens: TokenCharge,
    ) -> Self {
        Self {
            state,
            spec,
            hold,
            cap,
            worst,
            settlement,
            audit,
            tokens,
            replay: None,
        }
    }

    /// The request holds an `Idempotency-Key`: its response, once kept ([`Bill::keep_response`]), is stored in the
    /// settlement's transaction.
    pub fn store_response(&mut self, replay: Replayable) {
        self.replay = Some(replay);
    }

    /// Whether the response is to be kept for replay (a stream then keeps a copy of its events).
    pub fn is_replayable(&self) -> bool {
        self.replay.is_some()
    }

    /// The response as sent (a completion's JSON, or a stream's every event): stored by [`Bill::settle`] for
    /// retries. A response never kept (a stream that broke off) is not stored, and the key is released.
    pub fn keep_response(&mut self, stream: bool, body: Vec<u8>) {
        if let Some(replay) = &mut self.replay {
            replay.keep(stream, body);
        }
    }

    /// The worst case held: its prompt bound stands in for usage an upstream did not report.
    pub fn worst(&self) -> HoldEstimate {
        self.worst
    }

    /// The public model id.
    pub fn model(&self) -> &str {
        &self.spec.id
    }

    /// The request's id.
    pub fn request_id(&self) -> &str {
        &self.settlement.request_id
    }

    /// Records `prompt` and `completion` tokens as the provider reported them, and charges their cost up to the
    /// hold: durable in the store (the recorder then applies the new balance), then the hold is released.
    pub async fn settle(mut self, prompt: u64, completion: u64) -> Result<(), ApiError> {
        let cost = cost(&self.spec, prompt, completion);
        let held = self.hold.amount();
        if cost > held {
            // The upstream ignored the caps it was sent: the customer pays what it agreed to, and we say so.
            tracing::warn!(
                request_id = %self.settlement.request_id,
                tenant_id = %self.settlement.tenant_id,
                key_id = %self.settlement.key_id,
                model = %self.spec.id,
                prompt_tokens = prompt,
                completion_tokens = completion,
                held_prompt_tokens = self.worst.prompt_tokens,
                held_output_tokens = self.worst.output_tokens,
                cost_cents = %cost,
                held_cents = %held,
                shortfall_cents = %cost.minus(held),
                "the upstream reported more usage than the hold allowed; charged the hold"
            );
        }
        let (origin, latency_ms) = self.audit.settled();
        let settlement = Settlement {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost: cost.min(held),
            at: self.state.clock.now(),
            status: 200,
            latency_ms,
            origin,
            idempotency: self
                .replay
                .as_mut()
                .and_then(Replayable::completion)
                .map(Box::new),
            ..self.settlement
        };
        let stored = settlement.idempotency.is_some();
        let (request_id, owed) = (settlement.request_id.clone(), settlement.cost);
        let charged = match self.state.recorder.settle(settlement).await {
            Ok(charged) => charged,
            Err(e) => {
                // Neither the charge nor the response was written: a retry executes again.
                if let Some(replay) = self.replay.take() {
                    replay.release().await;
                }
                return Err(ApiError::from(StoreError::from(e)));
            }
        };
        if charged < owed {
            tracing::warn!(%request_id, charged_cents = %charged, owed_cents = %owed,
                "the balance could not cover the charge: it was spent elsewhere meanwhile");
        }
        match self.replay.take() {
            Some(replay) if stored => replay.stored(),
            Some(replay) => replay.release().await,
            None => {}
        }
        self.hold.settle(charged);
        if let Some(cap) = self.cap {
            cap.settle(charged);
        }
        self.tokens.settle(prompt.saturating_add(completion)).await;
        Ok(())
    }

    /// The request will not be answered with a response to replay (its upstream failed): its `Idempotency-Key`, if
    /// it holds one, is free again before the answer goes out.
    pub async fn release_key(&mut self) {
        if let Some(replay) = self.replay.take() {
            replay.release().await;
        }
    }

    /// Ends the request unsettled (nothing to charge), answered with `status`: its audit event is written with that
    /// status and no usage, by the audit stage if the response is still to come, else from here.
    pub async fn abandon(mut self, status: u16) {
        self.release_key().await;
        if let Some(event) = self.audit.release(status, self.state.clock.now()) {
            self.state.recorder.record(event).await;
        }
        self.tokens.settle(0).await;
    }
}
