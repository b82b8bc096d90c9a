//! Holds against this node's leases: the part of an account the store has reserved for this node
//! (`CreditStore::lease`), where an account is a tenant's balance or a capped key's remaining cap (its cap less
//! the period's spending). A hold that fits the lease costs no store round trip; one that does not asks the store
//! for more, which the store grants only out of what no node has reserved. So the nodes together never hold more
//! than a tenant has, nor more than a key may still spend, whichever nodes its requests reach.
//!
//! The lease is this node's own arithmetic, kept equal to the store's: only this node changes its lease row (a
//! grant adds, a settlement takes its charge off in the same transaction, a release gives back), and each change
//! is applied here by the same amount. Where the two could differ for a moment (a grant read while a settlement
//! committed), the node keeps the smaller figure: it may hold less than it could, never more.
//!
//! A lease lasts [`LEASE_TTL`] in the store and is renewed every [`RENEW_EVERY`] while the node runs, so a node
//! that dies reserves nothing after at most [`LEASE_TTL`]. The node trusts its own lease only for [`TRUST`] after
//! the call that last extended it, so a node cut off from the store stops holding well before its lease can be
//! taken by another. An account idle for [`IDLE`] gets its unused lease back into the store, where other nodes can
//! reserve it. A key's wallet remembers the cap it leased under: a changed cap (the store dropped the key's leases
//! with the change) starts it afresh.

use crate::outage::Outage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_core::money::Micros;
use tollgate_core::ports::{Account, Clock, LeaseRequest, Store, StoreError};
use tollgate_core::tenant::SpendLimit;

/// How long a lease lasts in the store without renewal: what a crashed node can leave reserved.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How long this node trusts its lease after the store last extended it: half the TTL, so clocks of nodes may
/// differ by up to the other half.
pub const TRUST: Duration = Duration::from_secs(15);
/// How often live leases are extended.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A tenant without holds for this long gives its lease back.
pub const IDLE: Duration = Duration::from_secs(10);
/// How often the keeper looks for idle wallets.
const KEEPER_TICK: Duration = Duration::from_secs(1);
/// A hold retries a lease this often when holds on other tasks took the grant first.
const LEASE_ATTEMPTS: usize = 3;

/// An account's money as this node holds it.
#[derive(Debug)]
struct Wallet {
    /// This node's lease on the account.
    lease: Micros,
    /// Held by requests in flight on this node (within `lease` while the lease is trusted).
    held: Micros,
    /// Until when `lease` may be held against.
    trusted_until: Instant,
    /// The last hold or its end.
    last_used: Instant,
    /// The store may hold more lease than `lease` (a release failed): give it back when idle.
    dirty: bool,
    /// Serialises this wallet's store calls, so a burst of holds that do not fit makes one lease call.
    calls: Arc<tokio::sync::Mutex<()>>,
    /// A key's wallet: the cap its lease was granted under.
    basis: Option<SpendLimit>,
}

impl Wallet {
    fn new(now: Instant) -> Self {
        Self {
            lease: Micros::ZERO,
            held: Micros::ZERO,
            trusted_until: now,
            last_used: now,
            dirty: false,
            calls: Arc::new(tokio::sync::Mutex::new(())),
            basis: None,
        }
    }

    /// The lease this node may hold against now: none once its trust has run out.
    fn usable(&self, now: Instant) -> Micros {
        if now < self.trusted_until {
            self.lease
        } else {
            Micros::ZERO
        }
    }

    fn try_hold(&mut self, cost: Micros, now: Instant) -> bool {
        if self.usable(now).minus(self.held) < cost {
            return false;
        }
        self.held = self.held.plus(cost);
        self.last_used = now;
        true
    }
}

/// Why a hold was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The hold does not fit what this node holds and what no node has reserved.
    #[error("insufficient balance: {available} available, {cost} needed")]
    Insufficient {
        /// This node's unused lease plus what no node has reserved.
        available: Micros,
        /// The hold asked for.
        cost: Micros,
        /// For a key: what it spent in its cap's period, as the store last said. Zero for a tenant.
        spent: Micros,
    },
    /// The store could not be asked for a lease.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which of a node's books an account's wallet is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tenant,
    Key,
}

impl Kind {
    fn of(account: Account<'_>) -> (Self, &str) {
        match account {
            Account::Tenant(id) => (Self::Tenant, id),
            Account::Key(id) => (Self::Key, id),
        }
    }

    fn account(self, id: &str) -> Account<'_> {
        match self {
            Self::Tenant => Account::Tenant(id),
            Self::Key => Account::Key(id),
        }
    }
}

/// The wallets by account id, one map per kind: a lookup borrows the id, so the hot path's hit allocates nothing.
#[derive(Default)]
struct Books {
    tenants: HashMap<String, Wallet>,
    keys: HashMap<String, Wallet>,
}

impl Books {
    fn of(&mut self, kind: Kind) -> &mut HashMap<String, Wallet> {
        match kind {
            Kind::Tenant => &mut self.tenants,
            Kind::Key => &mut self.keys,
        }
    }

    fn all(&self) -> impl Iterator<Item = (Kind, &String, &Wallet)> {
        let tenants = self.tenants.iter().map(|(id, w)| (Kind::Tenant, id, w));
        tenants.chain(self.keys.iter().map(|(id, w)| (Kind::Key, id, w)))
    }
}

/// Every account's wallet on this node, and the keeper that renews and returns their leases. Locks are held only
/// for arithmetic, never across an await.
pub struct Wallets {
    node_id: String,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    wallets: Mutex<Books>,
    /// [`IDLE`], shorter in tests.
    idle: Duration,
    stop: CancellationToken,
    keeper: TaskTracker,
}

impl std::fmt::Debug for Wallets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallets")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Wallets {
    /// Wallets of the node `node_id`, leasing from `store`; starts the keeper (stopped by [`Wallets::close`]).
    pub fn start(node_id: String, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Self::start_with_idle(node_id, store, clock, IDLE)
    }

    fn start_with_idle(
        node_id: String,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        idle: Duration,
    ) -> Arc<Self> {
        let wallets = Arc::new(Self {
            node_id,
            store,
            clock,
            wallets: Mutex::new(Books::default()),
            idle,
            stop: CancellationToken::new(),
            keeper: TaskTracker::new(),
        });
        // The keeper holds the wallets weakly: dropped without `close` (a test's app), they still go away.
        let keeper = Arc::downgrade(&wallets);
        wallets
            .keeper
            .spawn(wallets.stop.clone().run_until_cancelled_owned(keep(keeper)));
        wallets.keeper.close();
        wallets
    }

    /// This node's id in the store's leases.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn with<R>(&self, account: Account<'_>, f: impl FnOnce(&mut Wallet) -> R) -> R {
        let (kind, id) = Kind::of(account);
        let mut books = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
        let wallets = books.of(kind);
        // Looked up before inserting: the hot path's hit allocates no key.
        if let Some(wallet) = wallets.get_mut(id) {
            return f(wallet);
        }
        f(wallets
            .entry(id.to_owned())
            .or_insert_with(|| Wallet::new(Instant::now())))
    }

    fn with_existing<R>(
        &self,
        account: Account<'_>,
        f: impl FnOnce(&mut Wallet) -> R,
    ) -> Option<R> {
        let (kind, id) = Kind::of(account);
        let mut books = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
        books.of(kind).get_mut(id).map(f)
    }

    /// Holds `cost` for a request of a key capped by `limit`, against the key's lease on this node. A lease taken
    /// under another cap is dropped first: the store dropped it when the cap changed.
    pub async fn hold_capped(
        self: &Arc<Self>,
        key_id: &str,
        limit: SpendLimit,
        cost: Micros,
    ) -> Result<Hold, HoldError> {
        if cost > Micros::ZERO {
            self.with(Account::Key(key_id), |w| {
                if w.basis != Some(limit) {
                    w.basis = Some(limit);
                    w.lease = Micros::ZERO;
                }
            });
        }
        self.hold(Account::Key(key_id), cost).await
    }

    /// Holds `cost` for a request against the account: from this node's lease when it fits, else from a larger
    /// lease. A zero hold (a free model) is never refused.
    pub async fn hold(
        self: &Arc<Self>,
        account: Account<'_>,
        cost: Micros,
    ) -> Result<Hold, HoldError> {
        let (kind, id) = Kind::of(account);
        // The guard exists only once the amount is held: dropping it gives back exactly what was taken.
        let held = || Hold {
            wallets: Arc::clone(self),
            kind,
            id: id.to_owned(),
            amount: cost.max(Micros::ZERO),
            open: true,
        };
        if cost <= Micros::ZERO {
            return Ok(held());
        }
        let (fits, calls) = self.with(account, |w| {
            (w.try_hold(cost, Instant::now()), Arc::clone(&w.calls))
        });
        if fits {
            return Ok(held());
        }
        let _one_call = calls.lock().await;
        let mut refusal = None;
        for _ in 0..LEASE_ATTEMPTS {
            // Another task may have leased while this one waited.
            let (fits, need, want) = self.with(account, |w| {
                let now = Instant::now();
                let fits = w.try_hold(cost, now);
                let need = w.held.plus(cost).minus(w.usable(now));
                // As much as the store's rule allows (a sixteenth of what the need leaves free): a tenant's lease
                // calls are then rare however many tenants a node serves, and near the end of a balance the
                // share is small.
                (fits, need, Micros(i64::MAX))
            });
            if fits {
                return Ok(held());
            }
            let asked = Instant::now();
            let now = self.clock.now();
            let grant = self
                .store
                .lease(&LeaseRequest {
                    account,
                    node_id: &self.node_id,
                    need,
                    want,
                    now,
                    expires_at: now.saturating_add(ttl_seconds()),
                })
                .await?;
            let fits = self.with(account, |w| {
                let now = Instant::now();
                w.lease = w.usable(now).plus(grant.granted).min(grant.lease);
                w.trusted_until = asked + TRUST;
                w.try_hold(cost, now)
            });
            if fits {
                return Ok(held());
            }
            if grant.granted == Micros::ZERO {
                let unused = self.with(account, |w| w.lease.minus(w.held).max(Micros::ZERO));
                refusal = Some(HoldError::Insufficient {
                    available: unused.plus(grant.free),
                    cost,
                    spent: grant.spent,
                });
                break;
            }
        }
        Err(refusal.unwrap_or(HoldError::Insufficient {
            available: Micros::ZERO,
            cost,
            spent: Micros::ZERO,
        }))
    }

    /// The account's unused lease on this node.
    pub fn available(&self, account: Account<'_>) -> Option<Micros> {
        self.with_existing(account, |w| w.lease.minus(w.held))
    }

    /// Extends every lease of this node; on success the node trusts them for [`TRUST`] more.
    async fn renew(&self, outage: &mut Outage) {
        let any = {
            let books = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
            books.all().any(|(_, _, w)| w.lease > Micros::ZERO)
        };
        if !any {
            return;
        }
        let asked = Instant::now();
        let expires_at = self.clock.now().saturating_add(ttl_seconds());
        match self.store.renew_leases(&self.node_id, expires_at).await {
            Ok(()) => {
                {
                    let mut books = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
                    let Books { tenants, keys } = &mut *books;
                    for w in tenants.values_mut().chain(keys.values_mut()) {
                        w.trusted_until = w.trusted_until.max(asked + TRUST);
                    }
                }
                outage.ended("credit leases are renewed again");
            }
            // The next renewal tries again; holds stop once the trust runs out.
            Err(error) => outage.failed(
                &error,
                "renewing credit leases failed: holds stop once this node's leases are no longer trusted",
            ),
        }
    }

    /// Gives back the lease of every account without holds for [`IDLE`], and forgets its wallet.
    async fn return_idle(&self) {
        let idle: Vec<(Kind, String, Arc<tokio::sync::Mutex<()>>)> = {
            let books = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
            books
                .all()
                .filter(|(_, _, w)| w.held == Micros::ZERO && w.last_used.elapsed() >= self.idle)
                .map(|(kind, id, w)| (kind, id.clone(), Arc::clone(&w.calls)))
                .collect()
        };
        for (kind, id, calls) in idle {
            // A hold is leasing for this account right now: it is not idle.
            let Ok(_one_call) = calls.try_lock() else {
                continue;
            };
            if !self.give_back(kind.account(&id)).await {
                continue;
            }
            let mut books = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
            let wallets = books.of(kind);
            if wallets
                .get(&id)
                .is_some_and(|w| w.held == Micros::ZERO && w.lease == Micros::ZERO && !w.dirty)
            {
                wallets.remove(&id);
            }
        }
    }

    /// Returns an account's whole lease to the store if nothing is held against it; true once nothing is
    /// reserved.
    async fn give_back(&self, account: Account<'_>) -> bool {
        // Zeroed here first, so no hold can use what is being given back.
        let returning = self.with_existing(account, |w| {
            if w.held > Micros::ZERO {
                return None;
            }
            let had = w.lease > Micros::ZERO || w.dirty;
            w.lease = Micros::ZERO;
            Some(had)
        });
        match returning {
            // No wallet: nothing reserved here.
            None | Some(Some(false)) => true,
            // Held against: not idle after all.
            Some(None) => false,
            Some(Some(true)) => {
                let result = self
                    .store
                    .release_lease(account, &self.node_id, Micros(i64::MAX))
                    .await;
                let ok = result.is_ok();
                if let Err(error) = result {
                    tracing::warn!(%error, ?account, "returning a lease failed");
                }
                self.with_existing(account, |w| w.dirty = !ok);
                ok
            }
        }
    }

    /// Stops the keeper and gives back every lease not held against (the server is stopping).
    pub async fn close(&self) {
        self.stop.cancel();
        self.keeper.wait().await;
        let accounts: Vec<(Kind, String)> = {
            let books = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
            books
                .all()
                .map(|(kind, id, _)| (kind, id.clone()))
                .collect()
        };
        for (kind, id) in accounts {
            self.give_back(kind.account(&id)).await;
        }
    }
}

/// Renews the leases and gives idle ones back, until stopped or the wallets are gone.
async fn keep(wallets: std::sync::Weak<Wallets>) {
    let mut renewed = Instant::now();
    let mut outage = Outage::default();
    loop {
        tokio::time::sleep(KEEPER_TICK).await;
        let Some(wallets) = wallets.upgrade() else {
            return;
        };
        if renewed.elapsed() >= RENEW_EVERY {
            renewed = Instant::now();
            wallets.renew(&mut outage).await;
        }
        wallets.return_idle().await;
    }
}

fn ttl_seconds() -> i64 {
    i64::try_from(LEASE_TTL.as_secs()).unwrap_or(i64::MAX)
}

/// A request's hold. Settle it with its charge once the charge is durable (the store took the charge off this
/// node's lease in the same transaction); dropped (a refused or failed request), it is released all the same.
#[derive(Debug)]
pub struct Hold {
    wallets: Arc<Wallets>,
    kind: Kind,
    id: String,
    amount: Micros,
    open: bool,
}

impl Hold {
    /// The amount held.
    pub fn amount(&self) -> Micros {
        self.amount
    }

    /// Ends the hold of a request whose `charged` amount the store has committed (and taken off the lease).
    pub fn settle(mut self, charged: Micros) {
        self.close(charged);
    }

    fn close(&mut self, charged: Micros) {
        if !self.open {
            return;
        }
        self.open = false;
        let amount = self.amount;
        self.wallets
            .with_existing(self.kind.account(&self.id), |w| {
                w.held = w.held.minus(amount).max(Micros::ZERO);
                w.lease = w.lease.minus(charged).max(Micros::ZERO);
                w.last_used = Instant::now();
            });
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.close(Micros::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{audit, store_and_tenant};
    use tollgate_core::audit::EventType;
    use tollgate_core::ports::SystemClock;

    /// What another node would find free on the tenant.
    async fn free(store: &Arc<dyn Store>, tenant_id: &str) -> Micros {
        let now = SystemClock.now();
        store
            .lease(&LeaseRequest {
                account: Account::Tenant(tenant_id),
                node_id: "node_probe",
                need: Micros::ZERO,
                want: Micros::ZERO,
                now,
                expires_at: now,
            })
            .await
            .unwrap()
            .free
    }

    #[tokio::test]
    async fn holds_come_from_the_lease_and_an_idle_or_closing_node_gives_it_back() {
        let (_dir, _url, store, t) = store_and_tenant().await;
        store.create_tenant(&t, &[]).await.unwrap();
        let tenant = t.tenant.id.as_str();
        store
            .grant(
                tenant,
                Micros(16_000),
                None,
                2,
                &audit(EventType::CreditsGranted, tenant),
            )
            .await
            .unwrap();
        let idle = Duration::from_secs(1);
        let wallets = Wallets::start_with_idle(
            "node_a".into(),
            Arc::clone(&store),
            Arc::new(SystemClock),
            idle,
        );

        let first = wallets
            .hold(Account::Tenant(tenant), Micros(100))
            .await
            .unwrap();
        let leased = wallets
            .available(Account::Tenant(tenant))
            .unwrap()
            .plus(Micros(100));
        assert_eq!(free(&store, tenant).await, Micros(16_000).minus(leased));
        // A second hold that fits the lease leaves the store alone.
        let second = wallets
            .hold(Account::Tenant(tenant), Micros(100))
            .await
            .unwrap();
        assert_eq!(free(&store, tenant).await, Micros(16_000).minus(leased));
        // More than the lease has left: the node leases more, or refuses with what it could spend.
        let refused = wallets
            .hold(Account::Tenant(tenant), Micros(20_000))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, HoldError::Insufficient { available, cost: Micros(20_000), .. }
                if available == Micros(16_000 - 200)),
            "{refused:?}"
        );
        first.settle(Micros(60));
        drop(second);
        // Idle for IDLE: the keeper returns the lease; only the charge stays taken (the store charged it; here
        // the probe sees the balance as granted, since this test settles nothing in the store).
        tokio::time::sleep(idle + KEEPER_TICK * 2).await;
        assert_eq!(free(&store, tenant).await, Micros(16_000));
        assert_eq!(
            wallets.available(Account::Tenant(tenant)),
            None,
            "the idle wallet is forgotten"
        );

        let _held = wallets
            .hold(Account::Tenant(tenant), Micros(100))
            .await
            .unwrap();
        drop(_held);
        assert!(free(&store, tenant).await < Micros(16_000));
        wallets.close().await;
        assert_eq!(
            free(&store, tenant).await,
            Micros(16_000),
            "close gives every lease back"
        );
    }
}
