//! `/operator/v1/tenants`.

use reqwest::Method;
use serde_json::json;
use tollgate_testkit::{TestApp, json_of};

#[tokio::test]
async fn creating_a_tenant_returns_its_first_objects_and_admin_key() {
    let app = TestApp::start().await;
    let created = json_of(
        app.operator(Method::POST, "/operator/v1/tenants")
            .json(&json!({"name": "Acme", "plan": "free", "owner_email": "  Ada@Acme.IO ", "owner_password": "long enough pw"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    assert_eq!(created["tenant"]["object"], "organization");
    assert!(
        created["tenant"]["id"]
            .as_str()
            .unwrap()
            .starts_with("org_")
    );
    assert_eq!(created["tenant"]["plan"], "free");
    assert_eq!(created["project"]["name"], "Default");
    assert_eq!(created["project"]["region"], "global");
    assert_eq!(created["owner"]["role"], "owner");
    assert_eq!(created["owner"]["email"], "ada@acme.io");
    assert!(created["owner"].get("password_hash").is_none());
    assert_eq!(created["admin_key"]["object"], "organization.admin_api_key");
    assert_eq!(created["admin_key"]["member_id"], created["owner"]["id"]);
    let value = created["admin_key"]["value"].as_str().unwrap();
    assert!(value.starts_with("sk_admin_"));
    let text = created.to_string();
    assert!(!text.contains("long enough pw") && !text.contains("argon2"));

    let id = created["tenant"]["id"].as_str().unwrap();
    let got = json_of(
        app.operator(Method::GET, &format!("/operator/v1/tenants/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(got, created["tenant"]);
    let list = json_of(
        app.operator(Method::GET, "/operator/v1/tenants")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(list["data"][0], created["tenant"]);
    json_of(
        app.operator(Method::GET, "/operator/v1/tenants/org_nope")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}

#[tokio::test]
async fn bad_tenant_requests_are_400_and_write_nothing() {
    let app = TestApp::start().await;
    for (body, param) in [
        (
            json!({"name": "A", "plan": "platinum", "owner_email": "a@b.c"}),
            "plan",
        ),
        (
            json!({"name": "A", "plan": "pro", "owner_email": "not-an-email"}),
            "owner_email",
        ),
        (
            json!({"name": "", "plan": "pro", "owner_email": "a@b.c"}),
            "name",
        ),
        (
            json!({"name": "A", "plan": "pro", "owner_email": "a@b.c", "owner_password": "short"}),
            "owner_password",
        ),
        (json!({"name": "A", "plan": "pro"}), "owner_email"),
    ] {
        let r = json_of(
            app.operator(Method::POST, "/operator/v1/tenants")
                .json(&body)
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(r["error"]["param"], param, "{body}");
    }
    let list = json_of(
        app.operator(Method::GET, "/operator/v1/tenants")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_everywhere_until_reactivated() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let other = app.tenant("pro").await;
    // Warm the cache with both kinds of key.
    assert_eq!(app.get("/v1/models", &t.project_key).await.status(), 200);
    assert_eq!(
        app.get("/v1/organization", &t.admin_key).await.status(),
        200
    );
    let path = format!("/operator/v1/tenants/{}", t.id);
    let suspended = json_of(
        app.operator_post(&path, &json!({"status": "suspended"}))
            .await,
        200,
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    for response in [
        app.get("/v1/models", &t.project_key).await,
        app.post(
            "/v1/chat/completions",
            &t.project_key,
            &TestApp::chat_body("echo", "hi"),
        )
        .await,
        app.get("/v1/organization", &t.admin_key).await,
    ] {
        let err = tollgate_testkit::error_of(response, 403).await;
        assert_eq!(err["type"], "permission_error");
        assert!(
            err["message"].as_str().unwrap().contains("suspended"),
            "{err}"
        );
    }
    assert_eq!(
        app.get("/v1/models", &other.project_key).await.status(),
        200,
        "other tenants go on"
    );
    json_of(
        app.operator_post(&path, &json!({"status": "active"})).await,
        200,
    )
    .await;
    assert_eq!(app.get("/v1/models", &t.project_key).await.status(), 200);
}

#[tokio::test]
async fn tenant_updates_are_validated() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let path = format!("/operator/v1/tenants/{}", t.id);
    let err = tollgate_testkit::error_of(
        app.operator_post(&path, &json!({"plan": "platinum"})).await,
        400,
    )
    .await;
    assert_eq!(err["param"], "plan");
    let err = tollgate_testkit::error_of(
        app.operator_post(&path, &json!({"status": "gone"})).await,
        400,
    )
    .await;
    assert_eq!(err["param"], "status");
    let unknown = app
        .operator_post("/operator/v1/tenants/org_nope", &json!({"plan": "free"}))
        .await;
    tollgate_testkit::error_of(unknown, 404).await;
    let got = json_of(app.operator(Method::GET, &path).send().await.unwrap(), 200).await;
    assert_eq!(
        (got["plan"].as_str(), got["status"].as_str()),
        (Some("pro"), Some("active"))
    );
}
