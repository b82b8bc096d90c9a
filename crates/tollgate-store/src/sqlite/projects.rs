//! Projects: a tenant's containers for project keys.

use super::rows::{self, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use sqlx::SqliteExecutor;
use tollgate_core::ports::{Page, PageRequest, ProjectStore, StoreError};
use tollgate_core::tenant::{Project, ProjectStatus};

/// Writes one project row; shared by project creation and tenant creation (whose transaction is passed in).
pub(super) async fn insert_project<'e>(
    db: impl SqliteExecutor<'e>,
    p: &Project,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO projects (id, tenant_id, name, region, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&p.id)
    .bind(&p.tenant_id)
    .bind(&p.name)
    .bind(&p.region)
    .bind(p.status.as_str())
    .bind(p.created_at)
    .execute(db)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl ProjectStore for SqliteStore {
    async fn get_project(
        &self,
        tenant_id: &str,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError> {
        let query = sqlx::query("SELECT * FROM projects WHERE tenant_id = ? AND id = ?")
            .bind(tenant_id)
            .bind(project_id);
        rows::optional(&self.pool, query, rows::project).await
    }

    async fn find_project(&self, project_id: &str) -> Result<Option<Project>, StoreError> {
        let query = sqlx::query("SELECT * FROM projects WHERE id = ?").bind(project_id);
        rows::optional(&self.pool, query, rows::project).await
    }

    async fn create_project(&self, project: &Project) -> Result<(), StoreError> {
        insert_project(&self.pool, project).await
    }

    async fn list_projects(
        &self,
        tenant_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Project>, StoreError> {
        let query = sqlx::query(
            "SELECT * FROM projects WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
        )
        .bind(tenant_id)
        .bind(&page.after)
        .bind(fetch_limit(page));
        rows::page(&self.pool, query, page, rows::project).await
    }

    async fn rename_project(
        &self,
        tenant_id: &str,
        project_id: &str,
        name: &str,
    ) -> Result<Option<Project>, StoreError> {
        let query =
            sqlx::query("UPDATE projects SET name = ? WHERE tenant_id = ? AND id = ? RETURNING *")
                .bind(name)
                .bind(tenant_id)
                .bind(project_id);
        rows::optional(&self.pool, query, rows::project).await
    }

    async fn archive_project(
        &self,
        tenant_id: &str,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError> {
        let query = sqlx::query(
            "UPDATE projects SET status = ? WHERE tenant_id = ? AND id = ? RETURNING *",
        )
        .bind(ProjectStatus::Archived.as_str())
        .bind(tenant_id)
        .bind(project_id);
        rows::optional(&self.pool, query, rows::project).await
    }
}
