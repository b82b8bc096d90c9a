//! The behaviour every Store backend must have, run against SQLite in a temporary directory. A PostgreSQL
//! backend runs the same functions.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a failing step should stop the test"
)]

use std::sync::Arc;
use tollgate_core::credits::{Balance, LedgerKind, Settlement, UsageGrouping, UsageQuery};
use tollgate_core::key::KeyPrefixes;
use tollgate_core::money::Micros;
use tollgate_core::ports::{
    KeyLimit, KeyScope, LeaseRequest, PageRequest, Store, StoreError, TenantUpdate,
};
use tollgate_core::role::Role;
use tollgate_core::tenant::{ApiKey, KeyOwner, KeySpec, NewTenant, ProjectStatus, TenantStatus};
use tollgate_core::tenant::{Member, Project};

struct Fixture {
    store: Arc<dyn Store>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/tollgate.db", dir.path().display());
    let store = tollgate_store::connect(&url).await.unwrap();
    Fixture {
        store,
        url,
        _dir: dir,
    }
}

fn prefixes() -> KeyPrefixes {
    KeyPrefixes::new("sk_live_", "sk_admin_").unwrap()
}

fn new_tenant(name: &str, now: i64) -> NewTenant {
    NewTenant::build(
        &prefixes(),
        name.into(),
        "pro".into(),
        "owner@example.com".into(),
        None,
        now,
    )
    .0
}

fn project_key(t: &NewTenant, name: &str, now: i64) -> ApiKey {
    let spec = KeySpec {
        name: name.into(),
        allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
        models: Some(vec!["echo".into()]),
        ..KeySpec::default()
    };
    ApiKey::issue(
        &prefixes(),
        &t.tenant.id,
        KeyOwner::Project(t.project.id.clone()),
        spec,
        None,
        now,
    )
    .0
}

#[tokio::test]
async fn a_tenant_is_written_whole_and_read_back() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 100);
    f.store.create_tenant(&t).await.unwrap();
    assert_eq!(
        f.store.get_tenant(&t.tenant.id).await.unwrap(),
        Some(t.tenant.clone())
    );
    assert_eq!(
        f.store
            .get_project(&t.tenant.id, &t.project.id)
            .await
            .unwrap(),
        Some(t.project.clone())
    );
    assert_eq!(
        f.store.find_project(&t.project.id).await.unwrap(),
        Some(t.project.clone())
    );
    assert_eq!(
        f.store.get_member(&t.tenant.id, &t.owner.id).await.unwrap(),
        Some(t.owner.clone())
    );
    assert_eq!(
        f.store
            .get_key(&t.tenant.id, &t.admin_key.id)
            .await
            .unwrap(),
        Some(t.admin_key.clone())
    );
    assert_eq!(f.store.get_tenant("org_missing").await.unwrap(), None);
}

#[tokio::test]
async fn another_tenants_objects_are_invisible() {
    let f = sqlite().await;
    let (a, b) = (new_tenant("A", 1), new_tenant("B", 2));
    f.store.create_tenant(&a).await.unwrap();
    f.store.create_tenant(&b).await.unwrap();
    assert_eq!(
        f.store
            .get_project(&a.tenant.id, &b.project.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store.get_member(&a.tenant.id, &b.owner.id).await.unwrap(),
        None
    );
    assert_eq!(
        f.store
            .get_key(&a.tenant.id, &b.admin_key.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store
            .revoke_key(&a.tenant.id, &b.admin_key.id, 5)
            .await
            .unwrap(),
        None
    );
    let b_key = f
        .store
        .get_key(&b.tenant.id, &b.admin_key.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b_key.revoked_at, None,
        "a cross-tenant revoke must change nothing"
    );
    let listed = f
        .store
        .list_keys(
            &a.tenant.id,
            &KeyScope::Member(b.owner.id.clone()),
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}

#[tokio::test]
async fn a_failed_tenant_creation_leaves_nothing_behind() {
    let f = sqlite().await;
    let first = new_tenant("First", 1);
    f.store.create_tenant(&first).await.unwrap();
    let mut second = new_tenant("Second", 2);
    // The last write of the transaction (the admin key) collides, after tenant, project and member were written.
    second.admin_key.digest = first.admin_key.digest;
    let err = f.store.create_tenant(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(f.store.get_tenant(&second.tenant.id).await.unwrap(), None);
    assert_eq!(
        f.store.find_project(&second.project.id).await.unwrap(),
        None
    );
    assert_eq!(
        f.store
            .get_member(&second.tenant.id, &second.owner.id)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn keys_round_trip_with_their_networks_and_models() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let key = project_key(&t, "ci", 2);
    f.store.insert_key(&key, None).await.unwrap();
    assert_eq!(f.store.find_key(&key.id).await.unwrap(), Some(key.clone()));
    let principal = f
        .store
        .principal_by_digest(&key.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.key, key);
    assert_eq!(principal.tenant_plan, "pro");
    assert_eq!(principal.tenant_status, TenantStatus::Active);
    assert_eq!(principal.project_status, Some(ProjectStatus::Active));
    assert_eq!(principal.role, None);
    let admin = f
        .store
        .principal_by_digest(&t.admin_key.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.role, Some(t.owner.role));
    assert_eq!(admin.project_status, None);
    let unknown = tollgate_core::key::KeyDigest::from_bytes([7; 32]);
    assert_eq!(f.store.principal_by_digest(&unknown).await.unwrap(), None);
}

#[tokio::test]
async fn revoking_keeps_the_first_time() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let key = project_key(&t, "ci", 2);
    f.store.insert_key(&key, None).await.unwrap();
    let revoked = f
        .store
        .revoke_key(&t.tenant.id, &key.id, 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(50));
    let again = f
        .store
        .revoke_key(&t.tenant.id, &key.id, 90)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(50));
    let principal = f
        .store
        .principal_by_digest(&key.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.key.revoked_at, Some(50));
}

#[tokio::test]
async fn lists_page_oldest_first_with_a_cursor() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let key = project_key(&t, &format!("k{i}"), 10 + i);
        f.store.insert_key(&key, None).await.unwrap();
        ids.push(key.id);
    }
    let owner = KeyScope::Project(t.project.id.clone());
    let first = f
        .store
        .list_keys(
            &t.tenant.id,
            &owner,
            &PageRequest {
                after: None,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        first.items.iter().map(|k| &k.id).collect::<Vec<_>>(),
        vec![&ids[0], &ids[1]]
    );
    assert!(first.has_more);
    let after = Some(ids[3].clone());
    let last = f
        .store
        .list_keys(&t.tenant.id, &owner, &PageRequest { after, limit: 2 })
        .await
        .unwrap();
    assert_eq!(
        last.items.iter().map(|k| &k.id).collect::<Vec<_>>(),
        vec![&ids[4]]
    );
    assert!(!last.has_more);
    // The admin key is the member's, not the project's.
    let admin_keys = f
        .store
        .list_keys(
            &t.tenant.id,
            &KeyScope::Member(t.owner.id.clone()),
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(admin_keys.items.len(), 1);

    f.store
        .create_tenant(&new_tenant("Second", 2))
        .await
        .unwrap();
    let tenants = f
        .store
        .list_tenants(&PageRequest {
            after: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(tenants.items[0].id, t.tenant.id);
    assert!(tenants.has_more);
}

#[tokio::test]
async fn migrations_are_counted_once_and_data_survives_reopening() {
    let f = sqlite().await;
    assert_eq!(
        tollgate_store::migrate(&f.url).await.unwrap(),
        0,
        "connect already migrated"
    );
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let reopened = tollgate_store::connect(&f.url).await.unwrap();
    assert_eq!(
        reopened.get_tenant(&t.tenant.id).await.unwrap(),
        Some(t.tenant)
    );
    reopened.ping().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let fresh = format!("sqlite://{}/fresh.db", dir.path().display());
    assert!(tollgate_store::migrate(&fresh).await.unwrap() >= 1);
    assert_eq!(tollgate_store::migrate(&fresh).await.unwrap(), 0);
}

#[tokio::test]
async fn an_unsupported_url_is_a_clear_error() {
    let Err(err) = tollgate_store::connect("mysql://localhost/db").await else {
        panic!("mysql is not supported");
    };
    assert!(err.to_string().contains("sqlite://"), "{err}");
}

fn page(limit: u32) -> PageRequest {
    PageRequest { after: None, limit }
}

#[tokio::test]
async fn the_key_limit_counts_active_keys_of_active_projects() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let limit = Some(KeyLimit {
        max_active: 2,
        now: 100,
    });
    let first = project_key(&t, "a", 10);
    f.store.insert_key(&first, limit).await.unwrap();
    let mut expiring = project_key(&t, "b", 10);
    expiring.expires_at = Some(150);
    f.store.insert_key(&expiring, limit).await.unwrap();
    let third = project_key(&t, "c", 10);
    let err = f.store.insert_key(&third, limit).await.unwrap_err();
    assert!(matches!(err, StoreError::KeyLimitReached), "{err:?}");
    assert_eq!(
        f.store.find_key(&third.id).await.unwrap(),
        None,
        "nothing written"
    );
    // Admin keys and unlimited inserts are not counted against it.
    f.store.insert_key(&third, None).await.unwrap();
    // Expired and revoked keys free their slot.
    let later = Some(KeyLimit {
        max_active: 3,
        now: 200,
    });
    f.store
        .revoke_key(&t.tenant.id, &first.id, 120)
        .await
        .unwrap();
    f.store
        .insert_key(&project_key(&t, "d", 20), later)
        .await
        .unwrap();
    f.store
        .insert_key(&project_key(&t, "e", 20), later)
        .await
        .unwrap();
    let err = f
        .store
        .insert_key(&project_key(&t, "f", 20), later)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyLimitReached), "{err:?}");
}

#[tokio::test]
async fn projects_are_created_listed_renamed_and_archived() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let sandbox = Project {
        id: "proj_sandbox".into(),
        name: "Sandbox".into(),
        ..t.project.clone()
    };
    f.store.create_project(&sandbox).await.unwrap();
    let listed = f
        .store
        .list_projects(&t.tenant.id, &page(10))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    let renamed = f
        .store
        .rename_project(&t.tenant.id, &sandbox.id, "Test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "Test");
    let archived = f
        .store
        .archive_project(&t.tenant.id, &t.project.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archived.status, ProjectStatus::Archived);
    let principal = f
        .store
        .principal_by_digest(&project_key_in(&f, &t).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.project_status, Some(ProjectStatus::Archived));
    let other = new_tenant("Other", 2);
    f.store.create_tenant(&other).await.unwrap();
    assert_eq!(
        f.store
            .rename_project(&other.tenant.id, &sandbox.id, "x")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store
            .archive_project(&other.tenant.id, &sandbox.id)
            .await
            .unwrap(),
        None
    );
}

async fn project_key_in(f: &Fixture, t: &NewTenant) -> tollgate_core::key::KeyDigest {
    let key = project_key(t, "k", 5);
    f.store.insert_key(&key, None).await.unwrap();
    key.digest
}

fn member(t: &NewTenant, id: &str, email: &str, role: Role) -> Member {
    Member {
        id: id.into(),
        email: email.into(),
        role,
        ..t.owner.clone()
    }
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let err = f
        .store
        .set_role(&t.tenant.id, &t.owner.id, Role::Admin)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LastOwner), "{err:?}");
    let err = f
        .store
        .remove_member(&t.tenant.id, &t.owner.id, 5)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LastOwner), "{err:?}");
    assert_eq!(
        f.store
            .get_member(&t.tenant.id, &t.owner.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        Role::Owner
    );
    // With a second owner, the first may step down.
    f.store
        .add_member(&member(&t, "user_b", "b@x.io", Role::Owner))
        .await
        .unwrap();
    let demoted = f
        .store
        .set_role(&t.tenant.id, &t.owner.id, Role::Member)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(demoted.role, Role::Member);
    assert_eq!(
        f.store
            .set_role(&t.tenant.id, "user_missing", Role::Admin)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn removing_a_member_revokes_its_admin_keys_and_frees_its_email() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let admin = member(&t, "user_admin", "admin@x.io", Role::Admin);
    f.store.add_member(&admin).await.unwrap();
    let duplicate = member(&t, "user_dup", "admin@x.io", Role::Member);
    assert!(matches!(
        f.store.add_member(&duplicate).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    let (key, _) = ApiKey::issue(
        &prefixes(),
        &t.tenant.id,
        KeyOwner::Member(admin.id.clone()),
        KeySpec {
            name: "script".into(),
            ..KeySpec::default()
        },
        None,
        3,
    );
    f.store.insert_key(&key, None).await.unwrap();
    let removed = f
        .store
        .remove_member(&t.tenant.id, &admin.id, 9)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.member, admin);
    assert_eq!(removed.revoked, vec![key.digest]);
    assert_eq!(
        f.store.get_member(&t.tenant.id, &admin.id).await.unwrap(),
        None
    );
    let principal = f
        .store
        .principal_by_digest(&key.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.key.revoked_at, Some(9));
    assert_eq!(principal.role, None, "a removed member acts as nobody");
    let members = f.store.list_members(&t.tenant.id, &page(10)).await.unwrap();
    assert_eq!(members.items, vec![t.owner.clone()]);
    // The email may join again, as a new member.
    f.store.add_member(&duplicate).await.unwrap();
    assert_eq!(
        f.store
            .remove_member(&t.tenant.id, &admin.id, 10)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_operator_changes_plan_and_status() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let update = TenantUpdate {
        plan: Some("enterprise".into()),
        status: Some(TenantStatus::Suspended),
    };
    let changed = f
        .store
        .update_tenant(&t.tenant.id, &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (changed.plan.as_str(), changed.status),
        ("enterprise", TenantStatus::Suspended)
    );
    let reactivate = TenantUpdate {
        status: Some(TenantStatus::Active),
        ..TenantUpdate::default()
    };
    let changed = f
        .store
        .update_tenant(&t.tenant.id, &reactivate)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (changed.plan.as_str(), changed.status),
        ("enterprise", TenantStatus::Active)
    );
    let principal = f
        .store
        .principal_by_digest(&t.admin_key.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.tenant_plan, "enterprise");
    assert_eq!(
        f.store.update_tenant("org_missing", &update).await.unwrap(),
        None
    );
}

fn settlement(t: &NewTenant, key: &ApiKey, model: &str, cost: i64, at: i64) -> Settlement {
    Settlement {
        request_id: format!("req_{at}_{cost}"),
        tenant_id: t.tenant.id.clone(),
        project_id: t.project.id.clone(),
        key_id: key.id.clone(),
        model: model.into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        cost: Micros(cost),
        at,
    }
}

#[tokio::test]
async fn grants_and_charges_keep_ledger_and_balance_in_step() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    assert_eq!(
        f.store.balance(&t.tenant.id).await.unwrap(),
        Balance::default()
    );
    assert_eq!(
        f.store
            .grant("org_missing", Micros(5), None, 2)
            .await
            .unwrap(),
        None
    );
    let grant = f
        .store
        .grant(&t.tenant.id, Micros(1_000), Some("welcome"), 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (grant.kind, grant.amount, grant.balance_after),
        (LedgerKind::Grant, Micros(1_000), Micros(1_000))
    );
    let key = project_key(&t, "k", 3);
    f.store.insert_key(&key, None).await.unwrap();
    let charged = f
        .store
        .settle(
            "node_a",
            &[
                settlement(&t, &key, "fast", 600, 10),
                settlement(&t, &key, "echo", 0, 11),
                settlement(&t, &key, "fast", 900, 12),
            ],
        )
        .await
        .unwrap();
    // The third costs more than what is left: the balance stops at zero, never below.
    assert_eq!(charged.charged, vec![Micros(600), Micros(0), Micros(400)]);
    let balance = f.store.balance(&t.tenant.id).await.unwrap();
    assert_eq!(
        balance,
        Balance {
            balance: Micros(0),
            version: 2
        },
        "one version for the grant, one for the batch"
    );
    assert_eq!(charged.balances, vec![(t.tenant.id.clone(), balance)]);
    let ledger = f.store.ledger(&t.tenant.id, &page(10)).await.unwrap();
    let amounts: Vec<(LedgerKind, i64, i64)> = ledger
        .items
        .iter()
        .map(|e| (e.kind, e.amount.get(), e.balance_after.get()))
        .collect();
    assert_eq!(
        amounts,
        vec![
            (LedgerKind::Charge, -400, 0),
            (LedgerKind::Charge, -600, 400),
            (LedgerKind::Grant, 1_000, 1_000)
        ],
        "newest first; a free request writes no entry"
    );
    let older = f
        .store
        .ledger(
            &t.tenant.id,
            &PageRequest {
                after: Some(ledger.items[0].id.clone()),
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(older.items[0].id, ledger.items[1].id);
    assert!(older.has_more);
    let used = f.store.find_key(&key.id).await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(12));
}

#[tokio::test]
async fn usage_is_grouped_by_any_of_day_model_project_and_key() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    f.store
        .grant(&t.tenant.id, Micros(1_000_000), None, 1)
        .await
        .unwrap();
    let (a, b) = (project_key(&t, "a", 2), project_key(&t, "b", 2));
    f.store.insert_key(&a, None).await.unwrap();
    f.store.insert_key(&b, None).await.unwrap();
    let day = 86_400;
    f.store
        .settle(
            "node_a",
            &[
                settlement(&t, &a, "fast", 100, day + 5),
                settlement(&t, &a, "echo", 0, day + 6),
                settlement(&t, &b, "fast", 200, 2 * day + 7),
            ],
        )
        .await
        .unwrap();
    let query = |group: UsageGrouping, since: i64, until: i64| UsageQuery {
        tenant_id: t.tenant.id.clone(),
        project_id: None,
        since,
        until,
        group,
    };
    let all = f
        .store
        .usage(&query(UsageGrouping::default(), 0, 10 * day))
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (
            all[0].requests,
            all[0].prompt_tokens,
            all[0].completion_tokens,
            all[0].cost
        ),
        (3, 30, 15, Micros(300))
    );
    assert_eq!(all[0].model, None);
    let by_day_model = f
        .store
        .usage(&query(
            UsageGrouping {
                day: true,
                model: true,
                ..UsageGrouping::default()
            },
            0,
            10 * day,
        ))
        .await
        .unwrap();
    let rows: Vec<(Option<i64>, Option<&str>, u64)> = by_day_model
        .iter()
        .map(|u| (u.day, u.model.as_deref(), u.requests))
        .collect();
    assert_eq!(
        rows,
        vec![
            (Some(day), Some("echo"), 1),
            (Some(day), Some("fast"), 1),
            (Some(2 * day), Some("fast"), 1)
        ]
    );
    let by_key = f
        .store
        .usage(&query(
            UsageGrouping {
                key: true,
                ..UsageGrouping::default()
            },
            0,
            10 * day,
        ))
        .await
        .unwrap();
    assert_eq!(by_key.len(), 2);
    // The window is [since, until).
    let window = f
        .store
        .usage(&query(UsageGrouping::default(), day + 6, 2 * day + 7))
        .await
        .unwrap();
    assert_eq!(window[0].requests, 1);
    assert!(
        f.store
            .usage(&query(UsageGrouping::default(), 0, day))
            .await
            .unwrap()
            .is_empty()
    );
    let other_project = UsageQuery {
        project_id: Some("proj_other".into()),
        ..query(UsageGrouping::default(), 0, 10 * day)
    };
    assert!(f.store.usage(&other_project).await.unwrap().is_empty());
}

fn lease_request<'a>(
    tenant_id: &'a str,
    node_id: &'a str,
    need: i64,
    want: i64,
    now: i64,
) -> LeaseRequest<'a> {
    LeaseRequest {
        tenant_id,
        node_id,
        need: Micros(need),
        want: Micros(want),
        now,
        expires_at: now + 30,
    }
}

#[tokio::test]
async fn leases_never_reserve_more_than_the_balance_and_charges_come_off_them() {
    let f = sqlite().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t).await.unwrap();
    let tenant = t.tenant.id.as_str();
    f.store.grant(tenant, Micros(1_600), None, 2).await.unwrap();
    // Node a needs 100 and would like 1,000: it gets its need and a sixteenth of the rest.
    let a = f
        .store
        .lease(&lease_request(tenant, "node_a", 100, 1_000, 3))
        .await
        .unwrap();
    assert_eq!(
        (a.granted, a.lease, a.free),
        (Micros(100 + 1_500 / 16), Micros(193), Micros(1_407))
    );
    // Node b cannot have more than is free, all or nothing; what fits, it gets.
    let refused = f
        .store
        .lease(&lease_request(tenant, "node_b", 1_408, 1_408, 3))
        .await
        .unwrap();
    assert_eq!(
        (refused.granted, refused.free),
        (Micros::ZERO, Micros(1_407))
    );
    let b = f
        .store
        .lease(&lease_request(tenant, "node_b", 1_407, 1_407, 3))
        .await
        .unwrap();
    assert_eq!(
        (b.granted, b.lease, b.free),
        (Micros(1_407), Micros(1_407), Micros::ZERO)
    );
    // A charge of node a comes off its lease with the balance: nothing becomes free.
    let key = project_key(&t, "k", 3);
    f.store.insert_key(&key, None).await.unwrap();
    let charged = f
        .store
        .settle("node_a", &[settlement(&t, &key, "fast", 150, 4)])
        .await
        .unwrap();
    assert_eq!(charged.charged, vec![Micros(150)]);
    let probe = f
        .store
        .lease(&lease_request(tenant, "node_c", 0, 0, 4))
        .await
        .unwrap();
    assert_eq!(probe.free, Micros::ZERO, "1,450 left, 43 + 1,407 leased");
    // Node a gives back 40 of its 43: that much is free again.
    f.store
        .release_lease(tenant, "node_a", Micros(40))
        .await
        .unwrap();
    let probe = f
        .store
        .lease(&lease_request(tenant, "node_c", 0, 0, 4))
        .await
        .unwrap();
    assert_eq!(probe.free, Micros(40));
    // Node b stops renewing (it crashed); node a renews. Once b's lease has expired, its reservation is free.
    f.store.renew_leases("node_a", 100).await.unwrap();
    let late = f
        .store
        .lease(&lease_request(tenant, "node_c", 0, 0, 50))
        .await
        .unwrap();
    assert_eq!(late.free, Micros(40 + 1_407), "b's lease expired at 33");
    // Giving back everything ends a lease: a's 3 are free too.
    f.store
        .release_lease(tenant, "node_a", Micros(i64::MAX))
        .await
        .unwrap();
    let last = f
        .store
        .lease(&lease_request(tenant, "node_c", 0, 0, 50))
        .await
        .unwrap();
    assert_eq!(last.free, Micros(1_450));
}
