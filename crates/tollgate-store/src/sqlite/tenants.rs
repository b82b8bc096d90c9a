//! Tenants, projects and members.

use super::keys::insert_key;
use super::rows::{self, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use tollgate_core::ports::{MemberStore, Page, PageRequest, ProjectStore, StoreError, TenantStore};
use tollgate_core::tenant::{Member, NewTenant, Project, Tenant};

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
        let p = &new.project;
        sqlx::query(
            "INSERT INTO projects (id, tenant_id, name, region, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.name)
        .bind(&p.region)
        .bind(p.status.as_str())
        .bind(p.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let m = &new.owner;
        sqlx::query(
            "INSERT INTO members (id, tenant_id, email, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&m.id)
        .bind(&m.tenant_id)
        .bind(&m.email)
        .bind(m.role.as_str())
        .bind(&m.password_hash)
        .bind(m.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_key(&mut *tx, &new.admin_key).await?;
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
        let found =
            sqlx::query("SELECT * FROM tenants WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2")
                .bind(&page.after)
                .bind(fetch_limit(page))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        rows::page(&found, page, rows::tenant)
    }
}

#[async_trait]
impl ProjectStore for SqliteStore {
    async fn get_project(
        &self,
        tenant_id: &str,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError> {
        rows::optional(
            &self.pool,
            sqlx::query("SELECT * FROM projects WHERE tenant_id = ? AND id = ?")
                .bind(tenant_id)
                .bind(project_id),
            rows::project,
        )
        .await
    }

    async fn find_project(&self, project_id: &str) -> Result<Option<Project>, StoreError> {
        rows::optional(
            &self.pool,
            sqlx::query("SELECT * FROM projects WHERE id = ?").bind(project_id),
            rows::project,
        )
        .await
    }
}

#[async_trait]
impl MemberStore for SqliteStore {
    async fn get_member(
        &self,
        tenant_id: &str,
        member_id: &str,
    ) -> Result<Option<Member>, StoreError> {
        rows::optional(
            &self.pool,
            sqlx::query("SELECT * FROM members WHERE tenant_id = ? AND id = ?")
                .bind(tenant_id)
                .bind(member_id),
            rows::member,
        )
        .await
    }
}
