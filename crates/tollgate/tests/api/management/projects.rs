//! `/v1/organization/projects`: create, list, get, rename, archive; archived projects' keys stop at once.

use serde_json::json;
use tollgate_testkit::{TestApp, error_of, json_of};

const PROJECTS: &str = "/v1/organization/projects";

#[tokio::test]
async fn projects_are_created_listed_read_and_renamed() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let created = json_of(
        app.post(PROJECTS, &t.admin_key, &json!({"name": " Sandbox "}))
            .await,
        201,
    )
    .await;
    assert_eq!(created["object"], "organization.project");
    assert_eq!(created["name"], "Sandbox");
    assert_eq!(created["region"], "global");
    assert_eq!(created["status"], "active");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("proj_"));

    let list = json_of(app.get(PROJECTS, &t.admin_key).await, 200).await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Default", "Sandbox"]);
    let path = format!("{PROJECTS}/{id}");
    assert_eq!(
        json_of(app.get(&path, &t.admin_key).await, 200).await,
        created
    );
    let renamed = json_of(
        app.post(&path, &t.admin_key, &json!({"name": "Staging"}))
            .await,
        200,
    )
    .await;
    assert_eq!(renamed["name"], "Staging");
    assert_eq!(
        json_of(app.get(&path, &t.admin_key).await, 200).await["name"],
        "Staging"
    );

    let err = error_of(
        app.post(&path, &t.admin_key, &json!({"name": ""})).await,
        400,
    )
    .await;
    assert_eq!(err["param"], "name");
    error_of(
        app.get(&format!("{PROJECTS}/proj_missing"), &t.admin_key)
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_sandbox_project_has_its_own_keys() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let sandbox = json_of(
        app.post(PROJECTS, &t.admin_key, &json!({"name": "Sandbox"}))
            .await,
        201,
    )
    .await;
    let sandbox_id = sandbox["id"].as_str().unwrap();
    let key = app
        .create_project_key(&t.admin_key, sandbox_id, json!({"name": "sandbox"}))
        .await;
    assert_eq!(key["project_id"], sandbox_id);
    let live = json_of(
        app.get(
            &format!("{PROJECTS}/{}/api_keys", t.project_id),
            &t.admin_key,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        live["data"].as_array().unwrap().len(),
        1,
        "the sandbox key is not in the live project"
    );
    assert_eq!(
        app.get("/v1/models", key["value"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn archiving_stops_the_projects_keys_at_once() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    // Warm the key cache, so the archive must invalidate it.
    assert_eq!(app.get("/v1/models", &t.project_key).await.status(), 200);
    let path = format!("{PROJECTS}/{}/archive", t.project_id);
    let archived = json_of(app.post(&path, &t.admin_key, &json!({})).await, 200).await;
    assert_eq!(archived["status"], "archived");
    let err = error_of(app.get("/v1/models", &t.project_key).await, 401).await;
    assert_eq!(err["message"], "API key belongs to an archived project");
    // Still readable and listed, with its keys.
    let list = json_of(app.get(PROJECTS, &t.admin_key).await, 200).await;
    assert_eq!(list["data"][0]["status"], "archived");
    let keys = format!("{PROJECTS}/{}/api_keys", t.project_id);
    assert_eq!(
        json_of(app.get(&keys, &t.admin_key).await, 200).await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // No new keys in it.
    error_of(
        app.post(&keys, &t.admin_key, &json!({"name": "late"}))
            .await,
        400,
    )
    .await;
}

#[tokio::test]
async fn members_may_read_projects_but_not_change_them() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (_, member_key) = app.member(&t, "reader@example.com", "member").await;
    assert_eq!(app.get(PROJECTS, &member_key).await.status(), 200);
    let err = error_of(
        app.post(PROJECTS, &member_key, &json!({"name": "x"})).await,
        403,
    )
    .await;
    assert_eq!(err["type"], "permission_error");
    let path = format!("{PROJECTS}/{}", t.project_id);
    error_of(
        app.post(&path, &member_key, &json!({"name": "x"})).await,
        403,
    )
    .await;
    error_of(
        app.post(&format!("{path}/archive"), &member_key, &json!({}))
            .await,
        403,
    )
    .await;
    assert_eq!(
        app.get("/v1/models", &t.project_key).await.status(),
        200,
        "nothing was archived"
    );
}
