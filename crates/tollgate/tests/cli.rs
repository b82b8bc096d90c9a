//! The command line against a temporary SQLite database: the same rules as the HTTP API, objects as JSON.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a failing step should stop the test"
)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use tollgate_core::audit::{Actor, AuditQuery, EventType, Origin};

fn tollgate(db_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env(
            "TOLLGATE_DATABASE_URL",
            format!("sqlite://{}/t.db", db_dir.display()),
        )
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap()
}

fn json(db_dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = tollgate(db_dir, &all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `tollgate tenant create` of a tenant "Acme" on the pro plan.
fn create_acme(db_dir: &Path) -> Value {
    json(
        db_dir,
        &[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--plan",
            "pro",
            "--owner-email",
            "o@acme.io",
        ],
    )
}

#[test]
fn tenants_credits_and_keys_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(json(d, &["migrate"])["applied"].as_u64().unwrap() >= 1);
    assert_eq!(
        json(d, &["migrate"])["applied"],
        0,
        "running it again is harmless"
    );

    let created = create_acme(d);
    let tenant = created["tenant"]["id"].as_str().unwrap();
    let project = created["project"]["id"].as_str().unwrap();
    assert!(
        created["admin_key"]["value"]
            .as_str()
            .unwrap()
            .starts_with("sk_admin_")
    );

    let credits = json(
        d,
        &[
            "credits", "grant", "--tenant", tenant, "--cents", "1500", "--reason", "welcome",
        ],
    );
    assert_eq!(credits["balance_cents"], 1500);
    assert_eq!(credits["ledger"]["data"][0]["reason"], "welcome");

    let key = json(d, &["key", "create", "--project", project, "--name", "ci"]);
    let value = key["value"].as_str().unwrap();
    let id = key["id"].as_str().unwrap();
    let found = json(d, &["key", "lookup", value]);
    assert_eq!(
        (found["tenant_id"].as_str(), found["key"]["status"].as_str()),
        (Some(tenant), Some("active"))
    );
    assert_eq!(json(d, &["key", "revoke", id])["status"], "revoked");
    assert_eq!(
        json(d, &["key", "lookup", value])["key"]["status"],
        "revoked"
    );

    // Mistakes are errors with a message and a failing exit code, not panics.
    for bad in [
        vec!["credits", "grant", "--tenant", tenant, "--cents", "0"],
        vec!["credits", "grant", "--tenant", "org_nope", "--cents", "5"],
        vec![
            "tenant",
            "create",
            "--name",
            "X",
            "--plan",
            "platinum",
            "--owner-email",
            "x@y.io",
        ],
        vec!["key", "create", "--project", "proj_nope", "--name", "x"],
        vec!["key", "lookup", "sk_live_not-a-key"],
    ] {
        let out = tollgate(d, &bad);
        assert!(!out.status.success(), "{bad:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.is_empty() && !stderr.contains("panicked"),
            "{bad:?}: {stderr}"
        );
    }
}

/// Every command that changes something is audited as the operator's, with no request to name.
#[test]
fn command_line_changes_are_audit_events_of_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = create_acme(d);
    let tenant = created["tenant"]["id"].as_str().unwrap();
    let project = created["project"]["id"].as_str().unwrap();
    json(d, &["credits", "grant", "--tenant", tenant, "--cents", "5"]);
    let key = json(d, &["key", "create", "--project", project, "--name", "ci"]);
    let id = key["id"].as_str().unwrap();
    json(d, &["key", "revoke", id]);
    json(d, &["key", "revoke", id]);

    let url = format!("sqlite://{}/t.db", d.display());
    let events = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = tollgate_store::connect(&url).await.unwrap();
        let query = AuditQuery {
            tenant_id: tenant.into(),
            limit: 100,
            ..AuditQuery::default()
        };
        let mut events = store.audit_events(&query).await.unwrap().items;
        events.reverse();
        events
    });
    let kinds: Vec<_> = events.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::ProjectCreated,
            EventType::MemberAdded,
            EventType::AdminApiKeyCreated,
            EventType::CreditsGranted,
            EventType::ApiKeyCreated,
            EventType::ApiKeyRevoked,
        ],
        "the second revoke changed nothing"
    );
    for e in &events {
        assert_eq!(e.event.actor, Actor::operator());
        assert_eq!(e.event.origin, Origin::default());
    }
    let revoked = &events[5].event;
    assert_eq!(revoked.key_id.as_deref(), Some(id));
    assert_eq!(revoked.key_last4.as_deref(), key["last4"].as_str());
    assert_eq!(revoked.project_id.as_deref(), Some(project));
}

/// `key lookup` knows keys of the prefixes `accepted_key_prefixes` lists, after `key_prefix` changed.
#[test]
fn key_lookup_recognises_keys_of_accepted_earlier_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = create_acme(d);
    let project = created["project"]["id"].as_str().unwrap();
    let key = json(d, &["key", "create", "--project", project, "--name", "ci"]);
    let value = key["value"].as_str().unwrap();
    assert!(value.starts_with("sk_live_"));
    let config = |name: &str, text: &str| {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let accepting = config(
        "accepting.toml",
        "key_prefix = \"btoo_\"\naccepted_key_prefixes = [\"sk_live_\"]\n",
    );
    let strict = config("strict.toml", "key_prefix = \"btoo_\"\n");
    let found = json(d, &["--config", &accepting, "key", "lookup", value]);
    assert_eq!(found["key"]["id"], key["id"]);
    let out = tollgate(d, &["--config", &strict, "key", "lookup", value]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a key of this deployment"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
