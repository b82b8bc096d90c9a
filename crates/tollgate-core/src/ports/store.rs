//! The storage port: the system of record for tenants, projects, members and keys, and the change log that tells
//! every node which of its cached keys a change concerns.
//!
//! Split by resource so each backend (SQLite, PostgreSQL) implements small traits, and [`Store`] is all of them.
//! The domain generates ids and timestamps; a store writes what it is given and never invents either, with one
//! exception: the change log, which the store writes itself (in the same transaction as each change) with its own
//! ids and clock, so that writers that know nothing of it are covered too.

use crate::audit::{AuditEvent, AuditQuery, Cause, ChainHead, ChainedEvent};
use crate::credits::{Balance, LedgerEntry, Settlement, UsageQuery, UsageTotals};
use crate::idempotency::{Claim, ClaimOutcome, Completion};
use crate::key::KeyDigest;
use crate::money::Micros;
use crate::role::Role;
use crate::session::{LoginCandidate, Session, SessionDigest, SessionMember};
use crate::tenant::{
    ApiKey, KeyChanges, Member, NewTenant, Principal, Project, Tenant, TenantStatus, Timestamp,
};
use async_trait::async_trait;
use std::time::Duration;

/// Why storage failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. the same email twice in a tenant).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The change would leave the tenant without an owner; nothing was changed.
    #[error("the tenant would be left without an owner")]
    LastOwner,
    /// The tenant already has its plan's number of active project keys; nothing was written.
    #[error("the active key limit is reached")]
    KeyLimitReached,
    /// The key is revoked or expired, which is final: it cannot be updated or rolled; nothing was written.
    #[error("the key is revoked or expired")]
    KeyNotActive,
    /// The backend cannot be written or reached for now (locked, disk full, read-only, connection lost): the
    /// same call may succeed later. The detail is for logs.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend failed for good on this input; the detail is for logs.
    #[error("storage failed: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// What a settled batch did: each request's charge, in order, and the balance of every tenant it charged, as of
/// its commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettledBatch {
    /// The amount charged to each settlement of the batch, in order.
    pub charged: Vec<Micros>,
    /// `(tenant_id, balance)` after the commit, for each tenant whose balance changed.
    pub balances: Vec<(String, Balance)>,
}

/// Whose money a lease reserves part of: a tenant's balance, or what a capped key may still spend in its period
/// (its cap less the period's spending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Account<'a> {
    /// A tenant's balance, by tenant id.
    Tenant(&'a str),
    /// A key's spend cap, by key id.
    Key(&'a str),
}

/// A node's ask for more of an account's money: at least `need`, up to `want`, for its lease (its reservation of
/// part of it, against which it holds requests without a store round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest<'a> {
    /// The tenant or key.
    pub account: Account<'a>,
    /// The node asking (one id per running process).
    pub node_id: &'a str,
    /// Granted whole or not at all.
    pub need: Micros,
    /// Granted as far as [`crate::credits::lease_grant`] allows (at least `need`).
    pub want: Micros,
    /// Leases that expired before this are dropped first: a node that stopped renewing (crashed) reserves nothing.
    pub now: Timestamp,
    /// The node's lease on the tenant lasts until then (unless renewed).
    pub expires_at: Timestamp,
}

/// What a lease call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseGrant {
    /// Added to the node's lease (zero when the balance could not cover `need`).
    pub granted: Micros,
    /// The node's lease after the call, as the store has it.
    pub lease: Micros,
    /// The balance (or the key's remaining cap) no live lease covers after the call: what any node may still
    /// reserve.
    pub free: Micros,
    /// For a key: what it has spent in its cap's current period (committed charges). Zero for a tenant.
    pub spent: Micros,
}

/// What an answered request's charge survives: the commit before the response waits for this much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Power loss: every commit reaches the disk (SQLite `synchronous = FULL`, PostgreSQL
    /// `synchronous_commit = on`).
    #[default]
    Fsync,
    /// A crash or `kill -9` of the process, not of the machine (SQLite WAL with `synchronous = NORMAL`; PostgreSQL
    /// `synchronous_commit = off`, which loses recent commits only to a crash of the database server).
    Process,
}

/// Cursor pagination: items after the id `after`, at most `limit` of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The previous page's last id.
    pub after: Option<String>,
    /// 1–100.
    pub limit: u32,
}

/// One page of items, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Whether more items follow the last one.
    pub has_more: bool,
}

/// What an operator changes on a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUpdate {
    /// A new plan name.
    pub plan: Option<String>,
    /// Suspend or reactivate.
    pub status: Option<TenantStatus>,
    /// Override the plan's requests per minute (`Some(None)`: back to the plan's).
    pub requests_per_minute: Option<Option<u64>>,
    /// Override the plan's tokens per minute (`Some(None)`: back to the plan's).
    pub tokens_per_minute: Option<Option<u64>>,
}

/// Which keys to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// One project's keys.
    Project(String),
    /// One member's admin keys.
    Member(String),
    /// Every admin key of the tenant.
    AdminKeys,
}

/// The plan's cap on a tenant's active project keys, checked in the same write as the insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimit {
    /// Active (neither revoked nor expired) keys of active projects allowed at once.
    pub max_active: u32,
    /// The time that decides which keys have expired.
    pub now: Timestamp,
}

/// A member's removal: the member as it was and the digests of the admin keys it revoked (to drop from caches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedMember {
    /// The member, before removal.
    pub member: Member,
    /// Digests of the admin keys revoked by the removal.
    pub revoked: Vec<KeyDigest>,
}

// Every mutating method below takes the audit event(s) of its change and appends them to the tenant's chain in the
// change's own transaction: a change that fails (not found, refused, conflict) writes no event, a change never
// lacks its event, and a call that changes nothing writes none. Each method says which facts, if any, the store
// fills in itself (those only its transaction knows).

/// Tenants.
#[async_trait]
pub trait TenantStore {
    /// Writes a tenant with its first project, owner and admin key, and `audit` (the events of their creation), all
    /// or nothing. The tenant's audit chain starts with it, so `audit` lands at its start.
    async fn create_tenant(&self, new: &NewTenant, audit: &[AuditEvent]) -> Result<(), StoreError>;
    /// One tenant.
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError>;
    /// Tenants, oldest first.
    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError>;
    /// Changes a tenant's plan or status; `None` if no such tenant. Reads the tenant as it was in the same
    /// transaction and writes, with `by` as their cause and the tenant as their target, one event per field that
    /// changes: `tenant.plan_changed` (details `{"from", "to"}`), then `tenant.suspended` or
    /// `tenant.reactivated`. A field set to what it already is changes nothing and writes no event.
    async fn update_tenant(
        &self,
        id: &str,
        update: &TenantUpdate,
        by: &Cause,
    ) -> Result<Option<Tenant>, StoreError>;
}

/// Projects.
#[async_trait]
pub trait ProjectStore {
    /// One project of a tenant (`None` for another tenant's project).
    async fn get_project(
        &self,
        tenant_id: &str,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError>;
    /// A project by id alone, for operator tools (the CLI) that are not acting inside a tenant.
    async fn find_project(&self, project_id: &str) -> Result<Option<Project>, StoreError>;
    /// Writes a new project and `audit`.
    async fn create_project(&self, project: &Project, audit: &AuditEvent)
    -> Result<(), StoreError>;
    /// A tenant's projects, oldest first, archived ones included.
    async fn list_projects(
        &self,
        tenant_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Project>, StoreError>;
    /// Renames a project and writes `audit`; `None` if the tenant has no such project. Renaming to the name it has
    /// changes nothing and writes no event.
    async fn rename_project(
        &self,
        tenant_id: &str,
        project_id: &str,
        name: &str,
        audit: &AuditEvent,
    ) -> Result<Option<Project>, StoreError>;
    /// Archives a project and writes `audit`; `None` if the tenant has no such project. Archiving an archived
    /// project is harmless: it changes nothing and writes no event.
    async fn archive_project(
        &self,
        tenant_id: &str,
        project_id: &str,
        audit: &AuditEvent,
    ) -> Result<Option<Project>, StoreError>;
}

/// Members.
#[async_trait]
pub trait MemberStore {
    /// One current member of a tenant (`None` for a removed member or another tenant's).
    async fn get_member(
        &self,
        tenant_id: &str,
        member_id: &str,
    ) -> Result<Option<Member>, StoreError>;
    /// Adds a member and writes `audit`; [`StoreError::Conflict`] (and no event) if a current member has the same
    /// email.
    async fn add_member(&self, member: &Member, audit: &AuditEvent) -> Result<(), StoreError>;
    /// A tenant's current members, oldest first.
    async fn list_members(
        &self,
        tenant_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Member>, StoreError>;
    /// Changes a member's role and writes `audit` with its details set by the store to `{"from", "to"}` (the role
    /// it had, read in the same transaction); [`StoreError::LastOwner`] if that would demote the last owner. The
    /// role it already has changes nothing and writes no event.
    async fn set_role(
        &self,
        tenant_id: &str,
        member_id: &str,
        role: Role,
        audit: &AuditEvent,
    ) -> Result<Option<Member>, StoreError>;
    /// Sets a current member's dashboard password hash (an Argon2id PHC string; `None` clears it, so the member can
    /// no longer sign in) and writes `audit`; `None` (and no event) if the tenant has no such current member.
    /// Setting a password always writes its event, even one equal to the last: hashes are salted, so the store
    /// cannot tell. In the same transaction every live dashboard session of the member is signed out (at the
    /// event's time): whoever held the old password holds no session either.
    async fn set_password(
        &self,
        tenant_id: &str,
        member_id: &str,
        password_hash: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<Option<Member>, StoreError>;
    /// Removes a member and revokes its admin keys at `at`, in one transaction; [`StoreError::LastOwner`] for the
    /// last owner. Writes `audit` (the removal), then one `admin_api_key.revoked` per key the removal revoked,
    /// with `audit`'s actor, time and origin and the key as its target.
    async fn remove_member(
        &self,
        tenant_id: &str,
        member_id: &str,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<RemovedMember>, StoreError>;
}

/// API keys, project and admin.
#[async_trait]
pub trait KeyStore {
    /// Writes a new key and `audit`; with a `limit`, only if the tenant stays within it
    /// ([`StoreError::KeyLimitReached`], and no event).
    async fn insert_key(
        &self,
        key: &ApiKey,
        limit: Option<KeyLimit>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// One key of a tenant (`None` for another tenant's key).
    async fn get_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// A key by id alone, for operator tools (the CLI) that are not acting inside a tenant.
    async fn find_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Keys in `scope`, oldest first, revoked and expired ones included.
    async fn list_keys(
        &self,
        tenant_id: &str,
        scope: &KeyScope,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, StoreError>;
    /// Revokes a key at `at`, writes `audit` and returns the key; `None` if no such key. Revoking a revoked key is
    /// harmless: it keeps its first time, changes nothing and writes no event.
    async fn revoke_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<ApiKey>, StoreError>;
    /// Applies `changes` to a key that is active at `now` and returns the key as it is then; `None` if no such key,
    /// [`StoreError::KeyNotActive`] (and no change) if it is revoked or expired. Writes `audit` with its details set
    /// by the store to `{"changed": [names]}`, the API names of the fields whose values changed (read in the same
    /// transaction); changes that change nothing write no event. A change of the spend cap drops every node's
    /// lease on the key (a lower cap must not leave more reserved than it allows); a cap newly set, or a new
    /// period, counts the key's spending from its usage in the period containing `now`.
    async fn update_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        changes: &KeyChanges,
        now: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<ApiKey>, StoreError>;
    /// Rolls a project key that is active at `now`, in one transaction: the key now expires at `grace_ends`, or
    /// keeps its own expiry if that comes first; `successor` is written (no key limit applies: it replaces a key
    /// on its way out); and `audit`. Returns the old key as it is then; `None` if no such project key,
    /// [`StoreError::KeyNotActive`] (and nothing written) if it is revoked or expired.
    async fn roll_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        successor: &ApiKey,
        grace_ends: Timestamp,
        now: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<ApiKey>, StoreError>;
    /// Records, once, that a key was found expired at `at` (its first refused request), with `audit`
    /// (`api_key.expired`), in one transaction; `true` if this call recorded it, `false` (and no event) if it was
    /// already recorded, by this node or another, or the key is not expired at `at` or is revoked.
    async fn record_key_expiry(
        &self,
        tenant_id: &str,
        key_id: &str,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError>;
    /// The key with this digest and the state of its tenant and owner: the authentication lookup.
    async fn principal_by_digest(
        &self,
        digest: &KeyDigest,
    ) -> Result<Option<Principal>, StoreError>;
}

/// Credits: the ledger and the balance kept in step with it.
#[async_trait]
pub trait CreditStore {
    /// A tenant's balance (zero for a tenant never granted anything).
    async fn balance(&self, tenant_id: &str) -> Result<Balance, StoreError>;
    /// Adds a positive grant to the ledger and the balance, and writes `audit` with its target set by the store to
    /// the new ledger entry's id, in one transaction; `None` (and no event) if no such tenant.
    async fn grant(
        &self,
        tenant_id: &str,
        amount: Micros,
        reason: Option<&str>,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<LedgerEntry>, StoreError>;
    /// The ledger, newest first; `page.after` is the previous page's last (oldest) id.
    async fn ledger(
        &self,
        tenant_id: &str,
        page: &PageRequest,
    ) -> Result<Page<LedgerEntry>, StoreError>;
    /// Writes a batch of finished requests of `node_id` in one transaction: each one's usage row, its charge
    /// (never more than the balance: the amount actually charged is returned, in order), the same amount off the
    /// node's lease on the tenant (the request was held against it), its key's `last_used_at`, and its
    /// `request.completed` audit event (with the amount charged); for a request of a capped key
    /// (`spend_period` set), the same amount added to the key's spending in the period containing its `at` and
    /// taken off the node's lease on the key; then `events` (refused requests' events), every event at the end of
    /// its tenant's chain. All or nothing: on an error nothing of the batch is written.
    async fn settle(
        &self,
        node_id: &str,
        batch: &[Settlement],
        events: &[AuditEvent],
    ) -> Result<SettledBatch, StoreError>;
    /// Reserves more of an account's money for a node, atomically with every other node's reservations: leases
    /// that expired before `request.now` are dropped, then at least `need` is granted (up to
    /// [`crate::credits::lease_grant`]) if what is free covers it, else nothing. Free is, for a tenant, the
    /// balance less every live lease on it; for a key, its cap less what it spent in the period containing
    /// `request.now` less every live lease on it (nothing for a key without a cap). The node's lease lasts until
    /// `request.expires_at` either way.
    async fn lease(&self, request: &LeaseRequest<'_>) -> Result<LeaseGrant, StoreError>;
    /// Gives `amount` of a node's lease back (all of it, and the lease is gone, when `amount` covers it).
    async fn release_lease(
        &self,
        account: Account<'_>,
        node_id: &str,
        amount: Micros,
    ) -> Result<(), StoreError>;
    /// Extends every lease of a node (on tenants and on keys) until `expires_at`: the node is alive.
    async fn renew_leases(&self, node_id: &str, expires_at: Timestamp) -> Result<(), StoreError>;
}

/// Idempotency records: claims of `Idempotency-Key`s and the responses stored for their replay (see
/// [`crate::idempotency`]). An inference request's response is stored by its settlement instead
/// ([`Settlement::idempotency`]), in the transaction of its charge. A management request's change locks its claim
/// in the change's own transaction: every audited change whose events carry a claim in their origin
/// ([`crate::audit::Origin::claim`]) keeps that claim running until the end of its window (held by no node and no
/// server: no lapsed lease, restart or release frees it) until its answer is stored.
#[async_trait]
pub trait IdempotencyStore {
    /// Claims `claim.key` in `claim.scope`, atomically against every other node: a record that does not exist, is
    /// past its window (`expires_at <= claim.now`), or is still running with the same fingerprint but whose lease
    /// ran out (`locked_until <= claim.now`) becomes this claim's, and the answer is [`ClaimOutcome::Claimed`];
    /// otherwise nothing is written and the answer says what the record is (another fingerprint: `Mismatch`,
    /// whatever its state; running: `InFlight`; completed: `Completed`).
    async fn claim_idempotency(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError>;
    /// Stores the response of a claim that still holds its record (`claim_id` matches, running); returns whether it
    /// did (false: the claim was taken over, or released).
    async fn complete_idempotency(&self, completion: &Completion) -> Result<bool, StoreError>;
    /// Deletes a running record this claim still holds: the key is free for a retry. A claim locked in by its
    /// request's change (see below) is not released: the change was made, so a retry must not make it again.
    async fn release_idempotency(
        &self,
        scope: &str,
        key: &str,
        claim_id: &str,
    ) -> Result<(), StoreError>;
    /// Extends the lease of every running claim of `node_id` until `locked_until`: its requests are still running.
    async fn renew_idempotency(
        &self,
        node_id: &str,
        locked_until: Timestamp,
    ) -> Result<(), StoreError>;
    /// Deletes the running claims of `instance` not held by `node_id`: a server that restarted releases what its
    /// dead predecessor (the same host and listening address) held; returns how many.
    async fn release_instance_idempotency(
        &self,
        instance: &str,
        node_id: &str,
    ) -> Result<u64, StoreError>;
    /// Deletes at most `limit` records past their window (a running one only once its lease ran out too); returns
    /// how many.
    async fn prune_idempotency(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// Dashboard sessions and what signing in reads (see [`crate::session`]).
#[async_trait]
pub trait SessionStore {
    /// The members with this (normalised) email who have a password, one per tenant, in tenant creation order.
    async fn login_candidates(&self, email: &str) -> Result<Vec<LoginCandidate>, StoreError>;
    /// Writes a new session and its `login.succeeded` event in one transaction.
    async fn create_session(&self, session: &Session, audit: &AuditEvent)
    -> Result<(), StoreError>;
    /// The live session with this digest at `now` and its member as they are now: `None` when there is none, it is
    /// signed out, past `expires_at`, idle since before `idle_since` (`last_seen_at < idle_since`), or its member is
    /// gone.
    async fn session_by_digest(
        &self,
        digest: &SessionDigest,
        now: Timestamp,
        idle_since: Timestamp,
    ) -> Result<Option<SessionMember>, StoreError>;
    /// Moves a session's `last_seen_at` to `now`.
    async fn touch_session(&self, session_id: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Signs a session out at `at` (its `revoked_at`), with its audit event in the same transaction; signing out an
    /// ended session changes nothing.
    async fn revoke_session(
        &self,
        session_id: &str,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Deletes sessions that ended (signed out, or past `expires_at`) before `before`; returns how many.
    async fn prune_sessions(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// Usage, aggregated.
#[async_trait]
pub trait UsageStore {
    /// Totals per group of `query.group`, for answered requests in the window.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageTotals>, StoreError>;
}

/// What one change-log row says to forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// One key (revoked, expired, its networks or models changed, deleted).
    Key(KeyDigest),
    /// Every key of a tenant: the tenant, one of its projects or one of its members changed.
    Tenant(String),
    /// Every key.
    Everything,
}

/// One row of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The row's id: unique, but not in commit order on every backend (see [`ChangeLog::recent_changes`]).
    pub id: i64,
    /// What to forget.
    pub changed: Changed,
    /// When the change was made, by the store's clock (Unix milliseconds).
    pub at_ms: i64,
}

/// The change log: the store records, in the same transaction as the change, every change that makes a cached
/// principal wrong, whoever makes it (any node, the CLI), so that every node can forget what it concerns.
#[async_trait]
pub trait ChangeLog {
    /// The changes made within the last `window` by the store's clock, in id order. Ids are not commit-ordered (on
    /// PostgreSQL a transaction that took its id first may commit last), so a reader cannot read "after the last id
    /// it saw": it reads a trailing window instead, and skips the ids it has already applied. A change that commits
    /// more than `window` after it was made is missed.
    async fn recent_changes(&self, window: Duration) -> Result<Vec<Change>, StoreError>;
    /// Deletes the changes made more than `age` ago by the store's clock; returns how many.
    async fn prune_changes(&self, age: Duration) -> Result<u64, StoreError>;
    /// A signal that fires soon after a change commits, where the backend has one (PostgreSQL's LISTEN/NOTIFY), so
    /// a reader need not wait for its next poll; `None` where it has not (SQLite): poll.
    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>, StoreError> {
        Ok(None)
    }
}

/// Wakes a change-log reader early. Only a hint: the log is the record, and a reader keeps polling it regardless.
#[async_trait]
pub trait ChangeSignal: Send {
    /// Waits for the next signal: a change committed, or the signal's connection was lost and restored, which may
    /// have missed some (read the log either way). An error means the signal is down for now; calling again
    /// retries.
    async fn wait(&mut self) -> Result<(), StoreError>;
}

/// Where one tenant's audit chain stands: where it starts (genesis, or the anchor pruning left) and its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChain {
    /// The tenant.
    pub tenant_id: String,
    /// The last pruned event's place and hash (`seq` 0 and [`crate::audit::GENESIS`] before any pruning).
    pub anchor: ChainHead,
    /// The last event's place and hash.
    pub head: ChainHead,
}

/// The audit log. Changes append their events themselves, in their own transactions (every mutating call of the
/// other traits); this appends events that go with no other write, and reads, checks and prunes the log.
#[async_trait]
pub trait AuditLog {
    /// Appends events in one transaction, each at the end of its tenant's chain (appends for one tenant are
    /// serialised, whichever node makes them). A tenant without a chain (no such tenant) fails it.
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// A tenant's events, newest first (in chain order), as `query` narrows them.
    async fn audit_events(&self, query: &AuditQuery) -> Result<Page<ChainedEvent>, StoreError>;
    /// Up to `limit` events of a tenant's chain after `after_seq`, in chain order: for checking it.
    async fn audit_chain_events(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>, StoreError>;
    /// The chains of one tenant, or of every tenant, in tenant id order.
    async fn audit_chains(&self, tenant_id: Option<&str>) -> Result<Vec<AuditChain>, StoreError>;
    /// Deletes, chain by chain, the events before `before` (the prefix up to the last of them), keeping the last
    /// deleted event's place and hash as the chain's anchor, so what remains still verifies; returns how many.
    async fn prune_audit(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// The whole system of record.
#[async_trait]
pub trait Store:
    TenantStore
    + ProjectStore
    + MemberStore
    + KeyStore
    + CreditStore
    + UsageStore
    + ChangeLog
    + AuditLog
    + IdempotencyStore
    + SessionStore
    + Send
    + Sync
    + 'static
{
    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
