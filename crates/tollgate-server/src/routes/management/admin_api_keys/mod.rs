//! `/v1/organization/admin_api_keys[/{key_id}]`: keys that act as a member. Everyone may list them; admins
//! create and revoke their own, owners anyone's.

pub mod create;
pub mod delete;
pub mod get;
pub mod list;

/// The object type of an admin key.
const OBJECT: &str = "organization.admin_api_key";
