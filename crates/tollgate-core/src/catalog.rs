//! The model catalog: public model ids, where each is served, and its prices.

use std::collections::HashMap;
use std::sync::Arc;

/// The provider id of the built-in echo model.
pub const ECHO_PROVIDER: &str = "builtin";
/// The built-in echo model's public id.
pub const ECHO_MODEL: &str = "echo";
/// Output held for a request that sets no maximum, unless the model says otherwise.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// One public model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// What clients send and see.
    pub id: String,
    /// Provider id from the config.
    pub provider: String,
    /// The name sent upstream.
    pub upstream_model: String,
    /// Price of input, in cents per million tokens.
    pub input_cents_per_million_tokens: u64,
    /// Price of output, in cents per million tokens.
    pub output_cents_per_million_tokens: u64,
    /// Output held when a request sets no maximum.
    pub max_output_tokens: u64,
    /// Input held per image part; `None`: the model takes no images (a request with one is refused).
    pub max_image_tokens: Option<u64>,
    /// Shown as `created` in `/v1/models` (when the deployment loaded it).
    pub created: i64,
}

impl ModelSpec {
    /// The built-in echo model: free, replies with the last user message.
    pub fn echo(created: i64) -> Self {
        Self {
            id: ECHO_MODEL.to_owned(),
            provider: ECHO_PROVIDER.to_owned(),
            upstream_model: ECHO_MODEL.to_owned(),
            input_cents_per_million_tokens: 0,
            output_cents_per_million_tokens: 0,
            max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
            max_image_tokens: None,
            created,
        }
    }

    /// Free models are never refused for balance.
    pub fn is_free(&self) -> bool {
        self.input_cents_per_million_tokens == 0 && self.output_cents_per_million_tokens == 0
    }
}

/// The deployment's models in config order, with lookup by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: Vec<Arc<ModelSpec>>,
    by_id: HashMap<String, Arc<ModelSpec>>,
}

impl Catalog {
    /// Builds a catalog; later duplicates of an id are ignored (config validation rejects them first).
    pub fn new(models: Vec<ModelSpec>) -> Self {
        let mut catalog = Self::default();
        for m in models {
            if catalog.by_id.contains_key(&m.id) {
                continue;
            }
            let m = Arc::new(m);
            catalog.by_id.insert(m.id.clone(), Arc::clone(&m));
            catalog.models.push(m);
        }
        catalog
    }

    /// A model by public id.
    pub fn get(&self, id: &str) -> Option<&Arc<ModelSpec>> {
        self.by_id.get(id)
    }

    /// All models in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ModelSpec>> {
        self.models.iter()
    }
}
