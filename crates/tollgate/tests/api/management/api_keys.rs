//! `/v1/organization/projects/{project_id}/api_keys[/{key_id}]`.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_testkit::{TestApp, json_of};

fn keys_path(project: &str) -> String {
    format!("/v1/organization/projects/{project}/api_keys")
}

#[tokio::test]
async fn a_created_key_shows_its_value_once() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let key = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "ci", "description": "CI runner"}),
        )
        .await;
    let value = key["value"].as_str().unwrap();
    assert!(value.starts_with("sk_live_") && value.len() == 8 + 32 + 6);
    assert_eq!(key["object"], "organization.project.api_key");
    assert_eq!(key["project_id"], t.project_id.as_str());
    assert_eq!(key["prefix"], &value[..12]);
    assert_eq!(key["last4"], &value[value.len() - 4..]);
    assert_eq!(
        key["redacted_value"],
        format!("{}…{}", &value[..12], &value[value.len() - 4..])
    );
    assert_eq!(key["status"], "active");
    assert_eq!(key["description"], "CI runner");
    assert_eq!(key["created_by"], t.owner_id.as_str());
    for null_field in [
        "last_used_at",
        "expires_at",
        "revoked_at",
        "rolled_from",
        "models",
    ] {
        assert!(key[null_field].is_null(), "{null_field}: {key}");
    }
    assert_eq!(key["allowed_ips"], json!([]));

    // Never again: not in get, not in list.
    let path = format!(
        "{}/{}",
        keys_path(&t.project_id),
        key["id"].as_str().unwrap()
    );
    let got = app
        .with_key(Method::GET, &path, &t.admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!got.contains(value) && !got.contains("\"value\""), "{got}");
    let list = app
        .with_key(Method::GET, &keys_path(&t.project_id), &t.admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains(value) && !list.contains("\"value\""),
        "{list}"
    );
    // And it works.
    assert_eq!(app.get("/v1/models", value).await.status(), 200);
}

#[tokio::test]
async fn keys_are_listed_oldest_first_with_cursor_pages_revoked_included() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    for name in ["b", "c"] {
        app.create_project_key(&t.admin_key, &t.project_id, json!({"name": name}))
            .await;
    }
    let path = keys_path(&t.project_id);
    let page1 = json_of(app.get(&format!("{path}?limit=2"), &t.admin_key).await, 200).await;
    assert_eq!(page1["object"], "list");
    assert_eq!(page1["has_more"], true);
    let names: Vec<&str> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test", "b"]);
    assert_eq!(page1["first_id"], page1["data"][0]["id"]);
    let after = page1["last_id"].as_str().unwrap();
    let page2 = json_of(
        app.get(&format!("{path}?limit=2&after={after}"), &t.admin_key)
            .await,
        200,
    )
    .await;
    assert_eq!(page2["has_more"], false);
    assert_eq!(page2["data"][0]["name"], "c");

    // Revoke the first; it stays listed, as revoked.
    let delete = format!("{path}/{}", t.project_key_id);
    json_of(app.delete(&delete, &t.admin_key).await, 200).await;
    let all = json_of(app.get(&path, &t.admin_key).await, 200).await;
    let first = &all["data"][0];
    assert_eq!(first["status"], "revoked");
    assert!(first["revoked_at"].is_i64());
    assert_eq!(all["data"].as_array().unwrap().len(), 3);

    for bad in ["0", "101", "x"] {
        let r = app
            .with_key(Method::GET, &format!("{path}?limit={bad}"), &t.admin_key)
            .send()
            .await
            .unwrap();
        let body = json_of(r, 400).await;
        assert_eq!(body["error"]["param"], "limit");
    }
    let empty = json_of(
        app.with_key(
            Method::GET,
            &format!("{path}?after={}", page2["last_id"].as_str().unwrap()),
            &t.admin_key,
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(empty["data"], json!([]));
    assert!(empty["first_id"].is_null() && empty["last_id"].is_null());
}

#[tokio::test]
async fn another_tenants_projects_and_keys_are_404() {
    let app = TestApp::start().await;
    let a = app.tenant("pro").await;
    let b = app.tenant("pro").await;
    let foreign_key = format!("{}/{}", keys_path(&b.project_id), b.project_key_id);
    let mine_with_foreign_key = format!("{}/{}", keys_path(&a.project_id), b.project_key_id);
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, keys_path(&b.project_id), None),
        (
            Method::POST,
            keys_path(&b.project_id),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, foreign_key.clone(), None),
        (Method::DELETE, foreign_key, None),
        (Method::GET, mine_with_foreign_key.clone(), None),
        (Method::DELETE, mine_with_foreign_key, None),
    ];
    for (method, path, body) in cases {
        let mut req = app.with_key(method.clone(), &path, &a.admin_key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let text = req.send().await.unwrap();
        let body = json_of(text, 404).await;
        assert_eq!(
            body["error"]["type"], "invalid_request_error",
            "{method} {path}"
        );
    }
    // B's key still works: nothing was revoked.
    assert_eq!(app.get("/v1/models", &b.project_key).await.status(), 200);
}

#[tokio::test]
async fn key_fields_are_validated() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let path = keys_path(&t.project_id);
    let post = |body: Value| {
        app.with_key(Method::POST, &path, &t.admin_key)
            .json(&body)
            .send()
    };
    for (body, param) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": 5}), "name"),
        (
            json!({"name": "x", "allowed_ips": ["not-an-ip"]}),
            "allowed_ips",
        ),
        (json!({"name": "x", "expires_at": 1}), "expires_at"),
        (json!({"name": "x", "models": ["nope"]}), "models"),
    ] {
        let r = json_of(post(body.clone()).await.unwrap(), 400).await;
        assert_eq!(r["error"]["param"], param, "{body}: {r}");
    }
    // Enterprise has IP allow-lists; pro does not.
    let key = json_of(
        post(json!({"name": "office", "allowed_ips": ["203.0.113.0/24", "2001:db8::1"]}))
            .await
            .unwrap(),
        201,
    )
    .await;
    assert_eq!(
        key["allowed_ips"],
        json!(["203.0.113.0/24", "2001:db8::1/128"])
    );
    let pro = app.tenant("pro").await;
    let refused = app
        .with_key(Method::POST, &keys_path(&pro.project_id), &pro.admin_key)
        .json(&json!({"name": "office", "allowed_ips": ["203.0.113.0/24"]}))
        .send()
        .await
        .unwrap();
    let body = json_of(refused, 403).await;
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("pro"));
}

#[tokio::test]
async fn allowed_ips_refuse_other_sources() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let outside = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "office", "allowed_ips": ["203.0.113.0/24"]}),
        )
        .await;
    let inside = app
        .create_project_key(
            &t.admin_key,
            &t.project_id,
            json!({"name": "local", "allowed_ips": ["127.0.0.1/32"]}),
        )
        .await;
    let r = app
        .with_key(
            Method::GET,
            "/v1/models",
            outside["value"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
    let body = json_of(r, 403).await;
    assert_eq!(body["error"]["type"], "permission_error");
    // X-Forwarded-For is not believed from an untrusted peer.
    let spoofed = app
        .with_key(
            Method::GET,
            "/v1/models",
            outside["value"].as_str().unwrap(),
        )
        .header("x-forwarded-for", "203.0.113.5")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 403);
    let ok = app
        .with_key(Method::GET, "/v1/models", inside["value"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn allowed_ips_match_ipv6_sources_and_only_a_trusted_proxys_forwarded_for() {
    // The server on the IPv6 loopback, so the socket peer is ::1; the loopback is its one trusted proxy.
    let app = TestApp::builder()
        .listen_on("::1".parse().unwrap())
        .configure(|c| c.trusted_proxies = vec!["::1/128".parse().unwrap()])
        .start()
        .await;
    let untrusted = TestApp::builder()
        .listen_on("::1".parse().unwrap())
        .start()
        .await;
    for (app, trusted) in [(&app, true), (&untrusted, false)] {
        let t = app.tenant("enterprise").await;
        let t = &t;
        let key = |nets: Value| async move {
            app.key_in(t, json!({"name": "v6", "allowed_ips": nets}))
                .await
                .1
        };
        let loopback = key(json!(["::1"])).await;
        let doc_net = key(json!(["2001:db8::/32"])).await;
        let v4_only = key(json!(["127.0.0.1/32"])).await;
        let status = |key: &str, xff: Option<&str>| {
            let mut request = app.with_key(Method::GET, "/v1/models", key);
            if let Some(xff) = xff {
                request = request.header("x-forwarded-for", xff);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        // The peer itself: ::1 is in ::1/128, not in 2001:db8::/32, and no IPv4 network holds it.
        assert_eq!(status(&loopback, None).await, 200);
        assert_eq!(status(&doc_net, None).await, 403);
        assert_eq!(status(&v4_only, None).await, 403);
        let refused = app.get("/v1/models", &doc_net).await;
        let body = json_of(refused, 403).await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains("::1"),
            "{body}"
        );
        // A forwarded client: believed only from the trusted proxy; the rightmost untrusted hop counts.
        let forwarded = Some("198.51.100.7, 2001:db8::5");
        assert_eq!(
            status(&doc_net, forwarded).await,
            if trusted { 200 } else { 403 },
            "trusted {trusted}"
        );
        assert_eq!(
            status(&loopback, forwarded).await,
            if trusted { 403 } else { 200 },
            "trusted {trusted}"
        );
        // A trusted proxy's own hop is skipped, not taken for the client.
        if trusted {
            assert_eq!(status(&doc_net, Some("2001:db8::5, ::1")).await, 200);
        }
    }
}
