//! The in-process key cache: the hot path authenticates a cached key with no storage round trip.
//!
//! One bounded cache keyed by digest holds both answers: principals that exist (for 5 s) and digests that do not
//! (30 s), so repeating one well-formed unknown key costs no store reads. Concurrent misses for one digest are
//! coalesced into a single store read (moka's `try_get_with`), so a burst of requests with a new or unknown key
//! costs one read, not one per request.
//!
//! Invalidation is exact on this node. Every entry records the epoch at which its store read *started*, and a
//! lookup accepts an entry only if no invalidation of its digest began since then. `invalidate` bumps the epoch
//! before it drops the entry, so once it returns, no read that started earlier, coalesced or not, can answer a later
//! lookup: a revoked key is refused on its very next request. Epochs are striped by digest, so revoking one key sends
//! only 1/256 of the cached keys back to the store, not all of them. A tenant's change (`invalidate_tenant`: its
//! plan, status, a project, a member) works the same way with epochs striped by tenant id, so it sends that tenant's
//! keys back to the store, and not every tenant's.
//!
//! Changes made elsewhere (another node, the CLI) reach the cache through the store's change log, which
//! [`crate::change_log`] reads four times a second. A cache built [`KeyCache::following`] that log also refuses to
//! lean on it while it lags: when the log has not been read for [`MAX_LAG`], a known key is served only from a read
//! at most [`MAX_LAG`] old, so no change goes unseen for longer, even while the store cannot be read (the lookup then
//! fails instead). Without a follower, the time-to-live alone bounds how long a change made elsewhere goes unseen.

use moka::Expiry;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_core::key::KeyDigest;
use tollgate_core::ports::{KeyStore, StoreError};
use tollgate_core::tenant::Principal;

const CAPACITY: u64 = 100_000;
/// How long a found principal is kept. Changes made outside this process (another node, `tollgate key revoke`)
/// arrive through the change log within a second; this bounds what a change the log misses (one committed more
/// than its 5 s window after it was made) can go unseen, and, without a follower, every change made elsewhere.
const KNOWN_TTL: Duration = Duration::from_secs(5);
/// Unknown digests stay unknown longer: new keys have fresh random digests that were never cached as unknown.
const UNKNOWN_TTL: Duration = Duration::from_secs(30);
/// Epoch stripes, one per value of a digest's first byte (digests are SHA-256, so evenly spread); as many for
/// tenant ids, by hash.
const STRIPES: usize = 256;
/// How far a cache [`KeyCache::following`] the change log may trail it: a change made elsewhere is seen within
/// this (the follower reads the log every 250 ms; past this, known keys are read again instead).
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// One cached answer: the principal, or `None` for a digest the store does not know.
#[derive(Debug, Clone)]
struct Entry {
    principal: Option<Arc<Principal>>,
    /// The digest's stripe epoch when the store read that produced this answer started.
    epoch: u64,
    /// The tenant clock ([`KeyCache::tenant_clock`]) when that read started.
    tenant_epoch: u64,
    /// The principal's tenant stripe (0 for an unknown digest, which no tenant change concerns).
    tenant_stripe: usize,
    /// When that read started.
    read_at: Instant,
}

/// Known principals and unknown digests expire after their own time-to-live, also when an entry is replaced.
struct Ttl;

impl Ttl {
    fn of(entry: &Entry) -> Duration {
        if entry.principal.is_some() {
            KNOWN_TTL
        } else {
            UNKNOWN_TTL
        }
    }
}

impl Expiry<KeyDigest, Entry> for Ttl {
    fn expire_after_create(&self, _: &KeyDigest, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(Self::of(entry))
    }

    fn expire_after_update(
        &self,
        _: &KeyDigest,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::of(entry))
    }
}

/// Cached principals and known-unknown digests. Cheap to share behind `Arc`: moka locks internally per shard and
/// never across an await, and a hit costs one atomic load beyond the cache read.
pub struct KeyCache {
    entries: moka::future::Cache<KeyDigest, Entry>,
    /// Per stripe of digests, how many invalidations have begun. An entry whose read started at a lower epoch may
    /// predate a revocation, so it is never served.
    epochs: Box<[AtomicU64]>,
    /// How many tenant invalidations have begun, over all tenants. A read records it when it starts, before it
    /// knows whose key it reads.
    tenant_clock: AtomicU64,
    /// Per stripe of tenant ids, the tenant clock at the latest invalidation of one of its tenants: an entry of such
    /// a tenant whose read recorded less may predate the change, so it is never served.
    tenant_epochs: Box<[AtomicU64]>,
    /// Set when a change-log follower keeps this cache in step with changes made elsewhere.
    follower: Option<Follower>,
}

/// How far the change log has been followed.
#[derive(Debug)]
struct Follower {
    origin: Instant,
    /// 1 + the milliseconds after `origin` at which the latest successful read of the log started; 0 before any.
    caught_up: AtomicU64,
}

impl Follower {
    /// Whether the log was read, all of it applied, by a read that started at most [`MAX_LAG`] before `now`.
    fn in_step(&self, now: Instant) -> bool {
        match self.caught_up.load(Ordering::Acquire) {
            0 => false,
            at => {
                let read = self.origin + Duration::from_millis(at - 1);
                now.saturating_duration_since(read) <= MAX_LAG
            }
        }
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

/// The stripe of `digest`'s epoch.
fn stripe(digest: &KeyDigest) -> usize {
    usize::from(digest.as_bytes()[0])
}

/// The stripe of a tenant's epoch: a fixed hash, the same for the tenant's every key.
fn tenant_stripe(tenant_id: &str) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(tenant_id);
    usize::from(hash.to_le_bytes()[0])
}

/// What a store read records when it starts, to tell later whether its answer is still good.
struct ReadStart {
    epoch: u64,
    tenant_epoch: u64,
    at: Instant,
}

impl ReadStart {
    fn entry(self, principal: Option<Arc<Principal>>) -> Entry {
        let tenant_stripe = principal
            .as_ref()
            .map_or(0, |p| tenant_stripe(&p.key.tenant_id));
        Entry {
            principal,
            epoch: self.epoch,
            tenant_epoch: self.tenant_epoch,
            tenant_stripe,
            read_at: self.at,
        }
    }
}

/// The store's error from moka's shared `Arc` (one read's failure is every coalesced caller's).
fn unshare(error: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(error).unwrap_or_else(|shared| (*shared).clone())
}

impl KeyCache {
    /// An empty cache that nothing keeps in step with changes made elsewhere: its time-to-live alone bounds how
    /// long they go unseen.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// An empty cache kept in step with the store's change log by a follower ([`crate::change_log`]), which calls
    /// [`KeyCache::caught_up`] after each read of the log. Until the first and whenever the log lags by more than
    /// [`MAX_LAG`], known keys are served only from reads at most [`MAX_LAG`] old.
    pub fn following() -> Self {
        Self::build(Some(Follower {
            origin: Instant::now(),
            caught_up: AtomicU64::new(0),
        }))
    }

    fn build(follower: Option<Follower>) -> Self {
        let stripes = || (0..STRIPES).map(|_| AtomicU64::new(0)).collect();
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(Ttl)
                .build(),
            epochs: stripes(),
            tenant_clock: AtomicU64::new(0),
            tenant_epochs: stripes(),
            follower,
        }
    }

    /// Records that a read of the change log that started at `started` has been applied: every change committed
    /// before then is reflected.
    pub fn caught_up(&self, started: Instant) {
        if let Some(follower) = &self.follower {
            let ms = started
                .saturating_duration_since(follower.origin)
                .as_millis();
            let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1);
            follower.caught_up.fetch_max(ms + 1, Ordering::AcqRel);
        }
    }

    /// What a read of `digest` that starts now must record.
    fn read_start(&self, digest: &KeyDigest) -> ReadStart {
        ReadStart {
            epoch: self.epochs[stripe(digest)].load(Ordering::Acquire),
            tenant_epoch: self.tenant_clock.load(Ordering::Acquire),
            at: Instant::now(),
        }
    }

    /// Whether `entry` may answer a lookup that required digest epoch `required`: no invalidation of its digest or
    /// its tenant began after its read did, and, when following the change log, the log is in step or the read is
    /// recent. Unknown digests need neither of the last two: no tenant change and no change elsewhere can make a
    /// digest known but its key's creation, and a new key's digest is random, never looked up before.
    fn serves(&self, entry: &Entry, required: u64) -> bool {
        if entry.epoch < required {
            return false;
        }
        if entry.principal.is_none() {
            return true;
        }
        if entry.tenant_epoch < self.tenant_epochs[entry.tenant_stripe].load(Ordering::Acquire) {
            return false;
        }
        self.follower.as_ref().is_none_or(|f| {
            let now = Instant::now();
            f.in_step(now) || now.saturating_duration_since(entry.read_at) <= MAX_LAG
        })
    }

    /// The cached answer for `digest` (`Some(None)`: known to be unknown), if the cache may give one without a store
    /// read; `None` when a [`KeyCache::lookup`] would read the store.
    pub async fn cached(&self, digest: &KeyDigest) -> Option<Option<Arc<Principal>>> {
        let required = self.epochs[stripe(digest)].load(Ordering::Acquire);
        let entry = self.entries.get(digest).await?;
        self.serves(&entry, required).then_some(entry.principal)
    }

    /// The principal for `digest`: from the cache, or from the store on a miss (then cached, found or not). A
    /// lookup never returns an answer read before an invalidation of `digest` that completed before it began.
    pub async fn lookup<S>(
        &self,
        digest: &KeyDigest,
        store: &S,
    ) -> Result<Option<Arc<Principal>>, StoreError>
    where
        S: KeyStore + Sync + ?Sized,
    {
        let epoch = &self.epochs[stripe(digest)];
        // Every invalidation that completed before this lookup is counted in `required`.
        let required = epoch.load(Ordering::Acquire);
        if let Some(entry) = self.entries.get(digest).await {
            if self.serves(&entry, required) {
                return Ok(entry.principal);
            }
            // Read before an invalidation (or too long ago, the log lagging): drop it, so the read below replaces
            // it.
            self.entries.invalidate(digest).await;
        }
        let read = async {
            // Recorded before the read: an invalidation that bumps an epoch afterwards makes this answer stale.
            let started = self.read_start(digest);
            let principal = store.principal_by_digest(digest).await?.map(Arc::new);
            Ok(started.entry(principal))
        };
        let entry = self
            .entries
            .try_get_with(*digest, read)
            .await
            .map_err(unshare)?;
        if self.serves(&entry, required) {
            return Ok(entry.principal);
        }
        // We joined a read that started before an invalidation this lookup must see: read again, alone. This
        // happens only in the instant around an invalidation.
        let started = self.read_start(digest);
        let principal = store.principal_by_digest(digest).await?.map(Arc::new);
        self.entries
            .insert(*digest, started.entry(principal.clone()))
            .await;
        Ok(principal)
    }

    /// Forgets one key, e.g. on revocation: once this returns, the key's next lookup reflects the store as it is
    /// now. Call it after the store change is committed.
    pub async fn invalidate(&self, digest: &KeyDigest) {
        // The bump, not the removal, is what makes it exact: it disowns every read in flight for this stripe.
        self.epochs[stripe(digest)].fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(digest).await;
    }

    /// Forgets every key of a tenant, e.g. when it, one of its projects or one of its members changes: once this
    /// returns, none of its keys' next lookups reflects the store as it was before. Other tenants' keys stay
    /// cached (but for those that share its stripe, 1/256 of them). Call it after the store change is committed.
    pub fn invalidate_tenant(&self, tenant_id: &str) {
        // Every read that recorded less than `at` started before this call, so may predate the change.
        let at = self.tenant_clock.fetch_add(1, Ordering::AcqRel) + 1;
        self.tenant_epochs[tenant_stripe(tenant_id)].fetch_max(at, Ordering::AcqRel);
    }

    /// Forgets every key.
    pub fn invalidate_all(&self) {
        for epoch in &self.epochs {
            epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "test tasks are awaited")]
mod tests {
    use super::*;
    use crate::test_support::{audit, by_operator, store_and_tenant};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use tokio::sync::Semaphore;
    use tollgate_core::audit::{AuditEvent, EventType};
    use tollgate_core::key::{KeyKind, KeyPrefixes};
    use tollgate_core::ports::{KeyLimit, KeyScope, Page, PageRequest, Store, TenantUpdate};
    use tollgate_core::tenant::{ApiKey, KeyChanges, NewTenant, TenantStatus, Timestamp};

    /// The key store in front of a real one: counts `principal_by_digest` calls and can stall the first one after
    /// it has read its answer, to force a lookup to straddle a revocation.
    struct Spy {
        inner: Arc<dyn Store>,
        reads: AtomicUsize,
        hold_first: bool,
        release: Semaphore,
    }

    impl Spy {
        fn new(inner: Arc<dyn Store>, hold_first: bool) -> Arc<Self> {
            Arc::new(Self {
                inner,
                reads: AtomicUsize::new(0),
                hold_first,
                release: Semaphore::new(0),
            })
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }

        /// Lets the stalled first read return what it read.
        fn release(&self) {
            self.release.add_permits(1);
        }
    }

    #[async_trait]
    impl KeyStore for Spy {
        async fn insert_key(
            &self,
            key: &ApiKey,
            limit: Option<KeyLimit>,
            audit: &AuditEvent,
        ) -> Result<(), StoreError> {
            self.inner.insert_key(key, limit, audit).await
        }
        async fn get_key(&self, t: &str, k: &str) -> Result<Option<ApiKey>, StoreError> {
            self.inner.get_key(t, k).await
        }
        async fn find_key(&self, k: &str) -> Result<Option<ApiKey>, StoreError> {
            self.inner.find_key(k).await
        }
        async fn list_keys(
            &self,
            t: &str,
            scope: &KeyScope,
            page: &PageRequest,
        ) -> Result<Page<ApiKey>, StoreError> {
            self.inner.list_keys(t, scope, page).await
        }
        async fn revoke_key(
            &self,
            t: &str,
            k: &str,
            at: Timestamp,
            audit: &AuditEvent,
        ) -> Result<Option<ApiKey>, StoreError> {
            self.inner.revoke_key(t, k, at, audit).await
        }
        async fn update_key(
            &self,
            t: &str,
            k: &str,
            changes: &KeyChanges,
            now: Timestamp,
            audit: &AuditEvent,
        ) -> Result<Option<ApiKey>, StoreError> {
            self.inner.update_key(t, k, changes, now, audit).await
        }
        async fn roll_key(
            &self,
            t: &str,
            k: &str,
            successor: &ApiKey,
            grace_ends: Timestamp,
            now: Timestamp,
            audit: &AuditEvent,
        ) -> Result<Option<ApiKey>, StoreError> {
            self.inner
                .roll_key(t, k, successor, grace_ends, now, audit)
                .await
        }
        async fn record_key_expiry(
            &self,
            t: &str,
            k: &str,
            at: Timestamp,
            audit: &AuditEvent,
        ) -> Result<bool, StoreError> {
            self.inner.record_key_expiry(t, k, at, audit).await
        }
        async fn principal_by_digest(
            &self,
            digest: &KeyDigest,
        ) -> Result<Option<Principal>, StoreError> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            let answer = self.inner.principal_by_digest(digest).await;
            if self.hold_first && n == 0 {
                self.release.acquire().await.unwrap().forget();
            }
            answer
        }
    }

    /// Lets every spawned task of this (single-threaded) test runtime run until it waits.
    async fn settle() {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    fn spawn_lookup(
        cache: &Arc<KeyCache>,
        spy: &Arc<Spy>,
        digest: KeyDigest,
    ) -> tokio::task::JoinHandle<Option<Arc<Principal>>> {
        let (cache, spy) = (Arc::clone(cache), Arc::clone(spy));
        tokio::spawn(async move { cache.lookup(&digest, spy.as_ref()).await.unwrap() })
    }

    #[tokio::test]
    async fn an_unknown_digest_is_answered_from_the_cache_until_invalidated() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        let cache = KeyCache::new();
        let digest = tenant.admin_key.digest;
        assert!(
            cache
                .lookup(&digest, store.as_ref())
                .await
                .unwrap()
                .is_none()
        );
        // The key now exists in the store, but the negative answer is served without asking it again.
        store.create_tenant(&tenant, &[]).await.unwrap();
        assert!(
            cache
                .lookup(&digest, store.as_ref())
                .await
                .unwrap()
                .is_none()
        );
        cache.invalidate(&digest).await;
        assert!(
            cache
                .lookup(&digest, store.as_ref())
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_known_key_is_served_from_the_cache_and_invalidation_shows_a_revoke() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        store.create_tenant(&tenant, &[]).await.unwrap();
        let cache = KeyCache::new();
        let digest = tenant.admin_key.digest;
        let first = cache
            .lookup(&digest, store.as_ref())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.key.revoked_at, None);
        store
            .revoke_key(
                &tenant.tenant.id,
                &tenant.admin_key.id,
                5,
                &audit(EventType::ApiKeyRevoked, &tenant.tenant.id),
            )
            .await
            .unwrap();
        let cached = cache
            .lookup(&digest, store.as_ref())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            cached.key.revoked_at, None,
            "served from the cache, no store read"
        );
        cache.invalidate(&digest).await;
        let fresh = cache
            .lookup(&digest, store.as_ref())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fresh.key.revoked_at, Some(5));
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_digest_make_one_store_read() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        let cache = Arc::new(KeyCache::new());
        // Unknown (the tenant is not written) and then known: both answers are coalesced.
        for known in [false, true] {
            if known {
                store.create_tenant(&tenant, &[]).await.unwrap();
                cache.invalidate(&tenant.admin_key.digest).await;
            }
            // The first read stalls until every other lookup has started and is waiting.
            let spy = Spy::new(Arc::clone(&store), true);
            let lookups: Vec<_> = (0..32)
                .map(|_| spawn_lookup(&cache, &spy, tenant.admin_key.digest))
                .collect();
            settle().await;
            spy.release();
            for lookup in lookups {
                assert_eq!(lookup.await.unwrap().is_some(), known);
            }
            assert_eq!(spy.reads(), 1, "known: {known}");
        }
    }

    /// How a straddle test tells the cache of the change it made.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Forget {
        /// Revoked, then `invalidate`.
        Key,
        /// Revoked, then `invalidate_all`.
        All,
        /// The tenant suspended, then `invalidate_tenant`.
        Tenant,
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_revocation_never_answers_a_lookup_after_it() {
        for forget in [Forget::Key, Forget::All, Forget::Tenant] {
            let (_dir, _, store, tenant) = store_and_tenant().await;
            store.create_tenant(&tenant, &[]).await.unwrap();
            let cache = Arc::new(KeyCache::new());
            let spy = Spy::new(Arc::clone(&store), true);
            let digest = tenant.admin_key.digest;
            // A lookup reads the active key, then stalls before answering.
            let before = spawn_lookup(&cache, &spy, digest);
            settle().await;
            assert_eq!(spy.reads(), 1);
            // The revocation (or suspension): committed, then invalidated. From here on every lookup must see it.
            if forget == Forget::Tenant {
                store
                    .update_tenant(&tenant.tenant.id, &suspended(), &by_operator())
                    .await
                    .unwrap();
            } else {
                store
                    .revoke_key(
                        &tenant.tenant.id,
                        &tenant.admin_key.id,
                        5,
                        &audit(EventType::ApiKeyRevoked, &tenant.tenant.id),
                    )
                    .await
                    .unwrap();
            }
            match forget {
                Forget::Key => cache.invalidate(&digest).await,
                Forget::All => cache.invalidate_all(),
                Forget::Tenant => cache.invalidate_tenant(&tenant.tenant.id),
            }
            // This lookup finds the stalled read in flight (and, once it lands, its entry).
            let after = spawn_lookup(&cache, &spy, digest);
            settle().await;
            spy.release();
            // The stalled one began before the revocation: either answer is right for it.
            before.await.unwrap().unwrap();
            let after = after.await.unwrap().unwrap();
            let again = cache.lookup(&digest, spy.as_ref()).await.unwrap().unwrap();
            for principal in [after, again] {
                if forget == Forget::Tenant {
                    assert_eq!(principal.tenant_status, TenantStatus::Suspended);
                } else {
                    assert_eq!(principal.key.revoked_at, Some(5), "{forget:?}");
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_concurrent_lookups_a_revocation_holds_from_the_moment_it_is_answered() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        store.create_tenant(&tenant, &[]).await.unwrap();
        let cache = Arc::new(KeyCache::new());
        let spy = Spy::new(Arc::clone(&store), false);
        let digest = tenant.admin_key.digest;
        let answered = Arc::new(AtomicBool::new(false));
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let (cache, spy, answered) =
                    (Arc::clone(&cache), Arc::clone(&spy), Arc::clone(&answered));
                tokio::spawn(async move {
                    for round in 0..400 {
                        // Read the flag first: if the revocation was answered before this lookup began, the lookup
                        // must see it.
                        let after = answered.load(Ordering::SeqCst);
                        let principal = cache.lookup(&digest, spy.as_ref()).await.unwrap().unwrap();
                        if after {
                            assert_eq!(principal.key.revoked_at, Some(5), "round {round}");
                        }
                        if round % 8 == 0 {
                            // Keep misses happening, so reads are in flight around the revocation.
                            cache.invalidate_all();
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        store
            .revoke_key(
                &tenant.tenant.id,
                &tenant.admin_key.id,
                5,
                &audit(EventType::ApiKeyRevoked, &tenant.tenant.id),
            )
            .await
            .unwrap();
        cache.invalidate(&digest).await;
        answered.store(true, Ordering::SeqCst);
        for lookup in lookups {
            lookup.await.unwrap();
        }
        assert!(spy.reads() > 1);
    }

    #[tokio::test]
    async fn revoking_one_key_leaves_keys_of_other_stripes_cached() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        store.create_tenant(&tenant, &[]).await.unwrap();
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let cached = tenant.admin_key.digest;
        let other = std::iter::repeat_with(|| prefixes.generate(KeyKind::Admin).digest())
            .find(|d| stripe(d) != stripe(&cached))
            .unwrap();
        let cache = KeyCache::new();
        let spy = Spy::new(Arc::clone(&store), false);
        cache.lookup(&cached, spy.as_ref()).await.unwrap().unwrap();
        cache.invalidate(&other).await;
        cache.lookup(&cached, spy.as_ref()).await.unwrap().unwrap();
        assert_eq!(spy.reads(), 1);
        cache.invalidate_all();
        cache.lookup(&cached, spy.as_ref()).await.unwrap().unwrap();
        assert_eq!(spy.reads(), 2);
    }
    /// Another tenant of the same store whose id falls in another tenant stripe than `tenant`'s.
    fn tenant_of_another_stripe(tenant: &NewTenant) -> NewTenant {
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        std::iter::repeat_with(|| {
            NewTenant::build(
                &prefixes,
                "U".into(),
                "pro".into(),
                "o@u.io".into(),
                None,
                1,
            )
            .0
        })
        .find(|t| tenant_stripe(&t.tenant.id) != tenant_stripe(&tenant.tenant.id))
        .unwrap()
    }

    fn suspended() -> TenantUpdate {
        TenantUpdate {
            status: Some(TenantStatus::Suspended),
            ..TenantUpdate::default()
        }
    }

    #[tokio::test]
    async fn a_tenant_change_sends_that_tenants_keys_back_to_the_store_and_no_others() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        let other = tenant_of_another_stripe(&tenant);
        store.create_tenant(&tenant, &[]).await.unwrap();
        store.create_tenant(&other, &[]).await.unwrap();
        let cache = KeyCache::new();
        let spy = Spy::new(Arc::clone(&store), false);
        let (mine, theirs) = (tenant.admin_key.digest, other.admin_key.digest);
        cache.lookup(&mine, spy.as_ref()).await.unwrap().unwrap();
        cache.lookup(&theirs, spy.as_ref()).await.unwrap().unwrap();
        assert_eq!(spy.reads(), 2);
        store
            .update_tenant(&tenant.tenant.id, &suspended(), &by_operator())
            .await
            .unwrap();
        cache.invalidate_tenant(&tenant.tenant.id);
        let fresh = cache.lookup(&mine, spy.as_ref()).await.unwrap().unwrap();
        assert_eq!(fresh.tenant_status, TenantStatus::Suspended);
        assert_eq!(spy.reads(), 3);
        cache.lookup(&theirs, spy.as_ref()).await.unwrap().unwrap();
        assert_eq!(spy.reads(), 3, "another tenant's key stays cached");
    }

    #[tokio::test]
    async fn a_cache_following_a_lagging_log_serves_no_known_key_read_more_than_max_lag_ago() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        store.create_tenant(&tenant, &[]).await.unwrap();
        let cache = KeyCache::following();
        let spy = Spy::new(Arc::clone(&store), false);
        let (known, unknown) = (tenant.admin_key.digest, KeyDigest::from_bytes([7; 32]));
        let lookup = |digest| {
            let (cache, spy) = (&cache, Arc::clone(&spy));
            async move { cache.lookup(&digest, spy.as_ref()).await.unwrap() }
        };
        // Never caught up: a fresh read serves, for up to MAX_LAG.
        assert!(lookup(known).await.is_some());
        assert!(lookup(unknown).await.is_none());
        assert!(lookup(known).await.is_some());
        assert_eq!(spy.reads(), 2);
        tokio::time::sleep(MAX_LAG + Duration::from_millis(100)).await;
        // The log still lags: the known key is read again; an unknown digest stays unknown without a read.
        assert!(lookup(known).await.is_some());
        assert!(lookup(unknown).await.is_none());
        assert_eq!(spy.reads(), 3);
        tokio::time::sleep(MAX_LAG + Duration::from_millis(100)).await;
        // In step again: the entry serves, however old.
        cache.caught_up(Instant::now());
        assert!(lookup(known).await.is_some());
        assert_eq!(spy.reads(), 3);
        // A catch-up by a read that started too long ago does not count.
        tokio::time::sleep(MAX_LAG + Duration::from_millis(100)).await;
        cache.caught_up(Instant::now() - MAX_LAG * 2);
        assert!(lookup(known).await.is_some());
        assert_eq!(spy.reads(), 4);
    }
}
