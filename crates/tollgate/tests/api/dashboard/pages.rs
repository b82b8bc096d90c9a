//! The other pages: projects, members (the last-owner rule as a message), usage, the audit log and its exports,
//! credits; error pages; static assets.

use super::{Browser, member, owner_password};
use reqwest::StatusCode;
use tollgate_testkit::{TestApp, json_of};

#[tokio::test]
async fn every_page_renders_for_a_signed_in_member_with_its_title() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    assert_eq!(
        app.chat(&t, &TestApp::chat_body("fast", "hi"))
            .await
            .status(),
        200
    );
    let mut browser = Browser::signed_in(&app, "owner@example.com").await;
    for (path, title) in [
        ("/dashboard/projects", "Projects · Test tenant · Tollgate"),
        ("/dashboard/members", "Members · Test tenant · Tollgate"),
        ("/dashboard/usage", "Usage · Test tenant · Tollgate"),
        ("/dashboard/audit", "Audit log · Test tenant · Tollgate"),
        ("/dashboard/credits", "Credits · Test tenant · Tollgate"),
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(
            page.body.contains(&format!("<title>{title}</title>")),
            "{path}"
        );
        assert!(
            page.headers.contains_key("content-security-policy"),
            "{path}"
        );
    }
    let usage = browser.get("/dashboard/usage").await;
    assert!(
        usage.body.contains("<svg class=\"chart\""),
        "{}",
        usage.body
    );
    assert!(usage.body.contains("fast"));
    let credits = browser.get("/dashboard/credits").await;
    assert!(credits.body.contains("grant"));
    let audit = browser
        .get("/dashboard/audit?event_type=login.succeeded")
        .await;
    assert!(audit.body.contains("login.succeeded"));
    let bad = browser.get("/dashboard/audit?since=2026-02-30").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains(r#"id="filter-since-error""#));
}

#[tokio::test]
async fn the_audit_log_exports_under_the_session() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::signed_in(&app, "owner@example.com").await;
    let csv = browser
        .get("/dashboard/audit/export?format=csv&event_type=login.succeeded")
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("object,id,type,"), "{}", csv.body);
    assert_eq!(lines.len(), 2, "{}", csv.body);
    let jsonl = browser.get("/dashboard/audit/export?format=jsonl").await;
    assert_eq!(jsonl.headers["content-type"], "application/x-ndjson");
    assert!(jsonl.body.lines().count() > 2);
    // Without a session: the sign-in page, not an export.
    let mut stranger = Browser::new(&app);
    let page = stranger.get("/dashboard/audit/export?format=csv").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn owners_manage_members_and_the_last_owner_rule_is_a_message_on_the_page() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::signed_in(&app, "owner@example.com").await;
    browser.get("/dashboard/members").await;
    let page = browser
        .post(
            "/dashboard/members",
            &[
                ("email", "new@example.com"),
                ("role", "admin"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let list = json_of(app.get("/v1/organization/members", &t.admin_key).await, 200).await;
    let new = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "new@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The owner sets the new member's password; the member then signs in.
    let short = browser
        .post(
            &format!("/dashboard/members/{new}/password"),
            &[("password", "short")],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(
        short
            .body
            .contains(&format!(r#"id="password-{new}-error""#))
    );
    let page = browser
        .post(
            &format!("/dashboard/members/{new}/password"),
            &[("password", super::PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    Browser::signed_in(&app, "new@example.com").await;

    // The last owner cannot be demoted: the members page says so.
    let page = browser
        .post(
            &format!("/dashboard/members/{}/role", t.owner_id),
            &[("role", "member")],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(
        page.body
            .contains("<title>Members · Test tenant · Tollgate</title>")
    );
    assert!(page.body.contains("without an owner"), "{}", page.body);
    let page = browser
        .post(&format!("/dashboard/members/{}/remove", t.owner_id), &[])
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);

    // An admin sees members but cannot manage them.
    let id = member(&app, &t, "admin@example.com", "admin").await;
    let mut admin = Browser::signed_in(&app, "admin@example.com").await;
    let page = admin.get("/dashboard/members").await;
    assert!(!page.body.contains(">Add member</button>"));
    let page = admin
        .post(
            &format!("/dashboard/members/{id}/role"),
            &[("role", "owner")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("Only owners may do this"));
}

#[tokio::test]
async fn projects_are_created_renamed_and_archived() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::signed_in(&app, "owner@example.com").await;
    browser.get("/dashboard/projects").await;
    assert_eq!(
        browser
            .post("/dashboard/projects", &[("name", "Second")])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let page = browser.post("/dashboard/projects", &[("name", "")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains(r#"id="create-name-error""#));
    let page = browser
        .post(
            &format!("/dashboard/projects/{}/rename", t.project_id),
            &[("name", "Main")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let page = browser
        .post(
            &format!("/dashboard/projects/{}/archive", t.project_id),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.chat(&t, &TestApp::chat_body("fast", "hi"))
            .await
            .status(),
        401
    );
    // The dashboard now leads to the remaining active project.
    let home = browser.get("/dashboard").await;
    assert!(home.location().starts_with("/dashboard/projects/proj_"));
    assert!(!home.location().contains(&t.project_id));
}

#[tokio::test]
async fn errors_under_the_dashboard_are_pages_and_assets_are_cached() {
    let app = TestApp::start().await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/dashboard/nowhere").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("<title>Not found · Tollgate</title>"));
    let page = browser.get("/dashboard/projects").await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "signed out: to the sign-in page"
    );
    assert_eq!(page.location(), "/dashboard/login");
    // A query string a page cannot read is a page too, not axum's plain text.
    let page = browser
        .get("/dashboard/login?signed_out=1&signed_out=2")
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // The API's own 404 keeps its JSON.
    let api = browser.get("/v1/nowhere").await;
    assert!(
        api.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    for (path, kind) in [
        ("/dashboard/assets/dashboard.css", "text/css; charset=utf-8"),
        (
            "/dashboard/assets/dashboard.js",
            "text/javascript; charset=utf-8",
        ),
    ] {
        let asset = browser.get(path).await;
        assert_eq!(asset.status, StatusCode::OK);
        assert_eq!(asset.headers["content-type"], kind);
        assert!(
            asset.headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age=31536000")
        );
    }
    // A JSON post to a form route is refused as a page.
    let response = app
        .request(reqwest::Method::POST, "/dashboard/login")
        .json(&serde_json::json!({"email": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}
