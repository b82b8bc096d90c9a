//! The SQL both backends run, written once: every store trait but settlement is the same statements on SQLite and
//! PostgreSQL (`$N` placeholders, `RETURNING`, `ON CONFLICT … DO UPDATE` and `INSERT … SELECT` mean the same on
//! both). [`store_queries!`] implements the traits for a backend's store type; only how a tenant's writes are
//! serialised, and settlement, differ, and each backend says those itself.
//!
//! A macro rather than generic code: sqlx's generic executor bounds would have to be restated on every function,
//! while each expansion here is plain code for one concrete database.

/// Active project keys of the tenant's active projects at `now` (bound as `$1` tenant, `$2` now).
const ACTIVE_PROJECT_KEYS: &str = "SELECT count(*) FROM api_keys a JOIN projects p ON p.id = a.project_id \
    WHERE a.tenant_id = $1 AND a.kind = 'project' AND a.revoked_at IS NULL \
    AND (a.expires_at IS NULL OR a.expires_at > $2) AND p.status = 'active'";

/// A key row with its plan check: the row is inserted only when `$25` is NULL or the tenant has fewer than `$25`
/// active project keys ([`ACTIVE_PROJECT_KEYS`]), in the same statement. Run inside the tenant lock, so two
/// concurrent creations cannot both take the last slot on either backend.
pub(crate) static INSERT_KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO api_keys ({fields}) SELECT $3, $1, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         $16, $17, $18, $19, $20, $21, $22, $23, $24, $26, $27 WHERE $25 IS NULL OR ({ACTIVE_PROJECT_KEYS}) < $25",
        fields = crate::rows::KEY_FIELDS
    )
});

/// Claims a key (`$1` scope, `$2` key, `$3` fingerprint, `$4` claim id, `$5` node, `$6` instance, `$7` request id,
/// `$8` locked until, `$9` now, `$10` expires at) in one statement, so that no other claim comes between a read and
/// a write: a new key is inserted; an existing record is taken over only when it is past its window, or still
/// running with the same fingerprint under a lease that ran out. `RETURNING` yields a row only when this claim wrote
/// it. PostgreSQL locks the conflicting row and re-checks the `WHERE` on its latest version, so of two racing claims
/// exactly one wins; SQLite has one writer at a time.
pub(crate) const CLAIM_IDEMPOTENCY: &str = "INSERT INTO idempotency_records (scope, idem_key, fingerprint, \
    claim_id, node_id, instance, request_id, state, locked_until, created_at, expires_at, status, headers, body) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10, NULL, NULL, NULL) \
    ON CONFLICT (scope, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, claim_id = excluded.claim_id, \
    node_id = excluded.node_id, instance = excluded.instance, request_id = excluded.request_id, state = 'running', \
    locked_until = excluded.locked_until, created_at = excluded.created_at, expires_at = excluded.expires_at, \
    status = NULL, headers = NULL, body = NULL \
    WHERE idempotency_records.expires_at <= excluded.created_at \
    OR (idempotency_records.state = 'running' AND idempotency_records.locked_until <= excluded.created_at \
    AND idempotency_records.fingerprint = excluded.fingerprint) \
    RETURNING claim_id";

/// Stores a response (`$1` status, `$2` headers as JSON, `$3` body) in the record of `$4` scope and `$5` key while
/// claim `$6` still holds it running. Run by `complete_idempotency` and by both settlers, in a batch's transaction.
/// Placeholders are numbered in order of appearance: rusqlite binds `$N` by the order SQLite first sees them.
pub(crate) const COMPLETE_IDEMPOTENCY: &str = "UPDATE idempotency_records SET state = 'done', status = $1, \
    headers = $2, body = $3 WHERE scope = $4 AND idem_key = $5 AND claim_id = $6 AND state = 'running'";

/// The live session with digest `$1` at `$2` (not signed out, not past its expiry, seen at `$3` or later), joined
/// with its member as they are now (current, of the session's tenant: a removed member's sessions match nothing)
/// and its tenant, as [`crate::rows::session_member`] reads them.
pub(crate) const SESSION_BY_DIGEST: &str = "SELECT s.id, s.digest, s.tenant_id, s.member_id, s.created_at, \
    s.last_seen_at, s.expires_at, s.revoked_at, m.email AS m_email, m.role AS m_role, t.name AS t_name, \
    t.plan AS t_plan, t.status AS t_status \
    FROM dashboard_sessions s \
    JOIN members m ON m.id = s.member_id AND m.tenant_id = s.tenant_id AND m.removed_at IS NULL \
    JOIN tenants t ON t.id = s.tenant_id \
    WHERE s.digest = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND s.last_seen_at >= $3";

/// The current members with email `$1` and a password, with their tenants' status, in tenant creation order (ids
/// break ties: they are time-ordered too), as [`crate::rows::login_candidate`] reads them.
pub(crate) const LOGIN_CANDIDATES: &str = "SELECT m.tenant_id, m.id AS member_id, m.password_hash, \
    t.status AS t_status FROM members m JOIN tenants t ON t.id = m.tenant_id \
    WHERE m.email = $1 AND m.password_hash IS NOT NULL AND m.removed_at IS NULL \
    ORDER BY t.created_at, t.id";

/// Locks a claim (`$1` scope, `$2` key, `$3` claim id) in the transaction of the change its request made: held
/// until the end of its window, by no node and no server, so neither a lapsed lease, a restart nor a release frees
/// it; only its completion (or the window's end) does. A retry meanwhile finds it running (409), never executes
/// the change again.
pub(crate) const LOCK_IN_IDEMPOTENCY: &str = "UPDATE idempotency_records SET locked_until = expires_at, \
    node_id = '', instance = '' WHERE scope = $1 AND idem_key = $2 AND claim_id = $3 AND state = 'running'";

/// How often a claim is tried again when the record it lost to is gone before it could be read (released at that
/// moment): each try is a fresh upsert, so only a key released over and over at once gets this far.
pub(crate) const CLAIM_ATTEMPTS: usize = 3;

/// The usage query for a grouping: only fixed column expressions are spliced in; every value is bound (`$1` tenant,
/// `$2` project or NULL, `$3` since, `$4` until). Sums are cast because PostgreSQL sums `BIGINT`s as `NUMERIC`.
pub(crate) fn usage_sql(g: tollgate_core::credits::UsageGrouping) -> String {
    let columns = [
        (g.day, "(created_at / 86400) * 86400", "day", "BIGINT"),
        (g.model, "model", "model", "TEXT"),
        (g.project, "project_id", "project_id", "TEXT"),
        (g.key, "key_id", "key_id", "TEXT"),
    ];
    let select: Vec<String> = columns
        .iter()
        .map(|(on, expr, name, ty)| {
            if *on {
                format!("{expr} AS {name}")
            } else {
                format!("CAST(NULL AS {ty}) AS {name}")
            }
        })
        .collect();
    let grouped: Vec<&str> = columns.iter().filter(|c| c.0).map(|c| c.2).collect();
    let group_by = if grouped.is_empty() {
        String::new()
    } else {
        format!("GROUP BY {0} ORDER BY {0}", grouped.join(", "))
    };
    format!(
        "SELECT {}, count(*) AS requests, CAST(COALESCE(sum(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
         CAST(COALESCE(sum(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
         CAST(COALESCE(sum(cost_micros), 0) AS BIGINT) AS cost \
         FROM usage_records WHERE tenant_id = $1 AND ($2 IS NULL OR project_id = $2) \
         AND created_at >= $3 AND created_at < $4 {group_by}",
        select.join(", ")
    )
}

/// Implements every store trait for `$store` (a struct with `pool: sqlx::Pool<$db>`), with the backend's own:
/// - `begin`: the statement that opens a write transaction;
/// - `lock_tenant`: a statement taking `$1` = tenant id that returns a row when the tenant exists and holds, until
///   the transaction ends, the lock that serialises that tenant's rule-checked writes (the plan's key limit, the last
///   owner, grants);
/// - `migrations_table`: a statement counting (as a 64-bit integer) the tables named `_sqlx_migrations`;
/// - `now_ms`: an SQL expression for the database's clock in Unix milliseconds, as the change log's `created_ms`
///   default reads it (migration 0005);
/// - `lock_key`: a statement taking `$1` = key id that returns the key's cap and spending
///   (the four columns [`crate::rows::key_spend`] reads) and holds, until the transaction ends, the lock that serialises lease calls on it;
/// - `lock_chain`: a statement taking `$1` = tenant id that returns the tenant's audit chain head (`seq`, `hash`)
///   and holds, until the transaction ends, the lock that serialises appends to it;
/// - `for_update`: the clause that makes a `SELECT … ORDER BY` lock the rows it returns, in that order (empty where
///   one writer at a time needs none);
/// - in scope where it expands: `db_error(sqlx::Error) -> StoreError`, `MIGRATOR` (its `sqlx::migrate!`),
///   `$store::settle_batch(node_id, batch, events)`, which writes a non-empty batch of a node's settlements and
///   audit events, and
///   `$store::listen_for_changes()`, the backend's [`ChangeLog::change_signal`](tollgate_core::ports::ChangeLog).
macro_rules! store_queries {
    (
        $store:ident,
        $db:ty,
        begin = $begin:expr,
        lock_tenant = $lock_tenant:expr,
        migrations_table = $migrations_table:expr,
        now_ms = $now_ms:literal,
        lock_key = $lock_key:expr,
        lock_chain = $lock_chain:expr,
        for_update = $for_update:literal $(,)?
    ) => {
        /// The shared statements ([`crate::queries`]) as this backend's implementation of the store traits.
        mod queries {
            use super::{$store, db_error};
            use async_trait::async_trait;
            use $crate::rows::{self, KEY_COLUMNS, KEY_FIELDS, fetch_limit};
            use sqlx::{Executor, Row, Transaction};
            use std::collections::BTreeMap;
            use tollgate_core::audit::{AuditEvent, AuditQuery, Cause, ChainHead, ChainedEvent, EventType};
            use tollgate_core::credits::{
                Balance, LedgerEntry, LedgerKind, Settlement, UsageQuery, UsageTotals, lease_grant,
            };
            use tollgate_core::id;
            use tollgate_core::idempotency::{Claim, ClaimOutcome, Completion};
            use tollgate_core::key::KeyDigest;
            use tollgate_core::money::Micros;
            use tollgate_core::ports::{
                Account, AuditChain, AuditLog, Change, ChangeLog, ChangeSignal, CreditStore, IdempotencyStore, KeyLimit, KeyScope, KeyStore, LeaseGrant,
                LeaseRequest, MemberStore, Page, PageRequest, ProjectStore, RemovedMember, SessionStore, SettledBatch, Store,
                StoreError, TenantStore, TenantUpdate, UsageStore,
            };
            use tollgate_core::role::Role;
            use tollgate_core::session::{LoginCandidate, Session, SessionDigest, SessionMember};
            use tollgate_core::tenant::{
                ApiKey, KeyChanges, KeyOwner, KeyStatus, Member, NewTenant, Principal, Project,
                ProjectStatus, RateLimits, Tenant, TenantStatus, Timestamp,
            };

            type Db = $db;

            const CURRENT_MEMBER: &str =
                "SELECT * FROM members WHERE tenant_id = $1 AND id = $2 AND removed_at IS NULL";

            /// A statement with its arguments bound.
            type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;
            /// Decodes one row.
            type Decode<T> = fn(&<Db as sqlx::Database>::Row) -> Result<T, StoreError>;

            impl $store {
                /// Applies pending migrations; returns how many ran. (On PostgreSQL, nodes starting together are
                /// safe: sqlx holds an advisory lock while it migrates.)
                pub async fn migrate(&self) -> Result<usize, $crate::OpenError> {
                    let before = self.applied_migrations().await?;
                    super::MIGRATOR
                        .run(&self.pool)
                        .await
                        .map_err(|e| $crate::OpenError::Migrate(e.to_string()))?;
                    let after = self.applied_migrations().await?;
                    Ok(after.saturating_sub(before))
                }

                /// How many migrations have run. Its first query is the first contact with the database, so
                /// its failure reads as "cannot open the database".
                async fn applied_migrations(&self) -> Result<usize, $crate::OpenError> {
                    let count = |sql| async move {
                        sqlx::query(sql)
                            .fetch_one(&self.pool)
                            .await
                            .and_then(|row| row.try_get::<i64, _>(0))
                    };
                    let tables = count($migrations_table)
                        .await
                        .map_err(|e| $crate::OpenError::Open(e.to_string()))?;
                    if tables == 0 {
                        return Ok(0);
                    }
                    let applied = count("SELECT count(*) FROM _sqlx_migrations WHERE success")
                        .await
                        .map_err(|e| $crate::OpenError::Migrate(e.to_string()))?;
                    Ok(usize::try_from(applied).unwrap_or(0))
                }

                /// Runs `query` for at most one row and decodes it.
                async fn optional<T>(
                    &self,
                    query: Query<'_>,
                    decode: Decode<T>,
                ) -> Result<Option<T>, StoreError> {
                    let row = query.fetch_optional(&self.pool).await.map_err(db_error)?;
                    rows::one(row, decode)
                }

                /// Runs `query`, fetched with `LIMIT request.limit + 1` ([`fetch_limit`]), and decodes a page of it.
                async fn page<T>(
                    &self,
                    query: Query<'_>,
                    request: &PageRequest,
                    decode: Decode<T>,
                ) -> Result<Page<T>, StoreError> {
                    let found = query.fetch_all(&self.pool).await.map_err(db_error)?;
                    rows::page(found, request, decode)
                }

                /// Opens a write transaction.
                async fn begin(&self) -> Result<Transaction<'static, Db>, StoreError> {
                    self.pool.begin_with($begin).await.map_err(db_error)
                }

                /// Opens a write transaction holding `tenant_id`'s lock; `false` with it if no such tenant.
                async fn lock_tenant(
                    &self,
                    tenant_id: &str,
                ) -> Result<(Transaction<'static, Db>, bool), StoreError> {
                    let mut tx = self.begin().await?;
                    let found = sqlx::query($lock_tenant)
                        .bind(tenant_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    Ok((tx, found.is_some()))
                }
            }

            /// Appends `events` at the ends of their tenants' chains inside `tx`: each chain's head is locked
            /// (in tenant id order, so two transactions never wait for each other in a cycle), the events are
            /// chained and inserted, and the heads moved.
            async fn append_events(
                tx: &mut Transaction<'_, Db>,
                events: &[AuditEvent],
            ) -> Result<(), StoreError> {
                if events.is_empty() {
                    return Ok(());
                }
                let tenants: std::collections::BTreeSet<&str> =
                    events.iter().map(|e| e.tenant_id.as_str()).collect();
                let mut heads = BTreeMap::new();
                for tenant in tenants {
                    let row = sqlx::query($lock_chain)
                        .bind(tenant)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    if let Some(row) = row {
                        let head = ChainHead {
                            seq: row.try_get("seq").map_err(db_error)?,
                            hash: row.try_get("hash").map_err(db_error)?,
                        };
                        heads.insert(tenant.to_owned(), head);
                    }
                }
                // The request's Idempotency-Key claim, if it holds one, is locked with its change.
                if let Some(claim) = events.iter().find_map(|e| e.origin.claim.get()) {
                    sqlx::query($crate::queries::LOCK_IN_IDEMPOTENCY)
                        .bind(&claim.scope)
                        .bind(&claim.key)
                        .bind(&claim.claim_id)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                }
                let chained = $crate::audit::chain(&mut heads, events).map_err(|tenant| {
                    StoreError::Backend(format!("no audit chain for tenant {tenant}"))
                })?;
                for c in &chained {
                    insert_event(&mut **tx, c).await?;
                }
                for (tenant, head) in &heads {
                    sqlx::query("UPDATE audit_chains SET seq = $1, hash = $2 WHERE tenant_id = $3")
                        .bind(head.seq)
                        .bind(&head.hash)
                        .bind(tenant)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                }
                Ok(())
            }

            /// Appends a change's `events` to their chains and commits the change with them.
            async fn commit_audited(
                mut tx: Transaction<'_, Db>,
                events: &[AuditEvent],
            ) -> Result<(), StoreError> {
                append_events(&mut tx, events).await?;
                tx.commit().await.map_err(db_error)
            }

            /// Runs `change` (an `UPDATE … RETURNING` whose `WHERE` matches no row when it would change nothing)
            /// in `tx`, and, when it matched nothing, `current` (the row as it is): the row and whether `change`
            /// changed it, or `None` if there is no such row. The `WHERE` is evaluated against the latest committed
            /// row on both backends (PostgreSQL re-checks it after waiting for a concurrent writer's lock), so of
            /// two concurrent identical changes only one reports a change.
            async fn changed_or_current<T>(
                tx: &mut Transaction<'_, Db>,
                change: Query<'_>,
                current: Query<'_>,
                decode: Decode<T>,
            ) -> Result<Option<(T, bool)>, StoreError> {
                let row = change.fetch_optional(&mut **tx).await.map_err(db_error)?;
                if let Some(changed) = rows::one(row, decode)? {
                    return Ok(Some((changed, true)));
                }
                let row = current.fetch_optional(&mut **tx).await.map_err(db_error)?;
                Ok(rows::one(row, decode)?.map(|found| (found, false)))
            }

            /// Inserts one chained event row.
            async fn insert_event<'e>(
                db: impl Executor<'e, Database = Db>,
                c: &ChainedEvent,
            ) -> Result<(), StoreError> {
                let e = &c.event;
                let int = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
                sqlx::query($crate::audit::INSERT_EVENT)
                    .bind(&e.id)
                    .bind(&e.tenant_id)
                    .bind(c.seq)
                    .bind(e.kind.as_str())
                    .bind(e.effective_at)
                    .bind(e.actor.kind.as_str())
                    .bind(&e.actor.id)
                    .bind(&e.target_id)
                    .bind(&e.project_id)
                    .bind(&e.key_id)
                    .bind(&e.key_last4)
                    .bind(&e.model)
                    .bind(e.status.map(i64::from))
                    .bind(int(e.prompt_tokens))
                    .bind(int(e.completion_tokens))
                    .bind(e.cost.map(Micros::get))
                    .bind(int(e.latency_ms))
                    .bind(&e.origin.request_id)
                    .bind(&e.origin.source_ip)
                    .bind(&e.origin.user_agent)
                    .bind(&e.details)
                    .bind(&c.hash)
                    .execute(db)
                    .await
                    .map_err(db_error)?;
                Ok(())
            }

            /// Writes one project row; shared by project creation and tenant creation.
            async fn insert_project<'e>(
                db: impl Executor<'e, Database = Db>,
                p: &Project,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO projects (id, tenant_id, name, region, status, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&p.id)
                .bind(&p.tenant_id)
                .bind(&p.name)
                .bind(&p.region)
                .bind(p.status.as_str())
                .bind(p.created_at)
                .execute(db)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            /// Writes one member row; shared by member creation and tenant creation.
            async fn insert_member<'e>(
                db: impl Executor<'e, Database = Db>,
                m: &Member,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO members (id, tenant_id, email, role, password_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&m.id)
                .bind(&m.tenant_id)
                .bind(&m.email)
                .bind(m.role.as_str())
                .bind(&m.password_hash)
                .bind(m.created_at)
                .execute(db)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            /// Writes one key row, only if the tenant stays within `limit` ([`$crate::queries::INSERT_KEY`]).
            async fn insert_key<'e>(
                db: impl Executor<'e, Database = Db>,
                key: &ApiKey,
                limit: Option<KeyLimit>,
            ) -> Result<(), StoreError> {
                let (kind, project_id, member_id) = match &key.owner {
                    KeyOwner::Project(p) => ("project", Some(p.as_str()), None),
                    KeyOwner::Member(m) => ("admin", None, Some(m.as_str())),
                };
                let limits = rows::limit_columns(key)?;
                let done = sqlx::query(&$crate::queries::INSERT_KEY)
                    .bind(&key.tenant_id)
                    .bind(limit.map(|l| l.now))
                    .bind(&key.id)
                    .bind(kind)
                    .bind(project_id)
                    .bind(member_id)
                    .bind(&key.name)
                    .bind(&key.description)
                    .bind(key.digest.as_bytes().as_slice())
                    .bind(&key.prefix)
                    .bind(&key.last4)
                    .bind(&key.created_by)
                    .bind(key.created_at)
                    .bind(key.last_used_at)
                    .bind(key.expires_at)
                    .bind(key.revoked_at)
                    .bind(&key.rolled_from)
                    .bind(rows::ips_json(&key.allowed_ips)?)
                    .bind(rows::models_json(key.models.as_ref())?)
                    .bind(limits.requests_per_minute)
                    .bind(limits.tokens_per_minute)
                    .bind(limits.spend_limit_micros)
                    .bind(limits.spend_limit_period)
                    .bind(key.expiry_recorded_at)
                    .bind(limit.map(|l| i64::from(l.max_active)))
                    .bind(key.spent.amount.get())
                    .bind(key.spent.period_start)
                    .execute(db)
                    .await
                    .map_err(db_error)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::KeyLimitReached);
                }
                Ok(())
            }

            #[async_trait]
            impl TenantStore for $store {
                async fn create_tenant(
                    &self,
                    new: &NewTenant,
                    audit: &[AuditEvent],
                ) -> Result<(), StoreError> {
                    let mut tx = self.begin().await?;
                    let t = &new.tenant;
                    sqlx::query(
                        "INSERT INTO tenants (id, name, plan, status, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&t.id)
                    .bind(&t.name)
                    .bind(&t.plan)
                    .bind(t.status.as_str())
                    .bind(t.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    // The tenant's audit chain starts empty with the tenant: appends only ever lock and move it.
                    sqlx::query("INSERT INTO audit_chains (tenant_id, seq, hash) VALUES ($1, 0, '')")
                        .bind(&t.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    insert_project(&mut *tx, &new.project).await?;
                    insert_member(&mut *tx, &new.owner).await?;
                    insert_key(&mut *tx, &new.admin_key, None).await?;
                    commit_audited(tx, audit).await
                }

                async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
                    self.optional(
                        sqlx::query("SELECT * FROM tenants WHERE id = $1").bind(id),
                        rows::tenant,
                    )
                    .await
                }

                async fn list_tenants(
                    &self,
                    page: &PageRequest,
                ) -> Result<Page<Tenant>, StoreError> {
                    self.page(
                        sqlx::query("SELECT * FROM tenants WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2")
                            .bind(&page.after)
                            .bind(fetch_limit(page)),
                        page,
                        rows::tenant,
                    )
                    .await
                }

                async fn update_tenant(
                    &self,
                    id: &str,
                    update: &TenantUpdate,
                    by: &Cause,
                ) -> Result<Option<Tenant>, StoreError> {
                    // Under the tenant's lock the row read here is the one the update changes.
                    let (mut tx, _) = self.lock_tenant(id).await?;
                    let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let Some(before) = rows::one(row, rows::tenant)? else {
                        return Ok(None);
                    };
                    let mut events = Vec::new();
                    // The operator's override of the plan's limits has no event type of its own in API.md: it is
                    // told as a plan change (one event with the plan change, if any), whose details add the limits.
                    let limits = RateLimits {
                        requests_per_minute: update
                            .requests_per_minute
                            .unwrap_or(before.rate_limits.requests_per_minute),
                        tokens_per_minute: update
                            .tokens_per_minute
                            .unwrap_or(before.rate_limits.tokens_per_minute),
                    };
                    let plan = update.plan.as_ref().filter(|p| **p != before.plan);
                    if plan.is_some() || limits != before.rate_limits {
                        let mut details = serde_json::json!({
                            "from": before.plan,
                            "to": plan.unwrap_or(&before.plan),
                        });
                        if limits != before.rate_limits {
                            details["requests_per_minute"] = limits.requests_per_minute.into();
                            details["tokens_per_minute"] = limits.tokens_per_minute.into();
                        }
                        events.push(
                            by.event(EventType::TenantPlanChanged, id)
                                .target(id)
                                .details(&details),
                        );
                    }
                    if let Some(status) = update.status.filter(|s| *s != before.status) {
                        let kind = match status {
                            TenantStatus::Suspended => EventType::TenantSuspended,
                            TenantStatus::Active => EventType::TenantReactivated,
                        };
                        events.push(by.event(kind, id).target(id));
                    }
                    if events.is_empty() {
                        return Ok(Some(before));
                    }
                    let int = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
                    let row = sqlx::query(
                        "UPDATE tenants SET plan = COALESCE($1, plan), status = COALESCE($2, status), \
                         requests_per_minute = $3, tokens_per_minute = $4 \
                         WHERE id = $5 RETURNING *",
                    )
                    .bind(&update.plan)
                    .bind(update.status.map(|s| s.as_str()))
                    .bind(int(limits.requests_per_minute))
                    .bind(int(limits.tokens_per_minute))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let after = rows::one(row, rows::tenant)?;
                    commit_audited(tx, &events).await?;
                    Ok(after)
                }
            }

            #[async_trait]
            impl ProjectStore for $store {
                async fn get_project(
                    &self,
                    tenant_id: &str,
                    project_id: &str,
                ) -> Result<Option<Project>, StoreError> {
                    self.optional(
                        sqlx::query("SELECT * FROM projects WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant_id)
                            .bind(project_id),
                        rows::project,
                    )
                    .await
                }

                async fn find_project(
                    &self,
                    project_id: &str,
                ) -> Result<Option<Project>, StoreError> {
                    self.optional(
                        sqlx::query("SELECT * FROM projects WHERE id = $1").bind(project_id),
                        rows::project,
                    )
                    .await
                }

                async fn create_project(
                    &self,
                    project: &Project,
                    audit: &AuditEvent,
                ) -> Result<(), StoreError> {
                    let mut tx = self.begin().await?;
                    insert_project(&mut *tx, project).await?;
                    commit_audited(tx, std::slice::from_ref(audit)).await
                }

                async fn list_projects(
                    &self,
                    tenant_id: &str,
                    page: &PageRequest,
                ) -> Result<Page<Project>, StoreError> {
                    self.page(
                        sqlx::query(
                            "SELECT * FROM projects WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) \
                         ORDER BY id LIMIT $3",
                        )
                        .bind(tenant_id)
                        .bind(&page.after)
                        .bind(fetch_limit(page)),
                        page,
                        rows::project,
                    )
                    .await
                }

                async fn rename_project(
                    &self,
                    tenant_id: &str,
                    project_id: &str,
                    name: &str,
                    audit: &AuditEvent,
                ) -> Result<Option<Project>, StoreError> {
                    self.update_project("name", name, tenant_id, project_id, audit)
                        .await
                }

                async fn archive_project(
                    &self,
                    tenant_id: &str,
                    project_id: &str,
                    audit: &AuditEvent,
                ) -> Result<Option<Project>, StoreError> {
                    let archived = ProjectStatus::Archived.as_str();
                    self.update_project("status", archived, tenant_id, project_id, audit)
                        .await
                }
            }

            impl $store {
                /// Sets one `column` of a tenant's project to `value` and returns the project; writes `audit` only
                /// if the column held another value.
                async fn update_project(
                    &self,
                    column: &'static str,
                    value: &str,
                    tenant_id: &str,
                    project_id: &str,
                    audit: &AuditEvent,
                ) -> Result<Option<Project>, StoreError> {
                    let sql = format!(
                        "UPDATE projects SET {column} = $1 WHERE tenant_id = $2 AND id = $3 \
                         AND {column} != $1 RETURNING *"
                    );
                    let mut tx = self.begin().await?;
                    let found = changed_or_current(
                        &mut tx,
                        sqlx::query(&sql).bind(value).bind(tenant_id).bind(project_id),
                        sqlx::query("SELECT * FROM projects WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant_id)
                            .bind(project_id),
                        rows::project,
                    )
                    .await?;
                    let Some((project, changed)) = found else {
                        return Ok(None);
                    };
                    if changed {
                        commit_audited(tx, std::slice::from_ref(audit)).await?;
                    }
                    Ok(Some(project))
                }
            }

            #[async_trait]
            impl MemberStore for $store {
                async fn get_member(
                    &self,
                    tenant_id: &str,
                    member_id: &str,
                ) -> Result<Option<Member>, StoreError> {
                    self.optional(
                        sqlx::query(CURRENT_MEMBER).bind(tenant_id).bind(member_id),
                        rows::member,
                    )
                    .await
                }

                async fn add_member(
                    &self,
                    member: &Member,
                    audit: &AuditEvent,
                ) -> Result<(), StoreError> {
                    let mut tx = self.begin().await?;
                    insert_member(&mut *tx, member).await?;
                    commit_audited(tx, std::slice::from_ref(audit)).await
                }

                async fn list_members(
                    &self,
                    tenant_id: &str,
                    page: &PageRequest,
                ) -> Result<Page<Member>, StoreError> {
                    self.page(
                        sqlx::query(
                            "SELECT * FROM members WHERE tenant_id = $1 AND removed_at IS NULL \
                         AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
                        )
                        .bind(tenant_id)
                        .bind(&page.after)
                        .bind(fetch_limit(page)),
                        page,
                        rows::member,
                    )
                    .await
                }

                async fn set_role(
                    &self,
                    tenant_id: &str,
                    member_id: &str,
                    role: Role,
                    audit: &AuditEvent,
                ) -> Result<Option<Member>, StoreError> {
                    // Under the tenant lock neither the member's role read here nor the owner count can change
                    // before the update, even where each statement reads its own snapshot (PostgreSQL's READ
                    // COMMITTED).
                    let (mut tx, _) = self.lock_tenant(tenant_id).await?;
                    let row = sqlx::query(CURRENT_MEMBER)
                        .bind(tenant_id)
                        .bind(member_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let Some(before) = rows::one(row, rows::member)? else {
                        return Ok(None);
                    };
                    if before.role == role {
                        return Ok(Some(before));
                    }
                    let row = sqlx::query(
                        "UPDATE members SET role = $1 WHERE tenant_id = $2 AND id = $3 AND removed_at IS NULL \
                         AND ($1 = 'owner' OR role != 'owner' OR (SELECT count(*) FROM members \
                              WHERE tenant_id = $2 AND role = 'owner' AND removed_at IS NULL) > 1) \
                         RETURNING *",
                    )
                    .bind(role.as_str())
                    .bind(tenant_id)
                    .bind(member_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    // The member is there: an update that matched nothing refused to demote the last owner.
                    let after = rows::one(row, rows::member)?.ok_or(StoreError::LastOwner)?;
                    let event = audit.clone().details(
                        &serde_json::json!({"from": before.role.as_str(), "to": role.as_str()}),
                    );
                    commit_audited(tx, &[event]).await?;
                    Ok(Some(after))
                }

                async fn remove_member(
                    &self,
                    tenant_id: &str,
                    member_id: &str,
                    at: Timestamp,
                    audit: &AuditEvent,
                ) -> Result<Option<RemovedMember>, StoreError> {
                    // The tenant lock keeps the owner count read here true until the update.
                    let (mut tx, _) = self.lock_tenant(tenant_id).await?;
                    let row = sqlx::query(CURRENT_MEMBER)
                        .bind(tenant_id)
                        .bind(member_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let Some(member) = rows::one(row, rows::member)? else {
                        return Ok(None);
                    };
                    if member.role == Role::Owner {
                        let owners: i64 = sqlx::query(
                            "SELECT count(*) FROM members WHERE tenant_id = $1 AND role = 'owner' \
                             AND removed_at IS NULL",
                        )
                        .bind(tenant_id)
                        .fetch_one(&mut *tx)
                        .await
                        .and_then(|row| row.try_get(0))
                        .map_err(db_error)?;
                        if owners <= 1 {
                            return Err(StoreError::LastOwner);
                        }
                    }
                    sqlx::query("UPDATE members SET removed_at = $1 WHERE id = $2")
                        .bind(at)
                        .bind(member_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let rows = sqlx::query(
                        "UPDATE api_keys SET revoked_at = $1 WHERE member_id = $2 AND revoked_at IS NULL \
                         RETURNING id, digest",
                    )
                    .bind(at)
                    .bind(member_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    // Each admin key the removal revokes gets its own event, caused as the removal is.
                    let by = Cause {
                        actor: audit.actor.clone(),
                        at: audit.effective_at,
                        origin: audit.origin.clone(),
                    };
                    let mut events = vec![audit.clone()];
                    let mut revoked = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let bytes: Vec<u8> = row.try_get("digest").map_err(db_error)?;
                        revoked.push(KeyDigest::from_slice(&bytes).ok_or_else(|| {
                            StoreError::Backend("unreadable key digest".to_owned())
                        })?);
                        let key_id: String = row.try_get("id").map_err(db_error)?;
                        events.push(
                            by.event(EventType::AdminApiKeyRevoked, tenant_id)
                                .target(&key_id),
                        );
                    }
                    commit_audited(tx, &events).await?;
                    Ok(Some(RemovedMember { member, revoked }))
                }

                async fn set_password(
                    &self,
                    tenant_id: &str,
                    member_id: &str,
                    password_hash: Option<&str>,
                    audit: &AuditEvent,
                ) -> Result<Option<Member>, StoreError> {
                    let mut tx = self.begin().await?;
                    let row = sqlx::query(
                        "UPDATE members SET password_hash = $1 WHERE tenant_id = $2 AND id = $3 \
                         AND removed_at IS NULL RETURNING *",
                    )
                    .bind(password_hash)
                    .bind(tenant_id)
                    .bind(member_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let Some(member) = rows::one(row, rows::member)? else {
                        return Ok(None);
                    };
                    // A new (or no) password ends the sessions the old one opened.
                    sqlx::query(
                        "UPDATE dashboard_sessions SET revoked_at = $1 \
                         WHERE tenant_id = $2 AND member_id = $3 AND revoked_at IS NULL",
                    )
                    .bind(audit.effective_at)
                    .bind(tenant_id)
                    .bind(member_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    commit_audited(tx, std::slice::from_ref(audit)).await?;
                    Ok(Some(member))
                }
            }

            #[async_trait]
            impl KeyStore for $store {
                async fn insert_key(
                    &self,
                    key: &ApiKey,
                    limit: Option<KeyLimit>,
                    audit: &AuditEvent,
                ) -> Result<(), StoreError> {
                    // A limit is checked under the tenant's lock. A missing tenant fails the insert's foreign key
                    // either way.
                    let mut tx = match limit {
                        None => self.begin().await?,
                        Some(_) => self.lock_tenant(&key.tenant_id).await?.0,
                    };
                    insert_key(&mut *tx, key, limit).await?;
                    commit_audited(tx, std::slice::from_ref(audit)).await
                }

                async fn get_key(
                    &self,
                    tenant_id: &str,
                    key_id: &str,
                ) -> Result<Option<ApiKey>, StoreError> {
                    let sql = format!(
                        "SELECT {cols} FROM api_keys k WHERE k.tenant_id = $1 AND k.id = $2",
                        cols = *KEY_COLUMNS
                    );
                    self.optional(sqlx::query(&sql).bind(tenant_id).bind(key_id), rows::key)
                        .await
                }

                async fn find_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
                    let sql = format!(
                        "SELECT {cols} FROM api_keys k WHERE k.id = $1",
                        cols = *KEY_COLUMNS
                    );
                    self.optional(sqlx::query(&sql).bind(key_id), rows::key)
                        .await
                }

                async fn list_keys(
                    &self,
                    tenant_id: &str,
                    scope: &KeyScope,
                    page: &PageRequest,
                ) -> Result<Page<ApiKey>, StoreError> {
                    let (filter, owner_id) = match scope {
                        KeyScope::Project(p) => ("k.project_id = $2", Some(p)),
                        KeyScope::Member(m) => ("k.member_id = $2", Some(m)),
                        KeyScope::AdminKeys => ("k.kind = 'admin' AND $2 IS NULL", None),
                    };
                    let sql = format!(
                        "SELECT {cols} FROM api_keys k WHERE k.tenant_id = $1 AND {filter} \
                         AND ($3 IS NULL OR k.id > $3) ORDER BY k.id LIMIT $4",
                        cols = *KEY_COLUMNS
                    );
                    self.page(
                        sqlx::query(&sql)
                            .bind(tenant_id)
                            .bind(owner_id)
                            .bind(&page.after)
                            .bind(fetch_limit(page)),
                        page,
                        rows::key,
                    )
                    .await
                }

                async fn revoke_key(
                    &self,
                    tenant_id: &str,
                    key_id: &str,
                    at: Timestamp,
                    audit: &AuditEvent,
                ) -> Result<Option<ApiKey>, StoreError> {
                    // Only a key not yet revoked is updated: a revoked key keeps its first time, and revoking it
                    // again changes nothing and writes no event.
                    let revoke = format!(
                        "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 \
                         AND revoked_at IS NULL RETURNING {KEY_FIELDS}"
                    );
                    let current = format!(
                        "SELECT {cols} FROM api_keys k WHERE k.tenant_id = $1 AND k.id = $2",
                        cols = *KEY_COLUMNS
                    );
                    let mut tx = self.begin().await?;
                    let found = changed_or_current(
                        &mut tx,
                        sqlx::query(&revoke).bind(at).bind(tenant_id).bind(key_id),
                        sqlx::query(&current).bind(tenant_id).bind(key_id),
                        rows::key,
                    )
                    .await?;
                    let Some((key, changed)) = found else {
                        return Ok(None);
                    };
                    if changed {
                        commit_audited(tx, std::slice::from_ref(audit)).await?;
                    }
                    Ok(Some(key))
                }

                async fn update_key(
                    &self,
                    tenant_id: &str,
                    key_id: &str,
                    changes: &KeyChanges,
                    now: Timestamp,
                    audit: &AuditEvent,
                ) -> Result<Option<ApiKey>, StoreError> {
                    // Under the tenant's lock the key read here is the one the update changes, so the event names
                    // exactly the fields this update changed.
                    let (mut tx, _) = self.lock_tenant(tenant_id).await?;
                    let current = format!(
                        "SELECT {cols} FROM api_keys k WHERE k.tenant_id = $1 AND k.id = $2",
                        cols = *KEY_COLUMNS
                    );
                    let row = sqlx::query(&current)
                        .bind(tenant_id)
                        .bind(key_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let Some(before) = rows::one(row, rows::key)? else {
                        return Ok(None);
                    };
                    if before.status(now) != KeyStatus::Active {
                        return Err(StoreError::KeyNotActive);
                    }
                    let (after, changed) = changes.apply(&before);
                    if changed.is_empty() {
                        return Ok(Some(before));
                    }
                    if before.spend_limit != after.spend_limit {
                        // Leases were granted under the old cap: a lower one must not leave them standing. Each
                        // node sees the new cap with its key cache's invalidation and leases afresh.
                        sqlx::query("DELETE FROM key_leases WHERE key_id = $1")
                            .bind(key_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?;
                    }
                    if let Some(limit) = after.spend_limit
                        && before.spend_limit.map(|l| l.period) != Some(limit.period)
                    {
                        // A new cap (or period) counts what the key already spent in the period, from its usage.
                        let start = limit.period.start(now);
                        sqlx::query(
                            "UPDATE api_keys SET spent_period_start = $3, spent_micros = \
                             (SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM usage_records \
                              WHERE tenant_id = $1 AND key_id = $2 AND created_at >= $3) \
                             WHERE tenant_id = $1 AND id = $2",
                        )
                        .bind(tenant_id)
                        .bind(key_id)
                        .bind(start)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                    let limits = rows::limit_columns(&after)?;
                    let update = format!(
                        "UPDATE api_keys SET name = $1, description = $2, expires_at = $3, allowed_ips = $4, \
                         models = $5, requests_per_minute = $6, tokens_per_minute = $7, spend_limit_micros = $8, \
                         spend_limit_period = $9 WHERE tenant_id = $10 AND id = $11 RETURNING {KEY_FIELDS}"
                    );
                    let row = sqlx::query(&update)
                        .bind(&after.name)
                        .bind(&after.description)
                        .bind(after.expires_at)
                        .bind(rows::ips_json(&after.allowed_ips)?)
                        .bind(rows::models_json(after.models.as_ref())?)
                        .bind(limits.requests_per_minute)
                        .bind(limits.tokens_per_minute)
                        .bind(limits.spend_limit_micros)
                        .bind(limits.spend_limit_period)
                        .bind(tenant_id)
                        .bind(key_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let updated = rows::one(row, rows::key)?;
                    let event = audit.clone().details(&serde_json::json!({"changed": changed}));
                    commit_audited(tx, &[event]).await?;
                    Ok(updated)
                }

                async fn roll_key(
                    &self,
                    tenant_id: &str,
                    key_id: &str,
                    successor: &ApiKey,
                    grace_ends: Timestamp,
                    now: Timestamp,
                    audit: &AuditEvent,
                ) -> Result<Option<ApiKey>, StoreError> {
                    // Only an active key matches; one that already expires before the grace period ends keeps its
                    // own time (a roll never extends a key's life; `tenant::rolled_expiry` says the same).
                    let roll = format!(
                        "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < $1 \
                         THEN expires_at ELSE $1 END WHERE tenant_id = $2 AND id = $3 AND kind = 'project' \
                         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $4) RETURNING {KEY_FIELDS}"
                    );
                    let current = format!(
                        "SELECT {cols} FROM api_keys k WHERE k.tenant_id = $1 AND k.id = $2 AND k.kind = 'project'",
                        cols = *KEY_COLUMNS
                    );
                    // The tenant's lock, as for any key creation, though no limit is checked: the successor
                    // replaces a key that is on its way out.
                    let (mut tx, _) = self.lock_tenant(tenant_id).await?;
                    let found = changed_or_current(
                        &mut tx,
                        sqlx::query(&roll).bind(grace_ends).bind(tenant_id).bind(key_id).bind(now),
                        sqlx::query(&current).bind(tenant_id).bind(key_id),
                        rows::key,
                    )
                    .await?;
                    match found {
                        None => Ok(None),
                        Some((_, false)) => Err(StoreError::KeyNotActive),
                        Some((old, true)) => {
                            insert_key(&mut *tx, successor, None).await?;
                            commit_audited(tx, std::slice::from_ref(audit)).await?;
                            Ok(Some(old))
                        }
                    }
                }

                async fn record_key_expiry(
                    &self,
                    tenant_id: &str,
                    key_id: &str,
                    at: Timestamp,
                    audit: &AuditEvent,
                ) -> Result<bool, StoreError> {
                    // The conditional update is the once: of two nodes refusing the key at once, one sets the
                    // column, and the other's update (after waiting for its lock) matches nothing.
                    let mut tx = self.begin().await?;
                    let done = sqlx::query(
                        "UPDATE api_keys SET expired_event_at = $1 WHERE tenant_id = $2 AND id = $3 \
                         AND expired_event_at IS NULL AND revoked_at IS NULL AND expires_at <= $1",
                    )
                    .bind(at)
                    .bind(tenant_id)
                    .bind(key_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    if done.rows_affected() == 0 {
                        return Ok(false);
                    }
                    commit_audited(tx, std::slice::from_ref(audit)).await?;
                    Ok(true)
                }

                async fn principal_by_digest(
                    &self,
                    digest: &KeyDigest,
                ) -> Result<Option<Principal>, StoreError> {
                    let sql = format!(
                        "SELECT {cols}, t.plan AS t_plan, t.status AS t_status, p.status AS p_status, \
                         m.role AS m_role, t.requests_per_minute AS t_requests_per_minute, \
                         t.tokens_per_minute AS t_tokens_per_minute \
                         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
                         LEFT JOIN projects p ON p.id = k.project_id \
                         LEFT JOIN members m ON m.id = k.member_id AND m.removed_at IS NULL \
                         WHERE k.digest = $1",
                        cols = *KEY_COLUMNS
                    );
                    self.optional(
                        sqlx::query(&sql).bind(digest.as_bytes().as_slice()),
                        rows::principal,
                    )
                    .await
                }
            }

            /// Adds a grant or adjustment to the tenant's balance (and to what it was granted) and appends its
            /// ledger entry, inside `tx`. Charges go through settlement.
            async fn append(
                tx: &mut Transaction<'_, Db>,
                tenant_id: &str,
                kind: LedgerKind,
                amount: Micros,
                reason: Option<&str>,
                at: Timestamp,
            ) -> Result<LedgerEntry, StoreError> {
                // The upsert's SET reads the existing row: an unqualified column in it names that row on both.
                let balance_after: i64 = sqlx::query(
                    "INSERT INTO credit_balances (tenant_id, balance_micros, granted_micros, version) \
                     VALUES ($1, $2, $2, 1) ON CONFLICT (tenant_id) DO UPDATE SET \
                     balance_micros = credit_balances.balance_micros + $2, \
                     granted_micros = credit_balances.granted_micros + $2, \
                     version = credit_balances.version + 1 RETURNING balance_micros",
                )
                .bind(tenant_id)
                .bind(amount.get())
                .fetch_one(&mut **tx)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(db_error)?;
                let entry = LedgerEntry {
                    id: id::new_id(id::LEDGER_ENTRY),
                    tenant_id: tenant_id.to_owned(),
                    kind,
                    amount,
                    balance_after: Micros(balance_after),
                    reason: reason.map(str::to_owned),
                    created_at: at,
                };
                sqlx::query(
                    "INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, \
                     reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&entry.id)
                .bind(&entry.tenant_id)
                .bind(kind.as_str())
                .bind(amount.get())
                .bind(balance_after)
                .bind(&entry.reason)
                .bind(at)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                Ok(entry)
            }

            #[async_trait]
            impl CreditStore for $store {
                async fn balance(&self, tenant_id: &str) -> Result<Balance, StoreError> {
                    self.optional(
                        sqlx::query("SELECT balance_micros, version FROM credit_balances WHERE tenant_id = $1")
                            .bind(tenant_id),
                        rows::balance,
                    )
                    .await
                    .map(Option::unwrap_or_default)
                }

                async fn grant(
                    &self,
                    tenant_id: &str,
                    amount: Micros,
                    reason: Option<&str>,
                    at: Timestamp,
                    audit: &AuditEvent,
                ) -> Result<Option<LedgerEntry>, StoreError> {
                    let (mut tx, exists) = self.lock_tenant(tenant_id).await?;
                    if !exists {
                        return Ok(None);
                    }
                    let entry =
                        append(&mut tx, tenant_id, LedgerKind::Grant, amount, reason, at).await?;
                    commit_audited(tx, &[audit.clone().target(&entry.id)]).await?;
                    Ok(Some(entry))
                }

                async fn ledger(
                    &self,
                    tenant_id: &str,
                    page: &PageRequest,
                ) -> Result<Page<LedgerEntry>, StoreError> {
                    self.page(
                        sqlx::query(
                            "SELECT * FROM ledger_entries WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2) \
                         ORDER BY id DESC LIMIT $3",
                        )
                        .bind(tenant_id)
                        .bind(&page.after)
                        .bind(fetch_limit(page)),
                        page,
                        rows::ledger_entry,
                    )
                    .await
                }

                async fn settle(
                    &self,
                    node_id: &str,
                    batch: &[Settlement],
                    events: &[AuditEvent],
                ) -> Result<SettledBatch, StoreError> {
                    if batch.is_empty() && events.is_empty() {
                        return Ok(SettledBatch::default());
                    }
                    self.settle_batch(node_id, batch, events).await
                }

                async fn lease(&self, request: &LeaseRequest<'_>) -> Result<LeaseGrant, StoreError> {
                    // The account's lock serialises every node's lease calls for it (and a tenant's grants);
                    // settlements take a charge off the balance (or add it to the key's spending) and off a lease
                    // together, which leaves what is free unchanged.
                    let (table, column, id) = lease_table(request.account);
                    let (mut tx, total, spent) = match request.account {
                        Account::Tenant(tenant_id) => {
                            let (mut tx, _) = self.lock_tenant(tenant_id).await?;
                            let balance: Option<i64> = sqlx::query_scalar(
                                "SELECT balance_micros FROM credit_balances WHERE tenant_id = $1",
                            )
                            .bind(tenant_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db_error)?;
                            (tx, Micros(balance.unwrap_or(0)), Micros::ZERO)
                        }
                        Account::Key(key_id) => {
                            let mut tx = self.begin().await?;
                            let row = sqlx::query($lock_key)
                                .bind(key_id)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(db_error)?;
                            // No key, or no cap: nothing to lease.
                            let key = row.as_ref().map(rows::key_spend).transpose()?.flatten();
                            let (cap, spent) = key.map_or((Micros::ZERO, Micros::ZERO), |(limit, spent)| {
                                let now = if spent.period_start == limit.period.start(request.now) {
                                    spent.amount
                                } else {
                                    Micros::ZERO
                                };
                                (limit.amount, now)
                            });
                            (tx, cap.minus(spent), spent)
                        }
                    };
                    sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1 AND expires_at < $2"))
                        .bind(id)
                        .bind(request.now)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let row = sqlx::query(&format!(
                        "SELECT CAST(COALESCE((SELECT SUM(amount_micros) FROM {table} WHERE {column} = $1), 0) \
                           AS BIGINT), \
                         COALESCE((SELECT amount_micros FROM {table} WHERE {column} = $1 AND node_id = $2), 0)"
                    ))
                    .bind(id)
                    .bind(request.node_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let column_at = |i: usize| row.try_get::<i64, _>(i).map(Micros).map_err(db_error);
                    let (leased, own) = (column_at(0)?, column_at(1)?);
                    let free = total.minus(leased).max(Micros::ZERO);
                    let granted = lease_grant(free, request.need, request.want);
                    let lease = own.plus(granted);
                    // An empty lease is no row: a refused first ask leaves nothing behind.
                    if lease > Micros::ZERO {
                        sqlx::query(&format!(
                            "INSERT INTO {table} ({column}, node_id, amount_micros, expires_at) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT ({column}, node_id) \
                             DO UPDATE SET amount_micros = $3, expires_at = $4"
                        ))
                        .bind(id)
                        .bind(request.node_id)
                        .bind(lease.get())
                        .bind(request.expires_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                    tx.commit().await.map_err(db_error)?;
                    Ok(LeaseGrant {
                        granted,
                        lease,
                        free: free.minus(granted),
                        spent,
                    })
                }

                async fn release_lease(
                    &self,
                    account: Account<'_>,
                    node_id: &str,
                    amount: Micros,
                ) -> Result<(), StoreError> {
                    // Only its node writes a lease row: one statement, no lock to take first.
                    let (table, column, id) = lease_table(account);
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE {column} = $1 AND node_id = $2 AND amount_micros <= $3"
                    ))
                    .bind(id)
                    .bind(node_id)
                    .bind(amount.get())
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    sqlx::query(&format!(
                        "UPDATE {table} SET amount_micros = amount_micros - $3 \
                         WHERE {column} = $1 AND node_id = $2 AND amount_micros > $3"
                    ))
                    .bind(id)
                    .bind(node_id)
                    .bind(amount.get())
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(())
                }

                async fn renew_leases(
                    &self,
                    node_id: &str,
                    expires_at: Timestamp,
                ) -> Result<(), StoreError> {
                    for table in ["credit_leases", "key_leases"] {
                        sqlx::query(&format!("UPDATE {table} SET expires_at = $2 WHERE node_id = $1"))
                            .bind(node_id)
                            .bind(expires_at)
                            .execute(&self.pool)
                            .await
                            .map_err(db_error)?;
                    }
                    Ok(())
                }
            }

            /// Where an account's leases are: the table, its account column, and the account's id.
            fn lease_table(account: Account<'_>) -> (&'static str, &'static str, &str) {
                match account {
                    Account::Tenant(id) => ("credit_leases", "tenant_id", id),
                    Account::Key(id) => ("key_leases", "key_id", id),
                }
            }

            #[async_trait]
            impl UsageStore for $store {
                async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageTotals>, StoreError> {
                    let found = sqlx::query(&$crate::queries::usage_sql(query.group))
                        .bind(&query.tenant_id)
                        .bind(&query.project_id)
                        .bind(query.since)
                        .bind(query.until)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_error)?;
                    let mut out = Vec::with_capacity(found.len());
                    for row in &found {
                        let totals = rows::usage_totals(row)?;
                        // The ungrouped aggregate of an empty window is one row of zeros: not a group.
                        if totals.requests > 0 {
                            out.push(totals);
                        }
                    }
                    Ok(out)
                }
            }

            #[async_trait]
            impl IdempotencyStore for $store {
                async fn claim_idempotency(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
                    for _ in 0..$crate::queries::CLAIM_ATTEMPTS {
                        let claimed: Option<String> = sqlx::query_scalar($crate::queries::CLAIM_IDEMPOTENCY)
                            .bind(&claim.scope)
                            .bind(&claim.key)
                            .bind(&claim.fingerprint.0[..])
                            .bind(&claim.claim_id)
                            .bind(&claim.node_id)
                            .bind(&claim.instance)
                            .bind(&claim.request_id)
                            .bind(claim.locked_until)
                            .bind(claim.now)
                            .bind(claim.expires_at)
                            .fetch_optional(&self.pool)
                            .await
                            .map_err(db_error)?;
                        if claimed.as_deref() == Some(claim.claim_id.as_str()) {
                            return Ok(ClaimOutcome::Claimed);
                        }
                        // Another claim holds the record: read what it is, outside the upsert (a second
                        // statement, so the record may be released in between: then claim again).
                        let found = sqlx::query(
                            "SELECT fingerprint, state, request_id, status, headers, body \
                             FROM idempotency_records WHERE scope = $1 AND idem_key = $2",
                        )
                        .bind(&claim.scope)
                        .bind(&claim.key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_error)?;
                        if let Some(row) = found {
                            return rows::idempotency_found(&row, &claim.fingerprint);
                        }
                    }
                    Err(StoreError::Backend(format!(
                        "idempotency key {:?} was released under {} claims in a row",
                        claim.key,
                        $crate::queries::CLAIM_ATTEMPTS
                    )))
                }

                async fn complete_idempotency(&self, completion: &Completion) -> Result<bool, StoreError> {
                    let response = &completion.response;
                    let done = sqlx::query($crate::queries::COMPLETE_IDEMPOTENCY)
                        .bind(i64::from(response.status))
                        .bind(rows::headers_json(&response.headers)?)
                        .bind(&response.body[..])
                        .bind(&completion.scope)
                        .bind(&completion.key)
                        .bind(&completion.claim_id)
                        .execute(&self.pool)
                        .await
                        .map_err(db_error)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn release_idempotency(
                    &self,
                    scope: &str,
                    key: &str,
                    claim_id: &str,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "DELETE FROM idempotency_records WHERE scope = $1 AND idem_key = $2 AND claim_id = $3 \
                         AND state = 'running' AND instance <> ''",
                    )
                    .bind(scope)
                    .bind(key)
                    .bind(claim_id)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(())
                }

                async fn renew_idempotency(
                    &self,
                    node_id: &str,
                    locked_until: Timestamp,
                ) -> Result<(), StoreError> {
                    // The records are locked in key order first, as a settled batch completes them, so that two
                    // writers each locking several of one node's records never wait for each other in a cycle.
                    sqlx::query(concat!(
                        "WITH locked AS MATERIALIZED (SELECT scope, idem_key FROM idempotency_records \
                         WHERE node_id = $1 AND state = 'running' ORDER BY scope, idem_key ",
                        $for_update,
                        ") UPDATE idempotency_records SET locked_until = $2 FROM locked \
                         WHERE idempotency_records.scope = locked.scope \
                         AND idempotency_records.idem_key = locked.idem_key"
                    ))
                    .bind(node_id)
                    .bind(locked_until)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(())
                }

                async fn release_instance_idempotency(
                    &self,
                    instance: &str,
                    node_id: &str,
                ) -> Result<u64, StoreError> {
                    let done = sqlx::query(
                        "DELETE FROM idempotency_records \
                         WHERE instance = $1 AND node_id <> $2 AND state = 'running'",
                    )
                    .bind(instance)
                    .bind(node_id)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(done.rows_affected())
                }

                async fn prune_idempotency(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
                    // The outer WHERE repeats the rule: on PostgreSQL a record claimed afresh after the
                    // subquery chose it is re-checked against its new version, and kept.
                    let done = sqlx::query(
                        "DELETE FROM idempotency_records \
                         WHERE expires_at <= $1 AND (state = 'done' OR locked_until <= $1) \
                         AND (scope, idem_key) IN (SELECT scope, idem_key FROM idempotency_records \
                           WHERE expires_at <= $1 AND (state = 'done' OR locked_until <= $1) LIMIT $2)",
                    )
                    .bind(now)
                    .bind(i64::from(limit))
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(done.rows_affected())
                }
            }

            #[async_trait]
            impl SessionStore for $store {
                async fn login_candidates(&self, email: &str) -> Result<Vec<LoginCandidate>, StoreError> {
                    let found = sqlx::query($crate::queries::LOGIN_CANDIDATES)
                        .bind(email)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_error)?;
                    found.iter().map(rows::login_candidate).collect()
                }

                async fn create_session(
                    &self,
                    session: &Session,
                    audit: &AuditEvent,
                ) -> Result<(), StoreError> {
                    let mut tx = self.begin().await?;
                    sqlx::query(
                        "INSERT INTO dashboard_sessions (id, digest, tenant_id, member_id, created_at, \
                         last_seen_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&session.id)
                    .bind(&session.digest.0[..])
                    .bind(&session.tenant_id)
                    .bind(&session.member_id)
                    .bind(session.created_at)
                    .bind(session.last_seen_at)
                    .bind(session.expires_at)
                    .bind(session.revoked_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    commit_audited(tx, std::slice::from_ref(audit)).await
                }

                async fn session_by_digest(
                    &self,
                    digest: &SessionDigest,
                    now: Timestamp,
                    idle_since: Timestamp,
                ) -> Result<Option<SessionMember>, StoreError> {
                    self.optional(
                        sqlx::query($crate::queries::SESSION_BY_DIGEST)
                            .bind(&digest.0[..])
                            .bind(now)
                            .bind(idle_since),
                        rows::session_member,
                    )
                    .await
                }

                async fn touch_session(&self, session_id: &str, now: Timestamp) -> Result<(), StoreError> {
                    // Only forward: two nodes touching one session with skewed clocks, or a late touch, must not
                    // move its idle expiry back.
                    sqlx::query(
                        "UPDATE dashboard_sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1",
                    )
                    .bind(now)
                    .bind(session_id)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(())
                }

                async fn revoke_session(
                    &self,
                    session_id: &str,
                    at: Timestamp,
                    audit: &AuditEvent,
                ) -> Result<(), StoreError> {
                    // Only a session that has not ended (signed out, or past its expiry, as pruning counts it) is
                    // signed out: an ended one keeps its row as it is and gets no event. Of two concurrent sign-outs
                    // one matches: PostgreSQL re-checks the WHERE on the row the other committed.
                    let mut tx = self.begin().await?;
                    let done = sqlx::query(
                        "UPDATE dashboard_sessions SET revoked_at = $1 \
                         WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1",
                    )
                    .bind(at)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    if done.rows_affected() == 0 {
                        return Ok(());
                    }
                    commit_audited(tx, std::slice::from_ref(audit)).await
                }

                async fn prune_sessions(&self, before: Timestamp) -> Result<u64, StoreError> {
                    let done = sqlx::query(
                        "DELETE FROM dashboard_sessions WHERE revoked_at < $1 OR expires_at < $1",
                    )
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(done.rows_affected())
                }
            }

            /// Milliseconds, as the change log counts them (saturating: no window is that long).
            fn millis(d: std::time::Duration) -> i64 {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            }

            #[async_trait]
            impl ChangeLog for $store {
                async fn recent_changes(
                    &self,
                    window: std::time::Duration,
                ) -> Result<Vec<Change>, StoreError> {
                    // By the database's clock, which the rows were stamped with: the nodes' clocks play no part.
                    let found = sqlx::query(concat!(
                        "SELECT id, digest, tenant_id, created_ms FROM invalidations WHERE created_ms >= ",
                        $now_ms,
                        " - $1 ORDER BY id"
                    ))
                    .bind(millis(window))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                    found.iter().map(rows::change).collect()
                }

                async fn prune_changes(&self, age: std::time::Duration) -> Result<u64, StoreError> {
                    let done = sqlx::query(concat!(
                        "DELETE FROM invalidations WHERE created_ms < ",
                        $now_ms,
                        " - $1"
                    ))
                    .bind(millis(age))
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(done.rows_affected())
                }

                async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>, StoreError> {
                    self.listen_for_changes().await
                }
            }

            #[async_trait]
            impl AuditLog for $store {
                async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
                    commit_audited(self.begin().await?, events).await
                }

                async fn audit_events(
                    &self,
                    query: &AuditQuery,
                ) -> Result<Page<ChainedEvent>, StoreError> {
                    let page = PageRequest {
                        after: query.before_id.clone(),
                        limit: query.limit,
                    };
                    self.page(
                        sqlx::query(&$crate::audit::LIST_EVENTS)
                            .bind(&query.tenant_id)
                            .bind(query.kind.map(|k| k.as_str()))
                            .bind(&query.actor_id)
                            .bind(&query.key_id)
                            .bind(query.since)
                            .bind(query.until)
                            .bind(&query.before_id)
                            .bind(fetch_limit(&page)),
                        &page,
                        rows::event,
                    )
                    .await
                }

                async fn audit_chain_events(
                    &self,
                    tenant_id: &str,
                    after_seq: i64,
                    limit: u32,
                ) -> Result<Vec<ChainedEvent>, StoreError> {
                    let found = sqlx::query(&$crate::audit::CHAIN_EVENTS)
                        .bind(tenant_id)
                        .bind(after_seq)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_error)?;
                    found.iter().map(rows::event).collect()
                }

                async fn audit_chains(
                    &self,
                    tenant_id: Option<&str>,
                ) -> Result<Vec<AuditChain>, StoreError> {
                    let found = sqlx::query(
                        "SELECT tenant_id, seq, hash, anchor_seq, anchor_hash FROM audit_chains \
                         WHERE $1 IS NULL OR tenant_id = $1 ORDER BY tenant_id",
                    )
                    .bind(tenant_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                    found.iter().map(rows::audit_chain).collect()
                }

                async fn prune_audit(&self, before: Timestamp) -> Result<u64, StoreError> {
                    let mut pruned = 0;
                    for chain in self.audit_chains(None).await? {
                        let mut tx = self.begin().await?;
                        sqlx::query($lock_chain)
                            .bind(&chain.tenant_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db_error)?;
                        // The new anchor: the last event, in chain order, made before the cut-off. The prefix up
                        // to it goes (an event a skewed clock dated later, inside it, goes with it).
                        let last = sqlx::query(
                            "SELECT seq, hash FROM audit_events WHERE tenant_id = $1 AND effective_at < $2 \
                             ORDER BY seq DESC LIMIT 1",
                        )
                        .bind(&chain.tenant_id)
                        .bind(before)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                        let Some(last) = last else {
                            continue;
                        };
                        let seq: i64 = last.try_get("seq").map_err(db_error)?;
                        let hash: String = last.try_get("hash").map_err(db_error)?;
                        let done = sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq <= $2")
                            .bind(&chain.tenant_id)
                            .bind(seq)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?;
                        sqlx::query(
                            "UPDATE audit_chains SET anchor_seq = $1, anchor_hash = $2 WHERE tenant_id = $3",
                        )
                        .bind(seq)
                        .bind(&hash)
                        .bind(&chain.tenant_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                        tx.commit().await.map_err(db_error)?;
                        pruned += done.rows_affected();
                    }
                    Ok(pruned)
                }
            }

            #[async_trait]
            impl Store for $store {
                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query("SELECT 1")
                        .execute(&self.pool)
                        .await
                        .map_err(db_error)?;
                    Ok(())
                }
            }
        }
    };
}

pub(crate) use store_queries;
