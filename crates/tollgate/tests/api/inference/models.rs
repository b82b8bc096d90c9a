//! `GET /v1/models`, `GET /v1/models/{id}`.

use reqwest::Method;
use serde_json::json;
use tollgate_testkit::{TestApp, json_of};

#[tokio::test]
async fn the_catalog_is_listed_in_openai_shape() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let list = json_of(app.get("/v1/models", &t.project_key).await, 200).await;
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast", "slow", "echo"]);
    assert_eq!(list["data"][0]["object"], "model");
    assert!(list["data"][0]["created"].is_i64());
    let one = json_of(app.get("/v1/models/fast", &t.project_key).await, 200).await;
    assert_eq!(one["id"], "fast");
    let missing = json_of(app.get("/v1/models/gpt-9", &t.project_key).await, 404).await;
    assert_eq!(missing["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn a_model_allow_list_narrows_what_a_key_sees_and_uses() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let key = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "echo-only", "models": ["echo"]}),
        )
        .await;
    let value = key["value"].as_str().unwrap();
    let list = json_of(app.get("/v1/models", value).await, 200).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    json_of(app.get("/v1/models/fast", value).await, 404).await;
    let refused = app
        .with_key(Method::POST, "/v1/chat/completions", value)
        .json(&TestApp::chat_body("fast", "hi"))
        .send()
        .await
        .unwrap();
    let body = json_of(refused, 403).await;
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(body["error"]["param"], "model");
}

#[tokio::test]
async fn the_echo_model_alone_is_the_catalog_when_none_is_configured() {
    let app = TestApp::builder()
        .configure(|c| c.models.clear())
        .start()
        .await;
    let t = app.tenant("free").await;
    let list = json_of(app.get("/v1/models", &t.project_key).await, 200).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], "echo");
    assert_eq!(list["data"][0]["owned_by"], "tollgate");
}
