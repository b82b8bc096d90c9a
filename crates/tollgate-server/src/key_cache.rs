//! The in-process key cache: the hot path authenticates a cached key with no storage round trip.
//!
//! Two bounded caches keyed by digest: principals that exist, and digests that do not (so a flood of well-formed
//! unknown keys cannot turn into a flood of storage queries). A revocation invalidates the digest at once; an epoch
//! counter keeps a lookup that raced with an invalidation from putting the stale answer back. A short time-to-live
//! bounds how long a change made elsewhere (another node, the CLI) can go unseen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tollgate_core::key::KeyDigest;
use tollgate_core::ports::{Store, StoreError};
use tollgate_core::tenant::Principal;

const CAPACITY: u64 = 100_000;
/// How long a change made outside this process (a `tollgate key revoke` from the CLI) can go unseen: one store
/// read per active key per period is cheap, and 5 s bounds the window of a revoked key.
const KNOWN_TTL: Duration = Duration::from_secs(5);
/// Unknown digests stay unknown longer: new keys have fresh random digests that were never cached as unknown.
const UNKNOWN_TTL: Duration = Duration::from_secs(30);

/// Cached principals and known-unknown digests. Cheap to share behind `Arc`; moka's caches lock internally per
/// shard and never across an await.
#[derive(Debug)]
pub struct KeyCache {
    known: moka::sync::Cache<KeyDigest, Arc<Principal>>,
    unknown: moka::sync::Cache<KeyDigest, ()>,
    /// Bumped by every invalidation; a lookup only keeps its answer if no invalidation happened meanwhile.
    epoch: AtomicU64,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            known: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(KNOWN_TTL)
                .build(),
            unknown: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(UNKNOWN_TTL)
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// The principal for `digest`: from the cache, or from the store on a miss (then cached, found or not).
    pub async fn lookup(
        &self,
        digest: &KeyDigest,
        store: &dyn Store,
    ) -> Result<Option<Arc<Principal>>, StoreError> {
        if let Some(p) = self.known.get(digest) {
            return Ok(Some(p));
        }
        if self.unknown.contains_key(digest) {
            return Ok(None);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let found = store.principal_by_digest(digest).await?.map(Arc::new);
        match &found {
            Some(p) => self.known.insert(*digest, Arc::clone(p)),
            None => self.unknown.insert(*digest, ()),
        }
        // An invalidation may have run while we read the store or before our insert: drop what we just put back.
        if self.epoch.load(Ordering::Acquire) != epoch {
            self.known.invalidate(digest);
            self.unknown.invalidate(digest);
        }
        Ok(found)
    }

    /// Forgets one key, e.g. on revocation: its next request reads the store.
    pub fn invalidate(&self, digest: &KeyDigest) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.known.invalidate(digest);
        self.unknown.invalidate(digest);
    }

    /// Forgets every key, e.g. when a tenant, project or member changes.
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.known.invalidate_all();
        self.unknown.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::key::KeyPrefixes;
    use tollgate_core::tenant::NewTenant;

    /// A real SQLite store and a tenant written to it, but not yet looked up.
    async fn store_and_tenant() -> (tempfile::TempDir, Arc<dyn Store>, NewTenant) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let store = tollgate_store::connect(&url).await.unwrap();
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let tenant = NewTenant::build(
            &prefixes,
            "T".into(),
            "pro".into(),
            "o@t.io".into(),
            None,
            1,
        )
        .0;
        (dir, store, tenant)
    }

    #[tokio::test]
    async fn an_unknown_digest_is_answered_from_the_cache_until_invalidated() {
        let (_dir, store, tenant) = store_and_tenant().await;
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
        cache.invalidate(&digest);
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
        let (_dir, store, tenant) = store_and_tenant().await;
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
        cache.invalidate(&digest);
        let fresh = cache
            .lookup(&digest, store.as_ref())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fresh.key.revoked_at, Some(5));
    }
}
