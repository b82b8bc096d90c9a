//! Operations shared by the HTTP routes and the command line, so both apply the same rules: create a tenant,
//! issue, look up and revoke keys. They take the `App`, validate, call the domain for ids and secrets, write
//! through the store, and keep the key cache in step.

pub mod keys;
pub mod tenants;
