//! Signing in and out: the session cookie's attributes, the sign-in form's CSRF cookie, one message for every
//! failure, `login.*` events, throttling, expiry, and a session ended by signing out.

use super::{Browser, PASSWORD, keys_path, member, owner_password};
use reqwest::StatusCode;
use serde_json::Value;
use tollgate_testkit::{TestApp, json_of};

async fn events(app: &TestApp, admin_key: &str, kind: &str) -> Vec<Value> {
    let list = json_of(
        app.get(
            &format!("/v1/organization/audit_logs?event_type={kind}"),
            admin_key,
        )
        .await,
        200,
    )
    .await;
    list["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_member_signs_in_with_email_and_password_and_signing_out_ends_the_session() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::new(&app);

    let page = browser.get("/dashboard/login").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<title>Sign in · Tollgate</title>"));
    assert!(page.body.contains(r#"name="email""#) && page.body.contains(r#"name="password""#));
    assert!(page.body.contains(">Sign in</button>"));
    let login_cookie = page.set_cookie("tollgate_login").unwrap();
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"),
        "{login_cookie}"
    );

    // Wrong password, unknown email: the same words.
    for (email, password) in [
        ("owner@example.com", "not the password"),
        ("nobody@example.com", PASSWORD),
    ] {
        let page = browser
            .post(
                "/dashboard/login",
                &[("email", email), ("password", password)],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{email}");
        assert!(
            page.body.contains("Email or password is wrong"),
            "{}",
            page.body
        );
        assert!(!browser.has_cookie("tollgate_session"));
    }
    // Past the sign-in limits' short burst (the clock stands still otherwise).
    app.clock.advance(60);
    let failed = events(&app, &t.admin_key, "login.failed").await;
    assert_eq!(
        failed.len(),
        1,
        "only the known member's failure: {failed:?}"
    );
    assert_eq!(failed[0]["target_id"], t.owner_id.as_str());

    // Emails are matched case-insensitively, as they are stored.
    let page = browser
        .post(
            "/dashboard/login",
            &[("email", "Owner@Example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/dashboard");
    let cookie = page.set_cookie("tollgate_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP by default: {cookie}"
    );
    assert_eq!(events(&app, &t.admin_key, "login.succeeded").await.len(), 1);

    let home = browser.get("/dashboard").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.location(), keys_path(&t));
    // Signed in, the sign-in page leads to the dashboard.
    assert_eq!(
        browser.get("/dashboard/login").await.location(),
        "/dashboard"
    );

    // Signing out needs the session's CSRF token too.
    let keys = browser.get(&keys_path(&t)).await;
    assert!(keys.body.contains(">Sign out</button>"));
    let forged = browser
        .post("/dashboard/logout", &[("csrf", "forged")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let cookie = browser.cookies.get("tollgate_session").cloned().unwrap();
    let out = browser.post("/dashboard/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.location().starts_with("/dashboard/login"));
    assert!(!browser.has_cookie("tollgate_session"));
    assert_eq!(events(&app, &t.admin_key, "session.revoked").await.len(), 1);
    // The old cookie, presented again, no longer works.
    browser
        .cookies
        .insert("tollgate_session".to_owned(), cookie);
    let again = browser.get(&keys_path(&t)).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.location(), "/dashboard/login");
}

#[tokio::test]
async fn a_sign_in_form_from_elsewhere_is_refused_and_members_without_a_password_cannot_sign_in() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    // No password set: the same message as a wrong one.
    let mut browser = Browser::new(&app);
    let page = browser.sign_in("owner@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Email or password is wrong"));
    owner_password(&app, &t).await;
    // A post without the sign-in page's cookie (another site's form): 403, an HTML page.
    let mut stranger = Browser::new(&app);
    let page = stranger
        .post(
            "/dashboard/login",
            &[
                ("email", "owner@example.com"),
                ("password", PASSWORD),
                ("csrf", "guessed"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(!stranger.has_cookie("tollgate_session"));
}

#[tokio::test]
async fn an_email_in_several_organizations_signs_in_to_the_first_whose_password_matches() {
    let app = TestApp::start().await;
    let first = app.tenant("pro").await;
    let second = app.tenant("pro").await;
    // The same email in both; only the second's member has the password tried.
    member(&app, &first, "both@example.com", "member").await;
    let id = member(&app, &second, "both@example.com", "admin").await;
    json_of(
        app.post(
            &format!(
                "/v1/organization/members/{}",
                first_member(&app, &first).await
            ),
            &first.admin_key,
            &serde_json::json!({"password": "another password entirely"}),
        )
        .await,
        200,
    )
    .await;
    let mut browser = Browser::signed_in(&app, "both@example.com").await;
    let page = browser.get(&keys_path(&second)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("admin"),
        "signed in to the second as its admin"
    );
    // The first organization's project is not this session's.
    assert_eq!(
        browser.get(&keys_path(&first)).await.status,
        StatusCode::NOT_FOUND
    );
    let succeeded = events(&app, &second.admin_key, "login.succeeded").await;
    assert_eq!(succeeded[0]["actor_id"], id.as_str());
}

/// The id of `t`'s member with the shared email.
async fn first_member(app: &TestApp, t: &tollgate_testkit::TestTenant) -> String {
    let list = json_of(app.get("/v1/organization/members", &t.admin_key).await, 200).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "both@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_and_the_page_says_how_long_to_wait() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::new(&app);
    browser.get("/dashboard/login").await;
    let mut throttled = None;
    for _ in 0..20 {
        let page = browser
            .post(
                "/dashboard/login",
                &[
                    ("email", "owner@example.com"),
                    ("password", "wrong password"),
                ],
            )
            .await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(page);
            break;
        }
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let page = throttled.expect("throttled within 20 failures");
    assert!(
        page.body.contains("Too many failed sign-ins. Wait "),
        "{}",
        page.body
    );
    // Even the right password waits its turn.
    let page = browser
        .post(
            "/dashboard/login",
            &[("email", "owner@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_idle_session_ends_and_sends_the_browser_to_sign_in() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::signed_in(&app, "owner@example.com").await;
    assert_eq!(browser.get(&keys_path(&t)).await.status, StatusCode::OK);
    // Used within the idle window, it lives on.
    app.clock.advance(50 * 60);
    assert_eq!(browser.get(&keys_path(&t)).await.status, StatusCode::OK);
    app.clock.advance(50 * 60);
    assert_eq!(browser.get(&keys_path(&t)).await.status, StatusCode::OK);
    // Then an hour and a minute unused.
    app.clock.advance(61 * 60);
    let page = browser.get(&keys_path(&t)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/login");
    assert!(
        !browser.has_cookie("tollgate_session"),
        "the stale cookie is dropped"
    );
}

#[tokio::test]
async fn a_new_password_ends_the_members_open_sessions() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let id = member(&app, &t, "reader@example.com", "member").await;
    let mut reader = Browser::signed_in(&app, "reader@example.com").await;
    assert_eq!(reader.get(&keys_path(&t)).await.status, StatusCode::OK);
    json_of(
        app.post(
            &format!("/v1/organization/members/{id}"),
            &t.admin_key,
            &serde_json::json!({"password": "a brand new password"}),
        )
        .await,
        200,
    )
    .await;
    // The session the old password opened is over: its next page is the sign-in page.
    let page = reader.get(&keys_path(&t)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.location().starts_with("/dashboard/login"),
        "{}",
        page.location()
    );
    let page = reader
        .sign_in("reader@example.com", "a brand new password")
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard");
}
