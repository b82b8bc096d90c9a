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
    let (_, value) = app
        .key_in(&t, json!({"name": "echo-only", "models": ["echo"]}))
        .await;
    let value = value.as_str();
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

/// Every inference route, walked with a key allowed only `echo`: none serves or names another model. The table must
/// list exactly the router's inference routes, so a route added later (embeddings) fails here until it has a case.
#[tokio::test]
async fn a_model_allow_list_has_no_side_door_on_any_inference_route() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (_, value) = app
        .key_in(&t, json!({"name": "echo-only", "models": ["echo"]}))
        .await;
    let value = value.as_str();
    let routes: Vec<(String, &str)> = tollgate_server::router::endpoints()
        .into_iter()
        .filter(|e| e.path.starts_with("/v1/") && !e.path.starts_with("/v1/organization"))
        .map(|e| (e.method.to_string(), e.path))
        .collect();
    for (method, path) in &routes {
        match (method.as_str(), *path) {
            ("GET", "/v1/models") => {
                let list = json_of(app.get(path, value).await, 200).await;
                assert_eq!(list["data"], json!([list["data"][0].clone()]), "{list}");
                assert_eq!(list["data"][0]["id"], "echo");
            }
            ("GET", "/v1/models/{*id}") => {
                assert_eq!(app.get("/v1/models/echo", value).await.status(), 200);
                for other in ["fast", "slow", "fast/", "FAST", "echo/../fast"] {
                    let err =
                        json_of(app.get(&format!("/v1/models/{other}"), value).await, 404).await;
                    assert_eq!(err["error"]["code"], "model_not_found", "{other}");
                }
            }
            ("POST", "/v1/chat/completions") => {
                for stream in [false, true] {
                    let mut body = TestApp::chat_body("fast", "hi");
                    body["stream"] = json!(stream);
                    let refused = app
                        .with_key(Method::POST, path, value)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let err = json_of(refused, 403).await;
                    assert_eq!(err["error"]["param"], "model", "stream {stream}");
                    // The same key through the other header.
                    let refused = app
                        .request(Method::POST, path)
                        .header("x-api-key", value)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(refused.status(), 403, "stream {stream}");
                }
                let ok = app
                    .post(path, value, &TestApp::chat_body("echo", "hi"))
                    .await;
                assert_eq!(ok.status(), 200);
            }
            // Names no model: the key's own project's usage.
            ("GET", "/v1/usage") => assert_eq!(app.get(path, value).await.status(), 200),
            other => panic!("no allow-list case for {other:?}: add one to this walk"),
        }
    }
    assert_eq!(routes.len(), 4, "{routes:?}");
    // Nothing reached the upstream for a model the key may not use: the only chat it served was echo's (built in).
    let seen = app
        .http
        .get(format!("{}/mock/requests/last", app.mock_url))
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 404, "the mock upstream saw a request");
}
