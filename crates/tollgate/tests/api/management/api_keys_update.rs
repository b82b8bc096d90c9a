//! `POST /v1/organization/projects/{project_id}/api_keys/{key_id}`: every field of a project key can be changed
//! (never its secret), `null` clears a nullable one, each is validated as at creation, and a change holds from the
//! key's very next request.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

fn key_path(t: &TestTenant, key_id: &str) -> String {
    format!(
        "/v1/organization/projects/{}/api_keys/{key_id}",
        t.project_id
    )
}

/// Sends an update of `key_id` as `admin_key` and checks its status; returns the body.
async fn update(app: &TestApp, t: &TestTenant, key_id: &str, body: Value, status: u16) -> Value {
    let path = key_path(t, key_id);
    json_of(app.post(&path, &t.admin_key, &body).await, status).await
}

/// The fields an update may change, as the key object shows them.
const FIELDS: [&str; 8] = [
    "name",
    "description",
    "expires_at",
    "allowed_ips",
    "models",
    "rate_limits",
    "spend_limit_cents",
    "spend_limit_period",
];

#[tokio::test]
async fn every_field_is_created_updated_shown_and_cleared() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let later = app.clock_now() + 3_600;
    // Creation takes them all (it refused the limits as unknown fields before).
    let created = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "full", "rate_limits": {"tokens_per_minute": 1000},
                   "spend_limit_cents": 0.000001, "spend_limit_period": "total"}),
        )
        .await;
    assert_eq!(
        created["rate_limits"],
        json!({"requests_per_minute": null, "tokens_per_minute": 1000})
    );
    // Exact to the micro-cent: the body's text, not a float's rendering (1e-6).
    assert_eq!(created["spend_limit_cents"], json!(0.000001));
    assert_eq!(created["spend_limit_period"], "total");
    let id = created["id"].as_str().unwrap();

    let changes = json!({
        "name": "renamed",
        "description": "ops",
        "expires_at": later,
        "allowed_ips": ["203.0.113.0/24", "2001:db8::/32"],
        "models": ["echo", "fast"],
        "rate_limits": {"requests_per_minute": 60, "tokens_per_minute": null},
        "spend_limit_cents": 1250.5,
        "spend_limit_period": "month",
    });
    let updated = update(&app, &t, id, changes.clone(), 200).await;
    for field in FIELDS {
        assert_eq!(updated[field], changes[field], "{field}: {updated}");
    }
    assert!(
        updated.get("value").is_none(),
        "never the secret: {updated}"
    );
    assert_eq!(
        (&updated["id"], &updated["last4"], &updated["status"]),
        (&created["id"], &created["last4"], &json!("active"))
    );
    assert_eq!(updated["spent_cents"], 0);
    let read = json_of(app.get(&key_path(&t, id), &t.admin_key).await, 200).await;
    assert_eq!(read, updated);
    assert!(
        read.to_string().contains(r#""spend_limit_cents":1250.5,"#),
        "{read}"
    );

    // Only what is sent changes.
    let one = update(&app, &t, id, json!({"description": "only this"}), 200).await;
    assert_eq!(one["description"], "only this");
    assert_eq!(one["name"], "renamed");
    assert_eq!(one["spend_limit_cents"], json!(1250.5));
    // Either half of the cap alone, while the other stays.
    let amount = update(&app, &t, id, json!({"spend_limit_cents": 3}), 200).await;
    assert_eq!(
        (&amount["spend_limit_cents"], &amount["spend_limit_period"]),
        (&json!(3), &json!("month"))
    );
    let period = update(&app, &t, id, json!({"spend_limit_period": "total"}), 200).await;
    assert_eq!(
        (&period["spend_limit_cents"], &period["spend_limit_period"]),
        (&json!(3), &json!("total"))
    );

    // null clears every nullable field; an empty body changes nothing.
    let cleared = update(
        &app,
        &t,
        id,
        json!({"description": null, "expires_at": null, "allowed_ips": null, "models": null,
               "rate_limits": null, "spend_limit_cents": null, "spend_limit_period": null}),
        200,
    )
    .await;
    for field in FIELDS.iter().skip(1) {
        let want = if *field == "allowed_ips" {
            json!([])
        } else {
            Value::Null
        };
        assert_eq!(cleared[*field], want, "{field}: {cleared}");
    }
    assert_eq!(update(&app, &t, id, json!({}), 200).await, cleared);
}

#[tokio::test]
async fn updates_are_validated_as_creations_are() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let id = t.project_key_id.clone();
    let past = app.clock_now() - 1;
    for (body, param) in [
        (json!({"nope": 1}), "nope"),
        (json!({"value": "sk_live_x"}), "value"),
        (json!({"name": null}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"description": "x".repeat(1025)}), "description"),
        (json!({"expires_at": past}), "expires_at"),
        (json!({"expires_at": "soon"}), "expires_at"),
        (json!({"allowed_ips": ["not-an-ip"]}), "allowed_ips"),
        (json!({"models": ["nope"]}), "models"),
        (
            json!({"rate_limits": {"requests_per_minute": 0}}),
            "rate_limits.requests_per_minute",
        ),
        (
            json!({"rate_limits": {"tokens_per_minute": -5}}),
            "rate_limits.tokens_per_minute",
        ),
        (json!({"rate_limits": {"rpm": 5}}), "rate_limits.rpm"),
        (json!({"rate_limits": 5}), "rate_limits"),
        (
            json!({"spend_limit_cents": 0.0000001, "spend_limit_period": "month"}),
            "spend_limit_cents",
        ),
        (
            json!({"spend_limit_cents": -1, "spend_limit_period": "month"}),
            "spend_limit_cents",
        ),
        (
            json!({"spend_limit_cents": "5", "spend_limit_period": "month"}),
            "spend_limit_cents",
        ),
        (json!({"spend_limit_cents": 5}), "spend_limit_period"),
        (json!({"spend_limit_period": "month"}), "spend_limit_cents"),
        (
            json!({"spend_limit_cents": 5, "spend_limit_period": "week"}),
            "spend_limit_period",
        ),
    ] {
        let err = error_of(app.post(&key_path(&t, &id), &t.admin_key, &body).await, 400).await;
        assert_eq!(err["param"], param, "{body}: {err}");
        assert_eq!(err["type"], "invalid_request_error");
    }
    // The same rules at creation.
    let keys = format!("/v1/organization/projects/{}/api_keys", t.project_id);
    for (body, param) in [
        (
            json!({"name": "x", "spend_limit_cents": 5}),
            "spend_limit_period",
        ),
        (
            json!({"name": "x", "spend_limit_cents": 1e-7, "spend_limit_period": "total"}),
            "spend_limit_cents",
        ),
        (
            json!({"name": "x", "rate_limits": {"requests_per_minute": 0}}),
            "rate_limits.requests_per_minute",
        ),
    ] {
        let err = error_of(app.post(&keys, &t.admin_key, &body).await, 400).await;
        assert_eq!(err["param"], param, "{body}: {err}");
    }
    // Nothing was changed by any of them.
    let read = json_of(app.get(&key_path(&t, &id), &t.admin_key).await, 200).await;
    assert_eq!(
        (&read["name"], &read["spend_limit_cents"]),
        (&json!("test"), &Value::Null)
    );
}

#[tokio::test]
async fn allow_lists_keep_their_plan_check_and_members_cannot_update() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let id = t.project_key_id.clone();
    let err = error_of(
        app.post(
            &key_path(&t, &id),
            &t.admin_key,
            &json!({"allowed_ips": ["203.0.113.0/24"]}),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(err["type"], "permission_error");
    assert_eq!(err["param"], "allowed_ips");
    assert!(err["message"].as_str().unwrap().contains("pro"), "{err}");
    // Clearing needs no feature.
    update(&app, &t, &id, json!({"allowed_ips": []}), 200).await;

    let (_, member) = app.member(&t, "reader@example.com", "member").await;
    let err = error_of(
        app.post(&key_path(&t, &id), &member, &json!({"name": "mine"}))
            .await,
        403,
    )
    .await;
    assert_eq!(err["type"], "permission_error");
    let (_, admin) = app.member(&t, "admin@example.com", "admin").await;
    let by_admin = json_of(
        app.post(&key_path(&t, &id), &admin, &json!({"name": "admins"}))
            .await,
        200,
    )
    .await;
    assert_eq!(by_admin["name"], "admins");
    // Another tenant's admin: not found.
    let other = app.tenant("pro").await;
    error_of(
        app.post(&key_path(&t, &id), &other.admin_key, &json!({"name": "x"}))
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_revoked_or_expired_key_is_final() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let path = key_path(&t, &t.project_key_id);
    json_of(app.delete(&path, &t.admin_key).await, 200).await;
    let err = error_of(
        app.post(&path, &t.admin_key, &json!({"expires_at": null}))
            .await,
        409,
    )
    .await;
    assert_eq!(err["type"], "invalid_request_error");
    assert!(
        err["message"].as_str().unwrap().contains("revoked"),
        "{err}"
    );

    let soon = app.clock_now() + 5;
    let (id, _) = app
        .key_in(&t, json!({"name": "short", "expires_at": soon}))
        .await;
    app.clock.advance(5);
    let path = key_path(&t, &id);
    // Moving its expiry would bring it back to life: refused.
    let later = app.clock_now() + 60;
    let err = error_of(
        app.post(&path, &t.admin_key, &json!({"expires_at": later}))
            .await,
        409,
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("expired"),
        "{err}"
    );
    let read = json_of(app.get(&path, &t.admin_key).await, 200).await;
    assert_eq!(read["status"], "expired");
}

#[tokio::test]
async fn a_change_holds_from_the_keys_next_request() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let id = t.project_key_id.clone();
    let chat = |model: &str| {
        app.with_key(Method::POST, "/v1/chat/completions", &t.project_key)
            .json(&TestApp::chat_body(model, "hi"))
            .send()
    };
    // Cached by a first request.
    assert_eq!(chat("fast").await.unwrap().status(), 200);

    update(&app, &t, &id, json!({"models": ["echo"]}), 200).await;
    let err = error_of(chat("fast").await.unwrap(), 403).await;
    assert_eq!(err["param"], "model");
    assert_eq!(chat("echo").await.unwrap().status(), 200);
    let list = json_of(app.get("/v1/models", &t.project_key).await, 200).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    update(
        &app,
        &t,
        &id,
        json!({"allowed_ips": ["203.0.113.0/24"]}),
        200,
    )
    .await;
    let err = error_of(chat("echo").await.unwrap(), 403).await;
    assert!(
        err["message"].as_str().unwrap().contains("127.0.0.1"),
        "{err}"
    );
    update(&app, &t, &id, json!({"allowed_ips": ["127.0.0.1"]}), 200).await;
    assert_eq!(chat("echo").await.unwrap().status(), 200);

    let soon = app.clock_now() + 10;
    update(&app, &t, &id, json!({"expires_at": soon}), 200).await;
    assert_eq!(chat("echo").await.unwrap().status(), 200);
    app.clock.advance(10);
    let err = error_of(chat("echo").await.unwrap(), 401).await;
    assert_eq!(err["message"], "API key expired");
}
