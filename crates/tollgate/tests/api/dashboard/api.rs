//! The management API with a dashboard session instead of an admin key (API.md: "admin key or dashboard session"):
//! reads with the cookie alone, changes only with the session's CSRF token in `X-CSRF-Token`, the member's role
//! as for a key, 401 once the session has ended, and a key in the request always wins over the cookie.

use super::{Browser, keys_path, member, owner_password};
use reqwest::Method;
use reqwest::header::COOKIE;
use serde_json::json;
use tollgate_testkit::{TestApp, error_of, json_of};

const PROJECTS: &str = "/v1/organization/projects";

fn with_session(
    app: &TestApp,
    browser: &Browser<'_>,
    method: Method,
    csrf: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = app
        .request(method, PROJECTS)
        .header(COOKIE, browser.cookie_header());
    match csrf {
        Some(token) => request.header("x-csrf-token", token),
        None => request,
    }
}

#[tokio::test]
async fn a_session_calls_the_management_api_as_its_member_with_its_csrf_token_for_changes() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut owner = Browser::signed_in(&app, "owner@example.com").await;
    owner.get(&keys_path(&t)).await;
    let csrf = owner.csrf.clone();
    assert!(!csrf.is_empty());

    let listed = json_of(
        with_session(&app, &owner, Method::GET, None)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(listed["data"][0]["name"], "Default");
    // A change with the cookie alone is what another site's form could send: refused, nothing made.
    let body = json!({"name": "from a session"});
    for token in [None, Some("0".repeat(64))] {
        let r = with_session(&app, &owner, Method::POST, token.as_deref())
            .json(&body)
            .send()
            .await
            .unwrap();
        let e = error_of(r, 403).await;
        assert!(
            e["message"].as_str().unwrap().contains("X-CSRF-Token"),
            "{e}"
        );
    }
    let created = with_session(&app, &owner, Method::POST, Some(&csrf))
        .json(&body)
        .send()
        .await
        .unwrap();
    let created = json_of(created, 201).await;
    assert_eq!(created["name"], "from a session");
    let listed = json_of(app.get(PROJECTS, &t.admin_key).await, 200).await;
    let named = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "from a session")
        .count();
    assert_eq!(named, 1);

    // A key in the request wins over the cookie: a bad one is refused whatever the cookie.
    let r = with_session(&app, &owner, Method::GET, None)
        .bearer_auth("sk_admin_garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r, 401).await["message"], "Malformed API key");

    // A member's session reads, and is refused changes as a member's key would be.
    member(&app, &t, "reader@example.com", "member").await;
    let mut reader = Browser::signed_in(&app, "reader@example.com").await;
    reader.get(&keys_path(&t)).await;
    let reader_csrf = reader.csrf.clone();
    json_of(
        with_session(&app, &reader, Method::GET, None)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let r = with_session(&app, &reader, Method::POST, Some(&reader_csrf))
        .json(&json!({"name": "not allowed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r, 403).await["type"], "permission_error");
    // Another session's token is no token.
    let r = with_session(&app, &reader, Method::POST, Some(&csrf))
        .json(&json!({"name": "not allowed"}))
        .send()
        .await
        .unwrap();
    assert!(
        error_of(r, 403).await["message"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token")
    );

    // Signed out, the cookie is worth nothing.
    let cookie = owner.cookie_header();
    owner.post("/dashboard/logout", &[]).await;
    let r = app
        .request(Method::GET, PROJECTS)
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r, 401).await["message"],
        "Dashboard session ended: sign in again"
    );
}
