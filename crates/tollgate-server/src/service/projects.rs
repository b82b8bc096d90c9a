//! Projects: create, rename, archive. Archiving stops the project's keys at once.

use crate::app::App;
use crate::error::ApiError;
use serde::Deserialize;
use tollgate_core::id;
use tollgate_core::tenant::{Project, ProjectStatus};

/// The body of `POST /v1/organization/projects` and `POST /v1/organization/projects/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectInput {
    /// Display name.
    pub name: String,
}

/// A project of the tenant, or 404 (also for another tenant's project: existence is not leaked).
pub async fn get(app: &App, tenant_id: &str, project_id: &str) -> Result<Project, ApiError> {
    app.store
        .get_project(tenant_id, project_id)
        .await?
        .ok_or_else(|| ApiError::not_found("project", project_id))
}

/// Creates an active project in the global region.
pub async fn create(app: &App, tenant_id: &str, input: ProjectInput) -> Result<Project, ApiError> {
    let project = Project {
        id: id::new_id(id::PROJECT),
        tenant_id: tenant_id.to_owned(),
        name: super::name(&input.name, "name")?,
        region: "global".to_owned(),
        status: ProjectStatus::Active,
        created_at: app.clock.now(),
    };
    app.store.create_project(&project).await?;
    Ok(project)
}

/// Renames a project.
pub async fn rename(
    app: &App,
    tenant_id: &str,
    project_id: &str,
    input: ProjectInput,
) -> Result<Project, ApiError> {
    let name = super::name(&input.name, "name")?;
    app.store
        .rename_project(tenant_id, project_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("project", project_id))
}

/// Archives a project: its keys fail from their next request on (the tenant's cached keys are forgotten).
pub async fn archive(app: &App, tenant_id: &str, project_id: &str) -> Result<Project, ApiError> {
    let project = app
        .store
        .archive_project(tenant_id, project_id)
        .await?
        .ok_or_else(|| ApiError::not_found("project", project_id))?;
    app.keys.invalidate_tenant(tenant_id);
    Ok(project)
}
