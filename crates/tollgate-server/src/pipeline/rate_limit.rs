//! Rate limits: the stage's place in the pipeline, after policy and before the hold. Limits are not enforced yet
//! (the rate-limit issue fills this in, behind a `RateLimiter` port); today every request is admitted here.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;

/// Admits the request against its tenant's and key's limits (none are enforced yet).
pub fn admit(_state: &AppState, _key: &ProjectKey) -> Result<(), ApiError> {
    Ok(())
}
