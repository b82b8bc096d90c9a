//! Unit-test support shared by this crate's modules: a real, migrated SQLite store in a temporary directory and a
//! tenant built for it; captured log lines.

use serde_json::Value;
use std::sync::{Arc, Mutex};
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

/// Log lines written while the guard lives on this thread, as JSON values.
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub(crate) fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        (Self(buffer), tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// The lines whose `request_id` field is `id`.
    pub(crate) fn of(&self, id: &str) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["fields"]["request_id"] == id)
            .collect()
    }
}

/// Where [`Logs`] writes.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
