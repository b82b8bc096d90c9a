//! `GET /v1/models` and `GET /v1/models/{id}`.

pub mod get;
pub mod list;

use tollgate_core::catalog::ModelSpec;
use tollgate_openai::Model;

/// A catalog entry as OpenAI shows it.
fn render(spec: &ModelSpec) -> Model {
    let owned_by = if spec.provider == tollgate_core::catalog::ECHO_PROVIDER {
        "tollgate"
    } else {
        spec.provider.as_str()
    };
    Model::new(spec.id.clone(), spec.created, owned_by)
}
