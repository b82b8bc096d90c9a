//! `/v1/organization/projects[/{project_id}[/archive]]`: a tenant's projects. A sandbox is a project of its own.

pub mod archive;
pub mod create;
pub mod get;
pub mod list;
pub mod update;
