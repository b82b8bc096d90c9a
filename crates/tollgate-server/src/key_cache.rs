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
//! only 1/256 of the cached keys back to the store, not all of them. The time-to-live bounds how long a change made
//! elsewhere (another node, the CLI) can go unseen.

use moka::Expiry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_core::key::KeyDigest;
use tollgate_core::ports::{KeyStore, StoreError};
use tollgate_core::tenant::Principal;

const CAPACITY: u64 = 100_000;
/// How long a change made outside this process (a `tollgate key revoke` from the CLI) can go unseen: one store
/// read per active key per period is cheap, and 5 s bounds the window of a revoked key.
const KNOWN_TTL: Duration = Duration::from_secs(5);
/// Unknown digests stay unknown longer: new keys have fresh random digests that were never cached as unknown.
const UNKNOWN_TTL: Duration = Duration::from_secs(30);
/// Epoch stripes, one per value of a digest's first byte (digests are SHA-256, so evenly spread).
const STRIPES: usize = 256;

/// One cached answer: the principal, or `None` for a digest the store does not know.
#[derive(Debug, Clone)]
struct Entry {
    principal: Option<Arc<Principal>>,
    /// The digest's stripe epoch when the store read that produced this answer started.
    epoch: u64,
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

/// The store's error from moka's shared `Arc` (one read's failure is every coalesced caller's).
fn unshare(error: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(error).unwrap_or_else(|shared| (*shared).clone())
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(Ttl)
                .build(),
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
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
            if entry.epoch >= required {
                return Ok(entry.principal);
            }
            // Read before an invalidation: drop it, so the read below replaces it.
            self.entries.invalidate(digest).await;
        }
        let read = async {
            // Loaded before the read: an invalidation that bumps it afterwards makes this answer stale.
            let started = epoch.load(Ordering::Acquire);
            let principal = store.principal_by_digest(digest).await?.map(Arc::new);
            Ok(Entry {
                principal,
                epoch: started,
            })
        };
        let entry = self
            .entries
            .try_get_with(*digest, read)
            .await
            .map_err(unshare)?;
        if entry.epoch >= required {
            return Ok(entry.principal);
        }
        // We joined a read that started before an invalidation this lookup must see: read again, alone. This
        // happens only in the instant around an invalidation.
        let started = epoch.load(Ordering::Acquire);
        let principal = store.principal_by_digest(digest).await?.map(Arc::new);
        self.entries
            .insert(
                *digest,
                Entry {
                    principal: principal.clone(),
                    epoch: started,
                },
            )
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

    /// Forgets every key, e.g. when a tenant, project or member changes.
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
    use crate::test_support::store_and_tenant;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use tokio::sync::Semaphore;
    use tollgate_core::key::{KeyKind, KeyPrefixes};
    use tollgate_core::ports::{KeyLimit, KeyScope, Page, PageRequest, Store};
    use tollgate_core::tenant::{ApiKey, Timestamp};

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
        ) -> Result<(), StoreError> {
            self.inner.insert_key(key, limit).await
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
        ) -> Result<Option<ApiKey>, StoreError> {
            self.inner.revoke_key(t, k, at).await
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
        store.create_tenant(&tenant).await.unwrap();
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
        store.create_tenant(&tenant).await.unwrap();
        let cache = KeyCache::new();
        let digest = tenant.admin_key.digest;
        let first = cache
            .lookup(&digest, store.as_ref())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.key.revoked_at, None);
        store
            .revoke_key(&tenant.tenant.id, &tenant.admin_key.id, 5)
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
                store.create_tenant(&tenant).await.unwrap();
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

    #[tokio::test]
    async fn a_read_that_started_before_a_revocation_never_answers_a_lookup_after_it() {
        for everything in [false, true] {
            let (_dir, _, store, tenant) = store_and_tenant().await;
            store.create_tenant(&tenant).await.unwrap();
            let cache = Arc::new(KeyCache::new());
            let spy = Spy::new(Arc::clone(&store), true);
            let digest = tenant.admin_key.digest;
            // A lookup reads the active key, then stalls before answering.
            let before = spawn_lookup(&cache, &spy, digest);
            settle().await;
            assert_eq!(spy.reads(), 1);
            // The revocation: committed, then invalidated. From here on every lookup must see it.
            store
                .revoke_key(&tenant.tenant.id, &tenant.admin_key.id, 5)
                .await
                .unwrap();
            if everything {
                cache.invalidate_all();
            } else {
                cache.invalidate(&digest).await;
            }
            // This lookup finds the stalled read in flight (and, once it lands, its entry).
            let after = spawn_lookup(&cache, &spy, digest);
            settle().await;
            spy.release();
            // The stalled one began before the revocation: either answer is right for it.
            before.await.unwrap().unwrap();
            let after = after.await.unwrap().unwrap();
            assert_eq!(after.key.revoked_at, Some(5), "all: {everything}");
            let again = cache.lookup(&digest, spy.as_ref()).await.unwrap().unwrap();
            assert_eq!(again.key.revoked_at, Some(5), "all: {everything}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_concurrent_lookups_a_revocation_holds_from_the_moment_it_is_answered() {
        let (_dir, _, store, tenant) = store_and_tenant().await;
        store.create_tenant(&tenant).await.unwrap();
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
            .revoke_key(&tenant.tenant.id, &tenant.admin_key.id, 5)
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
        store.create_tenant(&tenant).await.unwrap();
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
}
