//! Unit-test support shared by this crate's modules: a real, migrated SQLite store in a temporary directory and a
//! tenant built for it.

use std::sync::Arc;
use tollgate_core::audit::{Actor, AuditEvent, Cause, EventType, Origin};
use tollgate_core::key::KeyPrefixes;
use tollgate_core::ports::Store;
use tollgate_core::tenant::NewTenant;

/// A migrated SQLite store (the directory lives as long as the returned guard), its URL, and a tenant built but not
/// yet written to it.
pub(crate) async fn store_and_tenant() -> (tempfile::TempDir, String, Arc<dyn Store>, NewTenant) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = tollgate_store::connect(&url).await.unwrap();
    let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
    let tenant = NewTenant::build(
        &prefixes,
        "T".into(),
        "pro".into(),
        "o@t.io".into(),
        None,
        1,
    )
    .0;
    (dir, url, store, tenant)
}

/// The operator's event of `kind` in `tenant_id`'s log, for a store change whose events a test does not look at.
pub(crate) fn audit(kind: EventType, tenant_id: &str) -> AuditEvent {
    AuditEvent::new(kind, tenant_id, Actor::operator(), 1, &Origin::default())
}

/// The operator as the cause of a tenant update whose events a test does not look at.
pub(crate) fn by_operator() -> Cause {
    Cause {
        actor: Actor::operator(),
        at: 1,
        origin: Origin::default(),
    }
}
