//! `POST /v1/organization/projects/{project_id}/api_keys/{key_id}/roll`: a successor with the same settings and its
//! value shown once; the old key works until its grace period ends, then reads and fails as expired.

use serde_json::{Value, json};
use tollgate_core::plan::Plan;
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

fn key_path(t: &TestTenant, key_id: &str) -> String {
    format!(
        "/v1/organization/projects/{}/api_keys/{key_id}",
        t.project_id
    )
}

/// Rolls `key_id` as `admin_key` with `body` and checks the status; returns the body.
async fn roll(app: &TestApp, t: &TestTenant, key_id: &str, body: Value, status: u16) -> Value {
    let path = format!("{}/roll", key_path(t, key_id));
    json_of(app.post(&path, &t.admin_key, &body).await, status).await
}

/// The status `key` gets on `GET /v1/models`, and the error message if any.
async fn models_status(app: &TestApp, key: &str) -> (u16, Option<String>) {
    let r = app.get("/v1/models", key).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["error"]["message"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn a_successor_keeps_the_settings_and_both_work_until_the_grace_period_ends() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let old = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "prod", "description": "web tier", "allowed_ips": ["127.0.0.1/32", "2001:db8::/32"],
                   "models": ["echo"], "rate_limits": {"requests_per_minute": 30},
                   "spend_limit_cents": 99.000001, "spend_limit_period": "month",
                   "expires_at": app.clock_now() + 86_400}),
        )
        .await;
    let (old_id, old_value) = (old["id"].as_str().unwrap(), old["value"].as_str().unwrap());
    assert_eq!(models_status(&app, old_value).await.0, 200);

    let rolled_at = app.clock_now();
    let new = roll(&app, &t, old_id, json!({"grace_period_seconds": 60}), 201).await;
    let new_value = new["value"].as_str().unwrap();
    assert!(new_value.starts_with("sk_live_") && new_value != old_value);
    assert_ne!(new["id"], old["id"]);
    assert_eq!(new["rolled_from"], old_id);
    assert_eq!(new["status"], "active");
    assert_eq!(new["created_by"], t.owner_id.as_str());
    for same in [
        "object",
        "project_id",
        "name",
        "description",
        "allowed_ips",
        "models",
        "rate_limits",
        "spend_limit_cents",
        "spend_limit_period",
    ] {
        assert_eq!(new[same], old[same], "{same}");
    }
    assert!(new["expires_at"].is_null(), "{new}");
    // The value once: not when read or listed.
    let read = app
        .get(&key_path(&t, new["id"].as_str().unwrap()), &t.admin_key)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !read.contains(new_value) && !read.contains("\"value\""),
        "{read}"
    );
    let list = app
        .get(
            &format!("/v1/organization/projects/{}/api_keys", t.project_id),
            &t.admin_key,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains(new_value) && !list.contains(old_value),
        "{list}"
    );

    let old_now = json_of(app.get(&key_path(&t, old_id), &t.admin_key).await, 200).await;
    assert_eq!(old_now["expires_at"], rolled_at + 60);
    assert_eq!(old_now["status"], "active");
    app.clock.advance(59);
    assert_eq!(models_status(&app, old_value).await.0, 200);
    assert_eq!(models_status(&app, new_value).await.0, 200);
    app.clock.advance(1);
    assert_eq!(
        models_status(&app, old_value).await,
        (401, Some("API key expired".to_owned()))
    );
    assert_eq!(models_status(&app, new_value).await.0, 200);
    let old_now = json_of(app.get(&key_path(&t, old_id), &t.admin_key).await, 200).await;
    assert_eq!(old_now["status"], "expired");
}

#[tokio::test]
async fn with_no_grace_period_the_old_key_ends_at_once_and_a_sooner_expiry_is_kept() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    assert_eq!(models_status(&app, &t.project_key).await.0, 200);
    let new = roll(&app, &t, &t.project_key_id, json!({}), 201).await;
    assert_eq!(
        models_status(&app, &t.project_key).await,
        (401, Some("API key expired".to_owned()))
    );
    assert_eq!(
        models_status(&app, new["value"].as_str().unwrap()).await.0,
        200
    );
    let old = json_of(
        app.get(&key_path(&t, &t.project_key_id), &t.admin_key)
            .await,
        200,
    )
    .await;
    assert_eq!(
        (&old["status"], &old["expires_at"]),
        (&json!("expired"), &json!(app.clock_now()))
    );

    // A key that expires in 10 s rolled with an hour's grace still expires in 10 s.
    let soon = app.clock_now() + 10;
    let (id, _) = app
        .key_in(&t, json!({"name": "short", "expires_at": soon}))
        .await;
    roll(&app, &t, &id, json!({"grace_period_seconds": 3600}), 201).await;
    let read = json_of(app.get(&key_path(&t, &id), &t.admin_key).await, 200).await;
    assert_eq!(read["expires_at"], soon);
}

#[tokio::test]
async fn revoked_and_expired_keys_are_not_rolled_nor_by_members() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    for (body, param) in [
        (json!({"grace_period_seconds": -1}), "grace_period_seconds"),
        (
            json!({"grace_period_seconds": 2_592_001}),
            "grace_period_seconds",
        ),
        (
            json!({"grace_period_seconds": "60"}),
            "grace_period_seconds",
        ),
        (json!({"grace": 60}), "grace"),
    ] {
        let err = roll(&app, &t, &t.project_key_id, body.clone(), 400).await;
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
    }
    // The longest grace period is accepted.
    roll(
        &app,
        &t,
        &t.project_key_id,
        json!({"grace_period_seconds": 2_592_000}),
        201,
    )
    .await;

    let (_, member) = app.member(&t, "reader@example.com", "member").await;
    let path = format!("{}/roll", key_path(&t, &t.project_key_id));
    let err = error_of(app.post(&path, &member, &json!({})).await, 403).await;
    assert_eq!(err["type"], "permission_error");
    let (_, admin) = app.member(&t, "admin@example.com", "admin").await;
    json_of(app.post(&path, &admin, &json!({})).await, 201).await;
    // The roll with no grace period above expired it: expired keys are not rolled.
    let err = roll(&app, &t, &t.project_key_id, json!({}), 409).await;
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{err}"
    );

    let (id, _) = app.key_in(&t, json!({"name": "gone"})).await;
    json_of(app.delete(&key_path(&t, &id), &t.admin_key).await, 200).await;
    let err = roll(&app, &t, &id, json!({}), 409).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{err}"
    );
    // Another tenant's key, or an admin key's id: not found.
    let other = app.tenant("pro").await;
    roll(&app, &t, &other.project_key_id, json!({}), 404).await;
}

#[tokio::test]
async fn the_plans_key_limit_does_not_refuse_a_roll() {
    let app = TestApp::builder()
        .configure(|c| {
            c.plans.insert(
                "one".into(),
                Plan {
                    max_keys: Some(1),
                    requests_per_minute: 1_000,
                    tokens_per_minute: 1_000_000,
                    ip_allowlist: false,
                },
            );
        })
        .start()
        .await;
    let t = app.tenant("one").await; // its one key
    let keys = format!("/v1/organization/projects/{}/api_keys", t.project_id);
    error_of(
        app.post(&keys, &t.admin_key, &json!({"name": "two"})).await,
        403,
    )
    .await;
    let new = roll(
        &app,
        &t,
        &t.project_key_id,
        json!({"grace_period_seconds": 30}),
        201,
    )
    .await;
    // During the grace period both work; the limit still holds for new keys.
    assert_eq!(models_status(&app, &t.project_key).await.0, 200);
    assert_eq!(
        models_status(&app, new["value"].as_str().unwrap()).await.0,
        200
    );
    error_of(
        app.post(&keys, &t.admin_key, &json!({"name": "two"})).await,
        403,
    )
    .await;
}
