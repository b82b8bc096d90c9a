//! Operations shared by the HTTP routes and the command line, so both apply the same rules: create a tenant,
//! issue, look up and revoke keys. They take the `App`, validate, call the domain for ids and secrets, write
//! through the store, and keep the key cache in step.

pub mod admin_keys;
pub mod audit;
pub mod credits;
pub mod keys;
pub mod members;
pub mod projects;
pub mod tenants;
pub mod usage;

use crate::error::ApiError;

/// A display name, trimmed: 1 to 256 characters, or 400 naming `param`.
pub fn name(raw: &str, param: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err(ApiError::bad_request(
            format!("{param} must be 1 to 256 characters"),
            Some(param),
        ));
    }
    Ok(name.to_owned())
}

/// At most 64 characters of a client's string, for echoing it in a message.
pub fn excerpt(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(at, _)| &s[..at])
}
