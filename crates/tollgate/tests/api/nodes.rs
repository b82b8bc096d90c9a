//! Several nodes on one database, as behind a load balancer: one balance that no mix of nodes overspends, and
//! reservations a crashed node leaves behind that expire.

use futures::future::join_all;
use serde_json::json;
use tollgate_core::money::Micros;
use tollgate_core::ports::LeaseRequest;
use tollgate_mock::MockConfig;
use tollgate_testkit::{TestApp, error_of};

/// Every request's worst case on `fast` (4,096 output tokens at 60 ¢ per million, plus its prompt bytes), in µ¢.
const WORST_CASE_ABOUT: i64 = 4_096 * 60;

async fn slow_node(of: Option<&TestApp>) -> TestApp {
    let builder = TestApp::builder().mock(MockConfig {
        latency_ms: 600,
        ..MockConfig::default()
    });
    match of {
        Some(app) => builder.node_of(app).start().await,
        None => builder.start().await,
    }
}

#[tokio::test]
async fn two_nodes_together_never_hold_more_than_the_tenant_has() {
    // Both upstreams are slow, so every request's hold is taken before any is settled.
    let a = slow_node(None).await;
    let b = slow_node(Some(&a)).await;
    let t = a.funded_tenant("pro", 1).await;
    let body = TestApp::chat_body("fast", "mock:words=2 hello");
    // Node b serves first, alone, so it holds a lease when the burst comes: both nodes then hold from theirs.
    assert_eq!(b.chat(&t, &body).await.status(), 200);
    let requests = (0..8).flat_map(|_| [a.chat(&t, &body), b.chat(&t, &body)]);
    let statuses: Vec<u16> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 402),
        "{statuses:?}"
    );
    // One cent covers four worst cases at once, whichever nodes hold them; each node served some.
    let at_once = usize::try_from(1_000_000 / WORST_CASE_ABOUT).unwrap();
    assert!(
        (2..=at_once).contains(&served),
        "{served} served at once: {statuses:?}"
    );
    let (a_served, b_served) = (
        statuses.iter().step_by(2).filter(|s| **s == 200).count(),
        statuses
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|s| **s == 200)
            .count(),
    );
    assert!(a_served > 0 && b_served > 0, "{statuses:?}");
    // The store charged exactly what was served, and the balance is what the ledger says.
    let balance = a.state.store.balance(&t.id).await.unwrap().balance;
    assert!(balance >= Micros::ZERO);
    let ledger = a
        .state
        .store
        .ledger(
            &t.id,
            &tollgate_core::ports::PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .unwrap();
    let charges = ledger
        .items
        .iter()
        .filter(|e| e.amount < Micros::ZERO)
        .count();
    assert_eq!(charges, served + 1, "one charge per answered request");
    let sum: i64 = ledger.items.iter().map(|e| e.amount.get()).sum();
    assert_eq!(Micros(sum), balance, "the ledger sums to the balance");
}

#[tokio::test]
async fn what_a_crashed_node_reserved_is_free_again_once_its_lease_expires() {
    let a = TestApp::start().await;
    let t = a.funded_tenant("pro", 1).await;
    // A node that reserved nearly everything and died: its lease is never renewed.
    let now = a.clock_now();
    let crashed = a
        .state
        .store
        .lease(&LeaseRequest {
            tenant_id: &t.id,
            node_id: "node_crashed",
            need: Micros(900_000),
            want: Micros(900_000),
            now,
            expires_at: now + 30,
        })
        .await
        .unwrap();
    assert_eq!(crashed.granted, Micros(900_000));
    let body = TestApp::chat_body("fast", "mock:words=1 hi");
    let err = error_of(a.chat(&t, &body).await, 402).await;
    assert_eq!(err["details"]["balance_before_cents"], json!(0.1), "{err}");
    // Past its expiry, the reservation is dropped at the next lease: the balance is whole again.
    a.clock.advance(31);
    assert_eq!(a.chat(&t, &body).await.status(), 200);
}
