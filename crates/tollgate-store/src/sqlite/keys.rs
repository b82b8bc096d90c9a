//! API keys: both kinds in one table, looked up by digest on the authentication path.

use super::rows::{self, KEY_COLUMNS, KEY_FIELDS, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use sqlx::SqliteExecutor;
use tollgate_core::key::KeyDigest;
use tollgate_core::ports::{KeyStore, Page, PageRequest, StoreError};
use tollgate_core::tenant::{ApiKey, KeyOwner, Principal, Timestamp};

/// Writes one key row; shared by key creation and tenant creation (whose transaction is passed in).
pub(super) async fn insert_key<'e>(
    db: impl SqliteExecutor<'e>,
    key: &ApiKey,
) -> Result<(), StoreError> {
    let (kind, project_id, member_id) = match &key.owner {
        KeyOwner::Project(p) => ("project", Some(p.as_str()), None),
        KeyOwner::Member(m) => ("admin", None, Some(m.as_str())),
    };
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, kind, project_id, member_id, name, description, digest, prefix, \
         last4, created_by, created_at, last_used_at, expires_at, revoked_at, rolled_from, allowed_ips, models) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&key.id)
    .bind(&key.tenant_id)
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
    .execute(db)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        insert_key(&self.pool, key).await
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
        owner: &KeyOwner,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, StoreError> {
        let (column, owner_id) = match owner {
            KeyOwner::Project(p) => ("project_id", p),
            KeyOwner::Member(m) => ("member_id", m),
        };
        let sql = format!(
            "SELECT {cols} FROM api_keys k WHERE k.tenant_id = ?1 AND k.{column} = ?2 \
             AND (?3 IS NULL OR k.id > ?3) ORDER BY k.id LIMIT ?4",
            cols = *KEY_COLUMNS
        );
        let found = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(owner_id)
            .bind(&page.after)
            .bind(fetch_limit(page))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows::page(&found, page, rows::key)
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
             LEFT JOIN members m ON m.id = k.member_id \
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
