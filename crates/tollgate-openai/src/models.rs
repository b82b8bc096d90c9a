//! The model catalog as OpenAI shows it (`GET /v1/models`).

use serde::{Deserialize, Serialize};

/// One model: `{"id":"fast","object":"model","created":…,"owned_by":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// The public model id clients send.
    pub id: String,
    /// Always `"model"`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// Who serves it (the provider id, or `"tollgate"` for built-ins).
    pub owned_by: String,
}

impl Model {
    /// A model object with `object` set to `"model"`.
    pub fn new(id: impl Into<String>, created: i64, owned_by: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: "model".to_owned(),
            created,
            owned_by: owned_by.into(),
        }
    }
}

/// `{"object":"list","data":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// Wraps models in a list object.
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: "list".to_owned(),
            data,
        }
    }
}
