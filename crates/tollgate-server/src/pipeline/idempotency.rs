//! Idempotency, the stage after the rate limit and before the hold: a request that sent `Idempotency-Key` claims it
//! in its tenant's scope (see [`crate::idempotency`]). It then executes holding the key, and its settlement stores
//! the response with the charge, in one transaction ([`Replayable`], carried by the bill); or it is answered
//! instead: 409 while the first is running, 422 for another request under the key, or the stored response
//! replayed, which executes nothing, charges nothing, counts no usage, gives back the tokens the rate limit took,
//! and is audited as `request.replayed`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::idempotency::Held;
use crate::middleware::auth::ProjectKey;
use crate::middleware::idempotency::replayed_headers;
use crate::pipeline::rate_limit::Quota;
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use tollgate_core::idempotency::{Completion, StoredResponse};

/// Claims the request's key, if it sent one: `Some` when it executes holding it.
pub async fn admit(
    state: &AppState,
    key: &ProjectKey,
    quota: &Quota,
) -> Result<Option<Replayable>, ApiError> {
    let Some(slot) = key.idempotency() else {
        return Ok(None);
    };
    match slot.claim(state, &key.0.key.tenant_id).await {
        Ok(held) => {
            let mut headers = HeaderMap::new();
            quota.stamp(&mut headers);
            Ok(Some(Replayable {
                held,
                headers: replayed_headers(&headers),
                body: None,
            }))
        }
        Err(ApiError::Replayed(replay)) => {
            if let Some(audit) = key.audit() {
                audit.replayed(&replay.request_id);
            }
            Err(ApiError::Replayed(replay))
        }
        Err(refusal) => Err(refusal),
    }
}

/// The held key of an executing request, and what its response will be stored as.
#[derive(Debug)]
pub struct Replayable {
    held: Held,
    /// Its rate-limit headers, as the first answer carries them.
    headers: Vec<(String, String)>,
    /// The response, once it is known: a completion, or a stream's every event.
    body: Option<(bool, Vec<u8>)>,
}

impl Replayable {
    /// The answer is a completion (`stream` false: JSON) or a stream of events, `body` exactly as sent.
    pub fn keep(&mut self, stream: bool, body: Vec<u8>) {
        self.body = Some((stream, body));
    }

    /// What the settlement stores, if the response was kept (moved out: a stream's events are not copied again).
    pub fn completion(&mut self) -> Option<Completion> {
        let (stream, body) = self.body.take()?;
        let mut headers = std::mem::take(&mut self.headers);
        if stream {
            headers.push((
                CONTENT_TYPE.as_str().to_owned(),
                "text/event-stream".to_owned(),
            ));
            headers.push((CACHE_CONTROL.as_str().to_owned(), "no-cache".to_owned()));
        } else {
            headers.push((
                CONTENT_TYPE.as_str().to_owned(),
                "application/json".to_owned(),
            ));
        }
        Some(self.held.completion(StoredResponse {
            status: 200,
            headers,
            body,
        }))
    }

    /// The settlement carrying [`Replayable::completion`] committed.
    pub fn stored(self) {
        self.held.ended();
    }

    /// The request was refused after its claim (402: its hold did not fit): the refusal is its answer to replay,
    /// unless it is not one to store.
    pub async fn refused(self, refusal: &ApiError) {
        if crate::idempotency::is_stored(refusal.status()) {
            self.held
                .complete(crate::idempotency::stored_refusal(refusal))
                .await;
        } else {
            self.held.release().await;
        }
    }

    /// The request ends without a response to replay (refused, failed, cut short): the key is free again before the
    /// answer goes out, so a retry right after it executes rather than finding the key in use.
    pub async fn release(self) {
        self.held.release().await;
    }
}
