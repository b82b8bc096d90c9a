//! Every route, and the layers every request passes: request id (outermost, so every response carries one, errors
//! included), the source address, the declared-size check, and axum's body limit for chunked bodies.
//!
//! Routes are registered through [`Routes`], which records each method and path as it adds it: [`endpoints`] is
//! that record, so tests that must cover every route (the cross-tenant walk) cannot miss one added later.

use crate::app::AppState;
use crate::middleware::{body_limit, client_ip, request_id};
use crate::routes::{health, inference, management, method_not_allowed, not_found, operator};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{self, MethodRouter};

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
    .delete(KEY, api_keys::delete::handler)
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
        .layer(from_fn_with_state(
            state.clone(),
            body_limit::reject_oversize,
        ))
        .layer(from_fn_with_state(state.clone(), client_ip::resolve))
        .layer(from_fn(request_id::request_id))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{App, Config};
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tollgate_core::ports::SystemClock;
    use tower::ServiceExt;

    /// The application on a temporary SQLite store, with the default configuration.
    async fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            database_url: format!("sqlite://{}/t.db", dir.path().display()),
            ..Config::default()
        };
        let store = tollgate_store::connect(&config.database_url).await.unwrap();
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
}
