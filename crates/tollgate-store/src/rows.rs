//! Rows to domain values, for both backends: the tables mean the same on SQLite and PostgreSQL, so one decoder
//! per object reads either's rows through [`Columns`]. A row that does not decode (an unknown status, a malformed
//! digest) is reported as a backend failure: the database holds something this version did not write.

use ipnet::IpNet;
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::sync::LazyLock;
use tollgate_core::audit::{
    Actor, ActorType, AuditEvent, ChainHead, ChainedEvent, EventType, Origin,
};
use tollgate_core::credits::{Balance, LedgerEntry, LedgerKind, UsageTotals};
use tollgate_core::idempotency::{ClaimOutcome, Fingerprint, StoredResponse};
use tollgate_core::key::KeyDigest;
use tollgate_core::money::Micros;
use tollgate_core::ports::{AuditChain, Change, Changed, Page, PageRequest, StoreError};
use tollgate_core::role::Role;
use tollgate_core::session::{LoginCandidate, Session, SessionDigest, SessionMember};
use tollgate_core::tenant::{
    ApiKey, KeyOwner, KeySpent, Member, Principal, Project, ProjectStatus, RateLimits, SpendLimit,
    SpendPeriod, Tenant, TenantStatus,
};

/// The columns [`key`] reads, unqualified (for `RETURNING`, which takes no table alias).
pub(crate) const KEY_FIELDS: &str = "id, tenant_id, kind, project_id, member_id, name, description, digest, \
    prefix, last4, created_by, created_at, last_used_at, expires_at, revoked_at, rolled_from, allowed_ips, models, \
    requests_per_minute, tokens_per_minute, spend_limit_micros, spend_limit_period, expired_event_at, \
    spent_micros, spent_period_start";

/// [`KEY_FIELDS`] qualified for a table aliased `k`, so joins with same-named columns stay unambiguous.
pub(crate) static KEY_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    KEY_FIELDS
        .split(", ")
        .map(|c| format!("k.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
});

/// The column types the decoders read, from a row of either backend. The blanket impl holds for every row type whose
/// database decodes these Rust types; the trait exists so that decoders name one bound instead of five.
pub(crate) trait Columns {
    /// A `TEXT` column, `NULL` allowed.
    fn text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// An integer column (`INTEGER` / `BIGINT`), `NULL` allowed.
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// A `BLOB` / `BYTEA` column, `NULL` allowed.
    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(decode_error)
    }

    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(decode_error)
    }

    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.try_get(column).map_err(decode_error)
    }
}

/// A column that is missing or of another type: the schema is not the one this version migrated to.
fn decode_error(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A `NOT NULL` column read through [`Columns`].
fn required<T>(value: Option<T>, column: &str) -> Result<T, StoreError> {
    value.ok_or_else(|| StoreError::Backend(format!("unexpected NULL in column {column}")))
}

fn text(row: &impl Columns, column: &str) -> Result<String, StoreError> {
    required(row.text(column)?, column)
}

fn int(row: &impl Columns, column: &str) -> Result<i64, StoreError> {
    required(row.int(column)?, column)
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unreadable {what} in the database: {value:?}"))
}

pub(crate) fn tenant(row: &impl Columns) -> Result<Tenant, StoreError> {
    let status = text(row, "status")?;
    Ok(Tenant {
        id: text(row, "id")?,
        name: text(row, "name")?,
        plan: text(row, "plan")?,
        status: TenantStatus::parse(&status).ok_or_else(|| corrupt("tenant status", &status))?,
        created_at: int(row, "created_at")?,
        rate_limits: per_minute_columns(row, "requests_per_minute", "tokens_per_minute")?,
    })
}

pub(crate) fn project(row: &impl Columns) -> Result<Project, StoreError> {
    let status = text(row, "status")?;
    Ok(Project {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        name: text(row, "name")?,
        region: text(row, "region")?,
        status: ProjectStatus::parse(&status).ok_or_else(|| corrupt("project status", &status))?,
        created_at: int(row, "created_at")?,
    })
}

pub(crate) fn member(row: &impl Columns) -> Result<Member, StoreError> {
    let role = text(row, "role")?;
    Ok(Member {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        email: text(row, "email")?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        password_hash: row.text("password_hash")?,
        created_at: int(row, "created_at")?,
    })
}

pub(crate) fn key(row: &impl Columns) -> Result<ApiKey, StoreError> {
    let kind = text(row, "kind")?;
    let owner = match (
        kind.as_str(),
        row.text("project_id")?,
        row.text("member_id")?,
    ) {
        ("project", Some(project), None) => KeyOwner::Project(project),
        ("admin", None, Some(member)) => KeyOwner::Member(member),
        _ => return Err(corrupt("key owner", &kind)),
    };
    let digest = required(row.bytes("digest")?, "digest")?;
    let allowed_ips = text(row, "allowed_ips")?;
    let models = row.text("models")?;
    Ok(ApiKey {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        owner,
        name: text(row, "name")?,
        description: row.text("description")?,
        digest: KeyDigest::from_slice(&digest).ok_or_else(|| corrupt("key digest", "(bytes)"))?,
        prefix: text(row, "prefix")?,
        last4: text(row, "last4")?,
        created_by: row.text("created_by")?,
        created_at: int(row, "created_at")?,
        last_used_at: row.int("last_used_at")?,
        expires_at: row.int("expires_at")?,
        revoked_at: row.int("revoked_at")?,
        rolled_from: row.text("rolled_from")?,
        allowed_ips: serde_json::from_str::<Vec<IpNet>>(&allowed_ips)
            .map_err(|_| corrupt("allowed_ips", &allowed_ips))?,
        models: models
            .map(|m| serde_json::from_str::<Vec<String>>(&m).map_err(|_| corrupt("models", &m)))
            .transpose()?,
        rate_limits: rate_limits(row)?,
        spend_limit: spend_limit(row)?,
        spent: spent(row)?,
        expiry_recorded_at: row.int("expired_event_at")?,
    })
}

/// A key's rate limit columns: none when neither is set.
fn rate_limits(row: &impl Columns) -> Result<Option<RateLimits>, StoreError> {
    let limits = per_minute_columns(row, "requests_per_minute", "tokens_per_minute")?;
    Ok((limits != RateLimits::default()).then_some(limits))
}

/// A pair of nullable per-minute limit columns (a key's, or a tenant's override).
fn per_minute_columns(
    row: &impl Columns,
    requests: &str,
    tokens: &str,
) -> Result<RateLimits, StoreError> {
    let limit = |column: &str| -> Result<Option<u64>, StoreError> {
        row.int(column)?
            .map(|v| u64::try_from(v).map_err(|_| corrupt(column, &v.to_string())))
            .transpose()
    };
    Ok(RateLimits {
        requests_per_minute: limit(requests)?,
        tokens_per_minute: limit(tokens)?,
    })
}

/// A key's spend cap columns, which the schema keeps set or unset together.
fn spend_limit(row: &impl Columns) -> Result<Option<SpendLimit>, StoreError> {
    match (
        row.int("spend_limit_micros")?,
        row.text("spend_limit_period")?,
    ) {
        (None, None) => Ok(None),
        (Some(amount), Some(period)) => Ok(Some(SpendLimit {
            amount: Micros(amount),
            period: SpendPeriod::parse(&period)
                .ok_or_else(|| corrupt("spend_limit_period", &period))?,
        })),
        (_, period) => Err(corrupt(
            "spend limit",
            period.as_deref().unwrap_or("(no period)"),
        )),
    }
}

/// A key's spending columns.
fn spent(row: &impl Columns) -> Result<KeySpent, StoreError> {
    Ok(KeySpent {
        period_start: int(row, "spent_period_start")?,
        amount: Micros(int(row, "spent_micros")?),
    })
}

/// A key's cap and its spending, from a row of `spend_limit_micros`, `spend_limit_period`, `spent_micros` and
/// `spent_period_start`; `None` without a cap.
pub(crate) fn key_spend(row: &impl Columns) -> Result<Option<(SpendLimit, KeySpent)>, StoreError> {
    Ok(match spend_limit(row)? {
        Some(limit) => Some((limit, spent(row)?)),
        None => None,
    })
}

/// A key's rate limits and spend cap as their columns hold them.
pub(crate) struct LimitColumns {
    /// `requests_per_minute`.
    pub(crate) requests_per_minute: Option<i64>,
    /// `tokens_per_minute`.
    pub(crate) tokens_per_minute: Option<i64>,
    /// `spend_limit_micros`.
    pub(crate) spend_limit_micros: Option<i64>,
    /// `spend_limit_period`.
    pub(crate) spend_limit_period: Option<&'static str>,
}

/// A key's rate limits and spend cap as their columns' values.
pub(crate) fn limit_columns(key: &ApiKey) -> Result<LimitColumns, StoreError> {
    let int = |v: Option<u64>| {
        v.map(|v| {
            i64::try_from(v).map_err(|_| StoreError::Backend(format!("rate limit {v} too large")))
        })
        .transpose()
    };
    let limits = key.rate_limits.unwrap_or_default();
    Ok(LimitColumns {
        requests_per_minute: int(limits.requests_per_minute)?,
        tokens_per_minute: int(limits.tokens_per_minute)?,
        spend_limit_micros: key.spend_limit.map(|l| l.amount.get()),
        spend_limit_period: key.spend_limit.map(|l| l.period.as_str()),
    })
}

pub(crate) fn ledger_entry(row: &impl Columns) -> Result<LedgerEntry, StoreError> {
    let kind = text(row, "kind")?;
    Ok(LedgerEntry {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        kind: LedgerKind::parse(&kind).ok_or_else(|| corrupt("ledger kind", &kind))?,
        amount: Micros(int(row, "amount_micros")?),
        balance_after: Micros(int(row, "balance_after_micros")?),
        reason: row.text("reason")?,
        created_at: int(row, "created_at")?,
    })
}

/// A `(balance_micros, version)` row.
pub(crate) fn balance(row: &impl Columns) -> Result<Balance, StoreError> {
    Ok(Balance {
        balance: Micros(int(row, "balance_micros")?),
        version: int(row, "version")?,
    })
}

/// A key row joined with its tenant (`t_plan`, `t_status`), project (`p_status`) and member (`m_role`).
pub(crate) fn principal(row: &impl Columns) -> Result<Principal, StoreError> {
    let tenant_status = text(row, "t_status")?;
    let project_status = row.text("p_status")?;
    let role = row.text("m_role")?;
    Ok(Principal {
        key: key(row)?,
        tenant_plan: text(row, "t_plan")?,
        tenant_rate_limits: per_minute_columns(
            row,
            "t_requests_per_minute",
            "t_tokens_per_minute",
        )?,
        tenant_status: TenantStatus::parse(&tenant_status)
            .ok_or_else(|| corrupt("tenant status", &tenant_status))?,
        project_status: project_status
            .map(|s| ProjectStatus::parse(&s).ok_or_else(|| corrupt("project status", &s)))
            .transpose()?,
        role: role
            .map(|r| Role::parse(&r).ok_or_else(|| corrupt("role", &r)))
            .transpose()?,
    })
}

/// A `dashboard_sessions` row joined with its member (`m_email`, `m_role`) and tenant (`t_name`, `t_plan`,
/// `t_status`).
pub(crate) fn session_member(row: &impl Columns) -> Result<SessionMember, StoreError> {
    let digest = required(row.bytes("digest")?, "digest")?;
    let role = text(row, "m_role")?;
    let tenant_status = text(row, "t_status")?;
    Ok(SessionMember {
        session: Session {
            id: text(row, "id")?,
            digest: SessionDigest(
                <[u8; 32]>::try_from(digest.as_slice())
                    .map_err(|_| corrupt("session digest", "(bytes)"))?,
            ),
            tenant_id: text(row, "tenant_id")?,
            member_id: text(row, "member_id")?,
            created_at: int(row, "created_at")?,
            last_seen_at: int(row, "last_seen_at")?,
            expires_at: int(row, "expires_at")?,
            revoked_at: row.int("revoked_at")?,
        },
        email: text(row, "m_email")?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        tenant_name: text(row, "t_name")?,
        tenant_plan: text(row, "t_plan")?,
        tenant_status: TenantStatus::parse(&tenant_status)
            .ok_or_else(|| corrupt("tenant status", &tenant_status))?,
    })
}

/// A member who may sign in, with their tenant's status (`t_status`).
pub(crate) fn login_candidate(row: &impl Columns) -> Result<LoginCandidate, StoreError> {
    let tenant_status = text(row, "t_status")?;
    Ok(LoginCandidate {
        tenant_id: text(row, "tenant_id")?,
        member_id: text(row, "member_id")?,
        password_hash: text(row, "password_hash")?,
        tenant_status: TenantStatus::parse(&tenant_status)
            .ok_or_else(|| corrupt("tenant status", &tenant_status))?,
    })
}

/// A change-log row: a digest names one key, else a tenant id names its keys, else it concerns every key.
pub(crate) fn change(row: &impl Columns) -> Result<Change, StoreError> {
    let changed = match (row.bytes("digest")?, row.text("tenant_id")?) {
        (Some(digest), _) => Changed::Key(
            KeyDigest::from_slice(&digest).ok_or_else(|| corrupt("change digest", "(bytes)"))?,
        ),
        (None, Some(tenant_id)) => Changed::Tenant(tenant_id),
        (None, None) => Changed::Everything,
    };
    Ok(Change {
        id: int(row, "id")?,
        changed,
        at_ms: int(row, "created_ms")?,
    })
}

/// Usage totals of one group, as [`crate::queries`]' usage query names its columns.
pub(crate) fn usage_totals(row: &impl Columns) -> Result<UsageTotals, StoreError> {
    let count = |column: &str| int(row, column).map(|n| u64::try_from(n).unwrap_or(0));
    Ok(UsageTotals {
        day: row.int("day")?.map(|d| d - d.rem_euclid(SECONDS_PER_DAY)),
        model: row.text("model")?,
        project_id: row.text("project_id")?,
        key_id: row.text("key_id")?,
        requests: count("requests")?,
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens")?,
        cost: Micros(int(row, "cost")?),
    })
}

const SECONDS_PER_DAY: i64 = 86_400;

/// An audit event row ([`crate::audit::EVENT_FIELDS`]).
pub(crate) fn event(row: &impl Columns) -> Result<ChainedEvent, StoreError> {
    let unsigned = |column: &str| -> Result<Option<u64>, StoreError> {
        row.int(column)?
            .map(|v| u64::try_from(v).map_err(|_| corrupt(column, &v.to_string())))
            .transpose()
    };
    let kind = text(row, "type")?;
    let actor_type = text(row, "actor_type")?;
    let status = row
        .int("status")?
        .map(|v| u16::try_from(v).map_err(|_| corrupt("status", &v.to_string())))
        .transpose()?;
    Ok(ChainedEvent {
        event: AuditEvent {
            id: text(row, "id")?,
            tenant_id: text(row, "tenant_id")?,
            kind: EventType::parse(&kind).ok_or_else(|| corrupt("type", &kind))?,
            effective_at: int(row, "effective_at")?,
            actor: Actor {
                kind: ActorType::parse(&actor_type)
                    .ok_or_else(|| corrupt("actor_type", &actor_type))?,
                id: row.text("actor_id")?,
            },
            target_id: row.text("target_id")?,
            project_id: row.text("project_id")?,
            key_id: row.text("key_id")?,
            key_last4: row.text("key_last4")?,
            model: row.text("model")?,
            status,
            prompt_tokens: unsigned("prompt_tokens")?,
            completion_tokens: unsigned("completion_tokens")?,
            cost: row.int("cost_micros")?.map(Micros),
            latency_ms: unsigned("latency_ms")?,
            origin: Origin {
                request_id: row.text("request_id")?,
                source_ip: row.text("source_ip")?,
                user_agent: row.text("user_agent")?,
                claim: Default::default(),
            },
            details: row.text("details")?,
        },
        seq: int(row, "seq")?,
        hash: text(row, "hash")?,
    })
}

/// An `audit_chains` row.
pub(crate) fn audit_chain(row: &impl Columns) -> Result<AuditChain, StoreError> {
    Ok(AuditChain {
        tenant_id: text(row, "tenant_id")?,
        anchor: ChainHead {
            seq: int(row, "anchor_seq")?,
            hash: text(row, "anchor_hash")?,
        },
        head: ChainHead {
            seq: int(row, "seq")?,
            hash: text(row, "hash")?,
        },
    })
}

/// At most one row, decoded.
pub(crate) fn one<R, T>(
    row: Option<R>,
    decode: fn(&R) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    row.as_ref().map(decode).transpose()
}

/// A page of `rows`, fetched with `LIMIT request.limit + 1` ([`fetch_limit`]): the extra row only says that more
/// follow.
pub(crate) fn page<R, T>(
    rows: Vec<R>,
    request: &PageRequest,
    decode: fn(&R) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let limit = request.limit as usize;
    let items = rows
        .iter()
        .take(limit)
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        items,
        has_more: rows.len() > limit,
    })
}

/// The `LIMIT` to fetch for `request`: one more than asked, to learn `has_more`.
pub(crate) fn fetch_limit(request: &PageRequest) -> i64 {
    i64::from(request.limit) + 1
}

/// JSON text of a key's network list, as stored. Serialising never silently widens access: a failure is an error.
pub(crate) fn ips_json(ips: &[IpNet]) -> Result<String, StoreError> {
    serde_json::to_string(ips).map_err(|e| StoreError::Backend(e.to_string()))
}

/// JSON text of a key's model list, as stored.
pub(crate) fn models_json(models: Option<&Vec<String>>) -> Result<Option<String>, StoreError> {
    models
        .map(|m| serde_json::to_string(m).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
}

/// JSON text of a stored response's headers, as stored: an array of `[name, value]` pairs.
pub(crate) fn headers_json(headers: &[(String, String)]) -> Result<String, StoreError> {
    serde_json::to_string(headers).map_err(|e| StoreError::Backend(e.to_string()))
}

/// What a claim with `fingerprint` finds in an idempotency record it could not claim: another request's record
/// (`Mismatch`, whatever its state), one still running (`InFlight`), or a completed response to replay.
pub(crate) fn idempotency_found(
    row: &impl Columns,
    fingerprint: &Fingerprint,
) -> Result<ClaimOutcome, StoreError> {
    let stored = required(row.bytes("fingerprint")?, "fingerprint")?;
    if stored.as_slice() != fingerprint.0.as_slice() {
        return Ok(ClaimOutcome::Mismatch);
    }
    let state = text(row, "state")?;
    match state.as_str() {
        "running" => Ok(ClaimOutcome::InFlight),
        "done" => {
            let status = int(row, "status")?;
            let headers = text(row, "headers")?;
            Ok(ClaimOutcome::Completed {
                response: StoredResponse {
                    status: u16::try_from(status)
                        .map_err(|_| corrupt("response status", &status.to_string()))?,
                    headers: serde_json::from_str(&headers)
                        .map_err(|_| corrupt("response headers", &headers))?,
                    body: required(row.bytes("body")?, "body")?,
                },
                request_id: text(row, "request_id")?,
            })
        }
        _ => Err(corrupt("idempotency state", &state)),
    }
}
