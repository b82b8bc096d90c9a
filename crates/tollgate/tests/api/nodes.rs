//! Several nodes on one database, as behind a load balancer: one balance that no mix of nodes overspends,
//! reservations a crashed node leaves behind that expire, and changes made on one node (or by the CLI, straight in
//! the store) that every other node honours within a second.

use futures::future::join_all;
use serde_json::json;
use std::time::{Duration, Instant};
use tollgate_core::audit::{AuditQuery, EventType};
use tollgate_core::money::Micros;
use tollgate_core::ports::{Account, LeaseRequest};
use tollgate_mock::MockConfig;
use tollgate_server::config::ExposeSecret;
use tollgate_testkit::{TestApp, error_of, json_of};

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
    // Each node serves one first, alone, so each holds a lease when the burst comes: both then hold from theirs.
    // (With node b alone holding one, node a's first lease call raced b's calls for the rest, and lost about one
    // run in twenty-five: every request of a refused.)
    assert_eq!(a.chat(&t, &body).await.status(), 200);
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
    assert_eq!(charges, served + 2, "one charge per answered request");
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
            account: Account::Tenant(&t.id),
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

/// What each node promises: a change made anywhere is honoured everywhere within this.
const WITHIN: Duration = Duration::from_secs(1);

/// A key that `node` has just authenticated, once, and so holds in its key cache (read from the store at `cached`,
/// or a moment after).
async fn cached_on(node: &TestApp, key: &str) -> Instant {
    let cached = Instant::now();
    assert_eq!(node.get("/v1/models", key).await.status(), 200);
    cached
}

/// How long after `changed` `node` first refuses `key` with `status`, polling every 10 ms. Fails unless that is
/// within [`WITHIN`] of `cached`, when `node` read the key into its cache: so neither the cache's 5 s time-to-live
/// nor its guard against a lagging change log (it serves no entry older than a second while the log lags) can be
/// what dropped it. Only the change log can have.
async fn refused_after(
    node: &TestApp,
    key: &str,
    status: u16,
    cached: Instant,
    changed: Instant,
) -> Duration {
    refused_at(node, "/v1/models", key, status, cached, changed).await
}

/// [`refused_after`] on `GET path`.
async fn refused_at(
    node: &TestApp,
    path: &str,
    key: &str,
    status: u16,
    cached: Instant,
    changed: Instant,
) -> Duration {
    loop {
        let answer = node.get(path, key).await.status().as_u16();
        let now = Instant::now();
        if answer == status {
            assert!(
                now - cached < WITHIN,
                "refused {:?} after the change, {:?} after the key was cached",
                now - changed,
                now - cached
            );
            return now - changed;
        }
        assert_eq!(answer, 200, "before the change shows");
        assert!(
            now - cached < WITHIN,
            "still served {:?} after the change",
            now - changed
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The median and the slowest of `delays`, for the log of the run.
fn spread(delays: &mut [Duration]) -> (Duration, Duration) {
    delays.sort_unstable();
    (delays[delays.len() / 2], delays[delays.len() - 1])
}

#[tokio::test]
async fn a_key_revoked_on_one_node_is_refused_on_another_within_a_second() {
    let a = TestApp::start().await;
    let b = a.another_node().await;
    let t = a.tenant("pro").await;
    let mut delays = Vec::new();
    for round in 0..5_u64 {
        let key = a
            .create_project_key(
                &t.admin_key,
                &t.project_id,
                json!({"name": format!("k{round}")}),
            )
            .await;
        let (id, value) = (key["id"].as_str().unwrap(), key["value"].as_str().unwrap());
        let cached = cached_on(&b, value).await;
        // Revoked at a different point of node b's polling cycle each round.
        tokio::time::sleep(Duration::from_millis(round * 70)).await;
        let path = format!("/v1/organization/projects/{}/api_keys/{id}", t.project_id);
        json_of(a.delete(&path, &t.admin_key).await, 200).await;
        let revoked = Instant::now();
        // Node a forgot it at once, when it revoked it.
        assert_eq!(a.get("/v1/models", value).await.status(), 401);
        delays.push(refused_after(&b, value, 401, cached, revoked).await);
    }
    let (median, slowest) = spread(&mut delays);
    eprintln!(
        "revocation across nodes ({}): median {median:?}, slowest {slowest:?} over {} runs",
        backend(&a),
        delays.len()
    );
}

#[tokio::test]
async fn a_tenant_suspended_or_a_project_archived_on_one_node_is_refused_on_another_within_a_second()
 {
    let a = TestApp::start().await;
    let b = a.another_node().await;
    let (suspended, archived) = (a.tenant("pro").await, a.tenant("pro").await);
    // A bystander on node b, of neither tenant, is served throughout.
    let bystander = a.tenant("pro").await;
    cached_on(&b, &bystander.project_key).await;

    let cached = cached_on(&b, &suspended.project_key).await;
    let path = format!("/operator/v1/tenants/{}", suspended.id);
    json_of(
        a.operator_post(&path, &json!({"status": "suspended"}))
            .await,
        200,
    )
    .await;
    let suspension = refused_after(&b, &suspended.project_key, 403, cached, Instant::now()).await;

    let cached = cached_on(&b, &archived.project_key).await;
    let path = format!("/v1/organization/projects/{}/archive", archived.project_id);
    json_of(a.post(&path, &archived.admin_key, &json!({})).await, 200).await;
    let archive = refused_after(&b, &archived.project_key, 401, cached, Instant::now()).await;

    assert_eq!(
        b.get("/v1/models", &bystander.project_key).await.status(),
        200
    );
    eprintln!(
        "suspension across nodes ({}): {suspension:?}; archive: {archive:?}",
        backend(&a)
    );
}

#[tokio::test]
async fn a_key_revoked_straight_in_the_store_as_the_cli_does_is_refused_by_running_nodes_within_a_second()
 {
    let a = TestApp::start().await;
    let b = a.another_node().await;
    let t = a.tenant("pro").await;
    let cached = cached_on(&a, &t.project_key).await;
    cached_on(&b, &t.project_key).await;
    // Another process on the database, as `tollgate key revoke` is: no running node hears of it but through the
    // store.
    let cli = tollgate_store::connect(a.state.config.database_url.expose_secret())
        .await
        .unwrap();
    cli.revoke_key(
        &t.id,
        &t.project_key_id,
        a.clock_now(),
        &tollgate_testkit::operator_event(tollgate_core::audit::EventType::ApiKeyRevoked, &t.id),
    )
    .await
    .unwrap()
    .unwrap();
    let revoked = Instant::now();
    let on_a = refused_after(&a, &t.project_key, 401, cached, revoked).await;
    let on_b = refused_after(&b, &t.project_key, 401, cached, revoked).await;
    eprintln!(
        "revocation by the CLI ({}): node a {on_a:?}, node b {on_b:?}",
        backend(&a)
    );
}

fn backend(app: &TestApp) -> &'static str {
    if app.database.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

#[tokio::test]
async fn with_its_change_notifications_cut_a_node_still_refuses_a_revoked_key_within_a_second() {
    use sqlx::Connection;
    let a = TestApp::start().await;
    if !a.database.is_postgres() {
        // SQLite has no notifications: every test here already runs on polling alone.
        return;
    }
    let b = a.another_node().await;
    let t = a.tenant("pro").await;
    let url = a.state.config.database_url.expose_secret().to_owned();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    // Both nodes LISTEN once they are up; wait for them, then cut every listener's connection.
    let listeners = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                     AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()";
    let deadline = Instant::now() + Duration::from_secs(5);
    while sqlx::query(listeners)
        .fetch_all(&mut admin)
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "both nodes listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut = sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM ({listeners}) AS l"
    ))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut.len(), 2);
    let cached = cached_on(&b, &t.project_key).await;
    let path = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        t.project_id, t.project_key_id
    );
    json_of(a.delete(&path, &t.admin_key).await, 200).await;
    let delay = refused_after(&b, &t.project_key, 401, cached, Instant::now()).await;
    eprintln!("revocation across nodes, notifications cut (PostgreSQL): {delay:?}");
}

#[tokio::test]
async fn a_role_changed_on_one_node_is_enforced_on_another_within_a_second() {
    let a = TestApp::start().await;
    let b = a.another_node().await;
    let t = a.tenant("pro").await;
    let (member_id, admin_key) = a.member(&t, "demoted@example.com", "admin").await;
    // Renaming the project to its own name: a write an admin may make, a member may not.
    let project = format!("/v1/organization/projects/{}", t.project_id);
    let rename = json!({"name": "Default"});
    let cached = Instant::now();
    assert_eq!(b.post(&project, &admin_key, &rename).await.status(), 200);
    let path = format!("/v1/organization/members/{member_id}");
    json_of(
        a.post(&path, &t.admin_key, &json!({"role": "member"}))
            .await,
        200,
    )
    .await;
    let changed = Instant::now();
    loop {
        let status = b
            .post(&project, &admin_key, &rename)
            .await
            .status()
            .as_u16();
        let now = Instant::now();
        assert!(
            now - cached < WITHIN,
            "node b still lets the demoted member write {:?} after the change",
            now - changed
        );
        if status == 403 {
            eprintln!(
                "role change across nodes ({}): {:?}",
                backend(&a),
                now - changed
            );
            break;
        }
        assert_eq!(status, 200, "before the change shows");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_key_updated_on_one_node_holds_on_another_within_a_second() {
    let a = TestApp::start().await;
    let b = a.another_node().await;
    let t = a.tenant("enterprise").await;
    let path = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        t.project_id, t.project_key_id
    );
    // Its models: the model it may no longer use is unknown to it on node b.
    let cached = Instant::now();
    assert_eq!(b.get("/v1/models/fast", &t.project_key).await.status(), 200);
    json_of(
        a.post(&path, &t.admin_key, &json!({"models": ["echo"]}))
            .await,
        200,
    )
    .await;
    let models = refused_at(
        &b,
        "/v1/models/fast",
        &t.project_key,
        404,
        cached,
        Instant::now(),
    )
    .await;
    // Its networks: node b refuses the loopback.
    let cached = cached_on(&b, &t.project_key).await;
    json_of(
        a.post(
            &path,
            &t.admin_key,
            &json!({"allowed_ips": ["203.0.113.0/24"]}),
        )
        .await,
        200,
    )
    .await;
    let networks = refused_after(&b, &t.project_key, 403, cached, Instant::now()).await;
    eprintln!(
        "key update across nodes ({}): models {models:?}, allowed_ips {networks:?}",
        backend(&a)
    );
}

#[tokio::test]
async fn a_rolled_key_works_on_every_node_for_its_grace_period_and_then_expires_everywhere_once() {
    let a = TestApp::start().await;
    let b = a.another_node().await;
    // Each node's clock started at its own start: the second may read a second later. One time for both, as NTP
    // keeps real nodes' clocks.
    b.clock.advance(a.clock_now() - b.clock_now());
    let t = a.tenant("pro").await;
    let old = t.project_key.clone();
    let cached = cached_on(&b, &old).await;
    let path = format!(
        "/v1/organization/projects/{}/api_keys/{}/roll",
        t.project_id, t.project_key_id
    );
    let successor = json_of(
        a.post(&path, &t.admin_key, &json!({"grace_period_seconds": 30}))
            .await,
        201,
    )
    .await;
    let new = successor["value"].as_str().unwrap();
    let advance = |seconds: i64| {
        a.clock.advance(seconds);
        b.clock.advance(seconds);
    };
    for node in [&a, &b] {
        for key in [old.as_str(), new] {
            assert_eq!(node.get("/v1/models", key).await.status(), 200);
        }
    }
    advance(29);
    for node in [&a, &b] {
        for key in [old.as_str(), new] {
            assert_eq!(node.get("/v1/models", key).await.status(), 200);
        }
    }
    advance(1);
    let ended = Instant::now();
    // Node a rolled it, so forgot it at once; node b hears of its new expiry through the change log.
    assert_eq!(
        error_of(a.get("/v1/models", &old).await, 401).await["message"],
        "API key expired"
    );
    let delay = refused_after(&b, &old, 401, cached, ended).await;
    assert_eq!(
        error_of(b.get("/v1/models", &old).await, 401).await["message"],
        "API key expired"
    );
    for node in [&a, &b] {
        assert_eq!(node.get("/v1/models", new).await.status(), 200);
        for _ in 0..3 {
            assert_eq!(node.get("/v1/models", &old).await.status(), 401);
        }
    }
    // However many refusals on however many nodes: one `api_key.expired`.
    let expired = a
        .state
        .store
        .audit_events(&AuditQuery {
            tenant_id: t.id.clone(),
            kind: Some(EventType::ApiKeyExpired),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(
        expired[0].event.key_id.as_deref(),
        Some(t.project_key_id.as_str())
    );
    eprintln!("a roll's end across nodes ({}): {delay:?}", backend(&a));
}
