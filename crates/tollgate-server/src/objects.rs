//! The JSON objects of API.md, rendered from domain values. Secrets appear only in `KeyObject::value`, which is set
//! only in the response that creates (or rolls) a key.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tollgate_core::audit::AuditEvent;
use tollgate_core::credits::{LedgerEntry, UsageTotals};
use tollgate_core::key::PlainKey;
use tollgate_core::money::Micros;
use tollgate_core::ports::Page;
use tollgate_core::tenant::{ApiKey, KeyOwner, Member, NewTenant, Project, Tenant, Timestamp};

/// `organization`.
#[derive(Debug, Serialize)]
pub struct TenantObject {
    object: &'static str,
    id: String,
    name: String,
    plan: String,
    status: &'static str,
    created_at: Timestamp,
}

impl From<&Tenant> for TenantObject {
    fn from(t: &Tenant) -> Self {
        Self {
            object: "organization",
            id: t.id.clone(),
            name: t.name.clone(),
            plan: t.plan.clone(),
            status: t.status.as_str(),
            created_at: t.created_at,
        }
    }
}

/// `organization.project`.
#[derive(Debug, Serialize)]
pub struct ProjectObject {
    object: &'static str,
    id: String,
    name: String,
    region: String,
    status: &'static str,
    created_at: Timestamp,
}

impl From<&Project> for ProjectObject {
    fn from(p: &Project) -> Self {
        Self {
            object: "organization.project",
            id: p.id.clone(),
            name: p.name.clone(),
            region: p.region.clone(),
            status: p.status.as_str(),
            created_at: p.created_at,
        }
    }
}

/// `organization.member`.
#[derive(Debug, Serialize)]
pub struct MemberObject {
    object: &'static str,
    id: String,
    email: String,
    role: &'static str,
    created_at: Timestamp,
}

impl From<&Member> for MemberObject {
    fn from(m: &Member) -> Self {
        Self {
            object: "organization.member",
            id: m.id.clone(),
            email: m.email.clone(),
            role: m.role.as_str(),
            created_at: m.created_at,
        }
    }
}

/// `organization.project.api_key` or `organization.admin_api_key`.
#[derive(Debug, Serialize)]
pub struct KeyObject {
    object: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member_id: Option<String>,
    name: String,
    description: Option<String>,
    prefix: String,
    last4: String,
    redacted_value: String,
    status: &'static str,
    created_at: Timestamp,
    created_by: Option<String>,
    last_used_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
    rolled_from: Option<String>,
    allowed_ips: Vec<String>,
    models: Option<Vec<String>>,
    rate_limits: Option<RateLimitsObject>,
    spend_limit_cents: Option<Cents>,
    spend_limit_period: Option<&'static str>,
    spent_cents: Cents,
    /// The secret: only in the response that creates the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

impl KeyObject {
    /// The object for a stored key, as of `now`.
    pub fn new(key: &ApiKey, now: Timestamp) -> Self {
        let (object, project_id, member_id) = match &key.owner {
            KeyOwner::Project(p) => ("organization.project.api_key", Some(p.clone()), None),
            KeyOwner::Member(m) => ("organization.admin_api_key", None, Some(m.clone())),
        };
        Self {
            object,
            id: key.id.clone(),
            project_id,
            member_id,
            name: key.name.clone(),
            description: key.description.clone(),
            prefix: key.prefix.clone(),
            last4: key.last4.clone(),
            redacted_value: format!("{}…{}", key.prefix, key.last4),
            status: key.status(now).as_str(),
            created_at: key.created_at,
            created_by: key.created_by.clone(),
            last_used_at: key.last_used_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            rolled_from: key.rolled_from.clone(),
            allowed_ips: key.allowed_ips.iter().map(ToString::to_string).collect(),
            models: key.models.clone(),
            rate_limits: key.rate_limits.map(|l| RateLimitsObject {
                requests_per_minute: l.requests_per_minute,
                tokens_per_minute: l.tokens_per_minute,
            }),
            spend_limit_cents: key.spend_limit.map(|l| Cents(l.amount)),
            spend_limit_period: key.spend_limit.map(|l| l.period.as_str()),
            spent_cents: Cents(key.spent_at(now)),
            value: None,
        }
    }

    /// The object for a key just created (or rolled), with its secret shown this once.
    pub fn with_secret(key: &ApiKey, secret: &PlainKey, now: Timestamp) -> Self {
        Self {
            value: Some(secret.expose_secret().to_owned()),
            ..Self::new(key, now)
        }
    }
}

/// A key's `rate_limits`: both fields always present, null where the plan's limit applies.
#[derive(Debug, Serialize)]
pub struct RateLimitsObject {
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
}

/// `{"object":"<type>.deleted","id","deleted":true}`.
#[derive(Debug, Serialize)]
pub struct Deleted {
    object: String,
    id: String,
    deleted: bool,
}

impl Deleted {
    /// The deletion of an object of type `object`.
    pub fn new(object: &str, id: &str) -> Self {
        Self {
            object: format!("{object}.deleted"),
            id: id.to_owned(),
            deleted: true,
        }
    }
}

/// `{"object":"list","data","first_id","last_id","has_more"}`.
#[derive(Debug, Serialize)]
pub struct ListObject<T> {
    object: &'static str,
    data: Vec<T>,
    first_id: Option<String>,
    last_id: Option<String>,
    has_more: bool,
}

impl<T> ListObject<T> {
    /// Renders a page; `id` reads each item's id for the cursors.
    pub fn from_page<D>(page: &Page<D>, id: impl Fn(&D) -> &str, render: impl Fn(&D) -> T) -> Self {
        Self {
            object: "list",
            first_id: page.items.first().map(|d| id(d).to_owned()),
            last_id: page.items.last().map(|d| id(d).to_owned()),
            data: page.items.iter().map(render).collect(),
            has_more: page.has_more,
        }
    }
}

/// `{"tenant","project","owner","admin_key"}`: what a new tenant starts with, the admin key's value shown once.
#[derive(Debug, Serialize)]
pub struct CreatedTenant {
    tenant: TenantObject,
    project: ProjectObject,
    owner: MemberObject,
    admin_key: KeyObject,
}

impl CreatedTenant {
    /// Renders a tenant just written, with the owner's admin key secret.
    pub fn new(new: &NewTenant, secret: &PlainKey, now: Timestamp) -> Self {
        Self {
            tenant: TenantObject::from(&new.tenant),
            project: ProjectObject::from(&new.project),
            owner: MemberObject::from(&new.owner),
            admin_key: KeyObject::with_secret(&new.admin_key, secret, now),
        }
    }
}

/// A `*_cents` JSON number, written as its exact decimal (at most 6 fraction digits; never a float artefact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cents(pub Micros);

impl Serialize for Cents {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// `organization.credits.entry`.
#[derive(Debug, Serialize)]
pub struct LedgerEntryObject {
    object: &'static str,
    id: String,
    kind: &'static str,
    amount_cents: Cents,
    balance_after_cents: Cents,
    reason: Option<String>,
    created_at: Timestamp,
}

impl From<&LedgerEntry> for LedgerEntryObject {
    fn from(e: &LedgerEntry) -> Self {
        Self {
            object: "organization.credits.entry",
            id: e.id.clone(),
            kind: e.kind.as_str(),
            amount_cents: Cents(e.amount),
            balance_after_cents: Cents(e.balance_after),
            reason: e.reason.clone(),
            created_at: e.created_at,
        }
    }
}

/// `organization.credits`: the balance and a page of the ledger, newest first.
#[derive(Debug, Serialize)]
pub struct CreditsObject {
    object: &'static str,
    balance_cents: Cents,
    ledger: ListObject<LedgerEntryObject>,
}

impl CreditsObject {
    /// Renders a balance with a ledger page.
    pub fn new(balance: Micros, ledger: &Page<LedgerEntry>) -> Self {
        Self {
            object: "organization.credits",
            balance_cents: Cents(balance),
            ledger: ListObject::from_page(ledger, |e| &e.id, |e| LedgerEntryObject::from(e)),
        }
    }
}

/// `organization.usage.result`: one group's totals; fields not grouped by are null.
#[derive(Debug, Serialize)]
pub struct UsageResultObject {
    object: &'static str,
    model: Option<String>,
    project_id: Option<String>,
    key_id: Option<String>,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_cents: Cents,
}

impl From<&UsageTotals> for UsageResultObject {
    fn from(u: &UsageTotals) -> Self {
        Self {
            object: "organization.usage.result",
            model: u.model.clone(),
            project_id: u.project_id.clone(),
            key_id: u.key_id.clone(),
            requests: u.requests,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_cents: Cents(u.cost),
        }
    }
}

/// `bucket`: a time window's results.
#[derive(Debug, Serialize)]
pub struct UsageBucketObject {
    object: &'static str,
    start_time: Timestamp,
    end_time: Timestamp,
    results: Vec<UsageResultObject>,
}

impl UsageBucketObject {
    /// A bucket for `[start_time, end_time)`.
    pub fn new(
        start_time: Timestamp,
        end_time: Timestamp,
        results: Vec<UsageResultObject>,
    ) -> Self {
        Self {
            object: "bucket",
            start_time,
            end_time,
            results,
        }
    }
}

/// `page` of usage buckets: every bucket in one page.
#[derive(Debug, Serialize)]
pub struct UsagePageObject {
    object: &'static str,
    data: Vec<UsageBucketObject>,
    has_more: bool,
    next_page: Option<String>,
}

impl UsagePageObject {
    /// All buckets, in one page.
    pub fn new(data: Vec<UsageBucketObject>) -> Self {
        Self {
            object: "page",
            data,
            has_more: false,
            next_page: None,
        }
    }
}

/// `organization.audit_log`: one audit event, fields in API.md's order (the CSV export's columns, too).
#[derive(Debug, Serialize)]
pub struct AuditEventObject {
    object: &'static str,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    effective_at: Timestamp,
    actor_type: &'static str,
    actor_id: Option<String>,
    target_id: Option<String>,
    project_id: Option<String>,
    key_id: Option<String>,
    key_last4: Option<String>,
    model: Option<String>,
    status: Option<u16>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cost_cents: Option<Cents>,
    latency_ms: Option<u64>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    details: Option<Box<RawValue>>,
}

/// The CSV export's header row: [`AuditEventObject`]'s fields in order.
pub const AUDIT_CSV_HEADER: [&str; 20] = [
    "object",
    "id",
    "type",
    "effective_at",
    "actor_type",
    "actor_id",
    "target_id",
    "project_id",
    "key_id",
    "key_last4",
    "model",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_cents",
    "latency_ms",
    "source_ip",
    "user_agent",
    "request_id",
    "details",
];

impl AuditEventObject {
    /// The object of a stored event. `details` is stored as the JSON text it was written as; text that is not
    /// JSON (only a hand-edited database holds such) is shown as a JSON string rather than failing the listing.
    pub fn of(e: &AuditEvent) -> Self {
        let details = e.details.as_ref().map(|text| {
            RawValue::from_string(text.clone()).unwrap_or_else(|_| {
                RawValue::from_string(Value::String(text.clone()).to_string())
                    .unwrap_or_else(|_| RawValue::NULL.to_owned())
            })
        });
        Self {
            object: "organization.audit_log",
            id: e.id.clone(),
            kind: e.kind.as_str(),
            effective_at: e.effective_at,
            actor_type: e.actor.kind.as_str(),
            actor_id: e.actor.id.clone(),
            target_id: e.target_id.clone(),
            project_id: e.project_id.clone(),
            key_id: e.key_id.clone(),
            key_last4: e.key_last4.clone(),
            model: e.model.clone(),
            status: e.status,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            cost_cents: e.cost.map(Cents),
            latency_ms: e.latency_ms,
            source_ip: e.origin.source_ip.clone(),
            user_agent: e.origin.user_agent.clone(),
            request_id: e.origin.request_id.clone(),
            details,
        }
    }

    /// The event as one CSV record, cells in [`AUDIT_CSV_HEADER`]'s order: null as an empty cell, `details` as
    /// its JSON text.
    pub fn csv_record(&self) -> [String; 20] {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        [
            self.object.to_owned(),
            self.id.clone(),
            self.kind.to_owned(),
            self.effective_at.to_string(),
            self.actor_type.to_owned(),
            text(&self.actor_id),
            text(&self.target_id),
            text(&self.project_id),
            text(&self.key_id),
            text(&self.key_last4),
            text(&self.model),
            num(self.status.map(u64::from)),
            num(self.prompt_tokens),
            num(self.completion_tokens),
            self.cost_cents
                .as_ref()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
            num(self.latency_ms),
            text(&self.source_ip),
            text(&self.user_agent),
            text(&self.request_id),
            self.details
                .as_ref()
                .map(|d| d.get().to_owned())
                .unwrap_or_default(),
        ]
    }
}
