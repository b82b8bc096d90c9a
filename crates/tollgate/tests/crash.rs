//! A charge that was acknowledged survives `kill -9`: the real binary, a real SQLite file, the mock upstream as a
//! process. Requests are in flight when the server is killed; after a restart on the same database, every answered
//! request is in the ledger and the usage, none twice, and ledger and balance agree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test setup: a failing step should stop the test; load tasks are awaited"
)]

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tollgate_testkit::process::{self, free_port, json, wait_healthy};

/// The binary under test.
fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tollgate"))
}

fn spawn(args: &[&str], config: Option<&Path>) -> Child {
    process::spawn(bin(), args, config)
}

async fn get(http: &reqwest::Client, url: String, key: &str) -> Value {
    json(http.get(url).bearer_auth(key).send().await.unwrap(), 200).await
}

/// A mock upstream and a server as processes, on one SQLite file, with a funded tenant and a project key.
struct Deployment {
    _dir: tempfile::TempDir,
    mock: Child,
    server: Child,
    config: std::path::PathBuf,
    database: String,
    base: String,
    http: reqwest::Client,
    admin: String,
    key: String,
}

impl Deployment {
    /// A deployment whose configuration ends with `extra` (TOML lines).
    async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (mock_port, port) = (free_port(), free_port());
        let mock = spawn(
            &[
                "mock-upstream",
                "--listen",
                &format!("127.0.0.1:{mock_port}"),
            ],
            None,
        );
        let config = dir.path().join("tollgate.toml");
        let database = format!("sqlite://{}/data/tollgate.db", dir.path().display());
        process::write_config(&config, port, &database, mock_port, extra);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let server = spawn(&["serve"], Some(&config));
        wait_healthy(&http, &format!("http://127.0.0.1:{mock_port}/healthz")).await;
        wait_healthy(&http, &format!("{base}/healthz")).await;

        let created = process::create_tenant(&http, &base, "Crash").await;
        let (tenant, admin, project) = (created.id, created.admin_key, created.project_id);
        process::grant(&http, &base, &tenant, 100).await;
        let (key, _) = process::create_key(&http, &base, &admin, &project).await;
        Self {
            _dir: dir,
            mock,
            server,
            config,
            database,
            base,
            http,
            admin,
            key,
        }
    }
}

#[tokio::test]
async fn acknowledged_charges_survive_kill_9() {
    survive_kill_9("").await;
}

/// `durability = "process"` keeps the same promise against a crash of the process (not of the machine).
#[tokio::test]
async fn with_process_durability_acknowledged_charges_survive_kill_9() {
    survive_kill_9(r#"durability = "process""#).await;
}

async fn survive_kill_9(extra: &str) {
    let Deployment {
        _dir,
        mut mock,
        mut server,
        config,
        base,
        http,
        admin,
        key,
        ..
    } = Deployment::start(extra).await;

    // 8 workers send requests back to back (each waits 20 ms upstream); the server dies after 40 answers.
    let answered = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "mock:latency=20 crash"}]});
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, key, body) = (
                http.clone(),
                format!("{base}/v1/chat/completions"),
                key.clone(),
                body.clone(),
            );
            let (answered, sent) = (Arc::clone(&answered), Arc::clone(&sent));
            tokio::spawn(async move {
                loop {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let Ok(response) = http.post(&url).bearer_auth(&key).json(&body).send().await
                    else {
                        return; // the server is gone
                    };
                    assert_eq!(response.status(), 200);
                    // Answered means the whole body arrived.
                    if response.bytes().await.is_err() {
                        return;
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    while answered.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill().unwrap(); // SIGKILL: no drain, no shutdown hook
    server.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let (answered, sent) = (answered.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));

    let mut server = spawn(&["serve"], Some(&config));
    wait_healthy(&http, &format!("{base}/healthz")).await;
    let usage = get(&http, format!("{base}/v1/organization/usage"), &admin).await;
    let recorded = usage["data"][0]["results"][0]["requests"].as_u64().unwrap() as usize;
    assert!(
        recorded >= answered,
        "{answered} answered but only {recorded} recorded"
    );
    assert!(
        recorded <= sent,
        "{recorded} recorded of {sent} sent: something was counted twice"
    );
    let credits = get(
        &http,
        format!("{base}/v1/organization/credits?limit=100"),
        &admin,
    )
    .await;
    // Each request cost 2×15 + 9×60 = 570 µ¢; the ledger holds one charge per recorded request.
    let mut charges = 0;
    let mut page = credits.clone();
    loop {
        let entries = page["ledger"]["data"].as_array().unwrap().clone();
        charges += entries.iter().filter(|e| e["kind"] == "charge").count();
        if !page["ledger"]["has_more"].as_bool().unwrap() {
            break;
        }
        let after = page["ledger"]["last_id"].as_str().unwrap();
        let url = format!("{base}/v1/organization/credits?limit=100&after={after}");
        page = get(&http, url, &admin).await;
    }
    assert_eq!(charges, recorded);
    let expected = (100_000_000 - 570 * recorded as i64) as f64 / 1e6;
    assert_eq!(credits["balance_cents"].as_f64().unwrap(), expected);
    // Holds of the killed requests did not survive: the whole balance is available again.
    let after_restart = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(after_restart.status(), 200);

    server.kill().unwrap();
    mock.kill().unwrap();
    let _ = (server.wait(), mock.wait());
}

/// One answered request of the load below: its id, and whether it finished after the signal.
struct Answer {
    request_id: String,
    after_signal: bool,
}

#[tokio::test]
async fn sigterm_under_load_drains_in_flight_requests_and_records_every_answer() {
    let d = Deployment::start("").await;
    let mut server = d.server;
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    // 12 workers, half sending slow plain requests, half slow streams, each request with its own id.
    let workers: Vec<_> = (0..12)
        .map(|w| {
            let (http, url, key) = (
                d.http.clone(),
                format!("{}/v1/chat/completions", d.base),
                d.key.clone(),
            );
            let (signalled, answered) = (Arc::clone(&signalled), Arc::clone(&answered));
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for n in 0.. {
                    let body = if w % 2 == 0 {
                        json!({"model": "fast", "messages": [{"role": "user", "content": "mock:latency=300 plain"}]})
                    } else {
                        json!({"model": "fast", "stream": true,
                            "messages": [{"role": "user", "content": "mock:chunk_delay=80 streamed"}]})
                    };
                    let request_id = format!("load-{w}-{n}");
                    let sent = http
                        .post(&url)
                        .bearer_auth(&key)
                        .header("x-request-id", &request_id)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(response) = sent else {
                        return answers; // no longer accepted
                    };
                    let status = response.status();
                    let Ok(text) = response.text().await else {
                        return answers;
                    };
                    assert_eq!(status, 200, "{request_id}: {text}");
                    if w % 2 == 1 {
                        assert!(text.ends_with("data: [DONE]\n\n"), "{request_id}: {text}");
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    answers.push(Answer {
                        request_id,
                        after_signal: signalled.load(Ordering::SeqCst),
                    });
                }
                answers
            })
        })
        .collect();
    while answered.load(Ordering::SeqCst) < 24 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Two clients leave their streams just before the signal: the upstream is still producing, and what it
    // produces must be charged before the process exits.
    let mut left = Vec::new();
    for n in 0..2 {
        let request_id = format!("left-{n}");
        let mut response = d
            .http
            .post(format!("{}/v1/chat/completions", d.base))
            .bearer_auth(&d.key)
            .header("x-request-id", &request_id)
            .json(&json!({"model": "fast", "stream": true,
                "messages": [{"role": "user", "content": "mock:chunk_delay=200 left"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.chunk().await.unwrap().is_some());
        drop(response);
        left.push(Answer {
            request_id,
            after_signal: false,
        });
    }
    let kill = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    signalled.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }
    let exit = tokio::task::spawn_blocking(move || server.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "a drained shutdown exits 0: {exit:?}");
    assert!(
        answers.iter().any(|a| a.after_signal),
        "requests in flight at the signal were answered, not cut"
    );
    answers.extend(left);

    // Every answered request has exactly one usage row and one charge, read straight from the database.
    use sqlx::Connection;
    let mut db = sqlx::sqlite::SqliteConnection::connect(&d.database)
        .await
        .unwrap();
    let usage: Vec<String> = sqlx::query_scalar("SELECT request_id FROM usage_records")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let charges: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM ledger_entries WHERE kind = 'charge'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    for a in &answers {
        let id = &a.request_id;
        assert_eq!(
            usage.iter().filter(|u| *u == id).count(),
            1,
            "{id} in usage once"
        );
        assert_eq!(
            charges.iter().filter(|c| *c == id).count(),
            1,
            "{id} charged once"
        );
    }
    let (sum, balance): (i64, i64) = (
        sqlx::query_scalar("SELECT SUM(amount_micros) FROM ledger_entries")
            .fetch_one(&mut db)
            .await
            .unwrap(),
        sqlx::query_scalar("SELECT balance_micros FROM credit_balances")
            .fetch_one(&mut db)
            .await
            .unwrap(),
    );
    assert_eq!(sum, balance, "ledger and balance agree");
    let mut mock = d.mock;
    mock.kill().unwrap();
    let _ = mock.wait();
    let _ = (d.admin, d.config);
}

/// `POST /v1/chat/completions` with `Idempotency-Key: idem`.
async fn idempotent_chat(d: &Deployment, idem: &str, body: &Value) -> reqwest::Response {
    d.http
        .post(format!("{}/v1/chat/completions", d.base))
        .bearer_auth(&d.key)
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The charges in the ledger.
async fn charges(d: &Deployment) -> i64 {
    use sqlx::Connection;
    let mut db = sqlx::sqlite::SqliteConnection::connect(&d.database)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE kind = 'charge'")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// An answer stored for its `Idempotency-Key` is in the charge's transaction: after `kill -9` and a restart, the
/// retry replays it, and the request was charged once.
#[tokio::test]
async fn an_idempotent_answer_is_replayed_after_kill_9() {
    let mut d = Deployment::start("").await;
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "mock:words=4 remember me"}]});
    let first = idempotent_chat(&d, "crash-replay", &body).await;
    assert_eq!(first.status(), 200);
    let text = first.text().await.unwrap();
    d.server.kill().unwrap();
    d.server.wait().unwrap();
    d.server = spawn(&["serve"], Some(&d.config));
    wait_healthy(&d.http, &format!("{}/healthz", d.base)).await;
    let again = idempotent_chat(&d, "crash-replay", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), text);
    assert_eq!(charges(&d).await, 1);
    d.server.kill().unwrap();
    d.mock.kill().unwrap();
    let _ = (d.server.wait(), d.mock.wait());
}

/// A key held by a request that `kill -9` cut short is released when the same server restarts: the retry executes
/// at once (not 409), and only it is charged.
#[tokio::test]
async fn a_key_held_by_a_killed_server_is_free_when_it_restarts() {
    let mut d = Deployment::start("").await;
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "mock:latency=1500 mock:words=3 cut short"}]});
    let cut = {
        let (http, url, key, body) = (
            d.http.clone(),
            format!("{}/v1/chat/completions", d.base),
            d.key.clone(),
            body.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .header("idempotency-key", "crash-held")
                .json(&body)
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.server.kill().unwrap();
    d.server.wait().unwrap();
    assert!(
        cut.await.unwrap().is_err(),
        "the first request was cut short"
    );
    d.server = spawn(&["serve"], Some(&d.config));
    wait_healthy(&d.http, &format!("{}/healthz", d.base)).await;
    let retry = idempotent_chat(&d, "crash-held", &body).await;
    assert!(!retry.headers().contains_key("idempotent-replayed"));
    assert_eq!(retry.status(), 200);
    assert_eq!(charges(&d).await, 1);
    d.server.kill().unwrap();
    d.mock.kill().unwrap();
    let _ = (d.server.wait(), d.mock.wait());
}
