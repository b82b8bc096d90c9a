//! Every 401 of API.md, the kind rules, revocation at once, expiry.

use reqwest::Method;
use serde_json::json;
use tollgate_core::key::KeyKind;
use tollgate_core::tenant::{ApiKey, KeyOwner, KeySpec};
use tollgate_testkit::{TestApp, json_of};

async fn error_of(response: reqwest::Response, status: u16) -> (String, String) {
    let body = json_of(response, status).await;
    let error = &body["error"];
    // All four fields are always present.
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "missing {field} in {body}");
    }
    (
        error["message"].as_str().unwrap().to_owned(),
        error["type"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn missing_malformed_and_unknown_keys_get_their_messages() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let models = || app.request(Method::GET, "/v1/models");

    let (m, kind) = error_of(models().send().await.unwrap(), 401).await;
    assert_eq!(
        (m.as_str(), kind.as_str()),
        ("Missing API key", "authentication_error")
    );

    let (m, _) = error_of(
        models().bearer_auth("sk_live_nope").send().await.unwrap(),
        401,
    )
    .await;
    assert_eq!(m, "Malformed API key");

    // Bad checksum: last character changed.
    let mut typo = t.project_key.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'a' { 'b' } else { 'a' });
    let (m, _) = error_of(models().bearer_auth(&typo).send().await.unwrap(), 401).await;
    assert_eq!(m, "Malformed API key");

    let (m, _) = error_of(
        models()
            .header("authorization", format!("Basic {}", t.project_key))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert_eq!(m, "Malformed API key");

    // Well-formed but unknown: the exact body, nothing added.
    let unknown = app
        .state
        .prefixes
        .generate(tollgate_core::key::KeyKind::Project);
    for _ in 0..2 {
        let response = models()
            .bearer_auth(unknown.expose_secret())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":{"message":"Invalid API key","type":"authentication_error","param":null,"code":null}}"#
        );
    }
}

#[tokio::test]
async fn project_keys_work_as_bearer_or_x_api_key_but_not_both_different() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let other = app.tenant("pro").await;
    let ok = app
        .request(Method::GET, "/v1/models")
        .header("x-api-key", &t.project_key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let same = app
        .with_key(Method::GET, "/v1/models", &t.project_key)
        .header("x-api-key", &t.project_key)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    let conflict = app
        .with_key(Method::GET, "/v1/models", &t.project_key)
        .header("x-api-key", &other.project_key)
        .send()
        .await
        .unwrap();
    let (_, kind) = error_of(conflict, 400).await;
    assert_eq!(kind, "invalid_request_error");
}

#[tokio::test]
async fn each_key_kind_works_only_on_its_routes() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let (m, _) = error_of(app.get("/v1/models", &t.admin_key).await, 401).await;
    assert_eq!(m, "This route needs a project API key");
    let (m, _) = error_of(app.get("/v1/organization", &t.project_key).await, 401).await;
    assert_eq!(m, "This route needs an admin API key");
    let (m, _) = error_of(app.get("/operator/v1/tenants", &t.admin_key).await, 401).await;
    assert!(m.contains("operator"), "{m}");
}

#[tokio::test]
async fn a_key_acts_only_as_the_kind_its_record_says() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    // A project-prefixed value whose stored record is the owner's admin key (what swapped prefixes in the config
    // or a bad import would leave): it must not pass as a project key, and its admin record must not leak into
    // inference with an empty project.
    let (mut record, _) = ApiKey::issue(
        &app.state.prefixes,
        &t.id,
        KeyOwner::Member(t.owner_id.clone()),
        KeySpec {
            name: "mismatched".into(),
            ..KeySpec::default()
        },
        None,
        app.clock_now(),
    );
    let value = app.state.prefixes.generate(KeyKind::Project);
    record.digest = value.digest();
    app.state
        .store
        .insert_key(
            &record,
            None,
            &tollgate_testkit::operator_event(
                tollgate_core::audit::EventType::ApiKeyCreated,
                &record.tenant_id,
            ),
        )
        .await
        .unwrap();
    let (m, _) = error_of(app.get("/v1/models", value.expose_secret()).await, 401).await;
    assert_eq!(m, "This route needs a project API key");
    let chat = app
        .post(
            "/v1/chat/completions",
            value.expose_secret(),
            &TestApp::chat_body("echo", "hi"),
        )
        .await;
    let (m, _) = error_of(chat, 401).await;
    assert_eq!(m, "This route needs a project API key");

    // And the other way round: an admin-prefixed value whose record is a project key.
    let (mut record, _) = ApiKey::issue(
        &app.state.prefixes,
        &t.id,
        KeyOwner::Project(t.project_id.clone()),
        KeySpec {
            name: "mismatched too".into(),
            ..KeySpec::default()
        },
        None,
        app.clock_now(),
    );
    let value = app.state.prefixes.generate(KeyKind::Admin);
    record.digest = value.digest();
    app.state
        .store
        .insert_key(
            &record,
            None,
            &tollgate_testkit::operator_event(
                tollgate_core::audit::EventType::ApiKeyCreated,
                &record.tenant_id,
            ),
        )
        .await
        .unwrap();
    let (m, _) = error_of(
        app.get("/v1/organization", value.expose_secret()).await,
        401,
    )
    .await;
    assert_eq!(m, "This route needs an admin API key");
}

#[tokio::test]
async fn an_unreadable_forwarded_for_from_a_trusted_proxy_fails_allow_lists_closed() {
    let app = TestApp::builder()
        .configure(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .start()
        .await;
    let t = app.tenant("enterprise").await;
    let create = |name: &str, nets: &[&str]| {
        app.create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": name, "allowed_ips": nets}),
        )
    };
    // A key allowed from the proxy's own network: falling back to the proxy's address would let anyone in.
    let internal = create("internal", &["127.0.0.0/8"]).await["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let office = create("office", &["203.0.113.0/24"]).await["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let models = |key: &str, xff: Option<&[u8]>| {
        let request = app.with_key(Method::GET, "/v1/models", key);
        let request = match xff {
            Some(v) => request.header(
                "x-forwarded-for",
                reqwest::header::HeaderValue::from_bytes(v).unwrap(),
            ),
            None => request,
        };
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // The proxy's header is believed: the client is outside the internal network, inside the office one, also when
    // the proxy writes it IPv4-mapped.
    assert_eq!(models(&internal, Some(b"203.0.113.9")).await, 403);
    assert_eq!(models(&office, Some(b"203.0.113.9")).await, 200);
    assert_eq!(models(&office, Some(b"::ffff:203.0.113.9")).await, 200);
    // No header: the peer itself is the source.
    assert_eq!(models(&internal, None).await, 200);
    // Unreadable where it matters: the source is unknown, and no allow-list contains it.
    for garbage in [
        &b"203.0.113.9\xff\xfe"[..],
        "\u{fc}nicode".as_bytes(),
        b"garbage",
        b"203.0.113.9, not-an-address",
    ] {
        assert_eq!(models(&internal, Some(garbage)).await, 403, "{garbage:?}");
        assert_eq!(models(&office, Some(garbage)).await, 403, "{garbage:?}");
        // A key without allow-list does not care where the request came from.
        assert_eq!(
            models(&t.project_key, Some(garbage)).await,
            200,
            "{garbage:?}"
        );
    }
    let refused = app
        .with_key(Method::GET, "/v1/models", &internal)
        .header(
            "x-forwarded-for",
            reqwest::header::HeaderValue::from_bytes(b"\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let (m, kind) = error_of(refused, 403).await;
    assert_eq!(kind, "permission_error");
    assert!(m.contains("unknown"), "{m}");
}

#[tokio::test]
async fn a_revoked_key_fails_on_its_very_next_request() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let chat = || {
        app.with_key(Method::POST, "/v1/chat/completions", &t.project_key)
            .json(&TestApp::chat_body("echo", "hi"))
    };
    // Warm the key cache.
    assert_eq!(chat().send().await.unwrap().status(), 200);
    let path = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        t.project_id, t.project_key_id
    );
    let deleted = json_of(app.delete(&path, &t.admin_key).await, 200).await;
    assert_eq!(
        deleted,
        json!({"object": "organization.project.api_key.deleted", "id": t.project_key_id, "deleted": true})
    );
    let (m, _) = error_of(chat().send().await.unwrap(), 401).await;
    assert_eq!(m, "API key revoked");
}

#[tokio::test]
async fn an_expired_key_fails_with_its_own_message() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let now = app.clock_now();
    let key = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "short-lived", "expires_at": now + 60}),
        )
        .await;
    let value = key["value"].as_str().unwrap();
    assert_eq!(app.get("/v1/models", value).await.status(), 200);
    app.clock.advance(60);
    let (m, _) = error_of(app.get("/v1/models", value).await, 401).await;
    assert_eq!(m, "API key expired");
    let path = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        t.project_id,
        key["id"].as_str().unwrap()
    );
    let read = json_of(app.get(&path, &t.admin_key).await, 200).await;
    assert_eq!(read["status"], "expired");
}

#[tokio::test]
async fn the_operator_api_needs_the_token_and_is_off_without_one() {
    let app = TestApp::start().await;
    let (m, _) = error_of(
        app.get("/operator/v1/tenants", "wrong-token-value").await,
        401,
    )
    .await;
    assert!(m.contains("operator"));
    let off = TestApp::builder()
        .configure(|c| c.operator_token = None)
        .start()
        .await;
    let response = off
        .operator(Method::GET, "/operator/v1/tenants")
        .send()
        .await
        .unwrap();
    let body = json_of(response, 404).await;
    assert_eq!(
        body["error"]["message"],
        "The operator API is disabled: set operator_token"
    );
}
