//! `/v1/organization/*`.

mod admin_api_keys;
mod api_keys;
mod api_keys_roll;
mod api_keys_update;
mod audit_events;
mod audit_logs;
mod credits;
mod isolation;
mod members;
mod organization;
mod plans;
mod projects;
mod usage;
