//! Idempotency: the stage's place in the pipeline, after rate limits and before the hold. `Idempotency-Key` is not
//! honoured yet (the idempotency issue fills this in: claim, replay, 409, 422); today every request executes.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;

/// Claims the request's idempotency key, or answers for it (not yet: every request executes).
pub fn admit(_state: &AppState, _key: &ProjectKey) -> Result<(), ApiError> {
    Ok(())
}
