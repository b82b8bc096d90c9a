//! Plan tiers: the active-key limit, IP allow-lists, and an operator's plan change taking effect at once.

use serde_json::json;
use tollgate_core::plan::Plan;
use tollgate_testkit::{TestApp, error_of, json_of};

fn plan(max_keys: Option<u32>, ip_allowlist: bool) -> Plan {
    Plan {
        max_keys,
        requests_per_minute: 1_000,
        tokens_per_minute: 1_000_000,
        ip_allowlist,
    }
}

async fn app() -> TestApp {
    TestApp::builder()
        .configure(|c| {
            c.plans.insert("tiny".into(), plan(Some(2), false));
            c.plans.insert("big".into(), plan(None, true));
        })
        .start()
        .await
}

#[tokio::test]
async fn the_key_limit_is_a_403_naming_the_plan_and_nothing_is_created() {
    let app = app().await;
    let t = app.tenant("tiny").await; // one key already
    let keys = format!("/v1/organization/projects/{}/api_keys", t.project_id);
    let second = json_of(
        app.post(&keys, &t.admin_key, &json!({"name": "two"})).await,
        201,
    )
    .await;
    let err = error_of(
        app.post(&keys, &t.admin_key, &json!({"name": "three"}))
            .await,
        403,
    )
    .await;
    assert_eq!(err["type"], "permission_error");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("tiny") && message.contains('2'),
        "{message}"
    );
    let list = json_of(app.get(&keys, &t.admin_key).await, 200).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    // Keys in other projects count too.
    let sandbox = app.create_project(&t.admin_key, "S").await;
    let other = format!(
        "/v1/organization/projects/{}/api_keys",
        sandbox["id"].as_str().unwrap()
    );
    error_of(
        app.post(&other, &t.admin_key, &json!({"name": "x"})).await,
        403,
    )
    .await;
    // A revoked key frees its slot.
    let path = format!("{keys}/{}", second["id"].as_str().unwrap());
    json_of(app.delete(&path, &t.admin_key).await, 200).await;
    assert_eq!(
        app.post(&other, &t.admin_key, &json!({"name": "x"}))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn a_plan_change_takes_effect_on_the_next_request() {
    let app = app().await;
    let t = app.tenant("tiny").await;
    let keys = format!("/v1/organization/projects/{}/api_keys", t.project_id);
    let with_ips = json!({"name": "office", "allowed_ips": ["203.0.113.0/24"]});
    error_of(app.post(&keys, &t.admin_key, &with_ips).await, 403).await;
    app.post(&keys, &t.admin_key, &json!({"name": "two"})).await;
    error_of(
        app.post(&keys, &t.admin_key, &json!({"name": "three"}))
            .await,
        403,
    )
    .await;

    let tenant = format!("/operator/v1/tenants/{}", t.id);
    let changed = json_of(
        app.operator_post(&tenant, &json!({"plan": "big"})).await,
        200,
    )
    .await;
    assert_eq!(changed["plan"], "big");
    assert_eq!(
        app.post(&keys, &t.admin_key, &json!({"name": "three"}))
            .await
            .status(),
        201
    );
    assert_eq!(app.post(&keys, &t.admin_key, &with_ips).await.status(), 201);
    assert_eq!(
        json_of(app.get("/v1/organization", &t.admin_key).await, 200).await["plan"],
        "big"
    );
}
