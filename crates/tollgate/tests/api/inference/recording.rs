//! Charges are never lost to a store that cannot be written for a while: requests the upstream answered wait for
//! their charge and get it once the store recovers; new requests are refused with 503 meanwhile. And a balance that
//! another node reserves is never this node's to spend.

use futures::future::join_all;
use serde_json::{Value, json};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor};
use std::time::Duration;
use tollgate_core::money::Micros;
use tollgate_core::ports::{Account, LeaseRequest};
use tollgate_server::config::ExposeSecret;
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

/// Another process holding the lock that settlements need, until [`Locker::release`]: SQLite's write lock, or on
/// PostgreSQL the tables a settlement writes, locked against writers (readers still pass, as under SQLite's lock).
enum Locker {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Locker {
    /// Opens a second connection to the server's database, as another process would, and takes the lock.
    async fn lock(app: &TestApp) -> Self {
        let url = app.state.config.database_url.expose_secret();
        if app.database.is_postgres() {
            let mut c = PgConnection::connect(url).await.unwrap();
            c.execute(
                "BEGIN; LOCK TABLE credit_balances, ledger_entries, usage_records IN EXCLUSIVE MODE",
            )
            .await
            .unwrap();
            Self::Postgres(c)
        } else {
            let mut c = SqliteConnection::connect(url).await.unwrap();
            c.execute("BEGIN IMMEDIATE").await.unwrap();
            Self::Sqlite(c)
        }
    }

    async fn release(&mut self) {
        match self {
            Self::Sqlite(c) => c.execute("ROLLBACK").await.map(drop),
            Self::Postgres(c) => c.execute("ROLLBACK").await.map(drop),
        }
        .unwrap();
    }
}

/// A tenant whose wallet is warm (its holds need no store read), and another process holding the store's write lock
/// for longer than the recorder waits for it.
async fn tenant_and_locked_store(app: &TestApp) -> (TestTenant, Locker) {
    let t = app.tenant("pro").await;
    assert_eq!(
        app.chat(&t, &TestApp::chat_body("fast", "warm"))
            .await
            .status(),
        200
    );
    (t, Locker::lock(app).await)
}

#[tokio::test]
async fn answered_requests_are_charged_once_a_locked_store_recovers_and_new_ones_get_503_meanwhile()
{
    let app = TestApp::start().await;
    let (t, mut locker) = tenant_and_locked_store(&app).await;

    let plain = TestApp::chat_body("fast", "mock:words=4 plain");
    let mut streamed = TestApp::chat_body("fast", "mock:words=6 streamed");
    streamed["stream"] = json!(true);
    let in_flight = tokio::spawn({
        let (app_url, key) = (app.url.clone(), t.project_key.clone());
        async move {
            let http = reqwest::Client::new();
            let send = |body: Value| {
                http.post(format!("{app_url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
            };
            let (plain, streamed) = tokio::join!(send(plain), send(streamed));
            let (plain, streamed) = (plain.unwrap(), streamed.unwrap());
            (
                plain.status().as_u16(),
                plain.text().await.unwrap(),
                streamed.text().await.unwrap(),
            )
        }
    });
    // The recorder's first attempt fails after its 1 s busy (or lock) timeout; from then on new requests are refused.
    let mut refused = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if !app.state.recorder.is_writable() {
            refused = Some(
                app.chat(&t, &TestApp::chat_body("fast", "mock:words=1 new"))
                    .await,
            );
            break;
        }
    }
    let refused = refused.expect("a request while the store is locked is refused");
    assert_eq!(refused.headers()["retry-after"], "1");
    let err = error_of(refused, 503).await;
    assert_eq!(err["type"], "service_unavailable", "{err}");
    assert!(
        !in_flight.is_finished(),
        "answered requests wait for their charge"
    );

    locker.release().await;
    let (status, plain, streamed) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the waiting requests finish once the store recovers")
        .unwrap();
    assert_eq!(status, 200, "{plain}");
    assert_eq!(
        serde_json::from_str::<Value>(&plain).unwrap()["choices"][0]["message"]["content"],
        "w1 w2 w3 w4"
    );
    assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");

    // Both are charged, once each, exactly: (2 prompt words × 15 + 4 × 60) + (2 × 15 + 6 × 60) µ¢, plus the warm-up.
    let usage = json_of(app.get("/v1/organization/usage", &t.admin_key).await, 200).await;
    let result = &usage["data"][0]["results"][0];
    assert_eq!(result["requests"], 3, "{usage}");
    assert_eq!(result["completion_tokens"], 4 + 6 + 9, "{usage}");
    let credits: Value = app
        .get("/v1/organization/credits", &t.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let charges: Vec<String> = credits["ledger"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "charge")
        .map(|e| e["amount_cents"].to_string())
        .collect();
    assert_eq!(charges.len(), 3, "{credits}");
    assert!(charges.contains(&"-0.00027".to_owned()), "{charges:?}");
    assert!(charges.contains(&"-0.00039".to_owned()), "{charges:?}");
    // Writable again: new requests are served.
    assert_eq!(
        app.chat(&t, &TestApp::chat_body("fast", "after"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn another_node_reserves_only_what_this_node_has_not_and_neither_overspends() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 1).await;
    let body = TestApp::chat_body("fast", "mock:words=1 hi");
    assert_eq!(app.chat(&t, &body).await.status(), 200);
    let store = &app.state.store;
    let lease = |need: i64, want: i64| {
        let now = app.clock_now();
        let tenant_id = t.id.clone();
        async move {
            store
                .lease(&LeaseRequest {
                    account: Account::Tenant(&tenant_id),
                    node_id: "node_other",
                    need: Micros(need),
                    want: Micros(want),
                    now,
                    expires_at: now + 30,
                })
                .await
                .unwrap()
        }
    };
    // This node leased part of the balance for its first request: another node finds only the rest free, and
    // cannot have the whole balance.
    let balance = store.balance(&t.id).await.unwrap().balance;
    let ours = app.state.wallets.available(Account::Tenant(&t.id)).unwrap();
    assert!(ours > Micros::ZERO, "this node holds a lease");
    let probe = lease(0, 0).await;
    assert_eq!(
        probe.free,
        balance.minus(ours),
        "free is the balance less this node's lease"
    );
    assert_eq!(
        lease(balance.get(), balance.get()).await.granted,
        Micros::ZERO,
        "all or nothing"
    );
    // The other node takes everything that is free.
    let taken = lease(probe.free.get(), probe.free.get()).await;
    assert_eq!((taken.granted, taken.free), (probe.free, Micros::ZERO));
    // This node still serves from its own lease…
    assert_eq!(app.chat(&t, &body).await.status(), 200);
    // …and refuses what its lease cannot cover, naming what it could still spend.
    let unused = app.state.wallets.available(Account::Tenant(&t.id)).unwrap();
    let mut big = body.clone();
    // Two choices hold twice the worst case of one: more than the lease has left.
    big["n"] = json!(2);
    let err = error_of(app.chat(&t, &big).await, 402).await;
    assert_eq!(
        err["details"]["balance_before_cents"].to_string(),
        unused.to_string(),
        "{err}"
    );
    let after = store.balance(&t.id).await.unwrap().balance;
    assert!(
        after >= taken.lease,
        "the other node's reservation is intact: {after} ≥ {}",
        taken.lease
    );
}

#[tokio::test]
async fn concurrent_requests_across_a_store_outage_are_each_charged_once() {
    let app = TestApp::start().await;
    let (t, mut locker) = tenant_and_locked_store(&app).await;
    let requests = (0..12).map(|i| {
        let mut body = TestApp::chat_body("fast", &format!("mock:words={} n{i}", i + 1));
        body["stream"] = json!(i % 2 == 0);
        let app = &app;
        let t = &t;
        async move {
            let response = app.chat(t, &body).await;
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    let release = async {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        locker.release().await;
    };
    let (answers, ()) = tokio::join!(join_all(requests), release);
    let answered = answers.iter().filter(|(status, _)| *status == 200).count();
    for (status, body) in &answers {
        assert!(
            *status == 200 || *status == 503,
            "only served or refused: {status} {body}"
        );
        if *status == 200 && body.starts_with("data:") {
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        }
    }
    let usage = json_of(app.get("/v1/organization/usage", &t.admin_key).await, 200).await;
    assert_eq!(
        usage["data"][0]["results"][0]["requests"],
        answered + 1,
        "every answered request is recorded once: {usage}"
    );
}
