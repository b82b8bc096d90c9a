//! Every management and operator change writes its audit event: driven through the real routes, read back from the
//! store. Each event names who acted (the member an admin key acts as, or the operator), what changed, and the
//! request it came in (its `X-Request-Id`, the socket peer, the `User-Agent`); a refused change or one that changes
//! nothing writes none; no event holds a secret.

use reqwest::{Method, Response};
use serde_json::{Value, json};
use tollgate_core::audit::{ActorType, AuditEvent, EventType};
use tollgate_testkit::{TestApp, TestTenant, error_of, json_of};

/// The user agent every request here sends.
const AGENT: &str = "audit-events-test/1.0";

/// A tenant's events, oldest first.
async fn events(app: &TestApp, tenant_id: &str) -> Vec<AuditEvent> {
    app.audit_events(tenant_id, None).await
}

/// The events a tenant's log gained since it held `before` events.
async fn new_events(app: &TestApp, tenant_id: &str, before: usize) -> Vec<AuditEvent> {
    events(app, tenant_id).await.split_off(before)
}

/// Sends `method path` with `key`, our user agent and, if given, a JSON body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app.with_key(method, path, key).header("user-agent", AGENT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// The response's `x-request-id` and its JSON body, after checking its status.
async fn answered(response: Response, status: u16) -> (String, Value) {
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (request_id, json_of(response, status).await)
}

/// Checks that `event` came from the request `request_id`, sent by this test over the loopback.
#[track_caller]
fn from_request(event: &AuditEvent, request_id: &str) {
    assert_eq!(event.origin.request_id.as_deref(), Some(request_id));
    assert_eq!(event.origin.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(event.origin.user_agent.as_deref(), Some(AGENT));
}

/// Checks that `event` is `kind` by the member `member_id`, about `target`.
#[track_caller]
fn by_member(event: &AuditEvent, kind: EventType, member_id: &str, target: &str) {
    assert_eq!(event.kind, kind);
    assert_eq!(event.actor.kind, ActorType::Member);
    assert_eq!(event.actor.id.as_deref(), Some(member_id));
    assert_eq!(event.target_id.as_deref(), Some(target));
}

fn details(event: &AuditEvent) -> Value {
    serde_json::from_str(event.details.as_deref().unwrap()).unwrap()
}

/// Creates a key at `path` (a key collection) as `t`'s owner, then revokes it twice (the second time is harmless,
/// and changes nothing to record); returns the key and the request ids of its creation and first revocation.
async fn create_and_revoke_twice(
    app: &TestApp,
    t: &TestTenant,
    path: &str,
) -> (Value, String, String) {
    let body = Some(json!({"name": "ci"}));
    let (created_in, key) =
        answered(send(app, Method::POST, path, &t.admin_key, body).await, 201).await;
    let one = format!("{path}/{}", key["id"].as_str().unwrap());
    let (revoked_in, _) = answered(
        send(app, Method::DELETE, &one, &t.admin_key, None).await,
        200,
    )
    .await;
    answered(
        send(app, Method::DELETE, &one, &t.admin_key, None).await,
        200,
    )
    .await;
    (key, created_in, revoked_in)
}

#[tokio::test]
async fn project_keys_created_and_revoked_are_events_of_the_member_with_the_key_named() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let before = events(&app, &t.id).await.len();
    let path = format!("/v1/organization/projects/{}/api_keys", t.project_id);
    let (key, created_in, revoked_in) = create_and_revoke_twice(&app, &t, &path).await;
    let key_id = key["id"].as_str().unwrap();

    let got = new_events(&app, &t.id, before).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for (event, kind, request_id) in [
        (&got[0], EventType::ApiKeyCreated, &created_in),
        (&got[1], EventType::ApiKeyRevoked, &revoked_in),
    ] {
        by_member(event, kind, &t.owner_id, key_id);
        assert_eq!(event.key_id.as_deref(), Some(key_id));
        assert_eq!(event.key_last4.as_deref(), key["last4"].as_str());
        assert_eq!(event.project_id.as_deref(), Some(t.project_id.as_str()));
        assert_eq!(event.cost, None);
        from_request(event, request_id);
    }
    assert_eq!(got[1].effective_at, app.clock_now());
}

#[tokio::test]
async fn admin_keys_created_and_revoked_name_the_key_as_their_target_only() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let before = events(&app, &t.id).await.len();
    let path = "/v1/organization/admin_api_keys";
    let (key, created_in, revoked_in) = create_and_revoke_twice(&app, &t, path).await;
    let key_id = key["id"].as_str().unwrap();

    let got = new_events(&app, &t.id, before).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for (event, kind, request_id) in [
        (&got[0], EventType::AdminApiKeyCreated, &created_in),
        (&got[1], EventType::AdminApiKeyRevoked, &revoked_in),
    ] {
        by_member(event, kind, &t.owner_id, key_id);
        assert_eq!(
            (event.key_id.as_deref(), event.key_last4.as_deref()),
            (None, None)
        );
        assert_eq!(event.project_id, None);
        assert_eq!(details(event), json!({"member_id": t.owner_id}));
        from_request(event, request_id);
    }
}

#[tokio::test]
async fn projects_created_renamed_and_archived_are_events_once_each() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let before = events(&app, &t.id).await.len();
    let (created_in, project) = answered(
        send(
            &app,
            Method::POST,
            "/v1/organization/projects",
            &t.admin_key,
            Some(json!({"name": "Sandbox"})),
        )
        .await,
        201,
    )
    .await;
    let id = project["id"].as_str().unwrap();
    let path = format!("/v1/organization/projects/{id}");
    let rename = Some(json!({"name": "Test"}));
    let (renamed_in, _) = answered(
        send(&app, Method::POST, &path, &t.admin_key, rename.clone()).await,
        200,
    )
    .await;
    // The same name again, and a second archive, change nothing.
    answered(
        send(&app, Method::POST, &path, &t.admin_key, rename).await,
        200,
    )
    .await;
    let archive = format!("{path}/archive");
    let (archived_in, _) = answered(
        send(&app, Method::POST, &archive, &t.admin_key, None).await,
        200,
    )
    .await;
    answered(
        send(&app, Method::POST, &archive, &t.admin_key, None).await,
        200,
    )
    .await;

    let got = new_events(&app, &t.id, before).await;
    let kinds: Vec<_> = got.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::ProjectCreated,
            EventType::ProjectUpdated,
            EventType::ProjectArchived
        ]
    );
    for (event, request_id) in got.iter().zip([&created_in, &renamed_in, &archived_in]) {
        by_member(event, event.kind, &t.owner_id, id);
        assert_eq!(event.project_id.as_deref(), Some(id));
        assert_eq!(event.key_id, None);
        from_request(event, request_id);
    }
    assert_eq!(details(&got[0]), json!({"name": "Sandbox"}));
    assert_eq!(details(&got[1]), json!({"name": "Test"}));
}

#[tokio::test]
async fn members_added_changed_and_removed_are_events_and_refusals_are_not() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let before = events(&app, &t.id).await.len();
    let members = "/v1/organization/members";
    let (added_in, member) = answered(
        send(
            &app,
            Method::POST,
            members,
            &t.admin_key,
            Some(json!({"email": "ada@example.com", "role": "admin", "password": "correct horse battery"})),
        )
        .await,
        201,
    )
    .await;
    let id = member["id"].as_str().unwrap();
    // Refused: the same email again, and demoting the last owner.
    error_of(
        send(
            &app,
            Method::POST,
            members,
            &t.admin_key,
            Some(json!({"email": "ada@example.com", "role": "member"})),
        )
        .await,
        409,
    )
    .await;
    let owner_path = format!("{members}/{}", t.owner_id);
    error_of(
        send(
            &app,
            Method::POST,
            &owner_path,
            &t.admin_key,
            Some(json!({"role": "admin"})),
        )
        .await,
        409,
    )
    .await;
    let path = format!("{members}/{id}");
    let demote = Some(json!({"role": "member"}));
    let (changed_in, _) = answered(
        send(&app, Method::POST, &path, &t.admin_key, demote.clone()).await,
        200,
    )
    .await;
    answered(
        send(&app, Method::POST, &path, &t.admin_key, demote).await,
        200,
    )
    .await;
    // The member's admin key is revoked with it.
    let key = json_of(
        app.post(
            "/v1/organization/admin_api_keys",
            &t.admin_key,
            &json!({"name": "theirs", "member_id": id}),
        )
        .await,
        201,
    )
    .await;
    let (removed_in, _) = answered(
        send(&app, Method::DELETE, &path, &t.admin_key, None).await,
        200,
    )
    .await;

    let got = new_events(&app, &t.id, before).await;
    let kinds: Vec<_> = got.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::MemberAdded,
            EventType::MemberRoleChanged,
            EventType::AdminApiKeyCreated,
            EventType::MemberRemoved,
            EventType::AdminApiKeyRevoked
        ]
    );
    by_member(&got[0], EventType::MemberAdded, &t.owner_id, id);
    assert_eq!(details(&got[0]), json!({"role": "admin"}));
    from_request(&got[0], &added_in);
    by_member(&got[1], EventType::MemberRoleChanged, &t.owner_id, id);
    assert_eq!(details(&got[1]), json!({"from": "admin", "to": "member"}));
    from_request(&got[1], &changed_in);
    by_member(&got[3], EventType::MemberRemoved, &t.owner_id, id);
    from_request(&got[3], &removed_in);
    let key_id = key["id"].as_str().unwrap();
    by_member(&got[4], EventType::AdminApiKeyRevoked, &t.owner_id, key_id);
    from_request(&got[4], &removed_in);
}

#[tokio::test]
async fn the_operator_creates_and_changes_tenants_and_each_change_is_its_own_event() {
    let app = TestApp::start().await;
    let (created_in, created) = answered(
        send(
            &app,
            Method::POST,
            "/operator/v1/tenants",
            tollgate_testkit::OPERATOR_TOKEN,
            Some(json!({"name": "Acme", "plan": "pro", "owner_email": "o@acme.io"})),
        )
        .await,
        201,
    )
    .await;
    let tenant = created["tenant"]["id"].as_str().unwrap();
    let got = events(&app, tenant).await;
    let kinds: Vec<_> = got.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::ProjectCreated,
            EventType::MemberAdded,
            EventType::AdminApiKeyCreated
        ],
        "the tenant's creation (API.md has no event for the tenant itself)"
    );
    let targets: Vec<_> = got.iter().map(|e| e.target_id.as_deref()).collect();
    assert_eq!(
        targets,
        [
            created["project"]["id"].as_str(),
            created["owner"]["id"].as_str(),
            created["admin_key"]["id"].as_str()
        ]
    );
    assert_eq!(details(&got[1]), json!({"role": "owner"}));
    for event in &got {
        assert_eq!(
            (event.actor.kind, event.actor.id.as_deref()),
            (ActorType::Operator, None)
        );
        from_request(event, &created_in);
    }

    let path = format!("/operator/v1/tenants/{tenant}");
    let both = Some(json!({"plan": "enterprise", "status": "suspended"}));
    let op = tollgate_testkit::OPERATOR_TOKEN;
    let (updated_in, _) =
        answered(send(&app, Method::POST, &path, op, both.clone()).await, 200).await;
    answered(send(&app, Method::POST, &path, op, both).await, 200).await;
    let (reactivated_in, _) = answered(
        send(
            &app,
            Method::POST,
            &path,
            op,
            Some(json!({"status": "active"})),
        )
        .await,
        200,
    )
    .await;
    error_of(
        send(
            &app,
            Method::POST,
            "/operator/v1/tenants/org_missing",
            op,
            Some(json!({"status": "active"})),
        )
        .await,
        404,
    )
    .await;

    let got = new_events(&app, tenant, 3).await;
    let kinds: Vec<_> = got.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::TenantPlanChanged,
            EventType::TenantSuspended,
            EventType::TenantReactivated
        ],
        "one event per field that changed; a repeat changes nothing"
    );
    assert_eq!(details(&got[0]), json!({"from": "pro", "to": "enterprise"}));
    for (event, request_id) in got.iter().zip([&updated_in, &updated_in, &reactivated_in]) {
        assert_eq!(event.actor.kind, ActorType::Operator);
        assert_eq!(event.target_id.as_deref(), Some(tenant));
        from_request(event, request_id);
    }
}

#[tokio::test]
async fn a_grant_is_an_event_naming_its_ledger_entry_and_amount() {
    let app = TestApp::start().await;
    let t = app.funded_tenant("pro", 0).await;
    let before = events(&app, &t.id).await.len();
    let (granted_in, credits) = answered(
        send(
            &app,
            Method::POST,
            &format!("/operator/v1/tenants/{}/credits", t.id),
            tollgate_testkit::OPERATOR_TOKEN,
            Some(json!({"amount_cents": 250, "reason": "welcome"})),
        )
        .await,
        200,
    )
    .await;
    error_of(
        send(
            &app,
            Method::POST,
            &format!("/operator/v1/tenants/{}/credits", t.id),
            tollgate_testkit::OPERATOR_TOKEN,
            Some(json!({"amount_cents": 0})),
        )
        .await,
        400,
    )
    .await;
    let got = new_events(&app, &t.id, before).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let event = &got[0];
    assert_eq!(event.kind, EventType::CreditsGranted);
    assert_eq!(event.actor.kind, ActorType::Operator);
    assert_eq!(
        event.target_id.as_deref(),
        credits["ledger"]["data"][0]["id"].as_str()
    );
    assert_eq!(
        details(event),
        json!({"amount_cents": 250, "reason": "welcome"})
    );
    assert_eq!(event.cost, None, "cost is what a request was charged");
    from_request(event, &granted_in);
}

#[tokio::test]
async fn no_event_holds_a_key_value_a_password_or_its_hash() {
    let app = TestApp::start().await;
    let password = "a very secret passphrase";
    let created = json_of(
        app.operator_post(
            "/operator/v1/tenants",
            &json!({"name": "Acme", "plan": "pro", "owner_email": "o@acme.io", "owner_password": password}),
        )
        .await,
        201,
    )
    .await;
    let t = TestTenant {
        id: created["tenant"]["id"].as_str().unwrap().into(),
        project_id: created["project"]["id"].as_str().unwrap().into(),
        owner_id: created["owner"]["id"].as_str().unwrap().into(),
        admin_key: created["admin_key"]["value"].as_str().unwrap().into(),
        project_key: String::new(),
        project_key_id: String::new(),
    };
    let project_key = app
        .create_project_key(&t.admin_key, &t.project_id, json!({"name": "ci"}))
        .await;
    let (member_id, member_key) = app.member(&t, "ada@example.com", "admin").await;
    let member = app
        .state
        .store
        .get_member(&t.id, &member_id)
        .await
        .unwrap()
        .unwrap();
    app.delete(
        &format!("/v1/organization/members/{member_id}"),
        &t.admin_key,
    )
    .await;
    let owner = app
        .state
        .store
        .get_member(&t.id, &t.owner_id)
        .await
        .unwrap()
        .unwrap();
    let hash = owner.password_hash.unwrap();

    let got = events(&app, &t.id).await;
    assert!(got.len() >= 7, "{got:?}");
    let secrets = [
        t.admin_key.as_str(),
        project_key["value"].as_str().unwrap(),
        member_key.as_str(),
        password,
        hash.as_str(),
    ];
    for event in &got {
        // Every column, as text.
        let row = format!("{event:?}");
        for secret in secrets {
            assert!(!row.contains(secret), "{row} holds a secret");
        }
    }
    assert_eq!(member.password_hash, None);
}

#[tokio::test]
async fn key_updates_and_rolls_are_events_naming_what_changed_and_the_successor() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let key = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        t.project_id, t.project_key_id
    );
    let before = events(&app, &t.id).await.len();
    let change = json!({"name": "test", "models": ["echo"], "spend_limit_cents": 5, "spend_limit_period": "month"});
    let (updated_in, _) = answered(
        send(&app, Method::POST, &key, &t.admin_key, Some(change.clone())).await,
        200,
    )
    .await;
    // The same again changes nothing; a refused update (the plan lacks allow-lists) changes nothing either.
    answered(
        send(&app, Method::POST, &key, &t.admin_key, Some(change)).await,
        200,
    )
    .await;
    let refused = json!({"allowed_ips": ["203.0.113.0/24"]});
    error_of(
        send(&app, Method::POST, &key, &t.admin_key, Some(refused)).await,
        403,
    )
    .await;
    let roll = format!("{key}/roll");
    let body = Some(json!({"grace_period_seconds": 0}));
    let (rolled_in, successor) = answered(
        send(&app, Method::POST, &roll, &t.admin_key, body).await,
        201,
    )
    .await;
    // Rolling it again: refused (it expired with the roll), no event.
    error_of(
        send(&app, Method::POST, &roll, &t.admin_key, Some(json!({}))).await,
        409,
    )
    .await;

    let got = new_events(&app, &t.id, before).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let last4 = &t.project_key[t.project_key.len() - 4..];
    by_member(
        &got[0],
        EventType::ApiKeyUpdated,
        &t.owner_id,
        &t.project_key_id,
    );
    assert_eq!(
        details(&got[0]),
        json!({"changed": ["models", "spend_limit_cents", "spend_limit_period"]})
    );
    from_request(&got[0], &updated_in);
    let successor_id = successor["id"].as_str().unwrap();
    by_member(&got[1], EventType::ApiKeyRolled, &t.owner_id, successor_id);
    assert_eq!(details(&got[1]), json!({"grace_period_seconds": 0}));
    from_request(&got[1], &rolled_in);
    for event in &got {
        assert_eq!(event.key_id.as_deref(), Some(t.project_key_id.as_str()));
        assert_eq!(event.key_last4.as_deref(), Some(last4));
        assert_eq!(event.project_id.as_deref(), Some(t.project_id.as_str()));
        let text = format!("{event:?}");
        let value = successor["value"].as_str().unwrap();
        assert!(
            !text.contains(value) && !text.contains(&t.project_key),
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_expired_keys_first_refused_request_is_an_event_and_the_only_one() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let expires_at = app.clock_now() + 60;
    let (id, value) = app
        .key_in(&t, json!({"name": "short", "expires_at": expires_at}))
        .await;
    let (id, value) = (id.as_str(), value.as_str());
    // Cached while it works, so the refusals below start from a cached principal.
    assert_eq!(app.get("/v1/models", value).await.status(), 200);
    app.clock.advance(60);
    let before = events(&app, &t.id).await.len();
    let mut refused_in = Vec::new();
    for _ in 0..3 {
        let (request_id, body) = answered(
            send(
                &app,
                Method::POST,
                "/v1/chat/completions",
                value,
                Some(TestApp::chat_body("echo", "hi")),
            )
            .await,
            401,
        )
        .await;
        assert_eq!(body["error"]["message"], "API key expired");
        refused_in.push(request_id);
    }
    // Every refusal's `request.completed` is written with the recorder's next batch: an answered request's.
    let sync = app
        .post(
            "/v1/chat/completions",
            &t.project_key,
            &TestApp::chat_body("echo", "sync"),
        )
        .await;
    json_of(sync, 200).await;
    let got = new_events(&app, &t.id, before).await;
    let expired: Vec<&AuditEvent> = got
        .iter()
        .filter(|e| e.kind == EventType::ApiKeyExpired)
        .collect();
    assert_eq!(expired.len(), 1, "{got:?}");
    let e = expired[0];
    assert_eq!(e.actor.kind, ActorType::ProjectKey);
    assert_eq!(e.actor.id.as_deref(), Some(id));
    assert_eq!(e.target_id.as_deref(), Some(id));
    assert_eq!(e.key_id.as_deref(), Some(id));
    assert_eq!(e.project_id.as_deref(), Some(t.project_id.as_str()));
    assert_eq!(e.effective_at, app.clock_now());
    assert_eq!(details(e), json!({"expires_at": app.clock_now()}));
    from_request(e, &refused_in[0]);
    // It comes before the request that found it, and each refusal is a request event of its own.
    let refusals: Vec<usize> = (0..got.len())
        .filter(|i| got[*i].kind == EventType::RequestCompleted && got[*i].status == Some(401))
        .collect();
    assert_eq!(refusals.len(), 3, "{got:?}");
    let at = got.iter().position(|e| e.kind == EventType::ApiKeyExpired);
    assert!(at < refusals.first().copied(), "{got:?}");
    for i in refusals {
        assert_eq!(got[i].key_id.as_deref(), Some(id));
    }
}
