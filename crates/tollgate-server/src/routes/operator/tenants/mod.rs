//! `/operator/v1/tenants[/{id}]`.

pub mod create;
pub mod credits;
pub mod get;
pub mod list;
pub mod update;
