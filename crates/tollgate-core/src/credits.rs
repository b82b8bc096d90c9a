//! Credits as the domain sees them: ledger entries, what a finished request settles, the hold policy, and usage
//! queries.

use crate::audit::Origin;
use crate::catalog::ModelSpec;
use crate::money::{Micros, checked_cost};
use crate::tenant::{SpendPeriod, Timestamp};
use serde_json::Value;
use tollgate_openai::{ChatCompletionRequest, MessageContent};

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
    /// Bumped by every change to the balance (grant, charge, adjustment), by whichever process made it: of two
    /// readings, the higher version is the newer. (Holds no longer need it since they are taken against leases;
    /// the store still keeps it in step.)
    pub version: i64,
}

/// A request the provider answered: its usage row, its charge against the tenant, and its `request.completed`
/// audit event (written in the same transaction, with the amount actually charged).
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
    /// Its last four characters, for the audit event.
    pub key_last4: String,
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
    /// The HTTP status the request was answered with.
    pub status: u16,
    /// How long the request took until it was settled.
    pub latency_ms: u64,
    /// Where it came from.
    pub origin: Origin,
    /// The period of its key's spend cap, if the key has one (its charge then counts toward the cap).
    pub spend_period: Option<SpendPeriod>,
    /// The response to store for its `Idempotency-Key`, if it has one: stored in the charge's transaction, so a
    /// retry finds either both or neither.
    pub idempotency: Option<Box<crate::idempotency::Completion>>,
}

/// Of the balance beyond its `need`, a lease takes at most this share, so every other node always finds most of
/// what is left: near the end of a balance, a node's unused reservation can refuse another node's request only
/// when that request needs more than 1 − 1/16 of what remains.
pub const LEASE_SHARE: i64 = 16;

/// What a lease call grants when `free` is the balance no live lease covers: nothing if `need` does not fit;
/// otherwise `need`, plus up to `want − need` more, but never more than [`LEASE_SHARE`]'s part of what `need`
/// leaves free. Every backend grants by this rule.
pub fn lease_grant(free: Micros, need: Micros, want: Micros) -> Micros {
    let need = need.max(Micros::ZERO);
    if free < need {
        return Micros::ZERO;
    }
    let extra = want
        .minus(need)
        .max(Micros::ZERO)
        .min(Micros(free.minus(need).get() / LEASE_SHARE));
    need.plus(extra)
}

/// Tokens of chat template a message may add beyond its own JSON (role markers, separators).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 4;
/// Tokens that prime the reply.
const TEMPLATE_TOKENS_PER_REQUEST: u64 = 3;

/// A request's worst case: what it may be billed as input and output, and what that costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldEstimate {
    /// An upper bound of the prompt tokens the upstream may bill.
    pub prompt_tokens: u64,
    /// The most output tokens the request may produce, over all its choices.
    pub output_tokens: u64,
    /// Their cost: the amount held.
    pub cost: Micros,
}

/// Why a request's worst case cannot be held: each is the client's mistake (400) and names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EstimateError {
    /// `n` is 0 or over the deployment's maximum.
    #[error("n must be an integer from 1 to {max}")]
    Choices {
        /// `max_choices`.
        max: u64,
    },
    /// An image part for a model that declares no image worst case.
    #[error("The model `{model}` does not accept image input")]
    ImagesNotAccepted {
        /// Public model id.
        model: String,
        /// Where the image is, e.g. `messages[0].content[1]`.
        param: String,
    },
    /// A content part whose cost cannot be bounded before the call (audio, files…).
    #[error("Content parts of type '{kind}' are not supported by this deployment")]
    UnsupportedPart {
        /// The part's `type` (cut to 32 characters).
        kind: String,
        /// Where it is.
        param: String,
    },
    /// The worst case does not fit in money arithmetic: an absurd output cap or `n`.
    #[error("{param} is too large: the request's worst-case cost cannot be represented")]
    TooLarge {
        /// `max_completion_tokens`, `max_tokens` or `n`.
        param: &'static str,
    },
}

impl EstimateError {
    /// The request field at fault.
    pub fn param(&self) -> String {
        match self {
            Self::Choices { .. } => "n".to_owned(),
            Self::ImagesNotAccepted { param, .. } | Self::UnsupportedPart { param, .. } => {
                param.clone()
            }
            Self::TooLarge { param } => (*param).to_owned(),
        }
    }
}

/// Counts the image parts of a request, refusing parts whose cost cannot be bounded. Text parts (`text`,
/// `refusal`) are bounded by their bytes in the body; every other part type is refused.
fn image_parts(request: &ChatCompletionRequest, model: &ModelSpec) -> Result<u64, EstimateError> {
    let mut images = 0u64;
    for (m, message) in request.messages.iter().enumerate() {
        let Some(MessageContent::Parts(parts)) = &message.content else {
            continue;
        };
        for (p, part) in parts.iter().enumerate() {
            let param = || format!("messages[{m}].content[{p}]");
            match part.get("type").and_then(Value::as_str) {
                Some("text" | "refusal") => {}
                Some("image_url") if model.max_image_tokens.is_some() => images += 1,
                Some("image_url") => {
                    return Err(EstimateError::ImagesNotAccepted {
                        model: model.id.clone(),
                        param: param(),
                    });
                }
                other => {
                    return Err(EstimateError::UnsupportedPart {
                        kind: other.unwrap_or("").chars().take(32).collect(),
                        param: param(),
                    });
                }
            }
        }
    }
    Ok(images)
}

/// The output cap a request asks for (`max_completion_tokens`, else `max_tokens`, else the model's), and the field
/// it came from.
fn output_cap(request: &ChatCompletionRequest, model: &ModelSpec) -> (u64, &'static str) {
    match (request.max_completion_tokens, request.max_tokens) {
        (Some(cap), _) => (cap, "max_completion_tokens"),
        (None, Some(cap)) => (cap, "max_tokens"),
        (None, None) => (model.max_output_tokens, "n"),
    }
}

/// The worst case held before a request is forwarded, with no tokenizer.
///
/// Input: every token of a byte-level BPE is at least one byte, so the raw body's length (`body_bytes`) bounds what
/// the upstream may bill as input, whatever the body carries (messages, tools and their schemas, `response_format`,
/// tool-call arguments); the chat template adds at most a few tokens per message and per request, and each image part
/// is held at the model's `max_image_tokens`. Output: the cap (`max_completion_tokens`, else `max_tokens`, else the
/// model's `max_output_tokens`) for each of the `n` choices. All arithmetic is checked.
pub fn estimate(
    request: &ChatCompletionRequest,
    body_bytes: usize,
    model: &ModelSpec,
    max_choices: u64,
) -> Result<HoldEstimate, EstimateError> {
    let n = request.n.unwrap_or(1);
    if n == 0 || n > max_choices {
        return Err(EstimateError::Choices { max: max_choices });
    }
    let images = image_parts(request, model)?;
    let (cap, cap_field) = output_cap(request, model);
    let too_large = EstimateError::TooLarge { param: cap_field };
    let messages = request.messages.len() as u64;
    let prompt_tokens = images
        .checked_mul(model.max_image_tokens.unwrap_or(0))
        .and_then(|t| t.checked_add(body_bytes as u64))
        .and_then(|t| t.checked_add(messages.checked_mul(TEMPLATE_TOKENS_PER_MESSAGE)?))
        .and_then(|t| t.checked_add(TEMPLATE_TOKENS_PER_REQUEST))
        .ok_or(EstimateError::TooLarge { param: "messages" })?;
    let output_tokens = cap.checked_mul(n).ok_or(too_large.clone())?;
    let cost = checked_cost(model, prompt_tokens, output_tokens).ok_or(too_large)?;
    Ok(HoldEstimate {
        prompt_tokens,
        output_tokens,
        cost,
    })
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

    fn model() -> ModelSpec {
        ModelSpec {
            input_cents_per_million_tokens: 10,
            output_cents_per_million_tokens: 100,
            max_output_tokens: 50,
            max_image_tokens: Some(1000),
            ..ModelSpec::echo(0)
        }
    }

    /// The estimate of `json`, with its serialised length as the body length.
    fn estimated(json: serde_json::Value) -> Result<HoldEstimate, EstimateError> {
        let body = serde_json::to_vec(&json).unwrap();
        estimate(&request(json), body.len(), &model(), 8)
    }

    #[test]
    fn the_hold_is_the_body_bound_plus_the_output_cap_per_choice() {
        let json =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
        let body = serde_json::to_vec(&json).unwrap().len() as u64;
        let plain = estimated(json).unwrap();
        assert_eq!(plain.prompt_tokens, body + 4 + 3);
        assert_eq!(plain.output_tokens, 50, "the model's cap without one asked");
        assert_eq!(plain.cost, Micros(((body + 7) * 10 + 50 * 100) as i64));
        let capped = estimated(serde_json::json!({"model": "m", "max_tokens": 7,
            "messages": [{"role": "user", "content": "hello"}]}))
        .unwrap();
        assert_eq!(capped.output_tokens, 7);
        let newer = estimated(
            serde_json::json!({"model": "m", "max_tokens": 7, "max_completion_tokens": 3,
            "messages": [{"role": "user", "content": "hello"}]}),
        )
        .unwrap();
        assert_eq!(newer.output_tokens, 3);
        let many = estimated(serde_json::json!({"model": "m", "max_tokens": 7, "n": 8,
            "messages": [{"role": "user", "content": "hello"}]}))
        .unwrap();
        assert_eq!(many.output_tokens, 56, "every choice is held");
    }

    #[test]
    fn everything_the_body_carries_counts_as_input() {
        let schema = "x".repeat(5_000);
        let with_tools = estimated(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "description": schema}}]}),
        )
        .unwrap();
        assert!(with_tools.prompt_tokens > 5_000, "{with_tools:?}");
        let image = estimated(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}]}]}),
        )
        .unwrap();
        assert!(
            image.prompt_tokens > 2_000,
            "two images at 1000 each: {image:?}"
        );
    }

    #[test]
    fn what_cannot_be_bounded_is_refused_naming_the_field() {
        let text_only = ModelSpec {
            max_image_tokens: None,
            ..model()
        };
        let image = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
        );
        let err = estimate(&image, 100, &text_only, 8).unwrap_err();
        assert_eq!(err.param(), "messages[0].content[0]");
        let audio = estimated(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}),
        )
        .unwrap_err();
        assert!(
            matches!(audio, EstimateError::UnsupportedPart { .. }),
            "{audio:?}"
        );
        for n in [0, 9] {
            let err = estimated(serde_json::json!({"model": "m", "n": n,
                "messages": [{"role": "user", "content": "x"}]}))
            .unwrap_err();
            assert_eq!(err, EstimateError::Choices { max: 8 });
        }
        for (field, value) in [
            ("max_tokens", u64::MAX),
            ("max_completion_tokens", u64::MAX / 2),
            ("max_tokens", 1 << 60),
        ] {
            let err = estimated(serde_json::json!({"model": "m", field: value,
                "messages": [{"role": "user", "content": "x"}]}))
            .unwrap_err();
            assert_eq!(err.param(), field, "{value}");
        }
        let err = estimated(
            serde_json::json!({"model": "m", "n": 8, "max_tokens": u64::MAX / 4,
            "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap_err();
        assert_eq!(err.param(), "max_tokens");
    }

    #[test]
    fn a_lease_grants_its_need_and_a_share_of_the_rest_or_nothing() {
        let grant = |free, need, want| lease_grant(Micros(free), Micros(need), Micros(want)).get();
        assert_eq!(grant(100, 10, 1_000), 10 + 90 / 16);
        assert_eq!(grant(100, 10, 12), 12, "no more than wanted");
        assert_eq!(grant(100, 100, 500), 100);
        assert_eq!(grant(99, 100, 100), 0, "all or nothing");
        assert_eq!(grant(-5, 0, 10), 0);
        assert_eq!(grant(i64::MAX, 1, i64::MAX), 1 + (i64::MAX - 1) / 16);
    }
}
