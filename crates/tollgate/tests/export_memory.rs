//! An audit export of 100,000 events streams in constant memory: measured on a `tollgate serve` process of its
//! own (PostgreSQL when `TOLLGATE_TEST_POSTGRES_URL` names a server, else SQLite), whose peak resident set grows
//! by far less than the export's size while a client reads the export as it comes.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a failing step should stop the test"
)]

use std::path::Path;
use tollgate_core::audit::{Actor, AuditEvent, EventType, Origin};
use tollgate_store::testing::ScratchDatabase;
use tollgate_testkit::process::{self, Node};

/// A process's peak resident memory so far, in KiB (the kernel's own accounting).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn an_export_of_100000_events_streams_in_constant_memory() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = ScratchDatabase::from_env().await.unwrap();
    let database = match &scratch {
        Some(db) => db.url().to_owned(),
        None => format!("sqlite://{}/data/tollgate.db", dir.path().display()),
    };
    let http = reqwest::Client::new();
    let bin = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    // No upstream is called: the mock's port is never listened on.
    let node = Node::start(bin, dir.path(), &database, process::free_port(), "", &http).await;
    let tenant = process::create_tenant(&http, &node.base, "Exported").await;
    let store = tollgate_store::connect(&database).await.unwrap();
    for chunk in 0..100 {
        let events: Vec<AuditEvent> = (0..1_000)
            .map(|i| {
                AuditEvent::new(
                    EventType::RequestCompleted,
                    &tenant.id,
                    Actor::project_key("key_0123456789"),
                    1_000_000 + chunk * 1_000 + i,
                    &Origin::new(
                        Some(format!("req_{chunk}_{i}")),
                        Some("10.0.0.7".into()),
                        Some("sdk/1"),
                    ),
                )
                .key("key_0123456789", "wxyz")
            })
            .collect();
        store.append_audit(&events).await.unwrap();
    }
    // Reads an export as it comes, keeping nothing but counts: its bytes and lines.
    let export = |query: &'static str| {
        let (http, url, key) = (
            http.clone(),
            format!(
                "{}/v1/organization/audit_logs?format=jsonl{query}",
                node.base
            ),
            tenant.admin_key.clone(),
        );
        async move {
            let mut response = http.get(url).bearer_auth(key).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let (mut bytes, mut lines) = (0_u64, 0_u64);
            while let Some(chunk) = response.chunk().await.unwrap() {
                bytes += chunk.len() as u64;
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            }
            (bytes, lines)
        }
    };
    let pid = node.process.id();
    let start = peak_rss_kib(pid);
    // A tenth of it first, so that what any export needs once (the database's page caches, the allocator's
    // pools) is in place before the measurement: a buffered export would then still grow ten-fold.
    let (_, warm) = export("&until=1010000").await;
    assert_eq!(warm, 10_000);
    let before = peak_rss_kib(pid);
    let (bytes, lines) = export("").await;
    let grown_kib = peak_rss_kib(pid).saturating_sub(before);
    eprintln!(
        "warm-up grew {} KiB; the full export {grown_kib} KiB",
        before - start
    );
    assert!(lines >= 100_000, "{lines} lines");
    assert!(bytes > 40 * 1024 * 1024, "{bytes} bytes exported");
    // A page of 500 events is about 280 KiB rendered; what a buffered export would need is the whole 50 MiB.
    assert!(
        grown_kib < 16 * 1024,
        "the server's peak resident memory grew by {grown_kib} KiB during an export of {bytes} bytes"
    );
}
