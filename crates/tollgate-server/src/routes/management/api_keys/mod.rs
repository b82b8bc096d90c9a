//! `/v1/organization/projects/{project_id}/api_keys[/{key_id}[/roll]]`: a project's keys.

pub mod create;
pub mod delete;
pub mod get;
pub mod list;
pub mod roll;
pub mod update;

/// The object type of a project key.
const OBJECT: &str = "organization.project.api_key";
