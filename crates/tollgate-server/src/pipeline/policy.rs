//! Policy: the model exists in the catalog (404 `model_not_found`), this key may use it (403, `param: "model"`),
//! and a provider serves it. Key, tenant and project status and the source address were checked when the key was
//! authenticated.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::auth::ProjectKey;
use std::sync::Arc;
use tollgate_core::catalog::ModelSpec;
use tollgate_core::ports::Provider;

/// The model `model` names and its provider, if this key may use it.
pub fn route(
    state: &AppState,
    key: &ProjectKey,
    model: &str,
) -> Result<(Arc<ModelSpec>, Arc<dyn Provider>), ApiError> {
    let spec = Arc::clone(
        state
            .catalog
            .get(model)
            .ok_or_else(|| ApiError::model_not_found(model))?,
    );
    key.record_model(&spec);
    if !key.may_use(&spec.id) {
        return Err(ApiError::Forbidden {
            message: format!("This API key may not use the model `{}`", spec.id),
            param: Some("model".to_owned()),
        });
    }
    let provider = Arc::clone(state.providers.get(&spec.provider).ok_or_else(|| {
        ApiError::Internal(format!(
            "no provider {:?} for model {:?}",
            spec.provider, spec.id
        ))
    })?);
    Ok((spec, provider))
}
