//! Per-tenant balances and holds in memory. A hold takes a request's worst-case cost out of what other requests
//! may hold; settling it applies the actual charge and frees the rest; dropping it unsettled frees it all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tollgate_core::credits::Balance;
use tollgate_core::money::Micros;
use tollgate_core::ports::{Store, StoreError};

/// Before refusing a hold, a wallet re-reads the store for grants made elsewhere, at most this often.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// A tenant's money as this node sees it.
#[derive(Debug, Clone, Copy, Default)]
struct Wallet {
    /// The ledger's sum, as of the last charge this node settled or grant it saw.
    balance: Micros,
    /// Grants and adjustments seen so far (to pick up those made elsewhere).
    granted: Micros,
    /// Held by requests in flight.
    held: Micros,
    /// When the store was last read for this wallet.
    read_at: Option<Instant>,
}

impl Wallet {
    fn available(&self) -> Micros {
        self.balance.minus(self.held)
    }

    /// Takes in grants made since this wallet last looked (never charges: only this node charges).
    fn catch_up(&mut self, stored: Balance) {
        self.read_at = Some(Instant::now());
        if stored.granted > self.granted {
            self.balance = self.balance.plus(stored.granted.minus(self.granted));
            self.granted = stored.granted;
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

    /// Brings the tenant's wallet up to date with the store (loading it the first time).
    pub async fn refresh(&self, store: &dyn Store, tenant_id: &str) -> Result<(), StoreError> {
        let stored = store.balance(tenant_id).await?;
        let mut wallets = self.wallets.lock().unwrap_or_else(PoisonError::into_inner);
        wallets
            .entry(tenant_id.to_owned())
            .or_insert_with(|| Wallet {
                balance: stored.balance,
                granted: stored.granted,
                held: Micros::ZERO,
                read_at: None,
            })
            .catch_up(stored);
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

    /// Holds `cost` against the tenant's available balance. A zero hold (a free model) is never refused. Before
    /// refusing, the wallet looks for grants made elsewhere.
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
        match self.try_hold(tenant_id, cost) {
            Some(Ok(())) => return Ok(held()),
            // A tenant that keeps asking with too little balance does not turn every refusal into a store read.
            Some(Err(refused)) if self.read_recently(tenant_id) => return Err(refused),
            Some(Err(_)) | None => self.refresh(store, tenant_id).await?,
        }
        match self.try_hold(tenant_id, cost) {
            Some(Ok(())) => Ok(held()),
            Some(Err(refused)) => Err(refused),
            None => Err(HoldError::Store(StoreError::Backend(
                "wallet vanished".to_owned(),
            ))),
        }
    }

    fn read_recently(&self, tenant_id: &str) -> bool {
        self.with(tenant_id, |w| {
            w.read_at.is_some_and(|at| at.elapsed() < REREAD_AFTER)
        })
        .unwrap_or(false)
    }

    /// The tenant's balance less holds in flight, as this node sees it.
    pub fn available(&self, tenant_id: &str) -> Option<Micros> {
        self.with(tenant_id, |w| w.available())
    }
}

/// A request's hold. Settle it with the amount actually charged; dropped unsettled (a refused or failed request),
/// it is released whole.
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

    /// Applies a charge the store has made durable, and releases the hold.
    pub fn settle(mut self, charged: Micros) {
        self.close(charged);
    }

    fn close(&mut self, charged: Micros) {
        if !self.open {
            return;
        }
        self.open = false;
        let amount = self.amount;
        self.wallets.with(&self.tenant_id, |w| {
            w.held = w.held.minus(amount);
            w.balance = w.balance.minus(charged);
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

    fn wallets(balance: i64) -> Arc<Wallets> {
        let w = Wallets::new();
        w.wallets.lock().unwrap().insert(
            "t".into(),
            Wallet {
                balance: Micros(balance),
                granted: Micros(balance),
                held: Micros::ZERO,
                read_at: None,
            },
        );
        w
    }

    #[test]
    fn holds_take_settle_and_release_exactly() {
        let w = wallets(100);
        let a = w.try_hold("t", Micros(60)).unwrap();
        assert!(a.is_ok());
        let guard = Hold {
            wallets: Arc::clone(&w),
            tenant_id: "t".into(),
            amount: Micros(60),
            open: true,
        };
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
        guard.settle(Micros(25));
        assert_eq!(w.available("t"), Some(Micros(75)));
        let dropped = Hold {
            wallets: Arc::clone(&w),
            tenant_id: "t".into(),
            amount: Micros(0),
            open: true,
        };
        drop(dropped);
        assert_eq!(w.available("t"), Some(Micros(75)));
    }

    #[test]
    fn grants_made_elsewhere_are_added_once() {
        let w = wallets(100);
        w.with("t", |wallet| {
            wallet.balance = Micros(70); // a charge this node made
            wallet.catch_up(Balance {
                balance: Micros(170),
                granted: Micros(200),
            });
            assert_eq!(wallet.balance, Micros(170));
            wallet.catch_up(Balance {
                balance: Micros(170),
                granted: Micros(200),
            });
            assert_eq!(
                wallet.balance,
                Micros(170),
                "the same grant is not added twice"
            );
        });
    }
}
