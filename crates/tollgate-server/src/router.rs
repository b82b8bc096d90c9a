//! Every route, and the layers every request passes: the edge layer (`middleware::edge`: request id, access log,
//! the audit slot, the source address, the declared-size check, the `Idempotency-Key` slot), axum's body limit for chunked bodies, and the body
//! read timeout (the longest wait between two reads of a body, which `extract::AppJson` answers with
//! 408).
//!
//! Routes are registered through `Routes`, which records each method and path as it adds it: [`endpoints`] is
//! that record, so tests that must cover every route (the cross-tenant walk) cannot miss one added later. The
//! dashboard's pages (`/dashboard/…`) are registered here too; unknown paths under it get its HTML 404 page.

use crate::app::AppState;
use crate::dashboard;
use crate::middleware::edge;
use crate::routes::{
    health, inference, management, method_not_allowed, not_found, operator, secret_scanning,
};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{self, MethodRouter};
use std::time::Duration;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// One registered route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The HTTP method.
    pub method: Method,
    /// The path pattern, with `{name}` parameters as axum writes them.
    pub path: &'static str,
}

/// A router under construction and the record of what it serves.
struct Routes {
    router: Router<AppState>,
    endpoints: Vec<Endpoint>,
}

impl Routes {
    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<AppState>) -> Self {
        self.endpoints.push(Endpoint { method, path });
        // axum merges method routers registered on the same path.
        self.router = self.router.route(path, route);
        self
    }

    fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add(Method::GET, path, routing::get(h))
    }

    fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add(Method::POST, path, routing::post(h))
    }

    fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add(Method::DELETE, path, routing::delete(h))
    }
}

fn routes() -> Routes {
    use management::{admin_api_keys, api_keys, members, projects};
    use operator::tenants;
    const PROJECTS: &str = "/v1/organization/projects";
    const PROJECT: &str = "/v1/organization/projects/{project_id}";
    const KEYS: &str = "/v1/organization/projects/{project_id}/api_keys";
    const KEY: &str = "/v1/organization/projects/{project_id}/api_keys/{key_id}";
    const MEMBERS: &str = "/v1/organization/members";
    const MEMBER: &str = "/v1/organization/members/{member_id}";
    const ADMIN_KEYS: &str = "/v1/organization/admin_api_keys";
    const ADMIN_KEY: &str = "/v1/organization/admin_api_keys/{key_id}";
    const DASH_KEYS: &str = "/dashboard/projects/{project_id}/keys";
    Routes {
        router: Router::new(),
        endpoints: Vec::new(),
    }
    .get("/healthz", health::healthz)
    .get("/readyz", health::readyz)
    // Inference: project keys.
    .get("/v1/models", inference::models::list::handler)
    // Model ids may contain '/' (e.g. "meta-llama/Llama-3.1-8B").
    .get("/v1/models/{*id}", inference::models::get::handler)
    .post(
        "/v1/chat/completions",
        inference::chat::completions::handler,
    )
    .get("/v1/usage", inference::usage::get::handler)
    // Management: admin keys.
    .get("/v1/organization", management::organization::get::handler)
    .get(
        "/v1/organization/credits",
        management::credits::get::handler,
    )
    .get("/v1/organization/usage", management::usage::get::handler)
    .get(
        "/v1/organization/audit_logs",
        management::audit_logs::get::handler,
    )
    .get(PROJECTS, projects::list::handler)
    .post(PROJECTS, projects::create::handler)
    .get(PROJECT, projects::get::handler)
    .post(PROJECT, projects::update::handler)
    .post(
        "/v1/organization/projects/{project_id}/archive",
        projects::archive::handler,
    )
    .get(KEYS, api_keys::list::handler)
    .post(KEYS, api_keys::create::handler)
    .get(KEY, api_keys::get::handler)
    .post(KEY, api_keys::update::handler)
    .delete(KEY, api_keys::delete::handler)
    .post(
        "/v1/organization/projects/{project_id}/api_keys/{key_id}/roll",
        api_keys::roll::handler,
    )
    .get(MEMBERS, members::list::handler)
    .post(MEMBERS, members::add::handler)
    .get(MEMBER, members::get::handler)
    .post(MEMBER, members::update::handler)
    .delete(MEMBER, members::remove::handler)
    .get(ADMIN_KEYS, admin_api_keys::list::handler)
    .post(ADMIN_KEYS, admin_api_keys::create::handler)
    .get(ADMIN_KEY, admin_api_keys::get::handler)
    .delete(ADMIN_KEY, admin_api_keys::delete::handler)
    // Operator: the operator token.
    .get("/operator/v1/tenants", tenants::list::handler)
    .post("/operator/v1/tenants", tenants::create::handler)
    .get("/operator/v1/tenants/{id}", tenants::get::handler)
    .post("/operator/v1/tenants/{id}", tenants::update::handler)
    .post(
        "/operator/v1/tenants/{id}/credits",
        tenants::credits::handler,
    )
    // Leaked-key reports: the scanner's signature.
    .post(
        "/secret_scanning/v1/github",
        secret_scanning::github::handler,
    )
    // The dashboard: HTML pages for a session cookie.
    .get(dashboard::assets::CSS_PATH, dashboard::assets::css)
    .get(dashboard::assets::JS_PATH, dashboard::assets::js)
    .get("/dashboard/login", dashboard::login::page)
    .post("/dashboard/login", dashboard::login::submit)
    .post("/dashboard/logout", dashboard::login::sign_out)
    .get("/dashboard", dashboard::keys::home)
    .get(DASH_KEYS, dashboard::keys::page)
    .post(DASH_KEYS, dashboard::keys::create)
    .post(
        "/dashboard/projects/{project_id}/keys/{key_id}/revoke",
        dashboard::keys::revoke,
    )
    .post(
        "/dashboard/projects/{project_id}/keys/{key_id}/roll",
        dashboard::keys::roll,
    )
    .post(
        "/dashboard/projects/{project_id}/keys/{key_id}/edit",
        dashboard::keys::edit,
    )
    .get("/dashboard/projects", dashboard::projects::page)
    .post("/dashboard/projects", dashboard::projects::create)
    .post(
        "/dashboard/projects/{project_id}/rename",
        dashboard::projects::rename,
    )
    .post(
        "/dashboard/projects/{project_id}/archive",
        dashboard::projects::archive,
    )
    .get("/dashboard/members", dashboard::members::page)
    .post("/dashboard/members", dashboard::members::add)
    .post(
        "/dashboard/members/{member_id}/role",
        dashboard::members::role,
    )
    .post(
        "/dashboard/members/{member_id}/password",
        dashboard::members::password,
    )
    .post(
        "/dashboard/members/{member_id}/remove",
        dashboard::members::remove,
    )
    .get("/dashboard/usage", dashboard::usage::page)
    .get("/dashboard/audit", dashboard::audit::page)
    .get("/dashboard/audit/export", dashboard::audit::export)
    .get("/dashboard/credits", dashboard::credits::page)
}

/// Every route the router serves, in registration order.
pub fn endpoints() -> Vec<Endpoint> {
    routes().endpoints
}

/// The application's router.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            state.config.body_read_timeout_seconds,
        )))
        .layer(from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExposeSecret;
    use crate::middleware::{access_log, request_id};
    use crate::test_support::{Logs, audit};
    use crate::{App, Config};
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode};
    use serde_json::json;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tollgate_core::audit::EventType;
    use tollgate_core::key::PlainKey;
    use tollgate_core::ports::SystemClock;
    use tollgate_core::tenant::{ApiKey, KeyOwner, KeySpec, NewTenant};
    use tower::ServiceExt;

    /// The application on a temporary SQLite store, with the default configuration.
    async fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            database_url: format!("sqlite://{}/t.db", dir.path().display()).into(),
            ..Config::default()
        };
        let store = tollgate_store::connect(config.database_url.expose_secret())
            .await
            .unwrap();
        let state = App::build(config, store, Arc::new(SystemClock)).unwrap();
        (dir, state)
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_request_without_its_peer_address_is_a_500_not_a_default_address() {
        let (_dir, state) = state().await;
        let app = router(state);
        let response = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Still our error shape, with a request id.
        assert!(response.headers().contains_key(&request_id::X_REQUEST_ID));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "api_error");
        let mut request = get("/healthz");
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);
    }

    /// A tenant and a project key in its Default project, written to the store.
    async fn tenant_and_key(state: &AppState) -> (NewTenant, PlainKey, ApiKey, PlainKey) {
        let now = state.clock.now();
        let (tenant, admin) = NewTenant::build(
            &state.prefixes,
            "T".into(),
            "pro".into(),
            "o@t.io".into(),
            None,
            now,
        );
        state.store.create_tenant(&tenant, &[]).await.unwrap();
        let (key, secret) = ApiKey::issue(
            &state.prefixes,
            &tenant.tenant.id,
            KeyOwner::Project(tenant.project.id.clone()),
            KeySpec {
                name: "k".into(),
                ..KeySpec::default()
            },
            None,
            now,
        );
        state
            .store
            .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
            .await
            .unwrap();
        (tenant, admin, key, secret)
    }

    fn with_peer(mut request: Request<Body>) -> Request<Body> {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    /// A request whose future the server drops before any answer (its client went away while it waited; here for a
    /// body that never comes) still leaves its `request.completed` event, with 499, once the key was identified.
    #[tokio::test]
    async fn a_request_dropped_before_its_answer_still_writes_its_event_with_499() {
        use futures::StreamExt;
        let (_dir, state) = state().await;
        let (_, _, key, secret) = tenant_and_key(&state).await;
        let start = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"model\":"))
        });
        let body = Body::from_stream(start.chain(futures::stream::pending()));
        let request = Request::post("/v1/chat/completions")
            .header(
                "authorization",
                format!("Bearer {}", secret.expose_secret()),
            )
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            router(state.clone()).oneshot(with_peer(request)),
        )
        .await;
        assert!(waiting.is_err(), "the request must still wait for its body");

        let query = tollgate_core::audit::AuditQuery {
            tenant_id: key.tenant_id.clone(),
            kind: Some(EventType::RequestCompleted),
            limit: 10,
            ..Default::default()
        };
        let mut events = Vec::new();
        for _ in 0..100 {
            events = state.store.audit_events(&query).await.unwrap().items;
            if !events.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0].event;
        assert_eq!(event.status, Some(499));
        assert_eq!(event.key_id.as_deref(), Some(key.id.as_str()));
        assert_eq!(event.cost, None, "nothing was charged");
    }

    #[tokio::test]
    async fn each_request_logs_one_access_line_with_who_and_never_a_secret() {
        let (_dir, state) = state().await;
        let (tenant, admin, key, secret) = tenant_and_key(&state).await;
        let app = router(state.clone());
        let (logs, _guard) = Logs::capture();

        let chat = Request::post("/v1/chat/completions?api_key=query-secret-value")
            .header(
                "authorization",
                format!("Bearer {}", secret.expose_secret()),
            )
            .header("x-request-id", "req-chat")
            .header("content-type", "application/json")
            .header("user-agent", "header-secret-value")
            .body(Body::from(
                json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ))
            .unwrap();
        let response = app.clone().oneshot(with_peer(chat)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        // A key pasted into the URL as a model id.
        let misplaced = Request::get(format!("/v1/models/{}", secret.expose_secret()))
            .header(
                "authorization",
                format!("Bearer {}", secret.expose_secret()),
            )
            .header("x-request-id", "req-misplaced")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(with_peer(misplaced)).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        // The admin key, on a management route.
        let admin_request = Request::get("/v1/organization")
            .header("authorization", format!("Bearer {}", admin.expose_secret()))
            .header("x-request-id", "req-admin")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(with_peer(admin_request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let lines = logs.of("req-chat");
        assert_eq!(lines.len(), 1, "one line per request: {lines:?}");
        let line = &lines[0];
        assert_eq!(line["target"], access_log::TARGET);
        assert_eq!(line["level"], "INFO");
        let fields = &line["fields"];
        assert_eq!(fields["method"], "POST");
        assert_eq!(fields["path"], "/v1/chat/completions");
        assert_eq!(fields["status"], 200);
        assert_eq!(fields["tenant"], tenant.tenant.id.as_str());
        assert_eq!(fields["key_id"], key.id.as_str());
        assert_eq!(fields["model"], "echo");
        assert_eq!(fields["source_ip"], "127.0.0.1");
        assert!(fields["latency_ms"].as_f64().unwrap() >= 0.0);

        let lines = logs.of("req-misplaced");
        assert_eq!(lines.len(), 1, "{lines:?}");
        let fields = &lines[0]["fields"];
        assert_eq!(fields["status"], 404);
        assert_eq!(
            fields["path"],
            format!("/v1/models/{}…", secret.visible_prefix())
        );
        assert_eq!(fields["key_id"], key.id.as_str());
        assert!(fields.get("model").is_none());
        // Refused, but attributed: a revoked key is known by its id.
        state
            .store
            .revoke_key(
                &tenant.tenant.id,
                &key.id,
                state.clock.now(),
                &audit(EventType::ApiKeyRevoked, &tenant.tenant.id),
            )
            .await
            .unwrap();
        state.keys.invalidate(&key.digest).await;
        let revoked = Request::get("/v1/models")
            .header("x-api-key", secret.expose_secret())
            .header("x-request-id", "req-revoked")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(with_peer(revoked)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let lines = logs.of("req-revoked");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["fields"]["key_id"], key.id.as_str());
        assert_eq!(lines[0]["fields"]["status"], 401);
        let lines = logs.of("req-admin");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["fields"]["key_id"], tenant.admin_key.id.as_str());
        assert_eq!(lines[0]["fields"]["tenant"], tenant.tenant.id.as_str());

        let text = logs.text();
        for secret in [secret.expose_secret(), admin.expose_secret()] {
            assert!(!text.contains(&secret[12..]), "a key in the logs: {text}");
        }
        assert!(!text.contains("query-secret-value") && !text.contains("header-secret-value"));
    }

    #[tokio::test]
    async fn a_5xx_logs_its_detail_with_the_request_id() {
        let (_dir, state) = state().await;
        let app = router(state);
        let (logs, _guard) = Logs::capture();
        // No peer address: a 500 whose detail is ours to log, not the client's to read.
        let request = Request::get("/healthz")
            .header("x-request-id", "req-broken")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("ConnectInfo"));

        let lines = logs.of("req-broken");
        let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
        assert_eq!(errors.len(), 1, "{lines:?}");
        let fields = &errors[0]["fields"];
        assert_eq!(fields["status"], 500);
        assert!(
            fields["error"].as_str().unwrap().contains("ConnectInfo"),
            "{fields}"
        );
        let access: Vec<_> = lines.iter().filter(|l| l["level"] == "INFO").collect();
        assert_eq!(access.len(), 1, "{lines:?}");
        assert_eq!(access[0]["fields"]["status"], 500);
        // Nothing else logged the failure without the request id.
        assert_eq!(logs.text().matches("ConnectInfo").count(), 1);
    }
}
