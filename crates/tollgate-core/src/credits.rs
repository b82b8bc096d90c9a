//! Credits as the domain sees them: ledger entries, what a finished request settles, the hold policy, and usage
//! queries.

use crate::catalog::ModelSpec;
use crate::money::{Micros, cost};
use crate::tenant::Timestamp;
use tollgate_openai::ChatCompletionRequest;

/// What moved money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerKind {
    /// Credits granted by the operator.
    Grant,
    /// A request's cost.
    Charge,
    /// A correction by the operator.
    Adjustment,
}

impl LedgerKind {
    /// Storage and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Charge => "charge",
            Self::Adjustment => "adjustment",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grant" => Some(Self::Grant),
            "charge" => Some(Self::Charge),
            "adjustment" => Some(Self::Adjustment),
            _ => None,
        }
    }
}

/// One append-only ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// `ledg_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Grant, charge or adjustment.
    pub kind: LedgerKind,
    /// Signed: positive in, negative out.
    pub amount: Micros,
    /// The balance right after this entry.
    pub balance_after: Micros,
    /// Why (the operator's words, or the request id of a charge).
    pub reason: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

/// A tenant's balance as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// The sum of the ledger.
    pub balance: Micros,
    /// The sum of grants and adjustments alone: what changes it did not come from charges.
    pub granted: Micros,
}

/// A request the provider answered: its usage row, and its charge against the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The request's id (`X-Request-Id`).
    pub request_id: String,
    /// Tenant charged.
    pub tenant_id: String,
    /// The key's project.
    pub project_id: String,
    /// The project key used.
    pub key_id: String,
    /// Public model id.
    pub model: String,
    /// Input tokens, from the provider.
    pub prompt_tokens: u64,
    /// Output tokens, from the provider.
    pub completion_tokens: u64,
    /// Their exact cost.
    pub cost: Micros,
    /// When the request finished.
    pub at: Timestamp,
}

/// An upper bound of a request's prompt tokens without a tokenizer: every token of a byte-level BPE is at least one
/// byte, so the UTF-8 length of the text bounds it; 4 more per message and 3 for the reply's priming cover the chat
/// template. Non-text parts (images, tools) are not counted; their cost is charged from the provider's usage.
pub fn prompt_upper_bound(request: &ChatCompletionRequest) -> u64 {
    let text: usize = request
        .messages
        .iter()
        .map(|m| m.content.as_ref().map_or(0, |c| c.text().len()) + 4)
        .sum();
    text as u64 + 3
}

/// The output tokens a request may produce: its own cap, else the model's.
pub fn output_cap(request: &ChatCompletionRequest, model: &ModelSpec) -> u64 {
    request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(model.max_output_tokens)
}

/// The worst-case cost held before a request is forwarded.
pub fn hold_for(request: &ChatCompletionRequest, model: &ModelSpec) -> Micros {
    cost(
        model,
        prompt_upper_bound(request),
        output_cap(request, model),
    )
}

/// Which fields usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageGrouping {
    /// One bucket per UTC day.
    pub day: bool,
    /// By public model id.
    pub model: bool,
    /// By project.
    pub project: bool,
    /// By key.
    pub key: bool,
}

/// A usage question: one tenant (optionally one project) over `[since, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// The tenant.
    pub tenant_id: String,
    /// Only this project, if set.
    pub project_id: Option<String>,
    /// Inclusive start.
    pub since: Timestamp,
    /// Exclusive end.
    pub until: Timestamp,
    /// Grouping.
    pub group: UsageGrouping,
}

/// One group's totals; fields not grouped by are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotals {
    /// Start of the UTC day, when grouped by day.
    pub day: Option<Timestamp>,
    /// Public model id.
    pub model: Option<String>,
    /// Project.
    pub project_id: Option<String>,
    /// Key.
    pub key_id: Option<String>,
    /// Requests answered.
    pub requests: u64,
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Their cost.
    pub cost: Micros,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_hold_is_the_prompt_bound_plus_the_output_cap() {
        let model = ModelSpec {
            input_cents_per_million_tokens: 10,
            output_cents_per_million_tokens: 100,
            max_output_tokens: 50,
            ..ModelSpec::echo(0)
        };
        // "hello" is 5 bytes: 5 + 4 + 3 = 12 prompt tokens at most.
        let plain = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
        );
        assert_eq!(prompt_upper_bound(&plain), 12);
        assert_eq!(hold_for(&plain, &model), Micros(12 * 10 + 50 * 100));
        let capped = request(serde_json::json!({"model": "m", "max_tokens": 7,
            "messages": [{"role": "user", "content": "hello"}]}));
        assert_eq!(hold_for(&capped, &model), Micros(12 * 10 + 7 * 100));
        let newer = request(
            serde_json::json!({"model": "m", "max_tokens": 7, "max_completion_tokens": 3,
            "messages": [{"role": "user", "content": "hello"}]}),
        );
        assert_eq!(output_cap(&newer, &model), 3);
        // Multi-byte text counts its bytes: "日本" is 6 bytes.
        let cjk = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "日本"}]}),
        );
        assert_eq!(prompt_upper_bound(&cjk), 13);
    }
}
