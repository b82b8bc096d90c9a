//! The API keys page: a new key's value shown once, revoke, roll with a grace period, edit with errors next to the
//! field, and a member who sees the keys but may change none of them.

use super::{Browser, keys_path, member, owner_password};
use reqwest::StatusCode;
use serde_json::Value;
use tollgate_testkit::{TestApp, json_of};

/// The value inside `<… id="new-key-value" …>…</…>`.
fn new_key_value(body: &str) -> Option<String> {
    let at = body.find(r#"id="new-key-value""#)?;
    let rest = &body[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].trim().to_owned())
}

async fn key(app: &TestApp, t: &tollgate_testkit::TestTenant, id: &str) -> Value {
    json_of(
        app.get(
            &format!("/v1/organization/projects/{}/api_keys/{id}", t.project_id),
            &t.admin_key,
        )
        .await,
        200,
    )
    .await
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_works_and_the_page_has_every_hook() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::signed_in(&app, "owner@example.com").await;
    let page = browser.get(&keys_path(&t)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers["content-security-policy"],
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'"
    );
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(
        page.body
            .contains("<title>API keys · Default · Tollgate</title>")
    );
    for nav in [
        "API keys",
        "Projects",
        "Members",
        "Usage",
        "Audit log",
        "Credits",
    ] {
        assert!(page.body.contains(&format!(">{nav}</a>")), "{nav}");
    }
    assert!(page.body.contains(r#"aria-current="page">API keys</a>"#));
    assert!(
        page.body
            .contains(&format!(r#"<tr data-key-id="{}">"#, t.project_key_id))
    );
    for button in [
        ">Revoke</button>",
        ">Roll</button>",
        ">Edit</button>",
        ">Create key</button>",
    ] {
        assert!(page.body.contains(button), "{button}");
    }
    assert!(!page.body.contains("style="), "no inline styles");
    assert!(!page.body.contains("<script>"), "no inline scripts");

    // Without the CSRF token nothing is created.
    let forged = browser
        .post(&keys_path(&t), &[("name", "forged"), ("csrf", "nope")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let missing = browser
        .post(&keys_path(&t), &[("name", "forged"), ("csrf", "")])
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);

    // A bad name comes back next to its field.
    let page = browser
        .post(&keys_path(&t), &[("name", " "), ("description", "kept")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains(r#"id="create-name-error""#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"value="kept""#));

    let page = browser
        .post(
            &keys_path(&t),
            &[("name", "CI"), ("description", "for the CI")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(r#"id="new-key-dialog""#));
    assert!(page.body.contains(">Copy</button>") && page.body.contains(">Done</button>"));
    let value = new_key_value(&page.body).unwrap();
    assert!(value.starts_with("sk_live_"), "{value}");
    assert_eq!(app.get("/v1/models", &value).await.status(), 200);
    // Never again.
    let later = browser.get(&keys_path(&t)).await;
    assert!(!later.body.contains(&value));
    assert!(!later.body.contains("new-key-dialog"));
    assert!(
        later
            .body
            .contains(&format!("{}…{}", &value[..12], &value[value.len() - 4..]))
    );
    assert!(later.body.contains("for the CI"));
}

#[tokio::test]
async fn revoke_roll_and_edit_go_through_the_same_rules_as_the_api() {
    let app = TestApp::start().await;
    // A plan with IP allow-lists.
    let t = app.tenant("enterprise").await;
    owner_password(&app, &t).await;
    let mut browser = Browser::signed_in(&app, "owner@example.com").await;
    browser.get(&keys_path(&t)).await;
    let base = format!("{}/{}", keys_path(&t), t.project_key_id);

    // Edit: a bad CIDR is shown next to its field, in the dialog opened again.
    let page = browser
        .post(
            &format!("{base}/edit"),
            &[("name", "renamed"), ("allowed_ips", "not-an-ip")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body
            .contains(&format!(r#"id="edit-{}-ips-error""#, t.project_key_id)),
        "{}",
        page.body
    );
    assert!(page.body.contains("open data-open-on-load"));
    let page = browser
        .post(
            &format!("{base}/edit"),
            &[
                ("name", "renamed"),
                ("description", "d"),
                ("allowed_ips", "203.0.113.0/24"),
                ("models", "echo"),
                ("requests_per_minute", "60"),
                ("tokens_per_minute", ""),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let edited = key(&app, &t, &t.project_key_id).await;
    assert_eq!(edited["name"], "renamed");
    assert_eq!(edited["allowed_ips"], serde_json::json!(["203.0.113.0/24"]));
    assert_eq!(edited["models"], serde_json::json!(["echo"]));
    assert_eq!(edited["rate_limits"]["requests_per_minute"], 60);

    // Roll with a grace period: the successor's value once, the old key expiring then.
    let page = browser.get(&keys_path(&t)).await;
    assert!(
        page.body.contains(r#"name="grace_period_seconds""#)
            && page.body.contains(">Roll key</button>")
    );
    let bad = browser
        .post(&format!("{base}/roll"), &[("grace_period_seconds", "soon")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body
            .contains(&format!(r#"id="roll-{}-grace-error""#, t.project_key_id))
    );
    let now = app.clock_now();
    let page = browser
        .post(&format!("{base}/roll"), &[("grace_period_seconds", "3600")])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let successor = new_key_value(&page.body).unwrap();
    assert_ne!(successor, t.project_key);
    assert_eq!(
        key(&app, &t, &t.project_key_id).await["expires_at"],
        now + 3600
    );

    // Revoke: the confirm dialog's button, then the key fails at once.
    assert!(page.body.contains(">Revoke key</button>"));
    let (id, value) = app.key_in(&t, serde_json::json!({"name": "doomed"})).await;
    let page = browser
        .post(&format!("{}/{id}/revoke", keys_path(&t)), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(key(&app, &t, &id).await["status"], "revoked");
    assert_eq!(app.get("/v1/models", &value).await.status(), 401);
    // Another tenant's key, or a made-up one: the 404 page.
    let page = browser
        .post(&format!("{}/key_nope/revoke", keys_path(&t)), &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("<html"));
}

#[tokio::test]
async fn a_member_sees_the_keys_and_changes_none_of_them() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    member(&app, &t, "reader@example.com", "member").await;
    let mut browser = Browser::signed_in(&app, "reader@example.com").await;
    let page = browser.get(&keys_path(&t)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(&format!(r#"<tr data-key-id="{}">"#, t.project_key_id))
    );
    for control in [
        ">Revoke</button>",
        ">Roll</button>",
        ">Edit</button>",
        ">Create key</button>",
    ] {
        assert!(!page.body.contains(control), "{control}");
    }
    // The server refuses the posts anyway, with the API's words.
    let page = browser.post(&keys_path(&t), &[("name", "sneaky")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("Your role (member) may read but not create, change or delete")
    );
    let page = browser
        .post(
            &format!("{}/{}/revoke", keys_path(&t), t.project_key_id),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(key(&app, &t, &t.project_key_id).await["status"], "active");
    assert_eq!(
        browser
            .post("/dashboard/projects", &[("name", "x")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}
