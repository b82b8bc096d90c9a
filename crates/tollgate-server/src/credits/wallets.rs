//! Per-tenant balances and holds in memory. A hold takes a request's worst-case cost out of what other requests
//! may hold; settling or dropping it gives the hold back, and the charge reaches the wallet as the store's new
//! balance, observed by the recorder right after the commit.
//!
//! The balance a wallet shows is always a reading of the store (never this node's own arithmetic), tagged with the
//! store's version of that balance: a reading is applied only if it is newer than the one the wallet has. So a
//! charge is never counted twice (once as arithmetic, once in a reading) nor lost to a stale reading, and money
//! spent or taken away elsewhere (an adjustment, another process) shows here within [`REREAD_AFTER`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tollgate_core::credits::Balance;
use tollgate_core::money::Micros;
use tollgate_core::ports::{Store, StoreError};

/// A wallet whose last reading is older than this is re-read from the store before its next hold, so changes made
/// elsewhere are seen within this time. Every settled batch is also a reading, so a busy tenant costs no extra reads.
pub const REREAD_AFTER: Duration = Duration::from_secs(1);

/// A tenant's money as this node sees it.
#[derive(Debug, Clone, Copy)]
struct Wallet {
    /// The store's balance as of the newest reading.
    balance: Balance,
    /// Held by requests in flight on this node.
    held: Micros,
    /// When the store was last read for this wallet.
    read_at: Instant,
}

impl Wallet {
    /// Balance less holds, never below zero (money taken away elsewhere can leave holds above the balance).
    fn available(&self) -> Micros {
        self.balance.balance.minus(self.held).max(Micros::ZERO)
    }

    /// Applies a reading of the store if it is newer than what the wallet has.
    fn observe(&mut self, stored: Balance, at: Instant) {
        if stored.version >= self.balance.version {
            self.balance = stored;
            self.read_at = self.read_at.max(at);
        }
    }
}

/// Why a hold was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The hold does not fit the available balance.
    #[error("insufficient balance: {available} available, {cost} needed")]
    Insufficient {
        /// Balance less other requests' holds.
        available: Micros,
        /// The hold asked for.
        cost: Micros,
    },
    /// The balance could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every tenant's wallet on this node. Locks are held only for arithmetic, never across an await.
#[derive(Debug, Default)]
pub struct Wallets {
    wallets: Mutex<HashMap<String, Wallet>>,
}

impl Wallets {
    /// No wallets yet; each is loaded from the store on its tenant's first hold.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn with<R>(&self, tenant_id: &str, f: impl FnOnce(&mut Wallet) -> R) -> Option<R> {
        let mut wallets = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
        wallets.get_mut(tenant_id).map(f)
    }

    /// Applies a reading of the tenant's balance taken at `at` (a settled batch's, or a read of the store),
    /// creating the wallet if this node has none yet.
    pub fn observe(&self, tenant_id: &str, stored: Balance, at: Instant) {
        let mut wallets = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
        match wallets.get_mut(tenant_id) {
            Some(wallet) => wallet.observe(stored, at),
            None => {
                wallets.insert(
                    tenant_id.to_owned(),
                    Wallet {
                        balance: stored,
                        held: Micros::ZERO,
                        read_at: at,
                    },
                );
            }
        }
    }

    /// Brings the tenant's wallet up to date with the store (loading it the first time).
    pub async fn refresh(&self, store: &dyn Store, tenant_id: &str) -> Result<(), StoreError> {
        // The time is taken before the read: the reading is at least this fresh.
        let at = Instant::now();
        let stored = store.balance(tenant_id).await?;
        self.observe(tenant_id, stored, at);
        Ok(())
    }

    fn try_hold(&self, tenant_id: &str, cost: Micros) -> Option<Result<(), HoldError>> {
        self.with(tenant_id, |w| {
            let available = w.available();
            if cost <= available {
                w.held = w.held.plus(cost);
                Ok(())
            } else {
                Err(HoldError::Insufficient { available, cost })
            }
        })
    }

    /// Whether the tenant's wallet exists and was read within [`REREAD_AFTER`].
    fn is_fresh(&self, tenant_id: &str) -> bool {
        self.with(tenant_id, |w| w.read_at.elapsed() < REREAD_AFTER)
            .unwrap_or(false)
    }

    /// Holds `cost` against the tenant's available balance. A zero hold (a free model) is never refused. A wallet
    /// not read within [`REREAD_AFTER`] is re-read first, so a balance that went down elsewhere is not trusted.
    pub async fn hold(
        self: &Arc<Self>,
        store: &dyn Store,
        tenant_id: &str,
        cost: Micros,
    ) -> Result<Hold, HoldError> {
        // The guard exists only once the amount is held: dropping it gives back exactly what was taken.
        let held = || Hold {
            wallets: Arc::clone(self),
            tenant_id: tenant_id.to_owned(),
            amount: cost.max(Micros::ZERO),
            open: true,
        };
        if cost <= Micros::ZERO {
            return Ok(held());
        }
        if !self.is_fresh(tenant_id) {
            self.refresh(store, tenant_id).await?;
        }
        match self.try_hold(tenant_id, cost) {
            Some(Ok(())) => Ok(held()),
            Some(Err(refused)) => Err(refused),
            None => Err(HoldError::Store(StoreError::Backend(
                "wallet vanished".to_owned(),
            ))),
        }
    }

    /// The tenant's balance less holds in flight, as this node sees it.
    pub fn available(&self, tenant_id: &str) -> Option<Micros> {
        self.with(tenant_id, |w| w.available())
    }
}

/// A request's hold. Release it once its charge is durable (the recorder has already applied the new balance);
/// dropped (a refused or failed request), it is released all the same.
#[derive(Debug)]
pub struct Hold {
    wallets: Arc<Wallets>,
    tenant_id: String,
    amount: Micros,
    open: bool,
}

impl Hold {
    /// The amount held.
    pub fn amount(&self) -> Micros {
        self.amount
    }

    /// Gives the hold back.
    pub fn release(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        let amount = self.amount;
        self.wallets.with(&self.tenant_id, |w| {
            w.held = w.held.minus(amount);
        });
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(balance: i64, version: i64) -> Balance {
        Balance {
            balance: Micros(balance),
            version,
        }
    }

    fn wallets(balance: i64) -> Arc<Wallets> {
        let w = Wallets::new();
        w.observe("t", reading(balance, 1), Instant::now());
        w
    }

    fn hold(w: &Arc<Wallets>, amount: i64) -> Hold {
        w.try_hold("t", Micros(amount)).unwrap().unwrap();
        Hold {
            wallets: Arc::clone(w),
            tenant_id: "t".into(),
            amount: Micros(amount),
            open: true,
        }
    }

    #[test]
    fn holds_take_and_release_exactly() {
        let w = wallets(100);
        let a = hold(&w, 60);
        assert!(matches!(
            w.try_hold("t", Micros(50)),
            Some(Err(HoldError::Insufficient {
                available: Micros(40),
                cost: Micros(50)
            }))
        ));
        assert_eq!(
            w.available("t"),
            Some(Micros(40)),
            "a refusal takes nothing"
        );
        // The recorder applies the committed balance first, then the request releases its hold.
        w.observe("t", reading(75, 2), Instant::now());
        assert_eq!(w.available("t"), Some(Micros(15)));
        a.release();
        assert_eq!(w.available("t"), Some(Micros(75)));
        drop(hold(&w, 10));
        assert_eq!(
            w.available("t"),
            Some(Micros(75)),
            "a dropped hold is given back"
        );
    }

    #[test]
    fn a_balance_that_went_down_elsewhere_is_taken_and_stale_readings_are_ignored() {
        let w = wallets(100);
        let a = hold(&w, 30);
        // Another process (or an adjustment) took 90 away: the reading is newer, so it wins.
        w.observe("t", reading(10, 5), Instant::now());
        assert_eq!(w.available("t"), Some(Micros(0)));
        assert!(matches!(
            w.try_hold("t", Micros(1)),
            Some(Err(HoldError::Insufficient { .. }))
        ));
        // A read that started before that change and finished after it must not bring the money back.
        w.observe("t", reading(100, 4), Instant::now());
        assert_eq!(w.available("t"), Some(Micros(0)));
        a.release();
        assert_eq!(w.available("t"), Some(Micros(10)));
        // A grant made elsewhere shows the same way.
        w.observe("t", reading(1_010, 6), Instant::now());
        assert_eq!(w.available("t"), Some(Micros(1_010)));
    }
}
