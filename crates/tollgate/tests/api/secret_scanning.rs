//! `POST /secret_scanning/v1/github`, as GitHub's secret scanning partner program calls it: a report signed with a
//! real P-256 key made here revokes the keys of ours it names, with an `api_key.leaked` event, on every node; an
//! unsigned, badly signed or altered report changes nothing. Also `accepted_key_prefixes`: keys issued under an
//! earlier `key_prefix` keep working across a restart that changes it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tollgate_core::key::KeyKind;
use tollgate_server::config::{PublicKeyConfig, SecretScanningConfig};
use tollgate_testkit::{TestApp, TestAppBuilder, TestTenant, error_of, json_of};

const PATH: &str = "/secret_scanning/v1/github";
/// The identifier the test's key is configured under, shaped like GitHub's (hex).
const KEY_ID: &str = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";
const TOKEN_TYPE: &str = "tollgate_api_key";

/// GitHub's side: a fresh P-256 key pair.
struct Github {
    signing: SigningKey,
}

impl Github {
    fn new() -> Self {
        Self {
            signing: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    fn public_pem(&self) -> String {
        self.signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    /// The `GITHUB-PUBLIC-KEY-SIGNATURE` of `body`: base64 of the DER signature.
    fn sign(&self, body: &[u8]) -> String {
        let signature: Signature = self.signing.sign(body);
        STANDARD.encode(signature.to_der().as_bytes())
    }

    /// Configures an app to take this key's reports under [`KEY_ID`].
    fn trusted_by(&self, builder: TestAppBuilder) -> TestAppBuilder {
        let pem = self.public_pem();
        builder.configure(move |c| {
            c.secret_scanning = Some(SecretScanningConfig {
                public_keys: vec![PublicKeyConfig {
                    id: KEY_ID.to_owned(),
                    pem,
                }],
            });
        })
    }

    async fn app(&self) -> TestApp {
        self.trusted_by(TestApp::builder()).start().await
    }

    /// POSTs `body` signed by this key, as GitHub does.
    async fn report(&self, app: &TestApp, body: &str) -> Response {
        let signature = self.sign(body.as_bytes());
        send(app, body, Some(KEY_ID), Some(&signature)).await
    }
}

/// POSTs `body` with whichever of the two headers are given.
async fn send(
    app: &TestApp,
    body: &str,
    key_id: Option<&str>,
    signature: Option<&str>,
) -> Response {
    let mut request = app
        .request(Method::POST, PATH)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Secret-Scanning/1.0")
        .body(body.to_owned());
    if let Some(id) = key_id {
        request = request.header("GITHUB-PUBLIC-KEY-IDENTIFIER", id);
    }
    if let Some(signature) = signature {
        request = request.header("GITHUB-PUBLIC-KEY-SIGNATURE", signature);
    }
    request.send().await.unwrap()
}

/// One reported match, as GitHub sends it.
fn found(token: &str) -> Value {
    json!({
        "token": token,
        "type": TOKEN_TYPE,
        "url": "https://github.com/octo/repo/blob/abc123/config.py",
        "source": "content"
    })
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The answer GitHub expects for `tokens`, each with its label.
fn labels(tokens: &[(&str, &str)]) -> Value {
    tokens
        .iter()
        .map(|(token, label)| {
            json!({"token_hash": sha256_hex(token), "token_type": TOKEN_TYPE, "label": label})
        })
        .collect()
}

/// `t`'s `api_key.leaked` events, newest first, through the audit listing.
async fn leaked_events(app: &TestApp, t: &TestTenant) -> Vec<Value> {
    let page = json_of(
        app.get(
            "/v1/organization/audit_logs?event_type=api_key.leaked",
            &t.admin_key,
        )
        .await,
        200,
    )
    .await;
    page["data"].as_array().unwrap().clone()
}

/// The status of `GET /v1/models` with `key`, and the error message if refused.
async fn models_with(app: &TestApp, key: &str) -> (u16, Option<String>) {
    let response = app.get("/v1/models", key).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().map(str::to_owned);
    (status, message)
}

#[tokio::test]
async fn a_signed_report_revokes_our_keys_and_labels_every_token_in_order() {
    let github = Github::new();
    let app = github.app().await;
    let t = app.tenant("pro").await;
    // A key revoked before the report, and a member's admin key.
    let old = app
        .create_project_key(&t.admin_key, &t.project_id, json!({"name": "old"}))
        .await;
    let old_value = old["value"].as_str().unwrap().to_owned();
    let old_path = format!(
        "/v1/organization/projects/{}/api_keys/{}",
        t.project_id,
        old["id"].as_str().unwrap()
    );
    let revoked_at = json_of(app.delete(&old_path, &t.admin_key).await, 200).await;
    assert_eq!(revoked_at["deleted"], true);
    let revoked_at =
        json_of(app.get(&old_path, &t.admin_key).await, 200).await["revoked_at"].clone();
    let (member_id, member_key) = app.member(&t, "dev@example.com", "admin").await;
    let unknown = app.state.prefixes.generate(KeyKind::Project);
    let unknown = unknown.expose_secret();
    assert_eq!(models_with(&app, &t.project_key).await.0, 200);

    let tokens = [
        (t.project_key.as_str(), "true_positive"),
        ("this is not one of our keys", "false_positive"),
        (unknown, "false_positive"),
        (old_value.as_str(), "true_positive"),
        (member_key.as_str(), "true_positive"),
    ];
    let body = Value::from_iter(tokens.iter().map(|(token, _)| found(token))).to_string();
    let answer = json_of(github.report(&app, &body).await, 200).await;
    assert_eq!(answer, labels(&tokens));

    // Revoked at once, on the very next request.
    assert_eq!(
        models_with(&app, &t.project_key).await,
        (401, Some("API key revoked".to_owned()))
    );
    assert_eq!(app.get("/v1/organization", &member_key).await.status(), 401);
    // The key revoked before keeps its first revocation.
    let old_now = json_of(app.get(&old_path, &t.admin_key).await, 200).await;
    assert_eq!(old_now["revoked_at"], revoked_at);

    // One event per key the report revoked, none for the one already revoked; never a token.
    let events = leaked_events(&app, &t).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let (admin_event, project_event) = (&events[0], &events[1]);
    for event in &events {
        assert_eq!(event["type"], "api_key.leaked");
        assert_eq!(event["actor_type"], "operator");
        assert_eq!(event["actor_id"], "github_secret_scanning");
        assert_eq!(event["source_ip"], "127.0.0.1");
        assert_eq!(event["user_agent"], "GitHub-Secret-Scanning/1.0");
        assert_eq!(
            event["details"]["url"],
            "https://github.com/octo/repo/blob/abc123/config.py"
        );
        assert_eq!(event["details"]["source"], "content");
    }
    assert_eq!(project_event["key_id"], t.project_key_id.as_str());
    assert_eq!(project_event["target_id"], t.project_key_id.as_str());
    assert_eq!(project_event["project_id"], t.project_id.as_str());
    assert_eq!(
        project_event["key_last4"],
        &t.project_key[t.project_key.len() - 4..]
    );
    assert!(
        admin_event["target_id"]
            .as_str()
            .unwrap()
            .starts_with("admin_key_"),
        "{admin_event}"
    );
    assert_eq!(admin_event["key_id"], Value::Null);
    assert_eq!(admin_event["details"]["member_id"], member_id.as_str());
    let log = app
        .get(
            "/v1/organization/audit_logs?format=jsonl&limit=100",
            &t.admin_key,
        )
        .await
        .text()
        .await
        .unwrap();
    for (token, _) in &tokens {
        assert!(
            !log.contains(&token[12.min(token.len())..]),
            "a token in the log"
        );
    }

    // GitHub retries: the same report again labels the same and writes nothing more.
    let again = json_of(github.report(&app, &body).await, 200).await;
    assert_eq!(again, labels(&tokens));
    assert_eq!(leaked_events(&app, &t).await.len(), 2);
    // An empty report is a valid one.
    assert_eq!(
        json_of(github.report(&app, "[]").await, 200).await,
        json!([])
    );
}

#[tokio::test]
async fn a_report_without_a_valid_signature_is_401_and_changes_nothing() {
    let github = Github::new();
    let app = github.app().await;
    let t = app.tenant("pro").await;
    let body = json!([found(&t.project_key)]).to_string();
    let signature = github.sign(body.as_bytes());
    let forged = Github::new().sign(body.as_bytes());
    let altered = body.replace("content", "commit");
    assert_ne!(altered, body);
    let cases: [(&str, &str, Option<&str>, Option<&str>); 7] = [
        (
            "another key's signature",
            &body,
            Some(KEY_ID),
            Some(&forged),
        ),
        (
            "an unknown key id",
            &body,
            Some("0123abcd"),
            Some(&signature),
        ),
        ("no key id", &body, None, Some(&signature)),
        ("no signature", &body, Some(KEY_ID), None),
        ("no headers", &body, None, None),
        (
            "the body altered after signing",
            &altered,
            Some(KEY_ID),
            Some(&signature),
        ),
        (
            "a signature that is not base64",
            &body,
            Some(KEY_ID),
            Some("%%%"),
        ),
    ];
    for (case, body, key_id, signature) in cases {
        let response = send(&app, body, key_id, signature).await;
        let error = error_of(response, 401).await;
        assert_eq!(error["type"], "authentication_error", "{case}: {error}");
        assert!(error["message"].is_string(), "{case}: {error}");
        for field in ["param", "code"] {
            assert_eq!(error[field], Value::Null, "{case}: {error}");
        }
    }
    // The key still works and nothing was written.
    assert_eq!(models_with(&app, &t.project_key).await.0, 200);
    assert!(leaked_events(&app, &t).await.is_empty());
    // The genuine report does revoke it: the refusals above were the signature's doing.
    let answer = json_of(github.report(&app, &body).await, 200).await;
    assert_eq!(answer, labels(&[(&t.project_key, "true_positive")]));
    assert_eq!(models_with(&app, &t.project_key).await.0, 401);
}

#[tokio::test]
async fn a_signed_body_that_is_not_an_array_of_matches_is_refused_and_revokes_nothing() {
    let github = Github::new();
    let app = github.app().await;
    let t = app.tenant("pro").await;
    let key = t.project_key.as_str();
    let object = json!({"token": key, "type": TOKEN_TYPE}).to_string();
    let no_token = json!([found(key), {"type": TOKEN_TYPE}]).to_string();
    let bad_token = json!([found(key), {"token": 5, "type": TOKEN_TYPE}]).to_string();
    let not_json = format!("[{{\"token\": \"{key}\"");
    for (body, param) in [
        (object.as_str(), None),
        ("\"a string\"", None),
        ("", None),
        (not_json.as_str(), None),
        (no_token.as_str(), Some("[1].token")),
        (bad_token.as_str(), Some("[1].token")),
    ] {
        let error = error_of(github.report(&app, body).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error", "{body}: {error}");
        assert_eq!(error["param"].as_str(), param, "{body}: {error}");
    }
    // Signed, but not JSON by its media type.
    let body = json!([found(key)]).to_string();
    let response = app
        .request(Method::POST, PATH)
        .header("content-type", "text/plain")
        .header("GITHUB-PUBLIC-KEY-IDENTIFIER", KEY_ID)
        .header("GITHUB-PUBLIC-KEY-SIGNATURE", github.sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    error_of(response, 415).await;
    assert_eq!(models_with(&app, key).await.0, 200);
    assert!(leaked_events(&app, &t).await.is_empty());
    // `url` and `source` may be missing or null, and unknown fields are ignored: a leak is never refused for them.
    let sparse =
        json!([{"token": key, "type": TOKEN_TYPE, "source": null, "new_field": 1}]).to_string();
    let answer = json_of(github.report(&app, &sparse).await, 200).await;
    assert_eq!(answer, labels(&[(key, "true_positive")]));
    let events = leaked_events(&app, &t).await;
    assert_eq!(events[0]["details"], json!({"url": null, "source": null}));
}

#[tokio::test]
async fn without_a_secret_scanning_section_the_receiver_is_404() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let github = Github::new();
    let error = error_of(
        github
            .report(&app, &json!([found(&t.project_key)]).to_string())
            .await,
        404,
    )
    .await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(models_with(&app, &t.project_key).await.0, 200);
}

#[tokio::test]
async fn a_key_reported_to_one_node_is_refused_by_another_within_a_second_or_so() {
    let github = Github::new();
    let a = github.app().await;
    let b = github
        .trusted_by(TestApp::builder().node_of(&a))
        .start()
        .await;
    let t = a.tenant("pro").await;
    // Node b holds the key in its cache (5 s), so only the change log can make it refuse sooner.
    assert_eq!(models_with(&b, &t.project_key).await.0, 200);
    let body = json!([found(&t.project_key)]).to_string();
    json_of(github.report(&a, &body).await, 200).await;
    let reported = Instant::now();
    loop {
        match models_with(&b, &t.project_key).await {
            (401, message) => {
                assert_eq!(message.as_deref(), Some("API key revoked"));
                break;
            }
            (status, _) => assert_eq!(status, 200),
        }
        assert!(
            reported.elapsed() < Duration::from_secs(2),
            "node b still serves a reported key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_of_an_earlier_prefix_still_work_after_a_restart_that_changes_key_prefix() {
    let github = Github::new();
    let first = github.app().await;
    let t = first.tenant("pro").await;
    assert!(t.project_key.starts_with("sk_live_"));
    first.shutdown().await.unwrap().unwrap();

    // Restarted with a new prefix, the old one accepted.
    let renamed = |accepted: Vec<String>| {
        github.trusted_by(TestApp::builder().node_of(&first).configure(move |c| {
            c.key_prefix = "btoo_".to_owned();
            c.accepted_key_prefixes = accepted;
        }))
    };
    let accepting = renamed(vec!["sk_live_".to_owned()]).start().await;
    assert_eq!(models_with(&accepting, &t.project_key).await.0, 200);
    let new = accepting
        .create_project_key(&t.admin_key, &t.project_id, json!({"name": "new"}))
        .await;
    let new = new["value"].as_str().unwrap();
    assert!(new.starts_with("btoo_"), "{new}");
    assert_eq!(models_with(&accepting, new).await.0, 200);

    // Without the old prefix accepted, its keys are malformed, and no report can revoke them.
    let strict = renamed(Vec::new()).start().await;
    assert_eq!(
        models_with(&strict, &t.project_key).await,
        (401, Some("Malformed API key".to_owned()))
    );
    let body = json!([found(&t.project_key), found(new)]).to_string();
    let answer = json_of(github.report(&strict, &body).await, 200).await;
    assert_eq!(
        answer,
        labels(&[(&t.project_key, "false_positive"), (new, "true_positive")])
    );

    // The receiver recognises accepted prefixes too.
    let body = json!([found(&t.project_key)]).to_string();
    let answer = json_of(github.report(&accepting, &body).await, 200).await;
    assert_eq!(answer, labels(&[(&t.project_key, "true_positive")]));
    assert_eq!(
        models_with(&accepting, &t.project_key).await,
        (401, Some("API key revoked".to_owned()))
    );
}
