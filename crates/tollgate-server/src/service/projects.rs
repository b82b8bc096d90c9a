//! Projects: create, rename, archive. Archiving stops the project's keys at once.

use super::Caller;
use crate::app::App;
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::json;
use tollgate_core::audit::{AuditEvent, EventType};
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

/// The `project.created` event of `project` (a project of its own, or a new tenant's Default project).
pub(super) fn created_event(by: &Caller, project: &Project) -> AuditEvent {
    by.event(
        EventType::ProjectCreated,
        &project.tenant_id,
        project.created_at,
    )
    .target(&project.id)
    .project(&project.id)
    .details(&json!({"name": project.name}))
}

/// Creates an active project in the global region.
pub async fn create(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    input: ProjectInput,
) -> Result<Project, ApiError> {
    let project = Project {
        id: id::new_id(id::PROJECT),
        tenant_id: tenant_id.to_owned(),
        name: super::name(&input.name, "name")?,
        region: "global".to_owned(),
        status: ProjectStatus::Active,
        created_at: app.clock.now(),
    };
    app.store
        .create_project(&project, &created_event(by, &project))
        .await?;
    Ok(project)
}

/// Renames a project (`project.updated`, unless the name is the one it has).
pub async fn rename(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    project_id: &str,
    input: ProjectInput,
) -> Result<Project, ApiError> {
    let name = super::name(&input.name, "name")?;
    let event = by
        .event(EventType::ProjectUpdated, tenant_id, app.clock.now())
        .target(project_id)
        .project(project_id)
        .details(&json!({"name": name}));
    app.store
        .rename_project(tenant_id, project_id, &name, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("project", project_id))
}

/// Archives a project (`project.archived`, unless it was archived already): its keys fail from their next request
/// on (the tenant's cached keys are forgotten).
pub async fn archive(
    app: &App,
    by: &Caller,
    tenant_id: &str,
    project_id: &str,
) -> Result<Project, ApiError> {
    let event = by
        .event(EventType::ProjectArchived, tenant_id, app.clock.now())
        .target(project_id)
        .project(project_id);
    let project = app
        .store
        .archive_project(tenant_id, project_id, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("project", project_id))?;
    app.keys.invalidate_tenant(tenant_id);
    Ok(project)
}
