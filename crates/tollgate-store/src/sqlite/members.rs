//! Members: people in a tenant, with the role their admin keys act with. A removed member's row stays (its keys
//! and history still name it) but it no longer counts, lists or authenticates.

use super::rows::{self, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use sqlx::{Row, SqliteExecutor};
use tollgate_core::key::KeyDigest;
use tollgate_core::ports::{MemberStore, Page, PageRequest, RemovedMember, StoreError};
use tollgate_core::role::Role;
use tollgate_core::tenant::{Member, Timestamp};

/// Writes one member row; shared by member creation and tenant creation (whose transaction is passed in).
pub(super) async fn insert_member<'e>(
    db: impl SqliteExecutor<'e>,
    m: &Member,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO members (id, tenant_id, email, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&m.id)
    .bind(&m.tenant_id)
    .bind(&m.email)
    .bind(m.role.as_str())
    .bind(&m.password_hash)
    .bind(m.created_at)
    .execute(db)
    .await
    .map_err(db_error)?;
    Ok(())
}

const CURRENT_MEMBER: &str =
    "SELECT * FROM members WHERE tenant_id = ? AND id = ? AND removed_at IS NULL";

#[async_trait]
impl MemberStore for SqliteStore {
    async fn get_member(
        &self,
        tenant_id: &str,
        member_id: &str,
    ) -> Result<Option<Member>, StoreError> {
        let query = sqlx::query(CURRENT_MEMBER).bind(tenant_id).bind(member_id);
        rows::optional(&self.pool, query, rows::member).await
    }

    async fn add_member(&self, member: &Member) -> Result<(), StoreError> {
        insert_member(&self.pool, member).await
    }

    async fn list_members(
        &self,
        tenant_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Member>, StoreError> {
        let query = sqlx::query(
            "SELECT * FROM members WHERE tenant_id = ?1 AND removed_at IS NULL AND (?2 IS NULL OR id > ?2) \
             ORDER BY id LIMIT ?3",
        )
        .bind(tenant_id)
        .bind(&page.after)
        .bind(fetch_limit(page));
        rows::page(&self.pool, query, page, rows::member).await
    }

    async fn set_role(
        &self,
        tenant_id: &str,
        member_id: &str,
        role: Role,
    ) -> Result<Option<Member>, StoreError> {
        // One statement, so the owner count and the change cannot interleave with another demotion.
        let query = sqlx::query(
            "UPDATE members SET role = ?1 WHERE tenant_id = ?2 AND id = ?3 AND removed_at IS NULL \
             AND (?1 = 'owner' OR role != 'owner' OR (SELECT count(*) FROM members \
                  WHERE tenant_id = ?2 AND role = 'owner' AND removed_at IS NULL) > 1) \
             RETURNING *",
        )
        .bind(role.as_str())
        .bind(tenant_id)
        .bind(member_id);
        match rows::optional(&self.pool, query, rows::member).await? {
            Some(member) => Ok(Some(member)),
            // Nothing changed: either there is no such member, or it is the last owner.
            None => match self.get_member(tenant_id, member_id).await? {
                Some(_) => Err(StoreError::LastOwner),
                None => Ok(None),
            },
        }
    }

    async fn remove_member(
        &self,
        tenant_id: &str,
        member_id: &str,
        at: Timestamp,
    ) -> Result<Option<RemovedMember>, StoreError> {
        // IMMEDIATE takes the write lock first, so the owner count read here still holds at the update.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let query = sqlx::query(CURRENT_MEMBER).bind(tenant_id).bind(member_id);
        let Some(member) = rows::optional(&mut *tx, query, rows::member).await? else {
            return Ok(None);
        };
        if member.role == Role::Owner {
            let owners: i64 = sqlx::query(
                "SELECT count(*) FROM members WHERE tenant_id = ? AND role = 'owner' AND removed_at IS NULL",
            )
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error)?;
            if owners <= 1 {
                return Err(StoreError::LastOwner);
            }
        }
        sqlx::query("UPDATE members SET removed_at = ? WHERE id = ?")
            .bind(at)
            .bind(member_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE member_id = ? AND revoked_at IS NULL RETURNING digest",
        )
        .bind(at)
        .bind(member_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| {
            let bytes: Vec<u8> = row.try_get("digest").map_err(db_error)?;
            KeyDigest::from_slice(&bytes)
                .ok_or_else(|| StoreError::Backend("unreadable key digest".to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(RemovedMember { member, revoked }))
    }
}
