//! Nothing across tenants: every management route, called by tenant A's owner with tenant B's ids, answers 404 (or
//! 403) and changes nothing. The table below must list exactly the router's management routes, so a route added
//! later without a case here fails this test until it is walked too.

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use tollgate_server::router::endpoints;
use tollgate_testkit::{TestApp, TestTenant, json_of};

/// Tenant B's ids, substituted into paths and bodies.
struct Foreign {
    tenant: TestTenant,
    member_id: String,
    admin_key_id: String,
}

impl Foreign {
    fn path(&self, pattern: &str) -> String {
        let key_id = if pattern.contains("admin_api_keys") {
            &self.admin_key_id
        } else {
            &self.tenant.project_key_id
        };
        pattern
            .replace("{project_id}", &self.tenant.project_id)
            .replace("{key_id}", key_id)
            .replace("{member_id}", &self.member_id)
    }

    fn ids(&self) -> [&str; 5] {
        [
            &self.tenant.id,
            &self.tenant.project_id,
            &self.tenant.project_key_id,
            &self.member_id,
            &self.admin_key_id,
        ]
    }
}

/// What a route gets: the body to send and whether it names a foreign object (then 404/403 is required).
fn case(method: &Method, path: &str, b: &Foreign) -> (Option<Value>, bool) {
    let names_an_id = path.contains('{');
    let body = match (method.as_str(), path) {
        ("GET" | "DELETE", _) => None,
        ("POST", "/v1/organization/projects" | "/v1/organization/projects/{project_id}") => {
            Some(json!({"name": "walked"}))
        }
        ("POST", "/v1/organization/projects/{project_id}/archive") => Some(json!({})),
        ("POST", "/v1/organization/projects/{project_id}/api_keys") => {
            Some(json!({"name": "walked"}))
        }
        ("POST", "/v1/organization/projects/{project_id}/api_keys/{key_id}") => {
            Some(json!({"name": "walked", "models": ["echo"]}))
        }
        ("POST", "/v1/organization/projects/{project_id}/api_keys/{key_id}/roll") => {
            Some(json!({"grace_period_seconds": 0}))
        }
        ("POST", "/v1/organization/members") => {
            Some(json!({"email": "walker@example.com", "role": "member"}))
        }
        ("POST", "/v1/organization/members/{member_id}") => Some(json!({"role": "member"})),
        // Names B's member in the body instead of the path.
        ("POST", "/v1/organization/admin_api_keys") => {
            return (
                Some(json!({"name": "walked", "member_id": b.member_id})),
                true,
            );
        }
        other => panic!("no cross-tenant case for {other:?}: add one to this walk"),
    };
    (body, names_an_id)
}

#[tokio::test]
async fn every_management_route_hides_other_tenants_objects() {
    let app = TestApp::start().await;
    let a = app.tenant("pro").await;
    let b = app.tenant("pro").await;
    let (member_id, _) = app.member(&b, "b-admin@example.com", "admin").await;
    let admin_keys = json_of(
        app.get("/v1/organization/admin_api_keys", &b.admin_key)
            .await,
        200,
    )
    .await;
    let admin_key_id = admin_keys["data"][0]["id"].as_str().unwrap().to_owned();
    let b = Foreign {
        tenant: b,
        member_id,
        admin_key_id,
    };

    let management: Vec<_> = endpoints()
        .into_iter()
        .filter(|e| e.path.starts_with("/v1/organization"))
        .collect();
    let walked: BTreeSet<(String, &str)> = management
        .iter()
        .map(|e| (e.method.to_string(), e.path))
        .collect();
    assert_eq!(walked.len(), management.len(), "each route once");
    assert_eq!(
        management.len(),
        24,
        "a new management route needs a case in this walk: {walked:?}"
    );

    for endpoint in &management {
        let (body, names_an_id) = case(&endpoint.method, endpoint.path, &b);
        let mut path = b.path(endpoint.path);
        if endpoint.path == "/v1/organization/audit_logs" {
            // Filters naming B's member and key match nothing in A's log.
            path = format!(
                "{path}?actor_id={}&key_id={}",
                b.member_id, b.tenant.project_key_id
            );
        }
        let mut request = app.with_key(endpoint.method.clone(), &path, &a.admin_key);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let route = format!("{} {}", endpoint.method, endpoint.path);
        if endpoint.path == "/v1/organization/audit_logs" {
            assert_eq!(status, 200, "{route}: {text}");
            assert!(text.contains(r#""data":[]"#), "{route}: {text}");
        } else if names_an_id {
            assert!(status == 404 || status == 403, "{route}: {status} {text}");
        } else {
            assert!(status < 500, "{route}: {status} {text}");
        }
        // An error may echo the id it was sent; nothing else of B's may appear.
        let sent = format!("{path} {}", body.unwrap_or_default());
        for id in b.ids().into_iter().filter(|id| !sent.contains(id)) {
            assert!(!text.contains(id), "{route} leaked {id}: {text}");
        }
    }

    // B is untouched: its keys work, its project and member are as they were.
    assert_eq!(
        app.get("/v1/models", &b.tenant.project_key).await.status(),
        200
    );
    // Neither updated nor rolled.
    let key = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        b.tenant.project_id, b.tenant.project_key_id
    );
    let key = json_of(app.get(&key, &b.tenant.admin_key).await, 200).await;
    assert_eq!(
        (&key["name"], &key["models"], &key["expires_at"]),
        (&json!("test"), &Value::Null, &Value::Null)
    );
    let project = format!("/v1/organization/projects/{}", b.tenant.project_id);
    let project = json_of(app.get(&project, &b.tenant.admin_key).await, 200).await;
    assert_eq!(
        (project["name"].as_str(), project["status"].as_str()),
        (Some("Default"), Some("active"))
    );
    let member = format!("/v1/organization/members/{}", b.member_id);
    assert_eq!(
        json_of(app.get(&member, &b.tenant.admin_key).await, 200).await["role"],
        "admin"
    );
    let keys = json_of(
        app.get("/v1/organization/admin_api_keys", &b.tenant.admin_key)
            .await,
        200,
    )
    .await;
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["status"] == "active")
    );
}
