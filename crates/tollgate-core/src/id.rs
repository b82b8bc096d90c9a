//! Prefixed ids: a type prefix and a UUIDv7 in lowercase hex, so ids sort by creation time and cursors are ids.

use uuid::Uuid;

/// Tenants (OpenAI calls them organizations).
pub const TENANT: &str = "org_";
/// Projects.
pub const PROJECT: &str = "proj_";
/// Members (users).
pub const MEMBER: &str = "user_";
/// Project API keys.
pub const PROJECT_KEY: &str = "key_";
/// Admin API keys.
pub const ADMIN_KEY: &str = "admin_key_";

/// Credit ledger entries.
pub const LEDGER_ENTRY: &str = "ledg_";
/// Usage rows (one per answered model call).
pub const USAGE: &str = "use_";
/// A running server process (its credit leases carry it).
pub const NODE: &str = "node_";
/// Audit events.
pub const AUDIT_EVENT: &str = "evt_";
/// An idempotency key's claim (one per executing request).
pub const IDEMPOTENCY_CLAIM: &str = "idem_";

/// A new id with the given prefix.
pub fn new_id(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 32);
    out.push_str(prefix);
    out.push_str(
        Uuid::now_v7()
            .simple()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_ordered() {
        let a = new_id(PROJECT);
        let b = new_id(PROJECT);
        assert!(a.starts_with("proj_"));
        assert_eq!(a.len(), 5 + 32);
        assert!(a < b, "UUIDv7 ids sort by creation");
    }
}
