//! The behaviour every Store backend must have: each case runs against SQLite in a temporary directory and, when
//! `TOLLGATE_TEST_POSTGRES_URL` names a server, against a fresh PostgreSQL database of its own (`NAME::sqlite` and
//! `NAME::postgres`; without the variable the PostgreSQL cases pass as skipped, with a note on stderr).
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a failing step should stop the test"
)]

use futures::future::join_all;
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::audit::{
    Actor, AuditEvent, AuditQuery, BrokenLink, Cause, ChainCheck, EventType, Origin,
};
use tollgate_core::credits::{Balance, LedgerKind, Settlement, UsageGrouping, UsageQuery};
use tollgate_core::id;
use tollgate_core::idempotency::{
    CLAIM_LEASE_SECONDS, Claim, ClaimOutcome, ClaimRef, Completion, Fingerprint, StoredResponse,
};
use tollgate_core::key::KeyPrefixes;
use tollgate_core::money::Micros;
use tollgate_core::ports::{
    Account, ChangeSignal, Changed, KeyLimit, KeyScope, LeaseRequest, PageRequest, Store,
    StoreError, TenantUpdate,
};
use tollgate_core::role::Role;
use tollgate_core::session::{Session, SessionMember, SessionToken};
use tollgate_core::tenant::{
    ApiKey, KeyChanges, KeyOwner, KeySpec, KeySpent, NewTenant, ProjectStatus, RateLimits,
    SpendLimit, SpendPeriod, TenantStatus,
};
use tollgate_core::tenant::{Member, Project};
use tollgate_store::testing::ScratchDatabase;

/// A migrated store on a database of its own.
struct Fixture {
    store: Arc<dyn Store>,
    url: String,
    /// Dropped last: removes the database.
    db: Database,
}

/// Where a fixture's database lives, kept for as long as the fixture.
enum Database {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { _db: ScratchDatabase },
}

impl Database {
    async fn sqlite() -> (String, Self) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/dir/tollgate.db", dir.path().display());
        (url, Self::Sqlite { _dir: dir })
    }

    /// A database on the test server, if one is configured.
    async fn postgres() -> Option<(String, Self)> {
        let db = ScratchDatabase::from_env().await.unwrap()?;
        Some((db.url().to_owned(), Self::Postgres { _db: db }))
    }

    /// Another database on the same backend, not yet migrated.
    async fn blank(&self) -> (String, Self) {
        match self {
            Self::Sqlite { .. } => Self::sqlite().await,
            Self::Postgres { .. } => Self::postgres().await.unwrap(),
        }
    }
}

impl Fixture {
    async fn on((url, db): (String, Database)) -> Self {
        Self {
            store: tollgate_store::connect(&url).await.unwrap(),
            url,
            db,
        }
    }

    /// A second handle on the same database, as another node (or the CLI) opens it: its own connections.
    async fn another_node(&self) -> Arc<dyn Store> {
        tollgate_store::connect(&self.url).await.unwrap()
    }
}

/// Runs each named `async fn(Fixture)` once per backend, as `NAME::sqlite` and `NAME::postgres`. A case left out of
/// the list is dead code, which the lints refuse, so none is forgotten.
macro_rules! on_every_backend {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn sqlite() {
                    super::$case(super::Fixture::on(super::Database::sqlite().await).await).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(db) = super::Database::postgres().await {
                        super::$case(super::Fixture::on(db).await).await;
                    }
                }
            }
        )+
    };
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

async fn a_tenant_is_written_whole_and_read_back(f: Fixture) {
    let t = new_tenant("Acme", 100);
    f.store.create_tenant(&t, &[]).await.unwrap();
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

async fn another_tenants_objects_are_invisible(f: Fixture) {
    let (a, b) = (new_tenant("A", 1), new_tenant("B", 2));
    f.store.create_tenant(&a, &[]).await.unwrap();
    f.store.create_tenant(&b, &[]).await.unwrap();
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
            .revoke_key(
                &a.tenant.id,
                &b.admin_key.id,
                5,
                &audit(EventType::ApiKeyRevoked, &a.tenant.id)
            )
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

async fn a_failed_tenant_creation_leaves_nothing_behind(f: Fixture) {
    let first = new_tenant("First", 1);
    f.store.create_tenant(&first, &[]).await.unwrap();
    let mut second = new_tenant("Second", 2);
    // The last write of the transaction (the admin key) collides, after tenant, project and member were written.
    second.admin_key.digest = first.admin_key.digest;
    let err = f.store.create_tenant(&second, &[]).await.unwrap_err();
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

async fn keys_round_trip_with_their_networks_and_models(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let key = project_key(&t, "ci", 2);
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
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

async fn revoking_keeps_the_first_time(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let key = project_key(&t, "ci", 2);
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    let revoked = f
        .store
        .revoke_key(
            &t.tenant.id,
            &key.id,
            50,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(50));
    let again = f
        .store
        .revoke_key(
            &t.tenant.id,
            &key.id,
            90,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
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

async fn lists_page_oldest_first_with_a_cursor(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let key = project_key(&t, &format!("k{i}"), 10 + i);
        f.store
            .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
            .await
            .unwrap();
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
        .create_tenant(&new_tenant("Second", 2), &[])
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

async fn migrations_are_counted_once_and_data_survives_reopening(f: Fixture) {
    assert_eq!(
        tollgate_store::migrate(&f.url).await.unwrap(),
        0,
        "connect already migrated"
    );
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let reopened = tollgate_store::connect(&f.url).await.unwrap();
    assert_eq!(
        reopened.get_tenant(&t.tenant.id).await.unwrap(),
        Some(t.tenant)
    );
    reopened.ping().await.unwrap();

    let (fresh, _db) = f.db.blank().await;
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

async fn the_key_limit_counts_active_keys_of_active_projects(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let limit = Some(KeyLimit {
        max_active: 2,
        now: 100,
    });
    let first = project_key(&t, "a", 10);
    f.store
        .insert_key(
            &first,
            limit,
            &audit(EventType::ApiKeyCreated, &first.tenant_id),
        )
        .await
        .unwrap();
    let mut expiring = project_key(&t, "b", 10);
    expiring.expires_at = Some(150);
    f.store
        .insert_key(
            &expiring,
            limit,
            &audit(EventType::ApiKeyCreated, &expiring.tenant_id),
        )
        .await
        .unwrap();
    let third = project_key(&t, "c", 10);
    let err = f
        .store
        .insert_key(
            &third,
            limit,
            &audit(EventType::ApiKeyCreated, &third.tenant_id),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyLimitReached), "{err:?}");
    assert_eq!(
        f.store.find_key(&third.id).await.unwrap(),
        None,
        "nothing written"
    );
    // Admin keys and unlimited inserts are not counted against it.
    f.store
        .insert_key(
            &third,
            None,
            &audit(EventType::ApiKeyCreated, &third.tenant_id),
        )
        .await
        .unwrap();
    // Expired and revoked keys free their slot.
    let later = Some(KeyLimit {
        max_active: 3,
        now: 200,
    });
    f.store
        .revoke_key(
            &t.tenant.id,
            &first.id,
            120,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap();
    f.store
        .insert_key(
            &project_key(&t, "d", 20),
            later,
            &audit(
                EventType::ApiKeyCreated,
                &project_key(&t, "d", 20).tenant_id,
            ),
        )
        .await
        .unwrap();
    f.store
        .insert_key(
            &project_key(&t, "e", 20),
            later,
            &audit(
                EventType::ApiKeyCreated,
                &project_key(&t, "e", 20).tenant_id,
            ),
        )
        .await
        .unwrap();
    let err = f
        .store
        .insert_key(
            &project_key(&t, "f", 20),
            later,
            &audit(
                EventType::ApiKeyCreated,
                &project_key(&t, "f", 20).tenant_id,
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyLimitReached), "{err:?}");
}

async fn projects_are_created_listed_renamed_and_archived(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let sandbox = Project {
        id: "proj_sandbox".into(),
        name: "Sandbox".into(),
        ..t.project.clone()
    };
    f.store
        .create_project(
            &sandbox,
            &audit(EventType::ProjectCreated, &sandbox.tenant_id),
        )
        .await
        .unwrap();
    let listed = f
        .store
        .list_projects(&t.tenant.id, &page(10))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    let renamed = f
        .store
        .rename_project(
            &t.tenant.id,
            &sandbox.id,
            "Test",
            &audit(EventType::ProjectUpdated, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "Test");
    let archived = f
        .store
        .archive_project(
            &t.tenant.id,
            &t.project.id,
            &audit(EventType::ProjectArchived, &t.tenant.id),
        )
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
    f.store.create_tenant(&other, &[]).await.unwrap();
    assert_eq!(
        f.store
            .rename_project(
                &other.tenant.id,
                &sandbox.id,
                "x",
                &audit(EventType::ProjectUpdated, &other.tenant.id)
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store
            .archive_project(
                &other.tenant.id,
                &sandbox.id,
                &audit(EventType::ProjectArchived, &other.tenant.id)
            )
            .await
            .unwrap(),
        None
    );
}

async fn project_key_in(f: &Fixture, t: &NewTenant) -> tollgate_core::key::KeyDigest {
    let key = project_key(t, "k", 5);
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
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

/// An admin key of `member`, named "script".
fn admin_key(t: &NewTenant, member: &Member) -> ApiKey {
    let spec = KeySpec {
        name: "script".into(),
        ..KeySpec::default()
    };
    ApiKey::issue(
        &prefixes(),
        &t.tenant.id,
        KeyOwner::Member(member.id.clone()),
        spec,
        None,
        3,
    )
    .0
}

async fn the_last_owner_can_be_neither_demoted_nor_removed(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let err = f
        .store
        .set_role(
            &t.tenant.id,
            &t.owner.id,
            Role::Admin,
            &audit(EventType::MemberRoleChanged, &t.tenant.id),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LastOwner), "{err:?}");
    let err = f
        .store
        .remove_member(
            &t.tenant.id,
            &t.owner.id,
            5,
            &audit(EventType::MemberRemoved, &t.tenant.id),
        )
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
        .add_member(
            &member(&t, "user_b", "b@x.io", Role::Owner),
            &audit(
                EventType::MemberAdded,
                &member(&t, "user_b", "b@x.io", Role::Owner).tenant_id,
            ),
        )
        .await
        .unwrap();
    let demoted = f
        .store
        .set_role(
            &t.tenant.id,
            &t.owner.id,
            Role::Member,
            &audit(EventType::MemberRoleChanged, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(demoted.role, Role::Member);
    assert_eq!(
        f.store
            .set_role(
                &t.tenant.id,
                "user_missing",
                Role::Admin,
                &audit(EventType::MemberRoleChanged, &t.tenant.id)
            )
            .await
            .unwrap(),
        None
    );
}

async fn removing_a_member_revokes_its_admin_keys_and_frees_its_email(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let admin = member(&t, "user_admin", "admin@x.io", Role::Admin);
    f.store
        .add_member(&admin, &audit(EventType::MemberAdded, &admin.tenant_id))
        .await
        .unwrap();
    let duplicate = member(&t, "user_dup", "admin@x.io", Role::Member);
    assert!(matches!(
        f.store
            .add_member(
                &duplicate,
                &audit(EventType::MemberAdded, &duplicate.tenant_id)
            )
            .await
            .unwrap_err(),
        StoreError::Conflict(_)
    ));
    let key = admin_key(&t, &admin);
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    let removed = f
        .store
        .remove_member(
            &t.tenant.id,
            &admin.id,
            9,
            &audit(EventType::MemberRemoved, &t.tenant.id),
        )
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
    f.store
        .add_member(
            &duplicate,
            &audit(EventType::MemberAdded, &duplicate.tenant_id),
        )
        .await
        .unwrap();
    assert_eq!(
        f.store
            .remove_member(
                &t.tenant.id,
                &admin.id,
                10,
                &audit(EventType::MemberRemoved, &t.tenant.id)
            )
            .await
            .unwrap(),
        None
    );
}

async fn a_members_password_is_set_and_cleared_with_its_event(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let other = new_tenant("Other", 1);
    f.store.create_tenant(&other, &[]).await.unwrap();
    let event = || audit(EventType::MemberPasswordChanged, &t.tenant.id);
    let set = f
        .store
        .set_password(
            &t.tenant.id,
            &t.owner.id,
            Some("$argon2id$v=19$x"),
            &event(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.password_hash.as_deref(), Some("$argon2id$v=19$x"));
    assert_eq!(
        f.store
            .get_member(&t.tenant.id, &t.owner.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$argon2id$v=19$x")
    );
    let cleared = f
        .store
        .set_password(&t.tenant.id, &t.owner.id, None, &event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.password_hash, None);
    // Another tenant's member, or none: nothing changes, no event.
    assert_eq!(
        f.store
            .set_password(&other.tenant.id, &t.owner.id, Some("h"), &event())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store
            .set_password(&t.tenant.id, "user_nope", Some("h"), &event())
            .await
            .unwrap(),
        None
    );
    let events = f
        .store
        .audit_events(&tollgate_core::audit::AuditQuery {
            tenant_id: t.tenant.id.clone(),
            kind: Some(EventType::MemberPasswordChanged),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.items.len(), 2, "one per change that happened");
}

async fn an_operator_changes_plan_and_status(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let update = TenantUpdate {
        plan: Some("enterprise".into()),
        status: Some(TenantStatus::Suspended),
        ..TenantUpdate::default()
    };
    let changed = f
        .store
        .update_tenant(&t.tenant.id, &update, &by_operator())
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
        .update_tenant(&t.tenant.id, &reactivate, &by_operator())
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
        f.store
            .update_tenant("org_missing", &update, &by_operator())
            .await
            .unwrap(),
        None
    );
}

async fn an_operator_overrides_and_clears_a_tenants_rate_limits(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let set = TenantUpdate {
        requests_per_minute: Some(Some(60)),
        tokens_per_minute: Some(Some(6_000)),
        ..TenantUpdate::default()
    };
    let changed = f
        .store
        .update_tenant(&t.tenant.id, &set, &by_operator())
        .await
        .unwrap()
        .unwrap();
    let limits = tollgate_core::tenant::RateLimits {
        requests_per_minute: Some(60),
        tokens_per_minute: Some(6_000),
    };
    assert_eq!(changed.rate_limits, limits);
    assert_eq!(
        f.store
            .get_tenant(&t.tenant.id)
            .await
            .unwrap()
            .unwrap()
            .rate_limits,
        limits
    );
    let principal = f
        .store
        .principal_by_digest(&t.admin_key.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.tenant_rate_limits, limits);
    // One left as it is, the other back to the plan's.
    let clear = TenantUpdate {
        tokens_per_minute: Some(None),
        ..TenantUpdate::default()
    };
    let changed = f
        .store
        .update_tenant(&t.tenant.id, &clear, &by_operator())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        changed.rate_limits,
        tollgate_core::tenant::RateLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
        }
    );
}

fn settlement(t: &NewTenant, key: &ApiKey, model: &str, cost: i64, at: i64) -> Settlement {
    Settlement {
        request_id: format!("req_{at}_{cost}"),
        tenant_id: t.tenant.id.clone(),
        project_id: t.project.id.clone(),
        key_id: key.id.clone(),
        key_last4: key.last4.clone(),
        model: model.into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        cost: Micros(cost),
        at,
        status: 200,
        latency_ms: 25,
        origin: Origin::new(
            Some(format!("req_{at}_{cost}")),
            Some("10.1.2.3".into()),
            Some("sdk/1.0"),
        ),
        spend_period: key.spend_limit.map(|l| l.period),
        idempotency: None,
    }
}

async fn grants_and_charges_keep_ledger_and_balance_in_step(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    assert_eq!(
        f.store.balance(&t.tenant.id).await.unwrap(),
        Balance::default()
    );
    assert_eq!(
        f.store
            .grant(
                "org_missing",
                Micros(5),
                None,
                2,
                &audit(EventType::CreditsGranted, "org_missing")
            )
            .await
            .unwrap(),
        None
    );
    let grant = f
        .store
        .grant(
            &t.tenant.id,
            Micros(1_000),
            Some("welcome"),
            2,
            &audit(EventType::CreditsGranted, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (grant.kind, grant.amount, grant.balance_after),
        (LedgerKind::Grant, Micros(1_000), Micros(1_000))
    );
    let key = project_key(&t, "k", 3);
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    let charged = f
        .store
        .settle(
            "node_a",
            &[
                settlement(&t, &key, "fast", 600, 10),
                settlement(&t, &key, "echo", 0, 11),
                settlement(&t, &key, "fast", 900, 12),
            ],
            &[],
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

async fn usage_is_grouped_by_any_of_day_model_project_and_key(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    f.store
        .grant(
            &t.tenant.id,
            Micros(1_000_000),
            None,
            1,
            &audit(EventType::CreditsGranted, &t.tenant.id),
        )
        .await
        .unwrap();
    let (a, b) = (project_key(&t, "a", 2), project_key(&t, "b", 2));
    f.store
        .insert_key(&a, None, &audit(EventType::ApiKeyCreated, &a.tenant_id))
        .await
        .unwrap();
    f.store
        .insert_key(&b, None, &audit(EventType::ApiKeyCreated, &b.tenant_id))
        .await
        .unwrap();
    let day = 86_400;
    f.store
        .settle(
            "node_a",
            &[
                settlement(&t, &a, "fast", 100, day + 5),
                settlement(&t, &a, "echo", 0, day + 6),
                settlement(&t, &b, "fast", 200, 2 * day + 7),
            ],
            &[],
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
        account: Account::Tenant(tenant_id),
        node_id,
        need: Micros(need),
        want: Micros(want),
        now,
        expires_at: now + 30,
    }
}

async fn leases_never_reserve_more_than_the_balance_and_charges_come_off_them(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let tenant = t.tenant.id.as_str();
    f.store
        .grant(
            tenant,
            Micros(1_600),
            None,
            2,
            &audit(EventType::CreditsGranted, tenant),
        )
        .await
        .unwrap();
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
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    let charged = f
        .store
        .settle("node_a", &[settlement(&t, &key, "fast", 150, 4)], &[])
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
        .release_lease(Account::Tenant(tenant), "node_a", Micros(40))
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
        .release_lease(Account::Tenant(tenant), "node_a", Micros(i64::MAX))
        .await
        .unwrap();
    let last = f
        .store
        .lease(&lease_request(tenant, "node_c", 0, 0, 50))
        .await
        .unwrap();
    assert_eq!(last.free, Micros(1_450));
}

on_every_backend!(
    a_tenant_is_written_whole_and_read_back,
    another_tenants_objects_are_invisible,
    a_failed_tenant_creation_leaves_nothing_behind,
    keys_round_trip_with_their_networks_and_models,
    revoking_keeps_the_first_time,
    lists_page_oldest_first_with_a_cursor,
    migrations_are_counted_once_and_data_survives_reopening,
    the_key_limit_counts_active_keys_of_active_projects,
    projects_are_created_listed_renamed_and_archived,
    the_last_owner_can_be_neither_demoted_nor_removed,
    removing_a_member_revokes_its_admin_keys_and_frees_its_email,
    a_members_password_is_set_and_cleared_with_its_event,
    an_operator_changes_plan_and_status,
    an_operator_overrides_and_clears_a_tenants_rate_limits,
    grants_and_charges_keep_ledger_and_balance_in_step,
    usage_is_grouped_by_any_of_day_model_project_and_key,
);

// Concurrency: rules that SQLite's single writer made atomic must hold with many writers at once, as on PostgreSQL
// under READ COMMITTED with several nodes. Each case races two store handles (two pools: two nodes).

/// `n` calls of `call(i)` at once, alternating between the two handles.
async fn race<T, F, Fut>(stores: [&Arc<dyn Store>; 2], n: usize, call: F) -> Vec<T>
where
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    join_all((0..n).map(|i| call(Arc::clone(stores[i % 2]), i))).await
}

async fn concurrent_key_creations_never_exceed_the_plan(f: Fixture) {
    let node_b = f.another_node().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let limit = Some(KeyLimit {
        max_active: 5,
        now: 10,
    });
    let keys: Vec<ApiKey> = (0..20)
        .map(|i| project_key(&t, &format!("k{i}"), 2))
        .collect();
    let results = race([&f.store, &node_b], keys.len(), |store, i| {
        let key = keys[i].clone();
        async move {
            store
                .insert_key(
                    &key,
                    limit,
                    &audit(EventType::ApiKeyCreated, &key.tenant_id),
                )
                .await
        }
    })
    .await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 5, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(StoreError::KeyLimitReached))),
        "{results:?}"
    );
    let listed = f
        .store
        .list_keys(
            &t.tenant.id,
            &KeyScope::Project(t.project.id.clone()),
            &page(100),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 5);
}

async fn owners_demoting_or_removing_each_other_at_once_leave_one_owner(f: Fixture) {
    let node_b = f.another_node().await;
    for round in 0..10 {
        let t = new_tenant(&format!("Acme {round}"), 1);
        f.store.create_tenant(&t, &[]).await.unwrap();
        let second = member(&t, &format!("user_second_{round}"), "b@x.io", Role::Owner);
        f.store
            .add_member(&second, &audit(EventType::MemberAdded, &second.tenant_id))
            .await
            .unwrap();
        let owners = [t.owner.id.clone(), second.id.clone()];
        let remove = round % 2 == 1;
        let results = race([&f.store, &node_b], 2, |store, i| {
            let (tenant, member) = (t.tenant.id.clone(), owners[i].clone());
            async move {
                if remove {
                    store
                        .remove_member(
                            &tenant,
                            &member,
                            5,
                            &audit(EventType::MemberRemoved, &tenant),
                        )
                        .await
                        .map(|_| ())
                } else {
                    store
                        .set_role(
                            &tenant,
                            &member,
                            Role::Admin,
                            &audit(EventType::MemberRoleChanged, &tenant),
                        )
                        .await
                        .map(|_| ())
                }
            }
        })
        .await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::LastOwner))),
            "round {round}: {results:?}"
        );
        let members = f.store.list_members(&t.tenant.id, &page(10)).await.unwrap();
        let left = members
            .items
            .iter()
            .filter(|m| m.role == Role::Owner)
            .count();
        assert_eq!(left, 1, "round {round}: {:?}", members.items);
    }
}

async fn nodes_settling_for_one_tenant_at_once_agree_with_the_ledger(f: Fixture) {
    let node_b = f.another_node().await;
    let (a, b) = (new_tenant("A", 1), new_tenant("B", 1));
    for t in [&a, &b] {
        f.store.create_tenant(t, &[]).await.unwrap();
        f.store
            .grant(
                &t.tenant.id,
                Micros(1_000),
                None,
                1,
                &audit(EventType::CreditsGranted, &t.tenant.id),
            )
            .await
            .unwrap();
    }
    let (ka, kb) = (project_key(&a, "a", 2), project_key(&b, "b", 2));
    f.store
        .insert_key(&ka, None, &audit(EventType::ApiKeyCreated, &ka.tenant_id))
        .await
        .unwrap();
    f.store
        .insert_key(&kb, None, &audit(EventType::ApiKeyCreated, &kb.tenant_id))
        .await
        .unwrap();
    // 40 batches asking 1,800 µ¢ of each tenant, while 5 grants of 100 µ¢ each come in: 1,500 µ¢ to spend each.
    // Batches name both tenants, in opposite orders on the two nodes, with a free request first, so that locks taken
    // in batch order would deadlock; grants lock the tenant while settlements insert rows that refer to it.
    let settles = race([&f.store, &node_b], 40, |store, i| {
        let (first, second) = if i % 2 == 0 {
            ((&a, &ka), (&b, &kb))
        } else {
            ((&b, &kb), (&a, &ka))
        };
        let batch = vec![
            settlement(second.0, second.1, "echo", 0, 100 + i as i64),
            settlement(first.0, first.1, "fast", 30, 100 + i as i64),
            settlement(second.0, second.1, "fast", 30, 100 + i as i64),
            settlement(first.0, first.1, "fast", 30, 200 + i as i64),
        ];
        async move { store.settle("node_a", &batch, &[]).await }
    });
    let grants = race([&node_b, &f.store], 10, |store, i| {
        let tenant = [&a, &b][i % 2].tenant.id.clone();
        async move {
            store
                .grant(
                    &tenant,
                    Micros(100),
                    None,
                    50,
                    &audit(EventType::CreditsGranted, &tenant),
                )
                .await
        }
    });
    let (results, granted) = tokio::join!(settles, grants);
    assert!(
        granted.iter().all(|g| matches!(g, Ok(Some(_)))),
        "{granted:?}"
    );
    let batches: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let mut total_spent = 0;
    // The last batch of each parity is the latest use of its first tenant's key.
    for (t, key, last_used) in [(&a, &ka, 238), (&b, &kb, 239)] {
        let balance = f.store.balance(&t.tenant.id).await.unwrap();
        let used = f.store.find_key(&key.id).await.unwrap().unwrap();
        assert_eq!(used.last_used_at, Some(last_used), "the latest use wins");
        let ledger = f.store.ledger(&t.tenant.id, &page(100)).await.unwrap();
        assert!(!ledger.has_more);
        let sum: i64 = ledger.items.iter().map(|e| e.amount.get()).sum();
        assert_eq!(
            balance.balance,
            Micros(sum),
            "the balance is the ledger's sum"
        );
        let granted: i64 = ledger
            .items
            .iter()
            .filter(|e| e.kind == LedgerKind::Grant)
            .map(|e| e.amount.get())
            .sum();
        assert_eq!(granted, 1_500, "every grant is in the ledger once");
        let spent = granted - balance.balance.get();
        assert!(ledger.items.iter().all(|e| e.balance_after >= Micros(0)));
        // Newest first: each entry's balance is the one after it, plus the entry's own amount.
        for pair in ledger.items.windows(2) {
            assert_eq!(
                pair[0].balance_after.get(),
                pair[1].balance_after.get() + pair[0].amount.get(),
                "{ledger:?}"
            );
        }
        let reported: Vec<Balance> = batches
            .iter()
            .flat_map(|b| b.balances.iter())
            .filter(|(tenant, _)| *tenant == t.tenant.id)
            .map(|(_, balance)| *balance)
            .collect();
        let mut versions: Vec<i64> = reported.iter().map(|b| b.version).collect();
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(
            versions.len(),
            reported.len(),
            "each batch that charged saw the change before it"
        );
        assert_eq!(
            balance.version,
            1 + 5 + reported.len() as i64,
            "one version per grant and per charging batch"
        );
        let usage = f
            .store
            .usage(&UsageQuery {
                tenant_id: t.tenant.id.clone(),
                project_id: None,
                since: 0,
                until: 1_000,
                group: UsageGrouping::default(),
            })
            .await
            .unwrap();
        assert_eq!(
            usage[0].cost,
            Micros(spent),
            "usage records what was charged"
        );
        total_spent += spent;
        // Every settlement left its event, with what it charged, in one intact chain (40 batches of two each).
        let events = request_events(f.store.as_ref(), &t.tenant.id).await;
        assert_eq!(events.len(), 80);
        let in_events: i64 = events.iter().filter_map(|e| e.cost).map(Micros::get).sum();
        assert_eq!(in_events, spent, "the events say what was charged");
        assert!(verify(f.store.as_ref(), &t.tenant.id).await.is_ok());
        // What is left can still be spent, to the last micro-cent and no further.
        let rest = f
            .store
            .settle("node_a", &[settlement(t, key, "fast", 10_000, 300)], &[])
            .await
            .unwrap();
        assert_eq!(rest.charged, vec![balance.balance]);
        assert_eq!(
            f.store.balance(&t.tenant.id).await.unwrap().balance,
            Micros(0)
        );
    }
    let charged: i64 = batches
        .iter()
        .flat_map(|b| b.charged.iter())
        .map(|c| c.get())
        .sum();
    assert_eq!(
        charged, total_spent,
        "what the batches report is what was written"
    );
}

on_every_backend!(
    concurrent_key_creations_never_exceed_the_plan,
    owners_demoting_or_removing_each_other_at_once_leave_one_owner,
    nodes_settling_for_one_tenant_at_once_agree_with_the_ledger,
);

on_every_backend!(leases_never_reserve_more_than_the_balance_and_charges_come_off_them);

// Spend caps: leases on a key's remaining cap, by the tenant leases' rules; its spending moves with each charge, in
// the charge's transaction, per UTC month or for good.

/// 2024-02-01 00:00:00 UTC and 2024-03-01 00:00:00 UTC.
const FEB: i64 = 1_706_745_600;
const MAR: i64 = 1_709_251_200;

/// A lease request on the key `key_id`.
fn key_lease<'a>(
    key_id: &'a str,
    node_id: &'a str,
    need: i64,
    want: i64,
    now: i64,
) -> LeaseRequest<'a> {
    LeaseRequest {
        account: Account::Key(key_id),
        ..lease_request("", node_id, need, want, now)
    }
}

/// A project key of `t` with a cap of `cap` µ¢ per `period`, written.
/// A tenant with 10,000 cents and a key capped at 1,600 micro-cents a month, as the cap cases start from.
async fn funded_with_a_capped_key(f: &Fixture) -> (NewTenant, ApiKey) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let tenant = t.tenant.id.as_str();
    f.store
        .grant(
            tenant,
            Micros(1_000_000),
            None,
            2,
            &audit(EventType::CreditsGranted, tenant),
        )
        .await
        .unwrap();
    let key = capped_key(f, &t, 1_600, SpendPeriod::Month).await;
    (t, key)
}

async fn capped_key(f: &Fixture, t: &NewTenant, cap: i64, period: SpendPeriod) -> ApiKey {
    let mut key = project_key(t, "capped", FEB);
    key.spend_limit = Some(SpendLimit {
        amount: Micros(cap),
        period,
    });
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &t.tenant.id))
        .await
        .unwrap();
    key
}

async fn spent_of(f: &Fixture, key: &ApiKey) -> KeySpent {
    f.store.find_key(&key.id).await.unwrap().unwrap().spent
}

async fn key_leases_never_reserve_more_than_the_cap_less_spending_and_charges_move_both(
    f: Fixture,
) {
    let (t, key) = funded_with_a_capped_key(&f).await;
    let tenant = t.tenant.id.as_str();
    let now = FEB + 100;
    // Node a needs 100 and would like 1,000: its need and a sixteenth of the rest, as for a tenant.
    let a = f
        .store
        .lease(&key_lease(&key.id, "node_a", 100, 1_000, now))
        .await
        .unwrap();
    assert_eq!(
        (a.granted, a.lease, a.free, a.spent),
        (Micros(193), Micros(193), Micros(1_407), Micros::ZERO)
    );
    // Node b cannot have more than is free.
    let refused = f
        .store
        .lease(&key_lease(&key.id, "node_b", 1_408, 1_408, now))
        .await
        .unwrap();
    assert_eq!(
        (refused.granted, refused.free),
        (Micros::ZERO, Micros(1_407))
    );
    // A charge of node a adds to the key's spending and comes off a's lease on the key: nothing becomes free.
    let charged = f
        .store
        .settle("node_a", &[settlement(&t, &key, "fast", 150, now + 1)], &[])
        .await
        .unwrap();
    assert_eq!(charged.charged, vec![Micros(150)]);
    assert_eq!(
        spent_of(&f, &key).await,
        KeySpent {
            period_start: FEB,
            amount: Micros(150)
        }
    );
    let probe = f
        .store
        .lease(&key_lease(&key.id, "node_c", 0, 0, now + 1))
        .await
        .unwrap();
    assert_eq!(
        (probe.free, probe.spent),
        (Micros(1_407), Micros(150)),
        "1,600 - 150 - 43"
    );
    // All that is free, b may have; then nothing is.
    let b = f
        .store
        .lease(&key_lease(&key.id, "node_b", 1_407, 1_407, now + 1))
        .await
        .unwrap();
    assert_eq!((b.granted, b.free), (Micros(1_407), Micros::ZERO));
    // An uncapped key's requests move no spending, and its key leases nothing.
    let plain = project_key(&t, "plain", FEB);
    f.store
        .insert_key(&plain, None, &audit(EventType::ApiKeyCreated, tenant))
        .await
        .unwrap();
    f.store
        .settle(
            "node_a",
            &[settlement(&t, &plain, "fast", 90, now + 2)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(spent_of(&f, &plain).await, KeySpent::default());
    let none = f
        .store
        .lease(&key_lease(&plain.id, "node_a", 1, 1, now + 2))
        .await
        .unwrap();
    assert_eq!((none.granted, none.free), (Micros::ZERO, Micros::ZERO));

    // March: February's spending is past, and the leases (never renewed) have expired: the whole cap is free.
    let march = f
        .store
        .lease(&key_lease(&key.id, "node_c", 0, 0, MAR + 10))
        .await
        .unwrap();
    assert_eq!((march.free, march.spent), (Micros(1_600), Micros::ZERO));
    f.store
        .settle(
            "node_a",
            &[settlement(&t, &key, "fast", 100, MAR + 20)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        spent_of(&f, &key).await,
        KeySpent {
            period_start: MAR,
            amount: Micros(100)
        }
    );
    // A February charge settled late counts toward February, which is over: March's spending does not move.
    f.store
        .settle("node_a", &[settlement(&t, &key, "fast", 70, now + 50)], &[])
        .await
        .unwrap();
    assert_eq!(spent_of(&f, &key).await.amount, Micros(100));

    // A `total` cap never starts afresh: February's and March's charges add up.
    let mut total = project_key(&t, "total", FEB);
    total.spend_limit = Some(SpendLimit {
        amount: Micros(1_000),
        period: SpendPeriod::Total,
    });
    f.store
        .insert_key(&total, None, &audit(EventType::ApiKeyCreated, tenant))
        .await
        .unwrap();
    for at in [now, MAR + 30] {
        f.store
            .settle("node_a", &[settlement(&t, &total, "fast", 300, at)], &[])
            .await
            .unwrap();
    }
    let left = f
        .store
        .lease(&key_lease(&total.id, "node_a", 0, 0, MAR + 40))
        .await
        .unwrap();
    assert_eq!((left.free, left.spent), (Micros(400), Micros(600)));
}

async fn a_cap_change_drops_the_keys_leases_and_a_new_cap_counts_the_periods_usage(f: Fixture) {
    let (t, key) = funded_with_a_capped_key(&f).await;
    let now = FEB + 100;
    f.store
        .lease(&key_lease(&key.id, "node_a", 1_000, 1_000, now))
        .await
        .unwrap();
    f.store
        .settle("node_a", &[settlement(&t, &key, "fast", 200, now)], &[])
        .await
        .unwrap();
    let change = |cap: Option<(i64, SpendPeriod)>| KeyChanges {
        spend_limit: Some(cap.map(|(amount, period)| SpendLimit {
            amount: Micros(amount),
            period,
        })),
        ..KeyChanges::default()
    };
    let update = |changes: KeyChanges| {
        let store = Arc::clone(&f.store);
        let (tenant, id) = (t.tenant.id.clone(), key.id.clone());
        async move {
            store
                .update_key(
                    &tenant,
                    &id,
                    &changes,
                    now + 1,
                    &audit(EventType::ApiKeyUpdated, &tenant),
                )
                .await
                .unwrap()
                .unwrap()
        }
    };
    // Lowered below what node a leased: the lease is gone, so only the new cap less the spending is free.
    let lowered = update(change(Some((500, SpendPeriod::Month)))).await;
    assert_eq!(lowered.spent_at(now + 1), Micros(200));
    let probe = f
        .store
        .lease(&key_lease(&key.id, "node_b", 0, 0, now + 1))
        .await
        .unwrap();
    assert_eq!((probe.free, probe.spent), (Micros(300), Micros(200)));
    // Cleared, the key spends uncounted; a cap set again counts the month's usage, both charges.
    update(change(None)).await;
    f.store
        .settle(
            "node_a",
            &[settlement(
                &t,
                &{
                    let mut k = key.clone();
                    k.spend_limit = None;
                    k
                },
                "fast",
                50,
                now,
            )],
            &[],
        )
        .await
        .unwrap();
    let again = update(change(Some((500, SpendPeriod::Month)))).await;
    assert_eq!(
        again.spent,
        KeySpent {
            period_start: FEB,
            amount: Micros(250)
        }
    );
    // Another period counts from its own start: `total` takes all of the key's usage.
    let total = update(change(Some((500, SpendPeriod::Total)))).await;
    assert_eq!(
        total.spent,
        KeySpent {
            period_start: 0,
            amount: Micros(250)
        }
    );
}

on_every_backend!(
    key_leases_never_reserve_more_than_the_cap_less_spending_and_charges_move_both,
    a_cap_change_drops_the_keys_leases_and_a_new_cap_counts_the_periods_usage,
);

// The change log: every change that makes a cached principal wrong is logged by the store itself, in the change's
// transaction, whichever handle (node, CLI) makes it; nothing else is.

/// Long enough for any change of a case to be inside it.
const RECENT: Duration = Duration::from_secs(60);

/// What the log says changed within [`RECENT`], oldest first, as `store` reads it.
async fn logged(store: &Arc<dyn Store>) -> Vec<Changed> {
    let changes = store.recent_changes(RECENT).await.unwrap();
    let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "in id order, each once");
    changes.into_iter().map(|c| c.changed).collect()
}

fn suspension() -> TenantUpdate {
    TenantUpdate {
        status: Some(TenantStatus::Suspended),
        ..TenantUpdate::default()
    }
}

async fn revoking_a_key_logs_its_digest_and_settling_logs_nothing(f: Fixture) {
    let cli = f.another_node().await;
    let (t, key) = funded_with_a_key(f.store.as_ref()).await;
    assert_eq!(
        logged(&f.store).await,
        vec![],
        "creations concern no cached key"
    );
    // Settling writes the key's last_used_at, on every batch: that must never reach the log.
    f.store
        .settle("node_a", &[settlement(&t, &key, "fast", 10, 4)], &[])
        .await
        .unwrap();
    let used = f.store.find_key(&key.id).await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(4));
    assert_eq!(logged(&f.store).await, vec![]);
    // Revoked through another handle, as the CLI does: every handle reads it.
    cli.revoke_key(
        &t.tenant.id,
        &key.id,
        5,
        &audit(EventType::ApiKeyRevoked, &t.tenant.id),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(logged(&f.store).await, vec![Changed::Key(key.digest)]);
    assert_eq!(logged(&cli).await, vec![Changed::Key(key.digest)]);
    // Revoking again changes nothing (the first time is kept), so it logs nothing.
    f.store
        .revoke_key(
            &t.tenant.id,
            &key.id,
            6,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged(&f.store).await, vec![Changed::Key(key.digest)]);
}

async fn tenant_project_and_member_changes_log_their_tenant(f: Fixture) {
    let t = new_tenant("Acme", 1);
    let other = new_tenant("Other", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    f.store.create_tenant(&other, &[]).await.unwrap();
    let tenant = || Changed::Tenant(t.tenant.id.clone());
    let admin = member(&t, "user_admin", "admin@x.io", Role::Admin);
    f.store
        .add_member(&admin, &audit(EventType::MemberAdded, &admin.tenant_id))
        .await
        .unwrap();
    f.store
        .set_role(
            &t.tenant.id,
            &admin.id,
            Role::Member,
            &audit(EventType::MemberRoleChanged, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged(&f.store).await, vec![tenant()], "a role change");
    // The same role again, a rename, a no-op update: nothing a principal carries changed.
    f.store
        .set_role(
            &t.tenant.id,
            &admin.id,
            Role::Member,
            &audit(EventType::MemberRoleChanged, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    f.store
        .rename_project(
            &t.tenant.id,
            &t.project.id,
            "Renamed",
            &audit(EventType::ProjectUpdated, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    f.store
        .update_tenant(&t.tenant.id, &TenantUpdate::default(), &by_operator())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged(&f.store).await, vec![tenant()]);
    f.store
        .archive_project(
            &t.tenant.id,
            &t.project.id,
            &audit(EventType::ProjectArchived, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    f.store
        .archive_project(
            &t.tenant.id,
            &t.project.id,
            &audit(EventType::ProjectArchived, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        logged(&f.store).await,
        vec![tenant(), tenant()],
        "archived once"
    );
    let plan = TenantUpdate {
        plan: Some("enterprise".into()),
        ..TenantUpdate::default()
    };
    f.store
        .update_tenant(&t.tenant.id, &plan, &by_operator())
        .await
        .unwrap()
        .unwrap();
    f.store
        .update_tenant(&t.tenant.id, &suspension(), &by_operator())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        logged(&f.store).await,
        vec![tenant(); 4],
        "a plan, a status"
    );
    // A removal: the member (its tenant) and each admin key it revokes (its digest), in one transaction.
    let key = admin_key(&t, &admin);
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    f.store
        .remove_member(
            &t.tenant.id,
            &admin.id,
            9,
            &audit(EventType::MemberRemoved, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    let mut expected = vec![tenant(); 5];
    expected.push(Changed::Key(key.digest));
    assert_eq!(logged(&f.store).await, expected);
    // A refused change (the last owner) logs nothing, and nothing names the other tenant.
    assert!(matches!(
        f.store
            .set_role(
                &t.tenant.id,
                &t.owner.id,
                Role::Admin,
                &audit(EventType::MemberRoleChanged, &t.tenant.id)
            )
            .await,
        Err(StoreError::LastOwner)
    ));
    assert_eq!(logged(&f.store).await, expected);
}

async fn changes_leave_the_window_and_are_pruned_by_the_store_clock(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    f.store
        .revoke_key(
            &t.tenant.id,
            &t.admin_key.id,
            2,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    let first = f.store.recent_changes(RECENT).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    f.store
        .update_tenant(&t.tenant.id, &suspension(), &by_operator())
        .await
        .unwrap()
        .unwrap();
    // A 300 ms window holds only the change made since the sleep, by the store's clock.
    let recent = f
        .store
        .recent_changes(Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        recent.iter().map(|c| &c.changed).collect::<Vec<_>>(),
        vec![&Changed::Tenant(t.tenant.id.clone())]
    );
    assert!(
        recent[0].at_ms - first[0].at_ms >= 550,
        "{first:?} {recent:?}"
    );
    // Pruning by age: an hour removes nothing; 300 ms removes the first change, and only it.
    assert_eq!(
        f.store
            .prune_changes(Duration::from_secs(3_600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.store
            .prune_changes(Duration::from_millis(300))
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.store.recent_changes(RECENT).await.unwrap(), recent);
}

on_every_backend!(
    revoking_a_key_logs_its_digest_and_settling_logs_nothing,
    tenant_project_and_member_changes_log_their_tenant,
    changes_leave_the_window_and_are_pruned_by_the_store_clock,
);

/// PostgreSQL hands out ids when rows are inserted, not when they commit: a change whose transaction commits after
/// a later one's has the lower id. It is still read (a reader reading past the last id it saw would skip it).
#[tokio::test]
async fn a_change_that_commits_late_is_still_read_postgres() {
    use sqlx::{Connection, Executor};
    let Some(db) = ScratchDatabase::from_env().await.unwrap() else {
        return;
    };
    let store = tollgate_store::connect(db.url()).await.unwrap();
    let t = new_tenant("Acme", 1);
    store.create_tenant(&t, &[]).await.unwrap();
    let (early, late) = (project_key(&t, "early", 2), project_key(&t, "late", 2));
    store
        .insert_key(
            &early,
            None,
            &audit(EventType::ApiKeyCreated, &early.tenant_id),
        )
        .await
        .unwrap();
    store
        .insert_key(
            &late,
            None,
            &audit(EventType::ApiKeyCreated, &late.tenant_id),
        )
        .await
        .unwrap();
    let mut slow = sqlx::PgConnection::connect(db.url()).await.unwrap();
    slow.execute("BEGIN").await.unwrap();
    slow.execute(sqlx::query("UPDATE api_keys SET revoked_at = 3 WHERE id = $1").bind(&early.id))
        .await
        .unwrap();
    store
        .revoke_key(
            &t.tenant.id,
            &late.id,
            4,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged(&store).await, vec![Changed::Key(late.digest)]);
    slow.execute("COMMIT").await.unwrap();
    let changes = store.recent_changes(RECENT).await.unwrap();
    let (early_id, late_id) = (changes[0].id, changes[1].id);
    assert_eq!(
        changes.iter().map(|c| &c.changed).collect::<Vec<_>>(),
        vec![&Changed::Key(early.digest), &Changed::Key(late.digest)]
    );
    assert!(early_id < late_id, "the late commit has the lower id");
}

/// Waits for `signal` to fire, for at most 5 s.
async fn signalled(signal: &mut Box<dyn ChangeSignal>) {
    tokio::time::timeout(Duration::from_secs(5), signal.wait())
        .await
        .unwrap()
        .unwrap();
}

/// PostgreSQL wakes listeners when a change commits (and not when a settlement does); SQLite has no signal.
async fn a_change_wakes_the_signal_where_there_is_one(f: Fixture) {
    let signal = f.store.change_signal().await.unwrap();
    let Some(mut signal) = signal else {
        assert!(
            matches!(f.db, Database::Sqlite { .. }),
            "PostgreSQL signals"
        );
        return;
    };
    let cli = f.another_node().await;
    let t = new_tenant("Acme", 1);
    cli.create_tenant(&t, &[]).await.unwrap();
    cli.grant(
        &t.tenant.id,
        Micros(1_000),
        None,
        2,
        &audit(EventType::CreditsGranted, &t.tenant.id),
    )
    .await
    .unwrap();
    let key = project_key(&t, "k", 3);
    cli.insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    cli.settle("node_a", &[settlement(&t, &key, "fast", 10, 4)], &[])
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), signal.wait()).await;
    assert!(quiet.is_err(), "creations and settlements notify nothing");
    cli.revoke_key(
        &t.tenant.id,
        &key.id,
        5,
        &audit(EventType::ApiKeyRevoked, &t.tenant.id),
    )
    .await
    .unwrap()
    .unwrap();
    signalled(&mut signal).await;
}

on_every_backend!(a_change_wakes_the_signal_where_there_is_one);

/// A listener whose connection is cut (a restarted server, a proxy's idle timeout) wakes its reader, since what was
/// notified meanwhile is lost, and listens again on a new connection.
#[tokio::test]
async fn a_signal_whose_connection_is_cut_wakes_and_listens_again_postgres() {
    use sqlx::Connection;
    let Some(db) = ScratchDatabase::from_env().await.unwrap() else {
        return;
    };
    let store = tollgate_store::connect(db.url()).await.unwrap();
    let mut signal = store.change_signal().await.unwrap().unwrap();
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let cut = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut.len(), 1, "one listener");
    signalled(&mut signal).await;
    let t = new_tenant("Acme", 1);
    store.create_tenant(&t, &[]).await.unwrap();
    store
        .revoke_key(
            &t.tenant.id,
            &t.admin_key.id,
            3,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    signalled(&mut signal).await;
}

/// An event of `kind` in `tenant`'s log by `actor` at `at`.
fn event(kind: EventType, tenant: &str, actor: Actor, at: i64) -> AuditEvent {
    AuditEvent::new(
        kind,
        tenant,
        actor,
        at,
        &Origin::new(
            Some("req_1".into()),
            Some("10.1.2.3".into()),
            Some("sdk/1.0"),
        ),
    )
}

/// The operator's event of `kind` in `tenant`'s log, for a change whose events a case does not look at.
fn audit(kind: EventType, tenant: &str) -> AuditEvent {
    event(kind, tenant, Actor::operator(), 1)
}

/// Tenant "Acme" (created at 1), granted 1,000 µ¢ (at 2), with a project key "k" (at 3).
async fn funded_with_a_key(store: &dyn Store) -> (NewTenant, ApiKey) {
    let t = new_tenant("Acme", 1);
    store.create_tenant(&t, &[]).await.unwrap();
    store
        .grant(
            &t.tenant.id,
            Micros(1_000),
            None,
            2,
            &audit(EventType::CreditsGranted, &t.tenant.id),
        )
        .await
        .unwrap();
    let key = project_key(&t, "k", 3);
    store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    (t, key)
}

/// The operator as the cause of a tenant update whose events a case does not look at.
fn by_operator() -> Cause {
    Cause {
        actor: Actor::operator(),
        at: 1,
        origin: Origin::default(),
    }
}

/// Checks a tenant's whole chain from its anchor to its head, in pages of 7; returns its length.
async fn verify(store: &dyn Store, tenant: &str) -> Result<i64, BrokenLink> {
    let chain = store.audit_chains(Some(tenant)).await.unwrap().remove(0);
    let mut check = ChainCheck::new(chain.anchor.clone());
    let mut after = chain.anchor.seq;
    loop {
        let events = store.audit_chain_events(tenant, after, 7).await.unwrap();
        let Some(last) = events.last() else {
            break;
        };
        after = last.seq;
        for e in &events {
            check.next(e)?;
        }
    }
    check.finish(&chain.head)
}

async fn audit_events_chain_and_list_newest_first_with_filters(f: Fixture) {
    let (a, b) = (new_tenant("A", 100), new_tenant("B", 100));
    f.store.create_tenant(&a, &[]).await.unwrap();
    f.store.create_tenant(&b, &[]).await.unwrap();
    let (ta, tb) = (a.tenant.id.as_str(), b.tenant.id.as_str());
    let owner = Actor::member(&a.owner.id);
    let mut events = vec![
        event(EventType::ProjectCreated, ta, owner.clone(), 101).target(&a.project.id),
        event(EventType::ApiKeyCreated, ta, owner.clone(), 102)
            .key("key_1", "ab12")
            .project(&a.project.id),
        event(
            EventType::RequestCompleted,
            ta,
            Actor::project_key("key_1"),
            103,
        )
        .key("key_1", "ab12")
        .details(&serde_json::json!({"b": 1, "a": [2]})),
        event(EventType::CreditsGranted, tb, Actor::operator(), 104),
    ];
    events[2].status = Some(402);
    events[2].cost = Some(Micros(i64::MAX));
    events[2].prompt_tokens = Some(u64::try_from(i64::MAX).unwrap());
    f.store.append_audit(&events).await.unwrap();
    f.store
        .append_audit(&[
            event(EventType::ApiKeyRevoked, ta, owner.clone(), 105).key("key_1", "ab12")
        ])
        .await
        .unwrap();

    let query = |q: AuditQuery| {
        let store = Arc::clone(&f.store);
        async move { store.audit_events(&q).await.unwrap() }
    };
    let all = query(AuditQuery {
        tenant_id: ta.into(),
        limit: 100,
        ..AuditQuery::default()
    })
    .await;
    let types: Vec<_> = all.items.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        types,
        [
            EventType::ApiKeyRevoked,
            EventType::RequestCompleted,
            EventType::ApiKeyCreated,
            EventType::ProjectCreated
        ],
        "newest first"
    );
    assert_eq!(
        all.items[1].event, events[2],
        "read back exactly as appended"
    );
    assert_eq!(
        all.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );

    let by = |kind, actor: Option<&str>, key: Option<&str>, since, until| AuditQuery {
        tenant_id: ta.into(),
        kind,
        actor_id: actor.map(str::to_owned),
        key_id: key.map(str::to_owned),
        since,
        until,
        before_id: None,
        limit: 100,
    };
    let count = |q| async { query(q).await.items.len() };
    assert_eq!(
        count(by(Some(EventType::ApiKeyCreated), None, None, None, None)).await,
        1
    );
    assert_eq!(
        count(by(None, Some(&a.owner.id), None, None, None)).await,
        3
    );
    assert_eq!(count(by(None, None, Some("key_1"), None, None)).await, 3);
    assert_eq!(
        count(by(None, None, None, Some(102), Some(104))).await,
        2,
        "since ≤ t < until"
    );
    assert_eq!(
        count(by(None, Some("key_1"), Some("key_1"), None, None)).await,
        1
    );
    // Another tenant's ids match nothing here.
    let foreign = AuditQuery {
        tenant_id: tb.into(),
        actor_id: Some(a.owner.id.clone()),
        limit: 100,
        ..AuditQuery::default()
    };
    assert!(query(foreign).await.items.is_empty());

    // Pages of two, newest first, with the previous page's last id as the cursor.
    let first = query(AuditQuery {
        tenant_id: ta.into(),
        limit: 2,
        ..AuditQuery::default()
    })
    .await;
    assert!(first.has_more);
    let second = query(AuditQuery {
        tenant_id: ta.into(),
        limit: 2,
        before_id: Some(first.items[1].event.id.clone()),
        ..AuditQuery::default()
    })
    .await;
    assert!(!second.has_more);
    assert_eq!(second.items[0].event.kind, EventType::ApiKeyCreated);

    assert_eq!(verify(f.store.as_ref(), ta).await, Ok(4));
    assert_eq!(verify(f.store.as_ref(), tb).await, Ok(1));
    // No chain, no event: an unknown tenant's append fails whole.
    let orphan = event(
        EventType::CreditsGranted,
        "org_nobody",
        Actor::operator(),
        1,
    );
    let both = [
        event(EventType::CreditsGranted, ta, Actor::operator(), 1),
        orphan,
    ];
    assert!(f.store.append_audit(&both).await.is_err());
    assert_eq!(
        verify(f.store.as_ref(), ta).await,
        Ok(4),
        "nothing of it was written"
    );
}

/// A tenant's events, oldest first.
async fn log_of(store: &dyn Store, tenant: &str) -> Vec<AuditEvent> {
    let mut page = store
        .audit_events(&AuditQuery {
            tenant_id: tenant.into(),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    page.items.reverse();
    page.items.into_iter().map(|c| c.event).collect()
}

/// Every mutating call writes exactly its event with the change, in the tenant's chain; a refused call and a call
/// that changes nothing write none; the store fills only what it says it fills.
async fn a_change_and_its_event_commit_together(f: Fixture) {
    let t = new_tenant("Audited", 100);
    let tenant = t.tenant.id.as_str();
    let store = f.store.as_ref();
    let op = Actor::operator();
    let owner = Actor::member(&t.owner.id);
    let mut expected = vec![
        event(EventType::ProjectCreated, tenant, op.clone(), 100)
            .target(&t.project.id)
            .project(&t.project.id),
        event(EventType::MemberAdded, tenant, op.clone(), 100).target(&t.owner.id),
        event(EventType::AdminApiKeyCreated, tenant, op.clone(), 100).target(&t.admin_key.id),
    ];
    store.create_tenant(&t, &expected).await.unwrap();
    assert_eq!(
        log_of(store, tenant).await,
        expected,
        "the creation's events, at the chain's start"
    );

    // Projects.
    let sandbox = Project {
        id: "proj_sandbox".into(),
        name: "Sandbox".into(),
        ..t.project.clone()
    };
    let created = event(EventType::ProjectCreated, tenant, owner.clone(), 101).target(&sandbox.id);
    store.create_project(&sandbox, &created).await.unwrap();
    expected.push(created.clone());
    assert!(
        store.create_project(&sandbox, &created).await.is_err(),
        "the same id twice"
    );
    let renamed = event(EventType::ProjectUpdated, tenant, owner.clone(), 102).target(&sandbox.id);
    store
        .rename_project(tenant, &sandbox.id, "Test", &renamed)
        .await
        .unwrap()
        .unwrap();
    expected.push(renamed.clone());
    let same_name = store
        .rename_project(tenant, &sandbox.id, "Test", &renamed)
        .await
        .unwrap();
    assert_eq!(
        same_name.map(|p| p.name),
        Some("Test".into()),
        "changes nothing"
    );
    let archived =
        event(EventType::ProjectArchived, tenant, owner.clone(), 103).target(&sandbox.id);
    store
        .archive_project(tenant, &sandbox.id, &archived)
        .await
        .unwrap()
        .unwrap();
    expected.push(archived.clone());
    let again = store
        .archive_project(tenant, &sandbox.id, &archived)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.status,
        ProjectStatus::Archived,
        "archiving twice is harmless"
    );
    assert_eq!(
        store
            .archive_project(tenant, "proj_missing", &archived)
            .await
            .unwrap(),
        None
    );
    assert_eq!(log_of(store, tenant).await, expected);

    // Members.
    let admin = member(&t, "user_admin", "admin@example.com", Role::Admin);
    let added = event(EventType::MemberAdded, tenant, owner.clone(), 104).target(&admin.id);
    store.add_member(&admin, &added).await.unwrap();
    expected.push(added.clone());
    let duplicate = member(&t, "user_dup", "admin@example.com", Role::Member);
    assert!(matches!(
        store.add_member(&duplicate, &added).await,
        Err(StoreError::Conflict(_))
    ));
    let role_changed =
        event(EventType::MemberRoleChanged, tenant, owner.clone(), 105).target(&admin.id);
    store
        .set_role(tenant, &admin.id, Role::Member, &role_changed)
        .await
        .unwrap()
        .unwrap();
    expected.push(
        role_changed
            .clone()
            .details(&serde_json::json!({"from": "admin", "to": "member"})),
    );
    let same_role = store
        .set_role(tenant, &admin.id, Role::Member, &role_changed)
        .await
        .unwrap();
    assert_eq!(
        same_role.map(|m| m.role),
        Some(Role::Member),
        "changes nothing"
    );
    assert!(matches!(
        store
            .set_role(tenant, &t.owner.id, Role::Admin, &role_changed)
            .await,
        Err(StoreError::LastOwner)
    ));
    assert_eq!(
        store
            .set_role(tenant, "user_missing", Role::Admin, &role_changed)
            .await
            .unwrap(),
        None
    );
    let their_key = admin_key(&t, &admin);
    let admin_key_created =
        event(EventType::AdminApiKeyCreated, tenant, owner.clone(), 106).target(&their_key.id);
    store
        .insert_key(&their_key, None, &admin_key_created)
        .await
        .unwrap();
    expected.push(admin_key_created);
    let removed = event(EventType::MemberRemoved, tenant, owner.clone(), 107).target(&admin.id);
    store
        .remove_member(tenant, &admin.id, 107, &removed)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store
            .remove_member(tenant, &t.owner.id, 108, &removed)
            .await,
        Err(StoreError::LastOwner)
    ));
    assert_eq!(
        store
            .remove_member(tenant, &admin.id, 108, &removed)
            .await
            .unwrap(),
        None,
        "removed already"
    );
    let log = log_of(store, tenant).await;
    let revoked_with_member = log.last().unwrap().clone();
    expected.push(removed.clone());
    expected.push(AuditEvent {
        id: revoked_with_member.id.clone(),
        ..event(EventType::AdminApiKeyRevoked, tenant, owner.clone(), 107).target(&their_key.id)
    });
    assert_eq!(
        log, expected,
        "the removal, then the revocation of its admin key"
    );

    // Keys, within a plan's limit.
    let limit = Some(KeyLimit {
        max_active: 1,
        now: 110,
    });
    let key = project_key(&t, "ci", 110);
    let key_created = event(EventType::ApiKeyCreated, tenant, owner.clone(), 110)
        .target(&key.id)
        .key(&key.id, &key.last4)
        .project(&t.project.id);
    store.insert_key(&key, limit, &key_created).await.unwrap();
    expected.push(key_created.clone());
    let over = project_key(&t, "over", 111);
    assert!(matches!(
        store.insert_key(&over, limit, &key_created).await,
        Err(StoreError::KeyLimitReached)
    ));
    let key_revoked = event(EventType::ApiKeyRevoked, tenant, owner.clone(), 112)
        .target(&key.id)
        .key(&key.id, &key.last4);
    store
        .revoke_key(tenant, &key.id, 112, &key_revoked)
        .await
        .unwrap()
        .unwrap();
    expected.push(key_revoked.clone());
    let second = store
        .revoke_key(tenant, &key.id, 113, &key_revoked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.revoked_at, Some(112), "the first time stays");
    assert_eq!(
        store
            .revoke_key(tenant, "key_missing", 113, &key_revoked)
            .await
            .unwrap(),
        None
    );
    assert_eq!(log_of(store, tenant).await, expected);

    // Credits: the store names the ledger entry.
    let granted = event(EventType::CreditsGranted, tenant, op.clone(), 114)
        .details(&serde_json::json!({"amount_cents": 10, "reason": "welcome"}));
    let entry = store
        .grant(tenant, Micros(10_000_000), Some("welcome"), 114, &granted)
        .await
        .unwrap()
        .unwrap();
    expected.push(granted.clone().target(&entry.id));
    assert_eq!(
        store
            .grant("org_missing", Micros(1), None, 114, &granted)
            .await
            .unwrap(),
        None
    );
    assert_eq!(log_of(store, tenant).await, expected);

    // The tenant: one event per field that changes, none for what stays.
    let by = Cause {
        actor: op.clone(),
        at: 115,
        origin: Origin::new(Some("req_op".into()), Some("127.0.0.1".into()), None),
    };
    let both = TenantUpdate {
        plan: Some("enterprise".into()),
        status: Some(TenantStatus::Suspended),
        ..TenantUpdate::default()
    };
    store
        .update_tenant(tenant, &both, &by)
        .await
        .unwrap()
        .unwrap();
    let log = log_of(store, tenant).await;
    let (plan, status) = (&log[log.len() - 2], &log[log.len() - 1]);
    assert_ne!(plan.id, status.id);
    expected.push(AuditEvent {
        id: plan.id.clone(),
        ..by.event(EventType::TenantPlanChanged, tenant)
            .target(tenant)
            .details(&serde_json::json!({"from": "pro", "to": "enterprise"}))
    });
    expected.push(AuditEvent {
        id: status.id.clone(),
        ..by.event(EventType::TenantSuspended, tenant).target(tenant)
    });
    assert_eq!(log, expected);
    store
        .update_tenant(tenant, &both, &by)
        .await
        .unwrap()
        .unwrap();
    store
        .update_tenant(tenant, &TenantUpdate::default(), &by)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .update_tenant("org_missing", &both, &by)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        log_of(store, tenant).await,
        expected,
        "nothing changed, nothing written"
    );
    let reactivate = TenantUpdate {
        plan: Some("enterprise".into()),
        status: Some(TenantStatus::Active),
        ..TenantUpdate::default()
    };
    store
        .update_tenant(tenant, &reactivate, &by)
        .await
        .unwrap()
        .unwrap();
    let log = log_of(store, tenant).await;
    let last = log.last().unwrap();
    assert_eq!(
        (last.kind, last.target_id.as_deref(), log.len()),
        (
            EventType::TenantReactivated,
            Some(tenant),
            expected.len() + 1
        ),
        "only the status changed"
    );

    assert_eq!(
        verify(store, tenant).await,
        Ok(i64::try_from(log.len()).unwrap())
    );
}

async fn two_nodes_appending_for_one_tenant_at_once_keep_one_chain(f: Fixture) {
    let t = new_tenant("Busy", 100);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let other = f.another_node().await;
    let tenant = t.tenant.id.clone();
    let appends = (0..40).map(|i| {
        let store = if i % 2 == 0 {
            Arc::clone(&f.store)
        } else {
            Arc::clone(&other)
        };
        let tenant = tenant.clone();
        async move {
            let e = event(
                EventType::RequestCompleted,
                &tenant,
                Actor::project_key("key_1"),
                i,
            );
            // SQLite's writer lock may be busy past its timeout under this much contention: retry then.
            loop {
                match store.append_audit(std::slice::from_ref(&e)).await {
                    Err(err) if err.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    done => break done.unwrap(),
                }
            }
        }
    });
    join_all(appends).await;
    assert_eq!(verify(f.store.as_ref(), &tenant).await, Ok(40));
}

async fn pruning_leaves_a_chain_that_verifies_from_its_anchor(f: Fixture) {
    let t = new_tenant("Old", 100);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let tenant = t.tenant.id.as_str();
    let events: Vec<_> = (0..10)
        .map(|i| {
            event(
                EventType::RequestCompleted,
                tenant,
                Actor::project_key("key_1"),
                1_000 + i,
            )
        })
        .collect();
    f.store.append_audit(&events).await.unwrap();
    assert_eq!(f.store.prune_audit(1_004).await.unwrap(), 4);
    assert_eq!(
        f.store.prune_audit(1_004).await.unwrap(),
        0,
        "nothing twice"
    );
    let chain = f.store.audit_chains(Some(tenant)).await.unwrap().remove(0);
    assert_eq!(chain.anchor.seq, 4);
    assert_eq!(verify(f.store.as_ref(), tenant).await, Ok(10));
    // Appends go on from the head.
    f.store
        .append_audit(&[event(
            EventType::CreditsGranted,
            tenant,
            Actor::operator(),
            2_000,
        )])
        .await
        .unwrap();
    assert_eq!(verify(f.store.as_ref(), tenant).await, Ok(11));
}

on_every_backend!(
    audit_events_chain_and_list_newest_first_with_filters,
    a_change_and_its_event_commit_together,
    two_nodes_appending_for_one_tenant_at_once_keep_one_chain,
    pruning_leaves_a_chain_that_verifies_from_its_anchor,
);

/// Every `request.completed` event of a tenant, in chain order.
async fn request_events(store: &dyn Store, tenant: &str) -> Vec<AuditEvent> {
    let page = store
        .audit_events(&AuditQuery {
            tenant_id: tenant.to_owned(),
            kind: Some(EventType::RequestCompleted),
            limit: 500,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let mut events = page.items;
    events.sort_by_key(|c| c.seq);
    events.into_iter().map(|c| c.event).collect()
}

/// A refused request's event, as the server builds it.
fn refused(t: &NewTenant, key: &ApiKey, status: u16, at: i64) -> AuditEvent {
    let mut e = AuditEvent::request_completed(
        &t.tenant.id,
        &key.id,
        &key.last4,
        at,
        &Origin::new(Some(format!("req_refused_{at}")), None, None),
        status,
        3,
    );
    e.project_id = Some(t.project.id.clone());
    e
}

async fn a_settled_batch_writes_each_requests_event_with_its_charge_in_the_chain(f: Fixture) {
    let (t, key) = funded_with_a_key(f.store.as_ref()).await;
    // Management changes may have their own events in the chain already.
    let start = verify(f.store.as_ref(), &t.tenant.id).await.unwrap();
    let batch = [
        settlement(&t, &key, "fast", 600, 10),
        settlement(&t, &key, "echo", 0, 11),
        settlement(&t, &key, "fast", 900, 12),
    ];
    let charged = f
        .store
        .settle("node_a", &batch, &[refused(&t, &key, 402, 13)])
        .await
        .unwrap();
    assert_eq!(charged.charged, vec![Micros(600), Micros(0), Micros(400)]);
    let events = request_events(f.store.as_ref(), &t.tenant.id).await;
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.status,
                e.cost.map(Micros::get),
                e.prompt_tokens,
                e.effective_at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (Some(200), Some(600), Some(10), 10),
            (Some(200), Some(0), Some(10), 11),
            // The balance ran short: the event says what was charged, not what it cost.
            (Some(200), Some(400), Some(10), 12),
            (Some(402), None, None, 13),
        ]
    );
    let first = &events[0];
    assert_eq!(first.kind, EventType::RequestCompleted);
    assert_eq!(first.actor, Actor::project_key(&key.id));
    assert_eq!(
        (first.key_id.as_deref(), first.key_last4.as_deref()),
        (Some(key.id.as_str()), Some(key.last4.as_str()))
    );
    assert_eq!(first.project_id.as_deref(), Some(t.project.id.as_str()));
    assert_eq!(
        (first.model.as_deref(), first.completion_tokens),
        (Some("fast"), Some(5))
    );
    assert_eq!(first.latency_ms, Some(25));
    assert_eq!(first.origin, batch[0].origin);
    assert_eq!(verify(f.store.as_ref(), &t.tenant.id).await, Ok(start + 4));

    // A batch that fails (here: two events with one id) writes nothing: no charge, no usage, no event.
    f.store
        .grant(
            &t.tenant.id,
            Micros(100),
            None,
            20,
            &audit(EventType::CreditsGranted, &t.tenant.id),
        )
        .await
        .unwrap();
    let start = verify(f.store.as_ref(), &t.tenant.id).await.unwrap();
    let twin = refused(&t, &key, 401, 21);
    let failed = f
        .store
        .settle(
            "node_a",
            &[settlement(&t, &key, "fast", 50, 21)],
            &[twin.clone(), twin],
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        f.store.balance(&t.tenant.id).await.unwrap().balance,
        Micros(100)
    );
    assert_eq!(
        request_events(f.store.as_ref(), &t.tenant.id).await.len(),
        4
    );
    assert_eq!(verify(f.store.as_ref(), &t.tenant.id).await, Ok(start));
    // Events alone (refused requests only) are a batch too, and the chain goes on.
    f.store
        .settle("node_a", &[], &[refused(&t, &key, 403, 22)])
        .await
        .unwrap();
    assert_eq!(verify(f.store.as_ref(), &t.tenant.id).await, Ok(start + 1));
}

/// Free requests and refusals lock no balance: the chain head's own lock is what keeps two nodes' batches for one
/// tenant from taking the same place in its chain.
async fn two_nodes_settling_free_requests_for_one_tenant_at_once_keep_one_chain(f: Fixture) {
    let node_b = f.another_node().await;
    let t = new_tenant("A", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let key = project_key(&t, "a", 2);
    f.store
        .insert_key(&key, None, &audit(EventType::ApiKeyCreated, &key.tenant_id))
        .await
        .unwrap();
    let start = verify(f.store.as_ref(), &t.tenant.id).await.unwrap();
    let results = race([&f.store, &node_b], 30, |store, i| {
        let batch = vec![settlement(&t, &key, "echo", 0, 100 + i as i64)];
        let events = vec![refused(&t, &key, 403, 100 + i as i64)];
        async move { store.settle("node_a", &batch, &events).await }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(verify(f.store.as_ref(), &t.tenant.id).await, Ok(start + 60));
}

on_every_backend!(
    a_settled_batch_writes_each_requests_event_with_its_charge_in_the_chain,
    two_nodes_settling_free_requests_for_one_tenant_at_once_keep_one_chain,
);

// Key lifecycle: updates, rolls and the expiry record, each with its event in its own transaction, and the change
// log told of every change a cached principal carries.

/// A project key "full" of `t` (at 3) with every setting a roll copies: networks, models, rate limits, a spend cap.
fn full_key(t: &NewTenant) -> ApiKey {
    let mut key = project_key(t, "full", 3);
    key.description = Some("everything set".into());
    key.rate_limits = Some(RateLimits {
        requests_per_minute: Some(60),
        tokens_per_minute: None,
    });
    key.spend_limit = Some(SpendLimit {
        amount: Micros(1_500_001),
        period: SpendPeriod::Month,
    });
    key
}

async fn keys_keep_their_limits_and_updates_name_what_they_changed(f: Fixture) {
    let cli = f.another_node().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let key = full_key(&t);
    let created = audit(EventType::ApiKeyCreated, &t.tenant.id);
    f.store.insert_key(&key, None, &created).await.unwrap();
    assert_eq!(f.store.find_key(&key.id).await.unwrap(), Some(key.clone()));
    let updated = audit(EventType::ApiKeyUpdated, &t.tenant.id);
    let update = |changes: KeyChanges| {
        let store = Arc::clone(&f.store);
        let (tenant, id) = (t.tenant.id.clone(), key.id.clone());
        let event = audit(EventType::ApiKeyUpdated, &tenant);
        async move { store.update_key(&tenant, &id, &changes, 10, &event).await }
    };

    // Only the name: a change no cached principal carries, so nothing is logged.
    let renamed = update(KeyChanges {
        name: Some("renamed".into()),
        description: Some(Some("everything set".into())),
        ..KeyChanges::default()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert_eq!(logged(&f.store).await, vec![]);
    // Limits: logged for every node, read back whole.
    let limited = update(KeyChanges {
        rate_limits: Some(None),
        spend_limit: Some(Some(SpendLimit {
            amount: Micros(0),
            period: SpendPeriod::Total,
        })),
        ..KeyChanges::default()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(limited.rate_limits, None);
    assert_eq!(limited.spend_limit.map(|l| l.amount), Some(Micros(0)));
    assert_eq!(logged(&cli).await, vec![Changed::Key(key.digest)]);
    let principal = cli.principal_by_digest(&key.digest).await.unwrap().unwrap();
    assert_eq!(principal.key, limited);
    // The same values again change nothing and write no event.
    let same = update(KeyChanges {
        rate_limits: Some(None),
        models: Some(key.models.clone()),
        ..KeyChanges::default()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(same, limited);

    let events: Vec<(EventType, Option<String>)> = log_of(f.store.as_ref(), &t.tenant.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EventType::ApiKeyUpdated)
        .map(|e| (e.kind, e.details))
        .collect();
    assert_eq!(
        events,
        [
            (
                EventType::ApiKeyUpdated,
                Some(r#"{"changed":["name"]}"#.into())
            ),
            (
                EventType::ApiKeyUpdated,
                Some(
                    r#"{"changed":["rate_limits","spend_limit_cents","spend_limit_period"]}"#
                        .into()
                )
            ),
        ]
    );
    assert_eq!(
        update(KeyChanges::default()).await.unwrap(),
        Some(limited.clone())
    );
    // Another tenant's key is not found; a revoked or expired key is final.
    assert_eq!(
        f.store
            .update_key("org_other", &key.id, &KeyChanges::default(), 10, &updated)
            .await
            .unwrap(),
        None
    );
    let expiring = KeyChanges {
        expires_at: Some(Some(20)),
        ..KeyChanges::default()
    };
    update(expiring).await.unwrap().unwrap();
    let too_late = f
        .store
        .update_key(&t.tenant.id, &key.id, &KeyChanges::default(), 20, &updated)
        .await;
    assert!(
        matches!(too_late, Err(StoreError::KeyNotActive)),
        "{too_late:?}"
    );
}

async fn a_roll_replaces_a_key_in_one_transaction(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let old = full_key(&t);
    let created = audit(EventType::ApiKeyCreated, &t.tenant.id);
    f.store.insert_key(&old, None, &created).await.unwrap();
    let before = log_of(f.store.as_ref(), &t.tenant.id).await.len();
    let (successor, _) = old.successor(&prefixes(), None, 10);
    let rolled = audit(EventType::ApiKeyRolled, &t.tenant.id).target(&successor.id);

    let after = f
        .store
        .roll_key(&t.tenant.id, &old.id, &successor, 70, 10, &rolled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.expires_at, Some(70));
    assert_eq!(
        f.store.find_key(&successor.id).await.unwrap(),
        Some(successor.clone())
    );
    let found = f.store.find_key(&old.id).await.unwrap().unwrap();
    assert_eq!(found.expires_at, Some(70));
    assert_eq!(logged(&f.store).await, vec![Changed::Key(old.digest)]);
    let events = log_of(f.store.as_ref(), &t.tenant.id)
        .await
        .split_off(before);
    assert_eq!(events, vec![rolled.clone()]);

    // Rolled again within its grace period, to a later end: it keeps the sooner one.
    let (second, _) = old.successor(&prefixes(), None, 11);
    let again = f
        .store
        .roll_key(
            &t.tenant.id,
            &old.id,
            &second,
            500,
            11,
            &audit(EventType::ApiKeyRolled, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.expires_at, Some(70));
    // Once expired, or revoked, it cannot be rolled: nothing is written.
    let (third, _) = old.successor(&prefixes(), None, 70);
    let refused = f
        .store
        .roll_key(&t.tenant.id, &old.id, &third, 80, 70, &rolled)
        .await;
    assert!(
        matches!(refused, Err(StoreError::KeyNotActive)),
        "{refused:?}"
    );
    assert_eq!(f.store.find_key(&third.id).await.unwrap(), None);
    f.store
        .revoke_key(
            &t.tenant.id,
            &second.id,
            12,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap();
    let (fourth, _) = second.successor(&prefixes(), None, 13);
    let refused = f
        .store
        .roll_key(&t.tenant.id, &second.id, &fourth, 80, 13, &rolled)
        .await;
    assert!(
        matches!(refused, Err(StoreError::KeyNotActive)),
        "{refused:?}"
    );
    // An admin key, or another tenant's key, is no project key of the tenant.
    let admin = &t.admin_key;
    let (fifth, _) = successor.successor(&prefixes(), None, 14);
    for (tenant, id) in [
        (t.tenant.id.as_str(), admin.id.as_str()),
        ("org_other", &successor.id),
    ] {
        let none = f
            .store
            .roll_key(tenant, id, &fifth, 80, 14, &rolled)
            .await
            .unwrap();
        assert_eq!(none, None);
    }
    assert_eq!(f.store.find_key(&fifth.id).await.unwrap(), None);
    let rolls = log_of(f.store.as_ref(), &t.tenant.id)
        .await
        .iter()
        .filter(|e| e.kind == EventType::ApiKeyRolled)
        .count();
    assert_eq!(rolls, 2, "refused rolls write no event");
}

async fn a_roll_is_not_refused_by_the_key_limit(f: Fixture) {
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let old = project_key(&t, "only", 2);
    let limit = KeyLimit {
        max_active: 1,
        now: 2,
    };
    let created = audit(EventType::ApiKeyCreated, &t.tenant.id);
    f.store
        .insert_key(&old, Some(limit), &created)
        .await
        .unwrap();
    let (successor, _) = old.successor(&prefixes(), None, 3);
    let rolled = audit(EventType::ApiKeyRolled, &t.tenant.id);
    f.store
        .roll_key(&t.tenant.id, &old.id, &successor, 3, 3, &rolled)
        .await
        .unwrap()
        .unwrap();
    // The old key expired with a grace of 0: the successor is the one active key, and the limit still holds.
    let another = project_key(&t, "another", 4);
    let full = f
        .store
        .insert_key(
            &another,
            Some(KeyLimit {
                max_active: 1,
                now: 4,
            }),
            &created,
        )
        .await;
    assert!(matches!(full, Err(StoreError::KeyLimitReached)), "{full:?}");
}

async fn an_expiry_is_recorded_once_whichever_node_sees_it(f: Fixture) {
    let other = f.another_node().await;
    let t = new_tenant("Acme", 1);
    f.store.create_tenant(&t, &[]).await.unwrap();
    let mut key = project_key(&t, "short", 2);
    key.expires_at = Some(50);
    let created = audit(EventType::ApiKeyCreated, &t.tenant.id);
    f.store.insert_key(&key, None, &created).await.unwrap();
    let expired = audit(EventType::ApiKeyExpired, &t.tenant.id);
    // Not yet expired: nothing to record.
    assert!(
        !f.store
            .record_key_expiry(&t.tenant.id, &key.id, 49, &expired)
            .await
            .unwrap()
    );
    let stores = [&f.store, &other];
    let recorded = race(stores, 6, |store, i| {
        let (tenant, id) = (t.tenant.id.clone(), key.id.clone());
        let event = audit(EventType::ApiKeyExpired, &tenant);
        async move {
            store
                .record_key_expiry(&tenant, &id, 50 + i64::try_from(i).unwrap(), &event)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(recorded.iter().filter(|r| **r).count(), 1, "{recorded:?}");
    let events = log_of(f.store.as_ref(), &t.tenant.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EventType::ApiKeyExpired)
        .count();
    assert_eq!(events, 1);
    let principal = other
        .principal_by_digest(&key.digest)
        .await
        .unwrap()
        .unwrap();
    assert!(principal.key.expiry_recorded_at.is_some_and(|at| at >= 50));
    // Recording it is no change a cached principal must hear of.
    assert_eq!(logged(&f.store).await, vec![]);
    // A revoked key is refused as revoked, not expired.
    let mut revoked = project_key(&t, "revoked", 2);
    revoked.expires_at = Some(50);
    let created_again = audit(EventType::ApiKeyCreated, &t.tenant.id);
    f.store
        .insert_key(&revoked, None, &created_again)
        .await
        .unwrap();
    f.store
        .revoke_key(
            &t.tenant.id,
            &revoked.id,
            10,
            &audit(EventType::ApiKeyRevoked, &t.tenant.id),
        )
        .await
        .unwrap();
    assert!(
        !f.store
            .record_key_expiry(&t.tenant.id, &revoked.id, 60, &expired)
            .await
            .unwrap()
    );
}

on_every_backend!(
    keys_keep_their_limits_and_updates_name_what_they_changed,
    a_roll_replaces_a_key_in_one_transaction,
    a_roll_is_not_refused_by_the_key_limit,
    an_expiry_is_recorded_once_whichever_node_sees_it,
);

// Idempotency records: a key's first request claims it in one atomic write; retries find it running, mismatched or
// completed; leases, renewals, restarts and pruning free what no live request holds; a settlement stores its
// response with its charge.

/// The key window the claims below take (24 h).
const WINDOW: i64 = 86_400;

/// A claim of `key` in `scope` by `node_a` at `now`, for a request with `body`, by the default lease and window.
fn claim(scope: &str, key: &str, body: &str, claim_id: &str, now: i64) -> Claim {
    Claim {
        scope: scope.into(),
        key: key.into(),
        fingerprint: Fingerprint::of("POST", "/v1/chat/completions", body.as_bytes()),
        claim_id: claim_id.into(),
        node_id: "node_a".into(),
        instance: "host-1 0.0.0.0:8080".into(),
        request_id: format!("req_{claim_id}"),
        now,
        locked_until: now + CLAIM_LEASE_SECONDS,
        expires_at: now + WINDOW,
    }
}

/// A response to store, with bytes that are not UTF-8 (a body is stored as sent).
fn stored_response(tag: &str) -> StoredResponse {
    let mut body = format!("{{\"id\":\"{tag}\"}}").into_bytes();
    body.extend_from_slice(&[0, 0xff, 0xfe]);
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-ratelimit-remaining-requests".into(), "59".into()),
        ],
        body,
    }
}

/// `claim`'s completion with `response`.
fn completion_of(claim: &Claim, response: StoredResponse) -> Completion {
    Completion {
        scope: claim.scope.clone(),
        key: claim.key.clone(),
        claim_id: claim.claim_id.clone(),
        response,
    }
}

/// What replaying `response` from `claim`'s execution looks like.
fn completed(response: StoredResponse, claim: &Claim) -> ClaimOutcome {
    ClaimOutcome::Completed {
        response,
        request_id: claim.request_id.clone(),
    }
}

async fn a_new_key_is_claimed_once_and_another_request_with_it_is_a_mismatch(f: Fixture) {
    let first = claim("org_a", "order-1", "{}", "clm_1", 100);
    assert_eq!(
        f.store.claim_idempotency(&first).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let retry = claim("org_a", "order-1", "{}", "clm_2", 101);
    assert_eq!(
        f.store.claim_idempotency(&retry).await.unwrap(),
        ClaimOutcome::InFlight
    );
    let other = claim("org_a", "order-1", "{\"n\":2}", "clm_3", 101);
    assert_eq!(
        f.store.claim_idempotency(&other).await.unwrap(),
        ClaimOutcome::Mismatch
    );
    // Neither answer took the record: the first claim still completes it, and a mismatch stays one once done.
    assert!(
        f.store
            .complete_idempotency(&completion_of(&first, stored_response("a")))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.claim_idempotency(&other).await.unwrap(),
        ClaimOutcome::Mismatch
    );
}

async fn a_completed_claim_replays_its_response_and_only_its_holder_completes_it(f: Fixture) {
    let first = claim("org_a", "order-1", "{}", "clm_1", 100);
    f.store.claim_idempotency(&first).await.unwrap();
    let wrong = Completion {
        claim_id: "clm_other".into(),
        ..completion_of(&first, stored_response("wrong"))
    };
    assert!(!f.store.complete_idempotency(&wrong).await.unwrap());
    let retry = claim("org_a", "order-1", "{}", "clm_2", 101);
    assert_eq!(
        f.store.claim_idempotency(&retry).await.unwrap(),
        ClaimOutcome::InFlight,
        "another claim's completion changed nothing"
    );
    let response = stored_response("right");
    assert!(
        f.store
            .complete_idempotency(&completion_of(&first, response.clone()))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.claim_idempotency(&retry).await.unwrap(),
        completed(response.clone(), &first),
        "the exact status, headers, body and first request id"
    );
    // Done is final for the claim: completing it again stores nothing, and releasing it frees nothing.
    assert!(
        !f.store
            .complete_idempotency(&completion_of(&first, stored_response("again")))
            .await
            .unwrap()
    );
    f.store
        .release_idempotency("org_a", "order-1", "clm_1")
        .await
        .unwrap();
    assert_eq!(
        f.store.claim_idempotency(&retry).await.unwrap(),
        completed(response, &first)
    );
}

async fn a_released_claim_frees_its_key_for_a_retry(f: Fixture) {
    let first = claim("org_a", "order-1", "{}", "clm_1", 100);
    f.store.claim_idempotency(&first).await.unwrap();
    // Only the claim holding it releases it.
    f.store
        .release_idempotency("org_a", "order-1", "clm_other")
        .await
        .unwrap();
    let retry = claim("org_a", "order-1", "{}", "clm_2", 101);
    assert_eq!(
        f.store.claim_idempotency(&retry).await.unwrap(),
        ClaimOutcome::InFlight
    );
    f.store
        .release_idempotency("org_a", "order-1", "clm_1")
        .await
        .unwrap();
    // Freed: even another request may now use the key.
    let other = claim("org_a", "order-1", "{\"n\":2}", "clm_3", 102);
    assert_eq!(
        f.store.claim_idempotency(&other).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert!(
        !f.store
            .complete_idempotency(&completion_of(&first, stored_response("late")))
            .await
            .unwrap(),
        "the released claim no longer holds it"
    );
}

async fn a_running_claim_whose_lease_ran_out_is_taken_over_by_the_same_request_only(f: Fixture) {
    let first = claim("org_a", "order-1", "{}", "clm_1", 100);
    f.store.claim_idempotency(&first).await.unwrap();
    let before = claim("org_a", "order-1", "{}", "clm_2", first.locked_until - 1);
    assert_eq!(
        f.store.claim_idempotency(&before).await.unwrap(),
        ClaimOutcome::InFlight,
        "the lease still holds"
    );
    let other = claim("org_a", "order-1", "{\"n\":2}", "clm_3", first.locked_until);
    assert_eq!(
        f.store.claim_idempotency(&other).await.unwrap(),
        ClaimOutcome::Mismatch,
        "a lapsed lease frees the key for its own request, not another"
    );
    let takeover = claim("org_a", "order-1", "{}", "clm_4", first.locked_until);
    assert_eq!(
        f.store.claim_idempotency(&takeover).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert!(
        !f.store
            .complete_idempotency(&completion_of(&first, stored_response("old")))
            .await
            .unwrap(),
        "the claim taken over completes nothing"
    );
    let later = claim("org_a", "order-1", "{}", "clm_5", first.locked_until + 1);
    assert_eq!(
        f.store.claim_idempotency(&later).await.unwrap(),
        ClaimOutcome::InFlight,
        "the new claim's own lease holds"
    );
    let response = stored_response("new");
    assert!(
        f.store
            .complete_idempotency(&completion_of(&takeover, response.clone()))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.claim_idempotency(&later).await.unwrap(),
        completed(response, &takeover)
    );
}

async fn a_completed_record_past_its_window_is_claimed_afresh(f: Fixture) {
    let first = claim("org_a", "order-1", "{}", "clm_1", 100);
    f.store.claim_idempotency(&first).await.unwrap();
    let response = stored_response("a");
    f.store
        .complete_idempotency(&completion_of(&first, response.clone()))
        .await
        .unwrap();
    let inside = claim("org_a", "order-1", "{}", "clm_2", first.expires_at - 1);
    assert_eq!(
        f.store.claim_idempotency(&inside).await.unwrap(),
        completed(response, &first)
    );
    // Past the window the key is new again, for any request.
    let fresh = claim("org_a", "order-1", "{\"n\":2}", "clm_3", first.expires_at);
    assert_eq!(
        f.store.claim_idempotency(&fresh).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let retry = claim(
        "org_a",
        "order-1",
        "{\"n\":2}",
        "clm_4",
        first.expires_at + 1,
    );
    assert_eq!(
        f.store.claim_idempotency(&retry).await.unwrap(),
        ClaimOutcome::InFlight,
        "the fresh claim runs, its response not yet stored"
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim(
                "org_a",
                "order-1",
                "{}",
                "clm_5",
                first.expires_at + 1
            ))
            .await
            .unwrap(),
        ClaimOutcome::Mismatch,
        "the first request's fingerprint went with its record"
    );
}

async fn renewals_extend_the_leases_of_one_nodes_running_claims(f: Fixture) {
    let mine = claim("org_a", "order-1", "{}", "clm_1", 100);
    let theirs = Claim {
        node_id: "node_b".into(),
        ..claim("org_a", "order-2", "{}", "clm_2", 100)
    };
    for c in [&mine, &theirs] {
        f.store.claim_idempotency(c).await.unwrap();
    }
    let renewed_until = mine.locked_until + 20;
    f.store
        .renew_idempotency("node_a", renewed_until)
        .await
        .unwrap();
    // Between the old lease's end and the renewed one's.
    let at = mine.locked_until + 10;
    assert_eq!(
        f.store
            .claim_idempotency(&claim("org_a", "order-1", "{}", "clm_3", at))
            .await
            .unwrap(),
        ClaimOutcome::InFlight,
        "node_a's claim was renewed"
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim("org_a", "order-2", "{}", "clm_4", at))
            .await
            .unwrap(),
        ClaimOutcome::Claimed,
        "node_b's was not"
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim("org_a", "order-1", "{}", "clm_5", renewed_until))
            .await
            .unwrap(),
        ClaimOutcome::Claimed,
        "a renewed lease runs out too"
    );
}

async fn a_restarted_server_releases_only_its_predecessors_running_claims(f: Fixture) {
    let on = |node: &str, instance: &str, key: &str| Claim {
        node_id: node.into(),
        instance: instance.into(),
        ..claim("org_a", key, "{}", &format!("clm_{key}"), 100)
    };
    let dead_running = on("node_dead", "host-1", "k1");
    let dead_done = on("node_dead", "host-1", "k2");
    let new_running = on("node_new", "host-1", "k3");
    let elsewhere = on("node_other", "host-2", "k4");
    for c in [&dead_running, &dead_done, &new_running, &elsewhere] {
        f.store.claim_idempotency(c).await.unwrap();
    }
    let response = stored_response("done");
    f.store
        .complete_idempotency(&completion_of(&dead_done, response.clone()))
        .await
        .unwrap();
    assert_eq!(
        f.store
            .release_instance_idempotency("host-1", "node_new")
            .await
            .unwrap(),
        1
    );
    let retry = |key: &str| claim("org_a", key, "{}", &format!("clm_retry_{key}"), 101);
    assert_eq!(
        f.store.claim_idempotency(&retry("k1")).await.unwrap(),
        ClaimOutcome::Claimed,
        "the dead node's running claim is free at once"
    );
    assert_eq!(
        f.store.claim_idempotency(&retry("k2")).await.unwrap(),
        completed(response, &dead_done),
        "a completed response stays"
    );
    for key in ["k3", "k4"] {
        assert_eq!(
            f.store.claim_idempotency(&retry(key)).await.unwrap(),
            ClaimOutcome::InFlight,
            "{key}: the new node's own and another server's claims stay"
        );
    }
    assert_eq!(
        f.store
            .release_instance_idempotency("host-1", "node_new")
            .await
            .unwrap(),
        0
    );
}

async fn pruning_deletes_records_past_their_window_unless_still_locked(f: Fixture) {
    // Windows that ended at 200; pruned at 300.
    let record = |key: &str, locked_until: i64, expires_at: i64| Claim {
        locked_until,
        expires_at,
        ..claim("org_a", key, "{}", &format!("clm_{key}"), 100)
    };
    let done: Vec<Claim> = (1..=3)
        .map(|i| record(&format!("done-{i}"), 110, 200))
        .collect();
    let abandoned = record("abandoned", 150, 200);
    let locked = record("locked", 400, 200);
    let live = record("live", 110, 1_000);
    for c in done.iter().chain([&abandoned, &locked, &live]) {
        f.store.claim_idempotency(c).await.unwrap();
    }
    for c in done.iter().chain([&live]) {
        f.store
            .complete_idempotency(&completion_of(c, stored_response(&c.key)))
            .await
            .unwrap();
    }
    assert_eq!(f.store.prune_idempotency(300, 3).await.unwrap(), 3);
    assert_eq!(f.store.prune_idempotency(300, 10).await.unwrap(), 1);
    assert_eq!(f.store.prune_idempotency(300, 10).await.unwrap(), 0);
    // At 150 no record has expired, so a record still there answers another request with a mismatch.
    let probe = |c: &Claim| claim("org_a", &c.key, "{\"probe\":1}", "clm_probe", 150);
    for c in done.iter().chain([&abandoned]) {
        assert_eq!(
            f.store.claim_idempotency(&probe(c)).await.unwrap(),
            ClaimOutcome::Claimed,
            "{}: pruned",
            c.key
        );
    }
    for c in [&locked, &live] {
        assert_eq!(
            f.store.claim_idempotency(&probe(c)).await.unwrap(),
            ClaimOutcome::Mismatch,
            "{}: kept",
            c.key
        );
    }
}

async fn the_same_key_in_two_scopes_is_two_records(f: Fixture) {
    let a = claim("org_a", "order-1", "{}", "clm_a", 100);
    let b = claim("org_b", "order-1", "{}", "clm_b", 100);
    for c in [&a, &b] {
        assert_eq!(
            f.store.claim_idempotency(c).await.unwrap(),
            ClaimOutcome::Claimed
        );
    }
    let response = stored_response("a");
    f.store
        .complete_idempotency(&completion_of(&a, response.clone()))
        .await
        .unwrap();
    f.store
        .release_idempotency("org_a", "order-1", "clm_b")
        .await
        .unwrap();
    assert_eq!(
        f.store
            .claim_idempotency(&claim("org_a", "order-1", "{}", "clm_a2", 101))
            .await
            .unwrap(),
        completed(response, &a)
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim("org_b", "order-1", "{}", "clm_b2", 101))
            .await
            .unwrap(),
        ClaimOutcome::InFlight,
        "org_b's record is neither completed nor released by org_a's calls"
    );
}

async fn of_concurrent_claims_of_one_key_exactly_one_wins(f: Fixture) {
    let node_b = f.another_node().await;
    let now = WINDOW + 10;
    // A new key (the upsert's insert), or one whose completed record is past its window at `now` (its update).
    for round in 0..6 {
        let key = if round % 2 == 0 {
            format!("new-{round}")
        } else {
            let expired = claim("org_a", &format!("old-{round}"), "{}", "clm_old", 1);
            f.store.claim_idempotency(&expired).await.unwrap();
            f.store
                .complete_idempotency(&completion_of(&expired, stored_response("old")))
                .await
                .unwrap();
            expired.key
        };
        let claim_id = |i: usize| format!("clm_{round}_{i}");
        let outcomes = race([&f.store, &node_b], 8, |store, i| {
            let c = claim("org_a", &key, "{}", &claim_id(i), now);
            async move { store.claim_idempotency(&c).await.unwrap() }
        })
        .await;
        let winners: Vec<usize> = (0..8)
            .filter(|i| outcomes[*i] == ClaimOutcome::Claimed)
            .collect();
        assert_eq!(winners.len(), 1, "{key}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, ClaimOutcome::Claimed | ClaimOutcome::InFlight)),
            "{key}: {outcomes:?}"
        );
        // The winner holds it: its completion is the one stored.
        assert!(
            f.store
                .complete_idempotency(&completion_of(
                    &claim("org_a", &key, "{}", &claim_id(winners[0]), now),
                    stored_response(&key)
                ))
                .await
                .unwrap()
        );
    }
}

/// A settlement of `key`'s request costing `cost` at `at`, storing `response` for `claim`.
fn settlement_completing(
    t: &NewTenant,
    key: &ApiKey,
    cost: i64,
    at: i64,
    claim: &Claim,
    response: StoredResponse,
) -> Settlement {
    Settlement {
        idempotency: Some(Box::new(completion_of(claim, response))),
        ..settlement(t, key, "fast", cost, at)
    }
}

async fn a_settled_batch_stores_its_responses_with_the_charges(f: Fixture) {
    let (t, key) = funded_with_a_key(f.store.as_ref()).await;
    let scope = t.tenant.id.as_str();
    // Two, in the reverse of key order, with a request without a key between them.
    let (b, a) = (
        claim(scope, "order-b", "{}", "clm_b", 10),
        claim(scope, "order-a", "{}", "clm_a", 10),
    );
    for c in [&b, &a] {
        f.store.claim_idempotency(c).await.unwrap();
    }
    let batch = [
        settlement_completing(&t, &key, 100, 11, &b, stored_response("b")),
        settlement(&t, &key, "fast", 50, 11),
        settlement_completing(&t, &key, 200, 12, &a, stored_response("a")),
    ];
    let settled = f.store.settle("node_a", &batch, &[]).await.unwrap();
    assert_eq!(settled.charged, vec![Micros(100), Micros(50), Micros(200)]);
    assert_eq!(
        f.store.balance(&t.tenant.id).await.unwrap().balance,
        Micros(650)
    );
    for (c, tag) in [(&b, "b"), (&a, "a")] {
        let retry = claim(scope, &c.key, "{}", "clm_retry", 13);
        assert_eq!(
            f.store.claim_idempotency(&retry).await.unwrap(),
            completed(stored_response(tag), c)
        );
    }
}

async fn a_change_locks_the_claim_its_events_carry_until_its_answer_is_stored(f: Fixture) {
    let (t, _) = funded_with_a_key(f.store.as_ref()).await;
    let scope = t.tenant.id.as_str();
    let held = claim(scope, "create-1", "{}", "clm_change", 10);
    let other = claim(scope, "create-2", "{}", "clm_other", 10);
    for c in [&held, &other] {
        assert_eq!(
            f.store.claim_idempotency(c).await.unwrap(),
            ClaimOutcome::Claimed
        );
    }
    // A project made by the request that holds `held`: its event's origin carries the claim.
    let created = event(
        EventType::ProjectCreated,
        scope,
        Actor::member(&t.owner.id),
        11,
    );
    created.origin.claim.set(ClaimRef {
        scope: scope.into(),
        key: held.key.clone(),
        claim_id: held.claim_id.clone(),
    });
    let project = Project {
        id: "proj_idempotent".into(),
        name: "Idempotent".into(),
        ..t.project.clone()
    };
    f.store.create_project(&project, &created).await.unwrap();
    // Say the server died right after: past the lease, a restart's release and a release of the claim itself free
    // only the claim whose request changed nothing.
    f.store
        .release_instance_idempotency(&held.instance, "node_new")
        .await
        .unwrap();
    f.store
        .release_idempotency(scope, &held.key, &held.claim_id)
        .await
        .unwrap();
    let later = held.locked_until + 60;
    assert_eq!(
        f.store
            .claim_idempotency(&claim(scope, &held.key, "{}", "clm_retry", later))
            .await
            .unwrap(),
        ClaimOutcome::InFlight,
        "the change was made: a retry must not make it again"
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim(scope, &other.key, "{}", "clm_retry2", later))
            .await
            .unwrap(),
        ClaimOutcome::Claimed,
        "the other claim was released by the restart"
    );
    // Its answer, when stored, is what retries get; and after the window the key is new again.
    let response = stored_response("made");
    assert!(
        f.store
            .complete_idempotency(&completion_of(&held, response.clone()))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim(scope, &held.key, "{}", "clm_retry3", later))
            .await
            .unwrap(),
        completed(response, &held)
    );
}

async fn a_settlement_whose_claim_was_released_or_taken_over_still_charges(f: Fixture) {
    let (t, key) = funded_with_a_key(f.store.as_ref()).await;
    let scope = t.tenant.id.as_str();
    let released = claim(scope, "released", "{}", "clm_released", 10);
    let lapsed = claim(scope, "lapsed", "{}", "clm_lapsed", 10);
    for c in [&released, &lapsed] {
        f.store.claim_idempotency(c).await.unwrap();
    }
    f.store
        .release_idempotency(scope, "released", "clm_released")
        .await
        .unwrap();
    let takeover = claim(scope, "lapsed", "{}", "clm_takeover", lapsed.locked_until);
    assert_eq!(
        f.store.claim_idempotency(&takeover).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let batch = [
        settlement_completing(&t, &key, 100, 30, &released, stored_response("r")),
        settlement_completing(&t, &key, 200, 31, &lapsed, stored_response("l")),
    ];
    let settled = f.store.settle("node_a", &batch, &[]).await.unwrap();
    assert_eq!(settled.charged, vec![Micros(100), Micros(200)]);
    assert_eq!(
        f.store.balance(&t.tenant.id).await.unwrap().balance,
        Micros(700)
    );
    let ledger = f.store.ledger(&t.tenant.id, &page(10)).await.unwrap();
    assert_eq!(ledger.items.len(), 3, "the grant and both charges");
    // Neither completion wrote: the released key is free, the taken-over one is its new holder's, still running.
    assert_eq!(
        f.store
            .claim_idempotency(&claim(scope, "released", "{\"n\":2}", "clm_next", 32))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim(
                scope,
                "lapsed",
                "{}",
                "clm_retry",
                takeover.locked_until - 1
            ))
            .await
            .unwrap(),
        ClaimOutcome::InFlight
    );
    assert!(
        f.store
            .complete_idempotency(&completion_of(&takeover, stored_response("t")))
            .await
            .unwrap()
    );
}

async fn a_failed_batch_stores_neither_its_charges_nor_its_responses(f: Fixture) {
    let (t, key) = funded_with_a_key(f.store.as_ref()).await;
    let scope = t.tenant.id.as_str();
    let first = claim(scope, "order-1", "{}", "clm_1", 10);
    f.store.claim_idempotency(&first).await.unwrap();
    // An event for a tenant without an audit chain fails the whole batch.
    let failed = f
        .store
        .settle(
            "node_a",
            &[settlement_completing(
                &t,
                &key,
                100,
                11,
                &first,
                stored_response("x"),
            )],
            &[audit(EventType::CreditsGranted, "org_missing")],
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        f.store.balance(&t.tenant.id).await.unwrap().balance,
        Micros(1_000)
    );
    assert_eq!(
        f.store
            .claim_idempotency(&claim(scope, "order-1", "{}", "clm_2", 12))
            .await
            .unwrap(),
        ClaimOutcome::InFlight,
        "the claim is still running, its response not stored"
    );
    // The same settlement, retried alone, stores both.
    f.store
        .settle(
            "node_a",
            &[settlement_completing(
                &t,
                &key,
                100,
                11,
                &first,
                stored_response("x"),
            )],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        f.store
            .claim_idempotency(&claim(scope, "order-1", "{}", "clm_3", 12))
            .await
            .unwrap(),
        completed(stored_response("x"), &first)
    );
}

on_every_backend!(
    a_new_key_is_claimed_once_and_another_request_with_it_is_a_mismatch,
    a_completed_claim_replays_its_response_and_only_its_holder_completes_it,
    a_released_claim_frees_its_key_for_a_retry,
    a_running_claim_whose_lease_ran_out_is_taken_over_by_the_same_request_only,
    a_completed_record_past_its_window_is_claimed_afresh,
    renewals_extend_the_leases_of_one_nodes_running_claims,
    a_restarted_server_releases_only_its_predecessors_running_claims,
    pruning_deletes_records_past_their_window_unless_still_locked,
    the_same_key_in_two_scopes_is_two_records,
    of_concurrent_claims_of_one_key_exactly_one_wins,
    a_settled_batch_stores_its_responses_with_the_charges,
    a_change_locks_the_claim_its_events_carry_until_its_answer_is_stored,
    a_settlement_whose_claim_was_released_or_taken_over_still_charges,
    a_failed_batch_stores_neither_its_charges_nor_its_responses,
);

/// A node's renewal and its settled batch both lock several of its records; they lock them in the same (key) order,
/// so they never deadlock: here the renewal waits for a record first, then the batch (completing them in the
/// reverse of key order) queues behind it. Locked in the batch's order, the batch would hold `b` while the
/// renewal, granted `a`, waited for it.
#[tokio::test]
async fn a_renewal_and_a_settled_batch_lock_records_in_one_order_postgres() {
    use sqlx::{Connection, Executor};
    let Some(db) = ScratchDatabase::from_env().await.unwrap() else {
        return;
    };
    let store = tollgate_store::connect(db.url()).await.unwrap();
    let (t, key) = funded_with_a_key(store.as_ref()).await;
    let scope = t.tenant.id.as_str();
    let (a, b) = (
        claim(scope, "a", "{}", "clm_a", 10),
        claim(scope, "b", "{}", "clm_b", 10),
    );
    for c in [&a, &b] {
        store.claim_idempotency(c).await.unwrap();
    }
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT 1 FROM idempotency_records WHERE idem_key = 'a' FOR UPDATE")
        .await
        .unwrap();
    let batch = [
        settlement_completing(&t, &key, 100, 11, &b, stored_response("b")),
        settlement_completing(&t, &key, 100, 11, &a, stored_response("a")),
    ];
    let pause = Duration::from_millis(200);
    let (renewed, settled, ()) = tokio::join!(
        store.renew_idempotency("node_a", 100),
        async {
            tokio::time::sleep(pause).await;
            store.settle("node_a", &batch, &[]).await
        },
        async {
            // Within the settlement's lock timeout (1 s).
            tokio::time::sleep(pause * 2).await;
            holder.execute("COMMIT").await.unwrap();
        },
    );
    renewed.unwrap();
    assert_eq!(settled.unwrap().charged, vec![Micros(100), Micros(100)]);
    for (c, tag) in [(&a, "a"), (&b, "b")] {
        assert_eq!(
            store
                .claim_idempotency(&claim(scope, &c.key, "{}", "clm_retry", 12))
                .await
                .unwrap(),
            completed(stored_response(tag), c)
        );
    }
}

// Dashboard sessions (SessionStore).

/// Tenant `name` created at `at`, whose owner has a password, and a member of `role` with email `email` and a
/// password too.
async fn tenant_with_a_member(
    store: &dyn Store,
    name: &str,
    at: i64,
    email: &str,
    role: Role,
) -> (NewTenant, Member) {
    let mut t = new_tenant(name, at);
    t.owner.password_hash = Some(format!("$argon2id$owner-of-{name}"));
    store.create_tenant(&t, &[]).await.unwrap();
    let m = Member {
        id: id::new_id(id::MEMBER),
        password_hash: Some(format!("$argon2id${email}-in-{name}")),
        ..member(&t, "", email, role)
    };
    store
        .add_member(&m, &audit(EventType::MemberAdded, &m.tenant_id))
        .await
        .unwrap();
    (t, m)
}

/// A session of `member` created (and last seen) at `at`, ending at `expires_at`, with a fresh token.
fn session_of(member: &Member, at: i64, expires_at: i64) -> Session {
    Session {
        id: id::new_id("sess_"),
        digest: SessionToken::generate().digest(),
        tenant_id: member.tenant_id.clone(),
        member_id: member.id.clone(),
        created_at: at,
        last_seen_at: at,
        expires_at,
        revoked_at: None,
    }
}

/// The `login.succeeded` event a sign-in of `member` at `at` writes.
fn signed_in(member: &Member, at: i64) -> AuditEvent {
    event(
        EventType::LoginSucceeded,
        &member.tenant_id,
        Actor::member(&member.id),
        at,
    )
}

/// Writes `session` with its sign-in event.
async fn sign_in(store: &dyn Store, member: &Member, session: &Session) {
    store
        .create_session(session, &signed_in(member, session.created_at))
        .await
        .unwrap();
}

/// A sign-out event of `member`'s session. API.md names no event type for a sign-out (this borrows
/// `login.succeeded`); the store writes whatever event the caller gives, so the cases find it by its id.
fn signed_out(member: &Member, at: i64) -> AuditEvent {
    event(
        EventType::LoginSucceeded,
        &member.tenant_id,
        Actor::member(&member.id),
        at,
    )
}

/// How many of `tenant`'s events have this id.
async fn events_with_id(store: &dyn Store, tenant: &str, event_id: &str) -> usize {
    log_of(store, tenant)
        .await
        .iter()
        .filter(|e| e.id == event_id)
        .count()
}

async fn a_session_is_found_by_its_digest_with_its_member_and_tenant_as_they_are_now(f: Fixture) {
    let store = f.store.as_ref();
    let (t, admin) = tenant_with_a_member(store, "Acme", 1, "ada@x.io", Role::Admin).await;
    let session = session_of(&admin, 100, 1_000);
    sign_in(store, &admin, &session).await;
    assert_eq!(
        store
            .session_by_digest(&session.digest, 200, 100)
            .await
            .unwrap(),
        Some(SessionMember {
            session: session.clone(),
            email: "ada@x.io".into(),
            role: Role::Admin,
            tenant_name: "Acme".into(),
            tenant_plan: "pro".into(),
            tenant_status: TenantStatus::Active,
        })
    );
    // The role is read at every lookup: a demotion takes effect on the session's next request.
    store
        .set_role(
            &t.tenant.id,
            &admin.id,
            Role::Member,
            &audit(EventType::MemberRoleChanged, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .update_tenant(
            &t.tenant.id,
            &TenantUpdate {
                plan: Some("enterprise".into()),
                ..suspension()
            },
            &by_operator(),
        )
        .await
        .unwrap()
        .unwrap();
    let found = store
        .session_by_digest(&session.digest, 200, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.role, found.tenant_plan.as_str(), found.tenant_status),
        (Role::Member, "enterprise", TenantStatus::Suspended)
    );
    assert_eq!(
        store
            .session_by_digest(&SessionToken::generate().digest(), 200, 100)
            .await
            .unwrap(),
        None,
        "an unknown token"
    );
}

async fn a_sign_in_writes_its_event_in_the_tenants_chain(f: Fixture) {
    let store = f.store.as_ref();
    let (t, admin) = tenant_with_a_member(store, "Acme", 1, "ada@x.io", Role::Admin).await;
    let session = session_of(&admin, 100, 1_000);
    let event = signed_in(&admin, 100);
    store.create_session(&session, &event).await.unwrap();
    let listed = store
        .audit_events(&AuditQuery {
            tenant_id: t.tenant.id.clone(),
            kind: Some(EventType::LoginSucceeded),
            actor_id: Some(admin.id.clone()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|c| &c.event).collect::<Vec<_>>(),
        [&event]
    );
    assert_eq!(listed.items[0].event.actor, Actor::member(&admin.id));
    // After the member's addition: one chain, extended by the sign-in.
    assert_eq!(verify(store, &t.tenant.id).await, Ok(2));
}

async fn a_session_ends_at_its_expiry_or_when_idle_and_touches_only_move_it_forward(f: Fixture) {
    let store = f.store.as_ref();
    let (_, admin) = tenant_with_a_member(store, "Acme", 1, "ada@x.io", Role::Admin).await;
    let session = session_of(&admin, 100, 1_000);
    sign_in(store, &admin, &session).await;
    let seen = |now, idle_since| async move {
        store
            .session_by_digest(&session.digest, now, idle_since)
            .await
            .unwrap()
            .map(|s| s.session.last_seen_at)
    };
    assert_eq!(seen(999, 100).await, Some(100), "live to its last second");
    assert_eq!(seen(1_000, 100).await, None, "ended at expires_at");
    assert_eq!(seen(500, 101).await, None, "idle since before idle_since");
    store.touch_session(&session.id, 500).await.unwrap();
    assert_eq!(seen(600, 400).await, Some(500), "a touch renews it");
    store.touch_session(&session.id, 300).await.unwrap();
    assert_eq!(seen(600, 400).await, Some(500), "an older touch is ignored");
    assert_eq!(
        seen(1_000, 400).await,
        None,
        "touches never extend expires_at"
    );
    store.touch_session("sess_missing", 700).await.unwrap();
}

async fn a_signed_out_session_ends_and_its_event_is_written_once(f: Fixture) {
    let store = f.store.as_ref();
    let (t, admin) = tenant_with_a_member(store, "Acme", 1, "ada@x.io", Role::Admin).await;
    let tenant = t.tenant.id.as_str();
    let session = session_of(&admin, 100, 1_000);
    sign_in(store, &admin, &session).await;
    let first = signed_out(&admin, 200);
    store
        .revoke_session(&session.id, 200, &first)
        .await
        .unwrap();
    assert_eq!(
        store
            .session_by_digest(&session.digest, 250, 100)
            .await
            .unwrap(),
        None
    );
    assert_eq!(events_with_id(store, tenant, &first.id).await, 1);
    let again = signed_out(&admin, 300);
    store
        .revoke_session(&session.id, 300, &again)
        .await
        .unwrap();
    assert_eq!(
        events_with_id(store, tenant, &again.id).await,
        0,
        "signing out again writes nothing"
    );
    // It keeps its first sign-out time: pruning before 250 finds it signed out at 200, not 300.
    assert_eq!(store.prune_sessions(250).await.unwrap(), 1);

    // A session past its expiry has ended already: signing it out changes nothing either.
    let expired = session_of(&admin, 100, 150);
    sign_in(store, &admin, &expired).await;
    let late = signed_out(&admin, 200);
    store.revoke_session(&expired.id, 200, &late).await.unwrap();
    assert_eq!(events_with_id(store, tenant, &late.id).await, 0);
    let unknown = signed_out(&admin, 200);
    store
        .revoke_session("sess_missing", 200, &unknown)
        .await
        .unwrap();
    assert_eq!(events_with_id(store, tenant, &unknown.id).await, 0);
    assert!(verify(store, tenant).await.is_ok());
}

async fn a_removed_members_sessions_end_with_them(f: Fixture) {
    let store = f.store.as_ref();
    let (t, admin) = tenant_with_a_member(store, "Acme", 1, "ada@x.io", Role::Admin).await;
    let theirs = session_of(&admin, 100, 1_000);
    sign_in(store, &admin, &theirs).await;
    let owners = session_of(&t.owner, 100, 1_000);
    sign_in(store, &t.owner, &owners).await;
    store
        .remove_member(
            &t.tenant.id,
            &admin.id,
            150,
            &audit(EventType::MemberRemoved, &t.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .session_by_digest(&theirs.digest, 200, 100)
            .await
            .unwrap(),
        None
    );
    // Added again, the email is a new member: the old session does not come back as it.
    let again = Member {
        id: id::new_id(id::MEMBER),
        ..admin.clone()
    };
    store
        .add_member(&again, &audit(EventType::MemberAdded, &again.tenant_id))
        .await
        .unwrap();
    assert_eq!(
        store
            .session_by_digest(&theirs.digest, 200, 100)
            .await
            .unwrap(),
        None
    );
    let owner = store
        .session_by_digest(&owners.digest, 200, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (owner.session.member_id, owner.role),
        (t.owner.id.clone(), Role::Owner),
        "other members' sessions stay"
    );
}

async fn sign_in_finds_the_emails_members_with_a_password_in_tenant_creation_order(f: Fixture) {
    let store = f.store.as_ref();
    // Created in id order later, earlier, earlier (a tie broken by id): creation time orders, then id.
    let (late, late_pat) = tenant_with_a_member(store, "Late", 20, "pat@x.io", Role::Member).await;
    let (early, early_pat) =
        tenant_with_a_member(store, "Early", 10, "pat@x.io", Role::Admin).await;
    let (tied, tied_pat) = tenant_with_a_member(store, "Tied", 10, "pat@x.io", Role::Owner).await;
    // Not candidates: a member without a password, a removed member, another email.
    let (_, no_password) =
        tenant_with_a_member(store, "NoPassword", 5, "other@x.io", Role::Member).await;
    let no_password = Member {
        id: id::new_id(id::MEMBER),
        email: "pat@x.io".into(),
        password_hash: None,
        ..no_password
    };
    store
        .add_member(
            &no_password,
            &audit(EventType::MemberAdded, &no_password.tenant_id),
        )
        .await
        .unwrap();
    let (gone, gone_pat) = tenant_with_a_member(store, "Gone", 5, "pat@x.io", Role::Admin).await;
    store
        .remove_member(
            &gone.tenant.id,
            &gone_pat.id,
            30,
            &audit(EventType::MemberRemoved, &gone.tenant.id),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .update_tenant(&early.tenant.id, &suspension(), &by_operator())
        .await
        .unwrap()
        .unwrap();
    let found: Vec<_> = store
        .login_candidates("pat@x.io")
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.tenant_id, c.member_id, c.password_hash, c.tenant_status))
        .collect();
    let expected = |t: &NewTenant, m: &Member, status| {
        (
            t.tenant.id.clone(),
            m.id.clone(),
            m.password_hash.clone().unwrap(),
            status,
        )
    };
    assert_eq!(
        found,
        [
            expected(&early, &early_pat, TenantStatus::Suspended),
            expected(&tied, &tied_pat, TenantStatus::Active),
            expected(&late, &late_pat, TenantStatus::Active),
        ]
    );
    assert!(
        store
            .login_candidates("nobody@x.io")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn pruning_deletes_only_sessions_that_ended_before_the_cut_off(f: Fixture) {
    let store = f.store.as_ref();
    let (_, admin) = tenant_with_a_member(store, "Acme", 1, "ada@x.io", Role::Admin).await;
    let live = session_of(&admin, 100, 1_000);
    let expired = session_of(&admin, 100, 150);
    let expiring_at_cut_off = session_of(&admin, 100, 200);
    let out_early = session_of(&admin, 100, 1_000);
    let out_late = session_of(&admin, 100, 1_000);
    for s in [&live, &expired, &expiring_at_cut_off, &out_early, &out_late] {
        sign_in(store, &admin, s).await;
    }
    for (s, at) in [(&out_early, 150), (&out_late, 300)] {
        store
            .revoke_session(&s.id, at, &signed_out(&admin, at))
            .await
            .unwrap();
    }
    assert_eq!(
        store.prune_sessions(200).await.unwrap(),
        2,
        "expired, out_early"
    );
    assert_eq!(store.prune_sessions(200).await.unwrap(), 0);
    assert_eq!(
        store.prune_sessions(301).await.unwrap(),
        2,
        "expiring_at_cut_off, out_late"
    );
    assert!(
        store
            .session_by_digest(&live.digest, 400, 100)
            .await
            .unwrap()
            .is_some(),
        "a live session stays"
    );
}

async fn a_second_session_with_one_digest_is_refused_and_writes_nothing(f: Fixture) {
    let store = f.store.as_ref();
    let (t, admin) = tenant_with_a_member(store, "Acme", 1, "ada@x.io", Role::Admin).await;
    let first = session_of(&admin, 100, 1_000);
    sign_in(store, &admin, &first).await;
    let twin = Session {
        id: id::new_id("sess_"),
        created_at: 110,
        ..first.clone()
    };
    let event = signed_in(&admin, 110);
    let err = store.create_session(&twin, &event).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(events_with_id(store, &t.tenant.id, &event.id).await, 0);
    assert_eq!(
        store
            .session_by_digest(&first.digest, 200, 100)
            .await
            .unwrap()
            .map(|s| s.session),
        Some(first)
    );
}

async fn nodes_signing_one_session_out_at_once_write_one_event(f: Fixture) {
    let node_b = f.another_node().await;
    let (t, admin) =
        tenant_with_a_member(f.store.as_ref(), "Acme", 1, "ada@x.io", Role::Admin).await;
    let session = session_of(&admin, 100, 1_000);
    sign_in(f.store.as_ref(), &admin, &session).await;
    let events: Vec<AuditEvent> = (0..8).map(|i| signed_out(&admin, 200 + i)).collect();
    let results = race([&f.store, &node_b], events.len(), |store, i| {
        let (id, event) = (session.id.clone(), events[i].clone());
        async move { store.revoke_session(&id, event.effective_at, &event).await }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let written = log_of(f.store.as_ref(), &t.tenant.id)
        .await
        .into_iter()
        .filter(|e| events.iter().any(|o| o.id == e.id))
        .count();
    assert_eq!(written, 1);
    assert!(verify(f.store.as_ref(), &t.tenant.id).await.is_ok());
}

on_every_backend!(
    a_session_is_found_by_its_digest_with_its_member_and_tenant_as_they_are_now,
    a_sign_in_writes_its_event_in_the_tenants_chain,
    a_session_ends_at_its_expiry_or_when_idle_and_touches_only_move_it_forward,
    a_signed_out_session_ends_and_its_event_is_written_once,
    a_removed_members_sessions_end_with_them,
    sign_in_finds_the_emails_members_with_a_password_in_tenant_creation_order,
    pruning_deletes_only_sessions_that_ended_before_the_cut_off,
    a_second_session_with_one_digest_is_refused_and_writes_nothing,
    nodes_signing_one_session_out_at_once_write_one_event,
);
