//! Two `tollgate serve` processes on different ports sharing one database (PostgreSQL when
//! `TOLLGATE_TEST_POSTGRES_URL` names a server, as in `.ci/run`; else one SQLite file), the mock upstream as a
//! process: a key revoked on one node is refused by the other within a second; a key created on one node works on
//! the other at once; a tenant funded for N requests spread over both
//! gets at most N, its balance exact and never negative; a node killed with SIGKILL under load loses no answered
//! request; a node that loses PostgreSQL answers 503, says so in its log, and recovers by itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test setup: a failing step should stop the test; load tasks are awaited"
)]

use serde_json::{Value, json};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tollgate_core::credits::{UsageGrouping, UsageQuery};
use tollgate_core::money::Micros;
use tollgate_core::ports::{PageRequest, Store};
use tollgate_store::testing::ScratchDatabase;
use tollgate_testkit::process::{self, Node, free_port, wait_healthy};

/// The mock, two nodes, and a tenant with an admin key, a project and a project key.
struct Cluster {
    _dir: tempfile::TempDir,
    database: Option<ScratchDatabase>,
    _mock: Child,
    nodes: Vec<Node>,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    tenant: String,
    admin: String,
    project: String,
    key: String,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scratch = ScratchDatabase::from_env().await.unwrap();
        let database = match &scratch {
            Some(db) => db.url().to_owned(),
            None => format!("sqlite://{}/data/tollgate.db", dir.path().display()),
        };
        let bin = Path::new(env!("CARGO_BIN_EXE_tollgate"));
        let mock_port = free_port();
        let mock = process::spawn(
            bin,
            &[
                "mock-upstream",
                "--listen",
                &format!("127.0.0.1:{mock_port}"),
            ],
            None,
        );
        let http = reqwest::Client::new();
        wait_healthy(&http, &format!("http://127.0.0.1:{mock_port}/healthz")).await;
        // The first node migrates the database; the second finds it migrated.
        let a = Node::start(bin, dir.path(), &database, mock_port, "", &http).await;
        let b = Node::start(bin, dir.path(), &database, mock_port, "", &http).await;
        let created = process::create_tenant(&http, &a.base, "Nodes").await;
        let (tenant, admin, project) = (created.id, created.admin_key, created.project_id);
        let store = tollgate_store::connect(&database).await.unwrap();
        let mut cluster = Self {
            _dir: dir,
            database: scratch,
            _mock: mock,
            nodes: vec![a, b],
            store,
            http,
            tenant,
            admin,
            project,
            key: String::new(),
        };
        cluster.key = cluster.create_key(0).await.0;
        cluster
    }

    /// A new project key, created through node `on`: its value and id.
    async fn create_key(&self, on: usize) -> (String, String) {
        process::create_key(&self.http, &self.nodes[on].base, &self.admin, &self.project).await
    }

    /// A chat request through node `on` with `key`, and request id `id`.
    async fn chat(&self, on: usize, key: &str, id: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.nodes[on].base))
            .bearer_auth(key)
            .header("x-request-id", id)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Every ledger entry of the tenant: (kind is charge, amount, reason).
    async fn ledger(&self) -> Vec<(bool, Micros, Option<String>)> {
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .ledger(&self.tenant, &PageRequest { after, limit: 100 })
                .await
                .unwrap();
            entries.extend(page.items.iter().map(|e| {
                (
                    e.kind == tollgate_core::credits::LedgerKind::Charge,
                    e.amount,
                    e.reason.clone(),
                )
            }));
            if !page.has_more {
                return entries;
            }
            after = page.items.last().map(|e| e.id.clone());
        }
    }

    /// Requests recorded in usage.
    async fn usage_requests(&self) -> u64 {
        let totals = self
            .store
            .usage(&UsageQuery {
                tenant_id: self.tenant.clone(),
                project_id: None,
                since: 0,
                until: 253_402_300_800,
                group: UsageGrouping::default(),
            })
            .await
            .unwrap();
        totals.iter().map(|t| t.requests).sum()
    }
}

#[tokio::test]
async fn two_processes_share_keys_money_and_survive_a_kill() {
    let c = Cluster::start().await;

    // (1) A key revoked on node A is refused on node B within a second (B has it cached).
    let (doomed, doomed_id) = c.create_key(0).await;
    let models = |on: usize, key: &str| {
        c.http
            .get(format!("{}/v1/models", c.nodes[on].base))
            .bearer_auth(key.to_owned())
            .send()
    };
    assert_eq!(models(1, &doomed).await.unwrap().status(), 200);
    let revoked = c
        .http
        .delete(format!(
            "{}/v1/organization/projects/{}/api_keys/{doomed_id}",
            c.nodes[0].base, c.project
        ))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let since = std::time::Instant::now();
    loop {
        let status = models(1, &doomed).await.unwrap().status().as_u16();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            since.elapsed() < std::time::Duration::from_secs(1),
            "node B still accepts a key revoked on node A a second ago"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // (4) A key created on node A works on node B at once.
    let (fresh, _) = c.create_key(0).await;
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "mock:words=50 go"}],
                      "max_tokens": 50});
    c.store
        .grant(
            &c.tenant,
            Micros(1),
            Some("probe"),
            1,
            &tollgate_testkit::operator_event(
                tollgate_core::audit::EventType::CreditsGranted,
                &c.tenant,
            ),
        )
        .await
        .unwrap();
    let probe = c.chat(1, &fresh, "probe", &body).await;
    assert_eq!(probe.status(), 402, "known on B (402, not 401) at once");

    // (2) Funded for exactly N requests, spread over both nodes, 4 at a time on each: at most N are served.
    const N: i64 = 20;
    // The mock counts 2 prompt and 50 completion tokens: 2 × 15 + 50 × 60 micro-cents.
    let cost = 2 * 15 + 50 * 60;
    c.store
        .grant(
            &c.tenant,
            Micros(N * cost - 1),
            Some("for N"),
            2,
            &tollgate_testkit::operator_event(
                tollgate_core::audit::EventType::CreditsGranted,
                &c.tenant,
            ),
        )
        .await
        .unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (http, base, key, body, served) = (
                c.http.clone(),
                c.nodes[w % 2].base.clone(),
                fresh.clone(),
                body.clone(),
                Arc::clone(&served),
            );
            tokio::spawn(async move {
                // Each worker stops at its first refusal: by then the balance no longer covers a worst case.
                loop {
                    let response = http
                        .post(format!("{base}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        402 => return,
                        other => panic!("{other}: {}", response.text().await.unwrap()),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let served = i64::try_from(served.load(Ordering::SeqCst)).unwrap();
    assert!(
        (N / 2..=N).contains(&served),
        "{served} served of {N} paid for"
    );
    let balance = c.store.balance(&c.tenant).await.unwrap().balance;
    assert_eq!(
        balance,
        Micros(1 + N * cost - 1 - served * cost),
        "exact, never negative"
    );
    let ledger = c.ledger().await;
    assert_eq!(
        ledger.iter().filter(|e| e.0).count(),
        usize::try_from(served).unwrap()
    );
    assert_eq!(
        Micros(ledger.iter().map(|e| e.1.get()).sum()),
        balance,
        "the ledger sums to the balance"
    );

    // (3) Node B is killed with SIGKILL under load on both nodes: every answered request is in the ledger and
    // usage.
    process::grant(&c.http, &c.nodes[0].base, &c.tenant, 100).await;
    let quick =
        json!({"model": "fast", "messages": [{"role": "user", "content": "mock:latency=20 load"}]});
    let answered_on_b = Arc::new(AtomicUsize::new(0));
    let c = Arc::new(c);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (c, body, on_b) = (Arc::clone(&c), quick.clone(), Arc::clone(&answered_on_b));
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in 0..60 {
                    let id = format!("load-{w}-{n}");
                    let node = w % 2;
                    let sent = c
                        .http
                        .post(format!("{}/v1/chat/completions", c.nodes[node].base))
                        .bearer_auth(&c.key)
                        .header("x-request-id", &id)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(response) = sent else {
                        break; // node B is gone
                    };
                    if response.status() != 200 || response.bytes().await.is_err() {
                        break;
                    }
                    if node == 1 {
                        on_b.fetch_add(1, Ordering::SeqCst);
                    }
                    answered.push(id);
                }
                answered
            })
        })
        .collect();
    while answered_on_b.load(Ordering::SeqCst) < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // Node B's process only: the Arc shares the cluster with the workers, so reach it through a raw kill.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &c.nodes[1].process.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut answered = Vec::new();
    for w in workers {
        answered.extend(w.await.unwrap());
    }
    assert!(
        answered.iter().any(|id| id.ends_with("-59")),
        "node A went on serving"
    );
    let ledger = c.ledger().await;
    let charged: std::collections::HashSet<&str> = ledger
        .iter()
        .filter(|e| e.0)
        .filter_map(|e| e.2.as_deref())
        .collect();
    for id in &answered {
        assert!(
            charged.contains(id.as_str()),
            "{id} answered but not charged"
        );
    }
    let charges = ledger.iter().filter(|e| e.0).count() as u64;
    assert_eq!(
        c.usage_requests().await,
        charges,
        "one usage row per charge"
    );
}

/// What a run of requests got before the status waited for.
#[derive(Debug, Default)]
struct Seen {
    /// Answered 200.
    answered: u64,
    /// No answer within 2 s: the upstream answered, and the response waits for its charge to be recorded.
    waiting: u64,
}

/// Polls node `on` with chat requests until one gets `status`, for at most `within`: that answer's body, and what
/// the requests before it got.
async fn until_status(
    c: &Cluster,
    on: usize,
    status: u16,
    within: std::time::Duration,
) -> (Value, Seen) {
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    let since = std::time::Instant::now();
    let mut seen = Seen::default();
    loop {
        let sent = c
            .http
            .post(format!("{}/v1/chat/completions", c.nodes[on].base))
            .bearer_auth(&c.key)
            .timeout(std::time::Duration::from_secs(2))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let got = response.status().as_u16();
                let text = response.text().await.unwrap();
                if got == status {
                    return (serde_json::from_str(&text).unwrap_or(Value::Null), seen);
                }
                seen.answered += u64::from(got == 200);
                assert!(
                    since.elapsed() < within,
                    "still {got} after {within:?}, waiting for {status}: {text}"
                );
            }
            Err(e) if e.is_timeout() => seen.waiting += 1,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_that_loses_postgres_answers_503_then_recovers_by_itself() {
    let c = Cluster::start().await;
    let Some(database) = &c.database else {
        eprintln!("note: SQLite is embedded and cannot go away: this case needs PostgreSQL");
        return;
    };
    process::grant(&c.http, &c.nodes[0].base, &c.tenant, 100).await;
    until_status(&c, 0, 200, std::time::Duration::from_secs(1)).await;
    let (mut answered, mut waiting) = (1, 0);
    let readyz = |on: usize| c.http.get(format!("{}/readyz", c.nodes[on].base)).send();
    assert_eq!(readyz(0).await.unwrap().status(), 200);

    // The database refuses every connection and ends the open ones. The node has the key cached, but once it
    // cannot read the change log it must not trust that cache, and once it cannot record a charge it takes no
    // new paid request: within seconds it answers 503. A request already answered by the upstream waits for
    // its charge to be written (its client may give up; it is charged once the database is back).
    database.refuse_connections(true).await.unwrap();
    let (error, before) = until_status(&c, 0, 503, std::time::Duration::from_secs(8)).await;
    answered += before.answered;
    waiting += before.waiting;
    assert_eq!(error["error"]["type"], "service_unavailable", "{error}");
    assert_eq!(readyz(0).await.unwrap().status(), 503);
    // A request that needs nothing but the key (no charge to record) is refused too: the cached key may have
    // been revoked meanwhile.
    let models = c
        .http
        .get(format!("{}/v1/models", c.nodes[0].base))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        models.status(),
        503,
        "no key served from a cache that may be stale"
    );
    // And it stays refused (no stale answer slips through) while the database is away.
    for _ in 0..5 {
        let (_, before) = until_status(&c, 0, 503, std::time::Duration::ZERO).await;
        assert_eq!(before.answered + before.waiting, 0);
    }
    assert_eq!(
        readyz(1).await.unwrap().status(),
        503,
        "and so does the other node"
    );
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(
        log.contains("cannot read the change log"),
        "the node says in its log that it may be stale: {log}"
    );

    // The database is back: the node recovers by itself, without a restart.
    database.refuse_connections(false).await.unwrap();
    let (_, before) = until_status(&c, 0, 200, std::time::Duration::from_secs(10)).await;
    assert_eq!(before.answered + before.waiting, 0);
    answered += 1;
    assert_eq!(readyz(0).await.unwrap().status(), 200);
    // Every request the upstream answered is charged once (those that waited through the outage too), and no
    // refused one.
    let ledger = c.ledger().await;
    let charges = ledger.iter().filter(|e| e.0).count() as u64;
    assert_eq!(c.usage_requests().await, charges);
    assert_eq!(
        charges,
        answered + waiting,
        "one charge per request the upstream answered"
    );
}
