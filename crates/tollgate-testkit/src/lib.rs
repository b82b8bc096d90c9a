#![doc = include_str!("../README.md")]
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a setup step that fails should stop the test with its reason"
)]

pub mod process;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_core::audit::{Actor, AuditEvent, AuditQuery, EventType, Origin};
use tollgate_core::credits::{UsageGrouping, UsageQuery, UsageTotals};
use tollgate_core::ports::{Clock, ManualClock, SystemClock};
use tollgate_mock::MockConfig;
use tollgate_server::config::ExposeSecret;
use tollgate_server::config::{ModelConfig, ProviderConfig};
use tollgate_server::{App, AppState, Config};

/// The operator token every `TestApp` is configured with.
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// A running server and mock upstream; both stop when this is dropped.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The mock upstream's `http://127.0.0.1:PORT` (its API is under `/v1`).
    pub mock_url: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// The application the server runs, for looking inside (config, catalog).
    pub state: AppState,
    /// The server's clock; `advance` it to test expiry.
    pub clock: Arc<ManualClock>,
    _stop: Vec<oneshot::Sender<()>>,
    /// The server's shutdown signal (dropping it shuts the server down too) and its task, for [`TestApp::shutdown`].
    server_stop: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
    /// The database behind the server; declared last, so it is removed after the server is told to stop.
    pub database: TestDatabase,
}

/// The variable that picks the backend for [`TestApp`]s: `postgres` (with [`POSTGRES_URL_VAR`] naming a server)
/// gives each app a fresh PostgreSQL database; unset or `sqlite`, a temporary SQLite file.
pub const DATABASE_VAR: &str = "TOLLGATE_TEST_DATABASE";

pub use tollgate_store::testing::POSTGRES_URL_VAR;

/// Where a [`TestApp`]'s data lives; dropping it removes the database.
#[derive(Debug)]
pub enum TestDatabase {
    /// A temporary directory holding `tollgate.db`.
    Sqlite(tempfile::TempDir),
    /// A database created on the test server for this app alone.
    Postgres(tollgate_store::testing::ScratchDatabase),
    /// Another app's database, this app being a second node on it: the other app removes it.
    Shared {
        /// Whether that database is PostgreSQL.
        postgres: bool,
    },
}

impl TestDatabase {
    /// A fresh database on the backend that [`DATABASE_VAR`] picks, and its URL.
    async fn create() -> (Self, String) {
        match std::env::var(DATABASE_VAR).as_deref() {
            Ok("postgres") => {
                // Asked for PostgreSQL: a missing or unreachable server is a failure, never a silent SQLite run.
                let server = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
                    panic!(
                        "{DATABASE_VAR}=postgres needs {POSTGRES_URL_VAR} (see scripts/postgres)"
                    )
                });
                let db = tollgate_store::testing::ScratchDatabase::create(&server)
                    .await
                    .expect("create a test database");
                let url = db.url().to_owned();
                (Self::Postgres(db), url)
            }
            Ok("sqlite") | Err(_) => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/tollgate.db", dir.path().display());
                (Self::Sqlite(dir), url)
            }
            Ok(other) => panic!("{DATABASE_VAR}={other:?}: expected sqlite or postgres"),
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_) | Self::Shared { postgres: true })
    }
}

/// A change to the test configuration, applied before the server starts.
type ConfigChange = Box<dyn FnOnce(&mut Config)>;

/// Options for [`TestApp`].
pub struct TestAppBuilder {
    mock: MockConfig,
    configure: Vec<ConfigChange>,
    /// Another app's database URL and backend: the new app is a second node on it.
    shared: Option<(String, bool)>,
    /// The address the server listens on (port 0: any free one).
    listen: std::net::SocketAddr,
}

impl TestAppBuilder {
    /// Changes the mock upstream's behaviour.
    pub fn mock(mut self, mock: MockConfig) -> Self {
        self.mock = mock;
        self
    }

    /// Changes the server's configuration before it starts.
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Makes the new app another node on `app`'s database, as a second server behind a load balancer would be
    /// (its own process state: key cache, leases, recorder; its own mock upstream).
    pub fn node_of(mut self, app: &TestApp) -> Self {
        self.shared = Some((
            app.state.config.database_url.expose_secret().to_owned(),
            app.database.is_postgres(),
        ));
        self
    }

    /// Makes the server listen on `ip` (any free port) instead of `127.0.0.1`, e.g. `::1` to be reached over
    /// IPv6.
    pub fn listen_on(mut self, ip: std::net::IpAddr) -> Self {
        self.listen = std::net::SocketAddr::new(ip, 0);
        self
    }

    /// Starts the mock and the server.
    pub async fn start(self) -> TestApp {
        let mut stop = Vec::new();
        let mock_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let mock_url = format!("http://{}", mock_listener.local_addr().expect("mock addr"));
        let (tx, rx) = oneshot::channel::<()>();
        stop.push(tx);
        #[expect(
            clippy::disallowed_methods,
            reason = "test servers live as long as the test's runtime"
        )]
        tokio::spawn(tollgate_mock::serve(mock_listener, self.mock, async {
            let _ = rx.await;
        }));

        let (database, database_url) = match self.shared {
            Some((url, postgres)) => (TestDatabase::Shared { postgres }, url),
            None => TestDatabase::create().await,
        };
        let mut config = Config {
            database_url: database_url.into(),
            operator_token: Some(OPERATOR_TOKEN.into()),
            providers: vec![
                provider("mock", &mock_url, 5_000),
                provider("mock-impatient", &mock_url, 300),
            ],
            models: vec![
                model("fast", "mock", 15, 60),
                model("slow", "mock-impatient", 15, 60),
                model("echo", "builtin", 0, 0),
            ],
            ..Config::default()
        };
        config.models[2].upstream_model = "echo".to_owned();
        // The server's clock stands still unless a test moves it, so the plans' real per-minute limits would
        // throttle any test that sends a few requests; tests of rate limits configure the plans they need.
        config.plans = tollgate_core::plan::default_plans();
        for plan in config.plans.values_mut() {
            plan.requests_per_minute = u32::MAX;
            plan.tokens_per_minute = u64::MAX / 4;
        }
        for f in self.configure {
            f(&mut config);
        }
        let store =
            tollgate_store::connect_with(config.database_url.expose_secret(), config.durability)
                .await
                .expect("open store");
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let state =
            App::build(config, store, Arc::clone(&clock) as Arc<dyn Clock>).expect("build app");
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .expect("bind server");
        let url = format!("http://{}", listener.local_addr().expect("server addr"));
        let (server_stop, rx) = oneshot::channel::<()>();
        #[expect(
            clippy::disallowed_methods,
            reason = "test servers live as long as the test's runtime"
        )]
        let server = tokio::spawn(tollgate_server::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        TestApp {
            url,
            mock_url,
            http: reqwest::Client::new(),
            state,
            clock,
            database,
            _stop: stop,
            server_stop: Mutex::new(Some(server_stop)),
            server: Mutex::new(Some(server)),
        }
    }
}

fn provider(id: &str, mock_url: &str, timeout_ms: u64) -> ProviderConfig {
    ProviderConfig {
        id: id.to_owned(),
        kind: "openai".to_owned(),
        base_url: format!("{mock_url}/v1"),
        api_key_env: None,
        timeout_ms,
    }
}

fn model(id: &str, provider: &str, input: u64, output: u64) -> ModelConfig {
    ModelConfig {
        id: id.to_owned(),
        provider: provider.to_owned(),
        upstream_model: "mock-model".to_owned(),
        input_cents_per_million_tokens: input,
        output_cents_per_million_tokens: output,
        max_output_tokens: 4096,
        max_image_tokens: None,
    }
}

/// A tenant made through the API, with its credentials.
#[derive(Debug, Clone)]
pub struct TestTenant {
    /// `org_…`.
    pub id: String,
    /// The Default project.
    pub project_id: String,
    /// The owner.
    pub owner_id: String,
    /// The owner's admin key.
    pub admin_key: String,
    /// A project key in the Default project.
    pub project_key: String,
    /// Its id.
    pub project_key_id: String,
}

impl TestApp {
    /// A server with the default test configuration.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A second node on this app's database, with the default test configuration.
    pub async fn another_node(&self) -> Self {
        Self::builder().node_of(self).start().await
    }

    /// A server with options.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            mock: MockConfig::default(),
            configure: Vec::new(),
            shared: None,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Sends the server its shutdown signal, as SIGTERM does to `tollgate serve`; the handle completes when
    /// `tollgate_server::serve` has returned. Call it once.
    pub fn shutdown(&self) -> JoinHandle<std::io::Result<()>> {
        let stop = self
            .server_stop
            .lock()
            .expect("server_stop lock")
            .take()
            .expect("shutdown is called once");
        let _ = stop.send(());
        self.server
            .lock()
            .expect("server lock")
            .take()
            .expect("shutdown is called once")
    }

    /// A request to `path` on the server.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// A request authenticated with `key`.
    pub fn with_key(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(key)
    }

    /// `GET path` with `key`, sent.
    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.with_key(Method::GET, path, key)
            .send()
            .await
            .expect("send GET")
    }

    /// `POST path` with `key` and a JSON body, sent.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Response {
        self.with_key(Method::POST, path, key)
            .json(body)
            .send()
            .await
            .expect("send POST")
    }

    /// `DELETE path` with `key`, sent.
    pub async fn delete(&self, path: &str, key: &str) -> Response {
        self.with_key(Method::DELETE, path, key)
            .send()
            .await
            .expect("send DELETE")
    }

    /// `POST path` with the operator token and a JSON body, sent.
    pub async fn operator_post(&self, path: &str, body: &Value) -> Response {
        self.operator(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("send POST")
    }

    /// The server's current time.
    pub fn clock_now(&self) -> i64 {
        self.clock.now()
    }

    /// Grants `cents` to a tenant through the operator API; returns the credits object.
    pub async fn grant(&self, tenant_id: &str, cents: i64) -> Value {
        let path = format!("/operator/v1/tenants/{tenant_id}/credits");
        json_of(
            self.operator_post(&path, &json!({"amount_cents": cents, "reason": "test"}))
                .await,
            200,
        )
        .await
    }

    /// A request with the operator token.
    pub fn operator(&self, method: Method, path: &str) -> RequestBuilder {
        self.with_key(method, path, OPERATOR_TOKEN)
    }

    /// Creates a tenant on `plan` with [`TestApp::CREDITS`] of credit, and a project key named "test" in its Default
    /// project.
    pub async fn tenant(&self, plan: &str) -> TestTenant {
        self.funded_tenant(plan, Self::CREDITS).await
    }

    /// The credit every [`TestApp::tenant`] starts with: 100 dollars, in cents.
    pub const CREDITS: i64 = 10_000;

    /// Creates a tenant on `plan` granted `cents` (none when 0), with a project key named "test".
    pub async fn funded_tenant(&self, plan: &str, cents: i64) -> TestTenant {
        let created = json_of(
            self.operator(Method::POST, "/operator/v1/tenants")
                .json(&json!({"name": "Test tenant", "plan": plan, "owner_email": "owner@example.com"}))
                .send()
                .await
                .expect("create tenant"),
            201,
        )
        .await;
        let admin_key = str_at(&created, &["admin_key", "value"]);
        let project_id = str_at(&created, &["project", "id"]);
        let key = self
            .create_project_key(&admin_key, &project_id, json!({"name": "test"}))
            .await;
        let id = str_at(&created, &["tenant", "id"]);
        if cents > 0 {
            self.grant(&id, cents).await;
        }
        TestTenant {
            id,
            owner_id: str_at(&created, &["owner", "id"]),
            project_id,
            admin_key,
            project_key: str_at(&key, &["value"]),
            project_key_id: str_at(&key, &["id"]),
        }
    }

    /// Creates a project through the management API and returns its object.
    pub async fn create_project(&self, admin_key: &str, name: &str) -> Value {
        let body = json!({ "name": name });
        json_of(
            self.post("/v1/organization/projects", admin_key, &body)
                .await,
            201,
        )
        .await
    }

    /// Creates a project key through the management API and returns its object (with `value`).
    pub async fn create_project_key(
        &self,
        admin_key: &str,
        project_id: &str,
        body: Value,
    ) -> Value {
        let path = format!("/v1/organization/projects/{project_id}/api_keys");
        json_of(
            self.with_key(Method::POST, &path, admin_key)
                .json(&body)
                .send()
                .await
                .expect("create key"),
            201,
        )
        .await
    }

    /// Creates a project key in `t`'s Default project as its owner; returns the key's id and value.
    pub async fn key_in(&self, t: &TestTenant, body: Value) -> (String, String) {
        let key = self
            .create_project_key(&t.admin_key, &t.project_id, body)
            .await;
        (str_at(&key, &["id"]), str_at(&key, &["value"]))
    }

    /// Adds a member with `role` to `t` (as its owner) and gives it an admin key; returns the member's id and key.
    pub async fn member(&self, t: &TestTenant, email: &str, role: &str) -> (String, String) {
        let member = json_of(
            self.post(
                "/v1/organization/members",
                &t.admin_key,
                &json!({"email": email, "role": role}),
            )
            .await,
            201,
        )
        .await;
        let id = str_at(&member, &["id"]);
        let key = json_of(
            self.post(
                "/v1/organization/admin_api_keys",
                &t.admin_key,
                &json!({"name": format!("{role} key"), "member_id": id}),
            )
            .await,
            201,
        )
        .await;
        (id, str_at(&key, &["value"]))
    }

    /// `POST /v1/chat/completions` with `t`'s project key, sent.
    pub async fn chat(&self, t: &TestTenant, body: &Value) -> Response {
        self.post("/v1/chat/completions", &t.project_key, body)
            .await
    }

    /// The mock's `/mock/requests/last`, if it has received a chat request yet.
    async fn mock_last(&self) -> Option<Value> {
        let seen = self
            .http
            .get(format!("{}/mock/requests/last", self.mock_url))
            .send()
            .await
            .expect("ask the mock");
        if seen.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        Some(json_of(seen, 200).await)
    }

    /// The last chat request the mock upstream received: `{"headers": {…}, "body": {…}}`.
    pub async fn last_upstream_request(&self) -> Value {
        self.mock_last().await.expect("the mock has seen a request")
    }

    /// How many chat requests the mock upstream has received.
    pub async fn upstream_requests(&self) -> u64 {
        self.mock_last()
            .await
            .map_or(0, |last| last["count"].as_u64().expect("a count"))
    }

    /// A tenant's audit events (of `kind`, or all), oldest first, as the store has them (at most 100).
    pub async fn audit_events(&self, tenant_id: &str, kind: Option<EventType>) -> Vec<AuditEvent> {
        let page = self
            .state
            .store
            .audit_events(&AuditQuery {
                tenant_id: tenant_id.to_owned(),
                kind,
                limit: 100,
                ..AuditQuery::default()
            })
            .await
            .expect("read the audit log");
        let mut events = page.items;
        events.sort_by_key(|c| c.seq);
        events.into_iter().map(|c| c.event).collect()
    }

    /// What the store counted for a tenant's answered requests, all time (`None`: nothing yet).
    pub async fn usage_totals(&self, tenant_id: &str) -> Option<UsageTotals> {
        self.state
            .store
            .usage(&UsageQuery {
                tenant_id: tenant_id.to_owned(),
                project_id: None,
                since: 0,
                until: i64::MAX / 2,
                group: UsageGrouping::default(),
            })
            .await
            .expect("read the usage")
            .into_iter()
            .next()
    }

    /// A chat completion request body for `model` with one user message.
    pub fn chat_body(model: &str, text: &str) -> Value {
        json!({"model": model, "messages": [{"role": "user", "content": text}]})
    }
}

/// The operator's audit event of `kind` in `tenant_id`'s log, for a test that changes the store directly (as the
/// command line does).
pub fn operator_event(kind: EventType, tenant_id: &str) -> AuditEvent {
    AuditEvent::new(kind, tenant_id, Actor::operator(), 1, &Origin::default())
}

/// The JSON body of `response`, after checking its status.
pub async fn json_of(response: Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body = response.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

/// The `error` object of an error response, after checking its status.
pub async fn error_of(response: Response, status: u16) -> Value {
    json_of(response, status).await["error"].clone()
}

fn str_at(value: &Value, path: &[&str]) -> String {
    let mut v = value;
    for p in path {
        v = &v[*p];
    }
    v.as_str().expect("string field").to_owned()
}
