//! The real binary as processes, for tests that kill, restart or multiply servers: a mock upstream and any number
//! of `tollgate serve` nodes on one database, each on a port of its own, with a configuration written to a file.

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The operator token every node is started with.
pub const OPERATOR: &str = "process-test-operator";

/// A free port on loopback (the listener is closed again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `bin` with `args` (and `--config CONFIG` with the operator token, when given), output discarded.
pub fn spawn(bin: &Path, args: &[&str], config: Option<&Path>) -> Child {
    let mut command = Command::new(bin);
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(config) = config {
        command
            .arg("--config")
            .arg(config)
            .env("TOLLGATE_OPERATOR_TOKEN", OPERATOR);
    }
    command.spawn().expect("start tollgate")
}

/// Waits (up to 10 s) until `url` answers 2xx.
pub async fn wait_healthy(http: &reqwest::Client, url: &str) {
    for _ in 0..400 {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} did not become healthy");
}

/// The JSON body of `response`, after checking its status.
pub async fn json(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("JSON body")
}

/// Writes a node's configuration to `path`: listening on `port`, on `database`, with the mock on `mock_port` as
/// provider `mock` and model `fast` (15/60 ¢ per million tokens), then the TOML lines of `extra`. Its `pro` plan's
/// rate limits are out of reach, so load tests measure what they are about, not 429s.
pub fn write_config(path: &Path, port: u16, database: &str, mock_port: u16, extra: &str) {
    std::fs::write(
        path,
        format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "{database}"
shutdown_timeout_seconds = 10
{extra}

[[providers]]
id = "mock"
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"

[[models]]
id = "fast"
provider = "mock"
upstream_model = "mock-model"
input_cents_per_million_tokens = 15
output_cents_per_million_tokens = 60

[plans.pro]
requests_per_minute = 4000000000
tokens_per_minute = 1000000000000
"#
        ),
    )
    .expect("write the configuration");
}

/// A node: its process, configuration file and base URL.
#[derive(Debug)]
pub struct Node {
    /// The `tollgate serve` process.
    pub process: Child,
    /// Its configuration file (to restart it).
    pub config: PathBuf,
    /// What it logs (warnings and errors).
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Node {
    /// Starts a node of `bin` on `database` beside the mock on `mock_port`, its configuration in `dir`, and waits
    /// until it is healthy.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        database: &str,
        mock_port: u16,
        extra: &str,
        http: &reqwest::Client,
    ) -> Self {
        let port = free_port();
        let config = dir.join(format!("tollgate-{port}.toml"));
        write_config(&config, port, database, mock_port, extra);
        let log = dir.join(format!("tollgate-{port}.log"));
        let stderr = std::fs::File::create(&log).expect("create the node's log");
        let process = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("TOLLGATE_OPERATOR_TOKEN", OPERATOR)
            .env("TOLLGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tollgate");
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(http, &format!("{base}/healthz")).await;
        Self {
            process,
            config,
            log,
            base,
        }
    }

    /// Kills the node with SIGKILL (no drain, no shutdown hook) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tenant made through a node's operator API.
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    /// `org_…`.
    pub id: String,
    /// The owner's admin key.
    pub admin_key: String,
    /// The Default project.
    pub project_id: String,
}

/// Creates a tenant on the `pro` plan through the node at `base`.
pub async fn create_tenant(http: &reqwest::Client, base: &str, name: &str) -> CreatedTenant {
    let created = json(
        http.post(format!("{base}/operator/v1/tenants"))
            .bearer_auth(OPERATOR)
            .json(&serde_json::json!({"name": name, "plan": "pro", "owner_email": "owner@example.com"}))
            .send()
            .await
            .expect("create a tenant"),
        201,
    )
    .await;
    let text = |a: &str, b: &str| created[a][b].as_str().expect("a string").to_owned();
    CreatedTenant {
        id: text("tenant", "id"),
        admin_key: text("admin_key", "value"),
        project_id: text("project", "id"),
    }
}

/// Grants `cents` to a tenant through the operator API of the node at `base`.
pub async fn grant(http: &reqwest::Client, base: &str, tenant_id: &str, cents: i64) {
    json(
        http.post(format!("{base}/operator/v1/tenants/{tenant_id}/credits"))
            .bearer_auth(OPERATOR)
            .json(&serde_json::json!({"amount_cents": cents}))
            .send()
            .await
            .expect("grant credits"),
        200,
    )
    .await;
}

/// Creates a project key named `load` through the node at `base` with an admin key; returns its value and id.
pub async fn create_key(
    http: &reqwest::Client,
    base: &str,
    admin_key: &str,
    project_id: &str,
) -> (String, String) {
    let created = json(
        http.post(format!(
            "{base}/v1/organization/projects/{project_id}/api_keys"
        ))
        .bearer_auth(admin_key)
        .json(&serde_json::json!({"name": "load"}))
        .send()
        .await
        .expect("create a key"),
        201,
    )
    .await;
    let text = |f: &str| created[f].as_str().expect("a string").to_owned();
    (text("value"), text("id"))
}
