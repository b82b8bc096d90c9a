//! The error envelope: `{"error":{"message","type","param","code"}}`, all four fields always present.

use serde::{Deserialize, Serialize};

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorObject,
}

/// What went wrong, in OpenAI's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    /// A sentence for people.
    pub message: String,
    /// The error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, or null.
    pub param: Option<String>,
    /// A machine-readable code, or null.
    pub code: Option<String>,
    /// Extra facts for some errors (e.g. balances on 402), as JSON written exactly as given (money must keep its
    /// exact decimals); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<serde_json::value::RawValue>>,
}
