//! `/v1/organization/admin_api_keys`: keys that act as a member, with the member's current role.

use serde_json::json;
use tollgate_testkit::{TestApp, error_of, json_of};

const ADMIN_KEYS: &str = "/v1/organization/admin_api_keys";

#[tokio::test]
async fn an_owner_creates_lists_reads_and_revokes_admin_keys() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let created = json_of(
        app.post(ADMIN_KEYS, &t.admin_key, &json!({"name": "ci"}))
            .await,
        201,
    )
    .await;
    assert_eq!(created["object"], "organization.admin_api_key");
    assert_eq!(created["member_id"], t.owner_id.as_str());
    assert!(created.get("project_id").is_none());
    let value = created["value"].as_str().unwrap();
    assert!(value.starts_with("sk_admin_"));
    assert_eq!(
        created["redacted_value"],
        format!("{}…{}", &value[..12], &value[value.len() - 4..])
    );
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("admin_key_"));

    let list = json_of(app.get(ADMIN_KEYS, value).await, 200).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        2,
        "the owner's first key and this one"
    );
    assert!(!list.to_string().contains(value), "the value is shown once");
    let path = format!("{ADMIN_KEYS}/{id}");
    let got = json_of(app.get(&path, &t.admin_key).await, 200).await;
    assert!(got.get("value").is_none());
    let deleted = json_of(app.delete(&path, &t.admin_key).await, 200).await;
    assert_eq!(
        deleted,
        json!({"object": "organization.admin_api_key.deleted", "id": id, "deleted": true})
    );
    let err = error_of(app.get("/v1/organization", value).await, 401).await;
    assert_eq!(err["message"], "API key revoked");
    assert_eq!(
        json_of(app.get(&path, &t.admin_key).await, 200).await["status"],
        "revoked"
    );
    // A project key's id is not an admin key.
    error_of(
        app.get(&format!("{ADMIN_KEYS}/{}", t.project_key_id), &t.admin_key)
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn an_admin_key_acts_with_its_members_role() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (member_id, member_key) = app.member(&t, "reader@example.com", "member").await;
    let keys = format!("/v1/organization/projects/{}/api_keys", t.project_id);
    error_of(
        app.post(&keys, &member_key, &json!({"name": "x"})).await,
        403,
    )
    .await;
    // Members are read-only: no admin keys of their own either.
    error_of(
        app.post(ADMIN_KEYS, &member_key, &json!({"name": "mine"}))
            .await,
        403,
    )
    .await;
    let list = json_of(app.get(ADMIN_KEYS, &member_key).await, 200).await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["member_id"] == member_id.as_str())
    );
}

#[tokio::test]
async fn admins_manage_their_own_admin_keys_and_owners_anyones() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (admin_id, admin_key) = app.member(&t, "admin@example.com", "admin").await;
    let (reader_id, _) = app.member(&t, "reader@example.com", "member").await;
    let own = json_of(
        app.post(ADMIN_KEYS, &admin_key, &json!({"name": "own"}))
            .await,
        201,
    )
    .await;
    assert_eq!(own["member_id"], admin_id.as_str());
    let for_other = json!({"name": "theirs", "member_id": reader_id});
    error_of(app.post(ADMIN_KEYS, &admin_key, &for_other).await, 403).await;
    // The owner's first admin key is not the admin's to revoke.
    let list = json_of(app.get(ADMIN_KEYS, &t.admin_key).await, 200).await;
    let owners_key = list["data"][0]["id"].as_str().unwrap();
    error_of(
        app.delete(&format!("{ADMIN_KEYS}/{owners_key}"), &admin_key)
            .await,
        403,
    )
    .await;
    assert_eq!(
        app.get(ADMIN_KEYS, &t.admin_key).await.status(),
        200,
        "still works"
    );
    // An owner may revoke the admin's key.
    let own_id = own["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("{ADMIN_KEYS}/{own_id}"), &t.admin_key)
            .await
            .status(),
        200
    );
    // An unknown member is 404, not a key for nobody.
    let nobody = json!({"name": "x", "member_id": "user_nobody"});
    error_of(app.post(ADMIN_KEYS, &t.admin_key, &nobody).await, 404).await;
}
