//! Management routes (`/v1/organization/*`), for admin keys: each acts in its own tenant only, and any id of
//! another tenant answers 404.

pub mod admin_api_keys;
pub mod api_keys;
pub mod audit_logs;
pub mod credits;
pub mod members;
pub mod organization;
pub mod projects;
pub mod usage;
