//! Tenants, created whole with their first project, owner and admin key.

use super::keys::insert_key;
use super::members::insert_member;
use super::projects::insert_project;
use super::rows::{self, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use tollgate_core::ports::{Page, PageRequest, StoreError, TenantStore, TenantUpdate};
use tollgate_core::tenant::{NewTenant, Tenant};

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create_tenant(&self, new: &NewTenant) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let t = &new.tenant;
        sqlx::query(
            "INSERT INTO tenants (id, name, plan, status, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.plan)
        .bind(t.status.as_str())
        .bind(t.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_project(&mut *tx, &new.project).await?;
        insert_member(&mut *tx, &new.owner).await?;
        insert_key(&mut *tx, &new.admin_key, None).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        rows::optional(
            &self.pool,
            sqlx::query("SELECT * FROM tenants WHERE id = ?").bind(id),
            rows::tenant,
        )
        .await
    }

    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError> {
        let query =
            sqlx::query("SELECT * FROM tenants WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2")
                .bind(&page.after)
                .bind(fetch_limit(page));
        rows::page(&self.pool, query, page, rows::tenant).await
    }

    async fn update_tenant(
        &self,
        id: &str,
        update: &TenantUpdate,
    ) -> Result<Option<Tenant>, StoreError> {
        let query = sqlx::query(
            "UPDATE tenants SET plan = COALESCE(?, plan), status = COALESCE(?, status) WHERE id = ? \
             RETURNING *",
        )
        .bind(&update.plan)
        .bind(update.status.map(|s| s.as_str()))
        .bind(id);
        rows::optional(&self.pool, query, rows::tenant).await
    }
}
