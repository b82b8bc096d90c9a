//! API keys: both kinds in one table, looked up by digest on the authentication path.

use super::rows::{self, KEY_COLUMNS, KEY_FIELDS, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use sqlx::SqliteExecutor;
use tollgate_core::key::KeyDigest;
use tollgate_core::ports::{KeyLimit, KeyScope, KeyStore, Page, PageRequest, StoreError};
use tollgate_core::tenant::{ApiKey, KeyOwner, Principal, Timestamp};

/// Active project keys of the tenant's active projects at `now` (bound as `?1` tenant, `?2` now).
const ACTIVE_PROJECT_KEYS: &str = "SELECT count(*) FROM api_keys a JOIN projects p ON p.id = a.project_id \
    WHERE a.tenant_id = ?1 AND a.kind = 'project' AND a.revoked_at IS NULL \
    AND (a.expires_at IS NULL OR a.expires_at > ?2) AND p.status = 'active'";

/// Writes one key row; shared by key creation and tenant creation (whose transaction is passed in). With a
/// `limit`, the count and the insert are one statement, which SQLite runs under its write lock: two concurrent
/// creations cannot both take the last slot.
pub(super) async fn insert_key<'e>(
    db: impl SqliteExecutor<'e>,
    key: &ApiKey,
    limit: Option<KeyLimit>,
) -> Result<(), StoreError> {
    let (kind, project_id, member_id) = match &key.owner {
        KeyOwner::Project(p) => ("project", Some(p.as_str()), None),
        KeyOwner::Member(m) => ("admin", None, Some(m.as_str())),
    };
    let sql = format!(
        "INSERT INTO api_keys ({KEY_FIELDS}) SELECT ?3, ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
         ?16, ?17, ?18, ?19 WHERE ?20 IS NULL OR ({ACTIVE_PROJECT_KEYS}) < ?20"
    );
    let done = sqlx::query(&sql)
        .bind(&key.tenant_id)
        .bind(limit.map(|l| l.now))
        .bind(&key.id)
        .bind(kind)
        .bind(project_id)
        .bind(member_id)
        .bind(&key.name)
        .bind(&key.description)
        .bind(key.digest.as_bytes().as_slice())
        .bind(&key.prefix)
        .bind(&key.last4)
        .bind(&key.created_by)
        .bind(key.created_at)
        .bind(key.last_used_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .bind(&key.rolled_from)
        .bind(rows::ips_json(&key.allowed_ips)?)
        .bind(rows::models_json(key.models.as_ref())?)
        .bind(limit.map(|l| i64::from(l.max_active)))
        .execute(db)
        .await
        .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::KeyLimitReached);
    }
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &ApiKey, limit: Option<KeyLimit>) -> Result<(), StoreError> {
        insert_key(&self.pool, key, limit).await
    }

    async fn get_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        rows::optional(
            &self.pool,
            sqlx::query(&format!(
                "SELECT {cols} FROM api_keys k WHERE k.tenant_id = ? AND k.id = ?",
                cols = *KEY_COLUMNS
            ))
            .bind(tenant_id)
            .bind(key_id),
            rows::key,
        )
        .await
    }

    async fn find_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        rows::optional(
            &self.pool,
            sqlx::query(&format!(
                "SELECT {cols} FROM api_keys k WHERE k.id = ?",
                cols = *KEY_COLUMNS
            ))
            .bind(key_id),
            rows::key,
        )
        .await
    }

    async fn list_keys(
        &self,
        tenant_id: &str,
        scope: &KeyScope,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, StoreError> {
        let (filter, owner_id) = match scope {
            KeyScope::Project(p) => ("k.project_id = ?2", Some(p)),
            KeyScope::Member(m) => ("k.member_id = ?2", Some(m)),
            KeyScope::AdminKeys => ("k.kind = 'admin' AND ?2 IS NULL", None),
        };
        let sql = format!(
            "SELECT {cols} FROM api_keys k WHERE k.tenant_id = ?1 AND {filter} \
             AND (?3 IS NULL OR k.id > ?3) ORDER BY k.id LIMIT ?4",
            cols = *KEY_COLUMNS
        );
        let query = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(owner_id)
            .bind(&page.after)
            .bind(fetch_limit(page));
        rows::page(&self.pool, query, page, rows::key).await
    }

    async fn revoke_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        at: Timestamp,
    ) -> Result<Option<ApiKey>, StoreError> {
        // COALESCE keeps the first revocation time: revoking twice is harmless and tells the truth.
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ? \
             RETURNING {KEY_FIELDS}"
        );
        rows::optional(
            &self.pool,
            sqlx::query(&sql).bind(at).bind(tenant_id).bind(key_id),
            rows::key,
        )
        .await
    }

    async fn principal_by_digest(
        &self,
        digest: &KeyDigest,
    ) -> Result<Option<Principal>, StoreError> {
        let sql = format!(
            "SELECT {cols}, t.plan AS t_plan, t.status AS t_status, p.status AS p_status, m.role AS m_role \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
             LEFT JOIN projects p ON p.id = k.project_id \
             LEFT JOIN members m ON m.id = k.member_id AND m.removed_at IS NULL \
             WHERE k.digest = ?",
            cols = *KEY_COLUMNS
        );
        rows::optional(
            &self.pool,
            sqlx::query(&sql).bind(digest.as_bytes().as_slice()),
            rows::principal,
        )
        .await
    }
}
