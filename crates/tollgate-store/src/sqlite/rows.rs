//! Rows to domain values. A row that does not decode (an unknown status, a malformed digest) is reported as a
//! backend failure: the database holds something this version did not write.

use super::db_error;
use ipnet::IpNet;
use sqlx::Row;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Sqlite, SqliteExecutor, SqlitePool};
use std::sync::LazyLock;
use tollgate_core::credits::{LedgerEntry, LedgerKind};
use tollgate_core::key::KeyDigest;
use tollgate_core::money::Micros;
use tollgate_core::ports::{Page, PageRequest, StoreError};
use tollgate_core::role::Role;
use tollgate_core::tenant::{
    ApiKey, KeyOwner, Member, Principal, Project, ProjectStatus, Tenant, TenantStatus,
};

/// The columns [`key`] reads, unqualified (for `RETURNING`, which takes no table alias).
pub(super) const KEY_FIELDS: &str = "id, tenant_id, kind, project_id, member_id, name, description, digest, \
    prefix, last4, created_by, created_at, last_used_at, expires_at, revoked_at, rolled_from, allowed_ips, models";

/// [`KEY_FIELDS`] qualified for a table aliased `k`, so joins with same-named columns stay unambiguous.
pub(super) static KEY_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    KEY_FIELDS
        .split(", ")
        .map(|c| format!("k.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
});

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(db_error)
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unreadable {what} in the database: {value:?}"))
}

pub(super) fn tenant(row: &SqliteRow) -> Result<Tenant, StoreError> {
    let status: String = get(row, "status")?;
    Ok(Tenant {
        id: get(row, "id")?,
        name: get(row, "name")?,
        plan: get(row, "plan")?,
        status: TenantStatus::parse(&status).ok_or_else(|| corrupt("tenant status", &status))?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn project(row: &SqliteRow) -> Result<Project, StoreError> {
    let status: String = get(row, "status")?;
    Ok(Project {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        name: get(row, "name")?,
        region: get(row, "region")?,
        status: ProjectStatus::parse(&status).ok_or_else(|| corrupt("project status", &status))?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn member(row: &SqliteRow) -> Result<Member, StoreError> {
    let role: String = get(row, "role")?;
    Ok(Member {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        email: get(row, "email")?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        password_hash: get(row, "password_hash")?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn key(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    let kind: String = get(row, "kind")?;
    let owner = match (
        kind.as_str(),
        get(row, "project_id")?,
        get(row, "member_id")?,
    ) {
        ("project", Some(project), None) => KeyOwner::Project(project),
        ("admin", None, Some(member)) => KeyOwner::Member(member),
        _ => return Err(corrupt("key owner", &kind)),
    };
    let digest: Vec<u8> = get(row, "digest")?;
    let allowed_ips: String = get(row, "allowed_ips")?;
    let models: Option<String> = get(row, "models")?;
    Ok(ApiKey {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        owner,
        name: get(row, "name")?,
        description: get(row, "description")?,
        digest: KeyDigest::from_slice(&digest).ok_or_else(|| corrupt("key digest", "(bytes)"))?,
        prefix: get(row, "prefix")?,
        last4: get(row, "last4")?,
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
        last_used_at: get(row, "last_used_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        rolled_from: get(row, "rolled_from")?,
        allowed_ips: serde_json::from_str::<Vec<IpNet>>(&allowed_ips)
            .map_err(|_| corrupt("allowed_ips", &allowed_ips))?,
        models: models
            .map(|m| serde_json::from_str::<Vec<String>>(&m).map_err(|_| corrupt("models", &m)))
            .transpose()?,
    })
}

pub(super) fn ledger_entry(row: &SqliteRow) -> Result<LedgerEntry, StoreError> {
    let kind: String = get(row, "kind")?;
    Ok(LedgerEntry {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        kind: LedgerKind::parse(&kind).ok_or_else(|| corrupt("ledger kind", &kind))?,
        amount: Micros(get(row, "amount_micros")?),
        balance_after: Micros(get(row, "balance_after_micros")?),
        reason: get(row, "reason")?,
        created_at: get(row, "created_at")?,
    })
}

/// A key row joined with its tenant (`t_plan`, `t_status`), project (`p_status`) and member (`m_role`).
pub(super) fn principal(row: &SqliteRow) -> Result<Principal, StoreError> {
    let tenant_status: String = get(row, "t_status")?;
    let project_status: Option<String> = get(row, "p_status")?;
    let role: Option<String> = get(row, "m_role")?;
    Ok(Principal {
        key: key(row)?,
        tenant_plan: get(row, "t_plan")?,
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

/// Runs `query` for at most one row and decodes it.
pub(super) async fn optional<'e, 'q, T>(
    db: impl SqliteExecutor<'e>,
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    decode: fn(&SqliteRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    query
        .fetch_optional(db)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Runs `query`, fetched with `LIMIT request.limit + 1` ([`fetch_limit`]), and decodes a page of it: the extra
/// row only says that more follow.
pub(super) async fn page<'q, T>(
    pool: &SqlitePool,
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    request: &PageRequest,
    decode: fn(&SqliteRow) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let rows = query.fetch_all(pool).await.map_err(db_error)?;
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
pub(super) fn fetch_limit(request: &PageRequest) -> i64 {
    i64::from(request.limit) + 1
}

/// JSON text of a key's network list, as stored. Serialising never silently widens access: a failure is an error.
pub(super) fn ips_json(ips: &[IpNet]) -> Result<String, StoreError> {
    serde_json::to_string(ips).map_err(|e| StoreError::Backend(e.to_string()))
}

/// JSON text of a key's model list, as stored.
pub(super) fn models_json(models: Option<&Vec<String>>) -> Result<Option<String>, StoreError> {
    models
        .map(|m| serde_json::to_string(m).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
}
