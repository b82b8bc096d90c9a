//! `/v1/organization/members`: roles decide who may do what; only owners manage members; the last owner stays.

use serde_json::json;
use tollgate_testkit::{TestApp, error_of, json_of};

const MEMBERS: &str = "/v1/organization/members";

fn keys_path(project_id: &str) -> String {
    format!("/v1/organization/projects/{project_id}/api_keys")
}

#[tokio::test]
async fn owners_add_list_read_and_change_members() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let body = json!({"email": " Grace@Example.COM ", "role": "admin", "password": "correct horse battery"});
    let added = json_of(app.post(MEMBERS, &t.admin_key, &body).await, 201).await;
    assert_eq!(added["object"], "organization.member");
    assert_eq!(added["email"], "grace@example.com");
    assert_eq!(added["role"], "admin");
    assert!(added.get("password").is_none() && added.get("password_hash").is_none());
    let id = added["id"].as_str().unwrap();

    let list = json_of(app.get(MEMBERS, &t.admin_key).await, 200).await;
    let emails: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["owner@example.com", "grace@example.com"]);
    let path = format!("{MEMBERS}/{id}");
    assert_eq!(
        json_of(app.get(&path, &t.admin_key).await, 200).await,
        added
    );
    let changed = json_of(
        app.post(&path, &t.admin_key, &json!({"role": "member"}))
            .await,
        200,
    )
    .await;
    assert_eq!(changed["role"], "member");

    // The same email again, in any case, is a conflict; bad fields name themselves.
    let dup = error_of(
        app.post(
            MEMBERS,
            &t.admin_key,
            &json!({"email": "GRACE@example.com", "role": "member"}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        dup["message"]
            .as_str()
            .unwrap()
            .contains("already a member"),
        "{dup}"
    );
    let bad_role = error_of(
        app.post(
            MEMBERS,
            &t.admin_key,
            &json!({"email": "x@y.io", "role": "root"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(bad_role["param"], "role");
    let bad_email = error_of(
        app.post(
            MEMBERS,
            &t.admin_key,
            &json!({"email": "nope", "role": "member"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(bad_email["param"], "email");
    let short = error_of(
        app.post(
            MEMBERS,
            &t.admin_key,
            &json!({"email": "p@y.io", "role": "member", "password": "short"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(short["param"], "password");
}

#[tokio::test]
async fn members_read_keys_but_may_not_create_or_delete_them() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (_, member_key) = app.member(&t, "reader@example.com", "member").await;
    let keys = keys_path(&t.project_id);
    assert_eq!(
        json_of(app.get(&keys, &member_key).await, 200).await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let key = format!("{keys}/{}", t.project_key_id);
    assert_eq!(app.get(&key, &member_key).await.status(), 200);
    let err = error_of(
        app.post(&keys, &member_key, &json!({"name": "x"})).await,
        403,
    )
    .await;
    assert_eq!(err["type"], "permission_error");
    error_of(app.delete(&key, &member_key).await, 403).await;
    assert_eq!(
        app.get("/v1/models", &t.project_key).await.status(),
        200,
        "the key was not revoked"
    );
    assert_eq!(
        json_of(app.get(&keys, &member_key).await, 200).await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn admins_manage_keys_but_not_members() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (_, admin_key) = app.member(&t, "admin@example.com", "admin").await;
    let created = app
        .create_project_key(&admin_key, &t.project_id, json!({"name": "by admin"}))
        .await;
    let path = format!(
        "{}/{}",
        keys_path(&t.project_id),
        created["id"].as_str().unwrap()
    );
    assert_eq!(app.delete(&path, &admin_key).await.status(), 200);
    let err = error_of(
        app.post(
            MEMBERS,
            &admin_key,
            &json!({"email": "x@y.io", "role": "member"}),
        )
        .await,
        403,
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("Only owners"),
        "{err}"
    );
    let owner = format!("{MEMBERS}/{}", t.owner_id);
    error_of(
        app.post(&owner, &admin_key, &json!({"role": "member"}))
            .await,
        403,
    )
    .await;
    error_of(app.delete(&owner, &admin_key).await, 403).await;
}

#[tokio::test]
async fn a_demotion_takes_effect_on_the_next_request() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (id, admin_key) = app.member(&t, "admin@example.com", "admin").await;
    let keys = keys_path(&t.project_id);
    assert_eq!(
        app.post(&keys, &admin_key, &json!({"name": "one"}))
            .await
            .status(),
        201
    );
    json_of(
        app.post(
            &format!("{MEMBERS}/{id}"),
            &t.admin_key,
            &json!({"role": "member"}),
        )
        .await,
        200,
    )
    .await;
    error_of(
        app.post(&keys, &admin_key, &json!({"name": "two"})).await,
        403,
    )
    .await;
    // And a promotion too.
    json_of(
        app.post(
            &format!("{MEMBERS}/{id}"),
            &t.admin_key,
            &json!({"role": "owner"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        app.post(
            MEMBERS,
            &admin_key,
            &json!({"email": "new@example.com", "role": "member"})
        )
        .await
        .status(),
        201
    );
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let owner = format!("{MEMBERS}/{}", t.owner_id);
    let err = error_of(
        app.post(&owner, &t.admin_key, &json!({"role": "admin"}))
            .await,
        409,
    )
    .await;
    assert_eq!(err["code"], "last_owner");
    assert_eq!(err["type"], "invalid_request_error");
    let err = error_of(app.delete(&owner, &t.admin_key).await, 409).await;
    assert_eq!(err["code"], "last_owner");
    assert_eq!(
        json_of(app.get(&owner, &t.admin_key).await, 200).await["role"],
        "owner"
    );

    let (second, second_key) = app.member(&t, "second@example.com", "owner").await;
    let deleted = json_of(app.delete(&owner, &second_key).await, 200).await;
    assert_eq!(
        deleted,
        json!({"object": "organization.member.deleted", "id": t.owner_id, "deleted": true})
    );
    // Now `second` is the last owner.
    let err = error_of(
        app.delete(&format!("{MEMBERS}/{second}"), &second_key)
            .await,
        409,
    )
    .await;
    assert_eq!(err["code"], "last_owner");
}

#[tokio::test]
async fn removing_a_member_revokes_its_admin_keys_at_once() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (id, admin_key) = app.member(&t, "leaver@example.com", "admin").await;
    let keys = keys_path(&t.project_id);
    assert_eq!(app.get(&keys, &admin_key).await.status(), 200, "cached now");
    json_of(
        app.delete(&format!("{MEMBERS}/{id}"), &t.admin_key).await,
        200,
    )
    .await;
    let err = error_of(app.get(&keys, &admin_key).await, 401).await;
    assert_eq!(err["message"], "API key revoked");
    error_of(app.get(&format!("{MEMBERS}/{id}"), &t.admin_key).await, 404).await;
    let list = json_of(app.get(MEMBERS, &t.admin_key).await, 200).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // The project keys the member created keep working: they belong to the project.
    assert_eq!(app.get("/v1/models", &t.project_key).await.status(), 200);
    // The address may be invited again.
    let again = json!({"email": "leaver@example.com", "role": "member"});
    assert_eq!(app.post(MEMBERS, &t.admin_key, &again).await.status(), 201);
}

#[tokio::test]
async fn owners_set_and_clear_a_members_dashboard_password_with_its_event() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let path = format!("{MEMBERS}/{}", t.owner_id);
    let short = error_of(
        app.post(&path, &t.admin_key, &json!({"password": "short"}))
            .await,
        400,
    )
    .await;
    assert_eq!(short["param"], "password");
    let empty = error_of(app.post(&path, &t.admin_key, &json!({})).await, 400).await;
    assert!(
        empty["message"].as_str().unwrap().contains("role"),
        "{empty}"
    );
    // A role and a password together: neither is written when one is bad.
    error_of(
        app.post(
            &path,
            &t.admin_key,
            &json!({"role": "nope", "password": "long enough now"}),
        )
        .await,
        400,
    )
    .await;
    for password in [json!("long enough now"), json!(null)] {
        let member = json_of(
            app.post(&path, &t.admin_key, &json!({"password": password}))
                .await,
            200,
        )
        .await;
        assert_eq!(member["id"], t.owner_id.as_str());
        assert!(member.get("password").is_none() && member.get("password_hash").is_none());
    }
    let events = json_of(
        app.get(
            "/v1/organization/audit_logs?event_type=member.password_changed",
            &t.admin_key,
        )
        .await,
        200,
    )
    .await;
    let details: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["password"].as_str().unwrap())
        .collect();
    assert_eq!(details, ["cleared", "set"], "newest first, never the hash");
    // Only owners.
    let (_, admin_key) = app.member(&t, "admin@example.com", "admin").await;
    error_of(
        app.post(&path, &admin_key, &json!({"password": "long enough now"}))
            .await,
        403,
    )
    .await;
}
