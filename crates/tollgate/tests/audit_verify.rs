//! `tollgate audit verify` against a real database (PostgreSQL when `TOLLGATE_TEST_POSTGRES_URL` names a server,
//! else SQLite): intact chains pass; an edited row, a deleted row, two rows swapped and a cut-off end are each
//! named as the first broken link of their tenant's chain, and the command fails.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a failing step should stop the test"
)]

use serde_json::Value;
use std::process::Command;
use tollgate_core::audit::{Actor, AuditEvent, EventType, Origin};
use tollgate_core::key::KeyPrefixes;
use tollgate_core::tenant::NewTenant;
use tollgate_store::testing::ScratchDatabase;

/// Runs `tollgate --json audit verify` on `database`: its exit status and the reports it printed.
fn verify(database: &str) -> (bool, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--json", "audit", "verify"])
        .env("TOLLGATE_DATABASE_URL", database)
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports = serde_json::from_str(&stdout)
        .map_err(|e| format!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
        .unwrap();
    (out.status.success(), reports)
}

/// Runs a statement on the database (each backend's own driver: this is tampering, not the store).
async fn tamper(database: &str, sql: &str) {
    use sqlx::Executor;
    if database.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database).await.unwrap();
        pool.execute(sql).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(database).await.unwrap();
        pool.execute(sql).await.unwrap();
        pool.close().await;
    }
}

#[tokio::test]
async fn verify_names_an_edit_a_deletion_a_reordering_and_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = ScratchDatabase::from_env().await.unwrap();
    let database = match &scratch {
        Some(db) => db.url().to_owned(),
        None => format!("sqlite://{}/t.db", dir.path().display()),
    };
    let store = tollgate_store::connect(&database).await.unwrap();
    let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
    let mut tenants = Vec::new();
    for name in ["intact", "edited", "deleted", "reordered", "truncated"] {
        let (t, _) = NewTenant::build(
            &prefixes,
            name.into(),
            "pro".into(),
            "o@x.io".into(),
            None,
            1,
        );
        store.create_tenant(&t, &[]).await.unwrap();
        let events: Vec<AuditEvent> = (0..5)
            .map(|i| {
                AuditEvent::new(
                    EventType::RequestCompleted,
                    &t.tenant.id,
                    Actor::project_key("key_1"),
                    100 + i,
                    &Origin::default(),
                )
            })
            .collect();
        store.append_audit(&events).await.unwrap();
        tenants.push(t.tenant.id);
    }
    let (ok, reports) = verify(&database);
    assert!(ok, "{reports:?}");
    assert!(reports.iter().all(|r| r["broken"].is_null()), "{reports:?}");

    let tenant = |i: usize| tenants[i].as_str();
    tamper(
        &database,
        &format!(
            "UPDATE audit_events SET status = 200 WHERE tenant_id = '{}' AND seq = 2",
            tenant(1)
        ),
    )
    .await;
    tamper(
        &database,
        &format!(
            "DELETE FROM audit_events WHERE tenant_id = '{}' AND seq = 3",
            tenant(2)
        ),
    )
    .await;
    // Rows 2 and 3 trade places (their sequence numbers), through a free number for the unique constraint.
    for (from, to) in [(2, -1), (3, 2), (-1, 3)] {
        tamper(
            &database,
            &format!(
                "UPDATE audit_events SET seq = {to} WHERE tenant_id = '{}' AND seq = {from}",
                tenant(3)
            ),
        )
        .await;
    }
    tamper(
        &database,
        &format!(
            "DELETE FROM audit_events WHERE tenant_id = '{}' AND seq = 5",
            tenant(4)
        ),
    )
    .await;

    let (ok, reports) = verify(&database);
    assert!(!ok, "a broken chain fails the command");
    let broken = |i: usize| -> String {
        let report = reports
            .iter()
            .find(|r| r["tenant_id"] == tenant(i))
            .unwrap();
        report["broken"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(broken(0), "", "the intact chain still passes");
    assert!(
        broken(1).contains("(seq 2)") && broken(1).contains("hash"),
        "{}",
        broken(1)
    );
    assert!(broken(2).contains("seq 4 follows seq 2"), "{}", broken(2));
    assert!(broken(3).contains("(seq 2)"), "{}", broken(3));
    assert!(broken(4).contains("ends at seq 4"), "{}", broken(4));
}
