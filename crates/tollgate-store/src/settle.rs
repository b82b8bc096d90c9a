//! What a batch of settlements writes, worked out once for both backends from the balances it starts from: each
//! request's charge (never more than what is left), its ledger entry and usage row, the balances that changed and
//! each key's latest use. Each backend reads the balances under its own lock and writes the plan in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use tollgate_core::credits::{Balance, LedgerEntry, LedgerKind, Settlement};
use tollgate_core::id;
use tollgate_core::money::Micros;
use tollgate_core::ports::SettledBatch;
use tollgate_core::tenant::Timestamp;

/// One usage row to write.
#[derive(Debug)]
pub(crate) struct UsageRow<'a> {
    /// The row's own id.
    pub(crate) id: String,
    /// The request it records.
    pub(crate) settlement: &'a Settlement,
    /// What it was actually charged.
    pub(crate) charge: Micros,
}

impl UsageRow<'_> {
    /// Token counts as stored (`BIGINT`); a count beyond `i64` cannot come from a provider, so it saturates.
    pub(crate) fn tokens(&self) -> (i64, i64) {
        let s = self.settlement;
        (
            i64::try_from(s.prompt_tokens).unwrap_or(i64::MAX),
            i64::try_from(s.completion_tokens).unwrap_or(i64::MAX),
        )
    }
}

/// Everything one batch writes.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// Ledger entries of the charges (a free or uncovered request has none).
    pub(crate) ledger: Vec<LedgerEntry>,
    /// One per settlement, in order.
    pub(crate) usage: Vec<UsageRow<'a>>,
    /// The tenants whose balance changed, each with its new balance and version, in tenant id order.
    pub(crate) balances: Vec<(&'a str, Balance)>,
    /// What each charged tenant was charged in all: it comes off the settling node's lease on the tenant.
    pub(crate) lease_charges: Vec<(&'a str, Micros)>,
    /// Each key's latest use in the batch, in key id order (a stable order to lock rows in).
    pub(crate) last_used: Vec<(&'a str, Timestamp)>,
}

impl Plan<'_> {
    /// What the batch did, for the caller.
    pub(crate) fn outcome(&self) -> SettledBatch {
        SettledBatch {
            charged: self.usage.iter().map(|u| u.charge).collect(),
            balances: self
                .balances
                .iter()
                .map(|(tenant, balance)| ((*tenant).to_owned(), *balance))
                .collect(),
        }
    }
}

/// The tenants whose balance a batch reads: those with something to charge, in id order (the order in which a
/// backend that locks rows must lock them, so two batches never wait for each other in a cycle).
pub(crate) fn charged_tenants(batch: &[Settlement]) -> BTreeSet<&str> {
    batch
        .iter()
        .filter(|s| s.cost > Micros::ZERO)
        .map(|s| s.tenant_id.as_str())
        .collect()
}

/// Works out what `batch` writes, given the stored balance of each of its [`charged_tenants`] (a tenant without a
/// balance row has nothing to spend).
pub(crate) fn plan<'a>(batch: &'a [Settlement], stored: &BTreeMap<&'a str, Balance>) -> Plan<'a> {
    // Per tenant: the balance as it goes, and what was charged so far (nothing: unchanged).
    let mut balances: BTreeMap<&str, (Balance, Micros)> = stored
        .iter()
        .map(|(tenant, balance)| (*tenant, (*balance, Micros::ZERO)))
        .collect();
    let mut ledger = Vec::new();
    let mut usage = Vec::with_capacity(batch.len());
    for s in batch {
        // Holds make a charge above the balance impossible on one node; if another process spent the money
        // meanwhile, the balance stops at zero and the caller sees the charge fall short of the cost.
        let charge = match balances.get_mut(s.tenant_id.as_str()) {
            Some((balance, charged)) if s.cost > Micros::ZERO => {
                let charge = s.cost.min(balance.balance);
                if charge > Micros::ZERO {
                    balance.balance = balance.balance.minus(charge);
                    *charged = charged.plus(charge);
                    ledger.push(LedgerEntry {
                        id: id::new_id(id::LEDGER_ENTRY),
                        tenant_id: s.tenant_id.clone(),
                        kind: LedgerKind::Charge,
                        amount: Micros(-charge.get()),
                        balance_after: balance.balance,
                        reason: Some(s.request_id.clone()),
                        created_at: s.at,
                    });
                }
                charge
            }
            _ => Micros::ZERO,
        };
        usage.push(UsageRow {
            id: id::new_id(id::USAGE),
            settlement: s,
            charge,
        });
    }
    let mut last_used: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for s in batch {
        let at = last_used.entry(&s.key_id).or_insert(s.at);
        *at = (*at).max(s.at);
    }
    let changed: Vec<(&str, (Balance, Micros))> = balances
        .into_iter()
        .filter(|(_, (_, charged))| *charged > Micros::ZERO)
        .collect();
    Plan {
        ledger,
        usage,
        balances: changed
            .iter()
            .map(|(tenant, (balance, _))| {
                let bumped = Balance {
                    version: balance.version + 1,
                    ..*balance
                };
                (*tenant, bumped)
            })
            .collect(),
        lease_charges: changed
            .iter()
            .map(|(tenant, (_, charged))| (*tenant, *charged))
            .collect(),
        last_used: last_used.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settlement(tenant: &str, key: &str, cost: i64, at: i64) -> Settlement {
        Settlement {
            request_id: format!("req_{at}"),
            tenant_id: tenant.into(),
            project_id: "proj_a".into(),
            key_id: key.into(),
            model: "fast".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            cost: Micros(cost),
            at,
        }
    }

    #[test]
    fn charges_stop_at_zero_and_only_changed_balances_move_their_version() {
        let batch = [
            settlement("org_b", "key_2", 700, 5),
            settlement("org_a", "key_1", 0, 3),
            settlement("org_b", "key_1", 500, 4),
            settlement("org_c", "key_3", 10, 6),
        ];
        assert_eq!(
            charged_tenants(&batch).into_iter().collect::<Vec<_>>(),
            vec!["org_b", "org_c"],
            "free requests read no balance; sorted"
        );
        let stored = BTreeMap::from([
            (
                "org_b",
                Balance {
                    balance: Micros(1_000),
                    version: 4,
                },
            ),
            ("org_c", Balance::default()),
        ]);
        let plan = plan(&batch, &stored);
        let outcome = plan.outcome();
        assert_eq!(
            outcome.charged,
            vec![Micros(700), Micros(0), Micros(300), Micros(0)]
        );
        assert_eq!(
            outcome.balances,
            vec![(
                "org_b".to_owned(),
                Balance {
                    balance: Micros(0),
                    version: 5
                }
            )],
            "org_c had nothing, so nothing changed"
        );
        let ledger: Vec<(i64, i64)> = plan
            .ledger
            .iter()
            .map(|e| (e.amount.get(), e.balance_after.get()))
            .collect();
        assert_eq!(ledger, vec![(-700, 300), (-300, 0)]);
        assert_eq!(
            plan.last_used,
            vec![("key_1", 4), ("key_2", 5), ("key_3", 6)]
        );
    }
}
