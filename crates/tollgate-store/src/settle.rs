//! What a batch of settlements writes, worked out once for both backends from the balances and audit chain heads it
//! starts from: each request's charge (never more than what is left), its ledger entry, usage row and
//! `request.completed` event (with that charge), the refused requests' events, each event's place in its tenant's
//! chain, the balances and chain heads that moved, each key's latest use, and the responses stored for requests
//! with an `Idempotency-Key` (in their charges' transaction, so a retry finds both or neither). Each backend reads
//! the balances and heads under its own lock and writes the plan in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use tollgate_core::audit::{AuditEvent, ChainHead, ChainedEvent};
use tollgate_core::credits::{Balance, LedgerEntry, LedgerKind, Settlement};
use tollgate_core::id;
use tollgate_core::idempotency::Completion;
use tollgate_core::money::Micros;
use tollgate_core::ports::{SettledBatch, StoreError};
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

/// What a batch charged one capped key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyCharge<'a> {
    /// The key.
    pub(crate) key_id: &'a str,
    /// Start of the latest cap period the batch charged it in.
    pub(crate) period_start: Timestamp,
    /// Charged in that period: added to its spending.
    pub(crate) spent: Micros,
    /// Charged in all: off the node's lease on the key.
    pub(crate) leased: Micros,
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
    /// Each capped key's charges: `(key, period start, charged in that period, charged in all)`, in key id order.
    /// The period's amount is added to the key's spending (a batch that spans two periods counts only the later:
    /// the earlier one is over); the whole comes off the settling node's lease on the key. Uncapped keys: none.
    pub(crate) key_charges: Vec<KeyCharge<'a>>,
    /// Each key's latest use in the batch, in key id order (a stable order to lock rows in).
    pub(crate) last_used: Vec<(&'a str, Timestamp)>,
    /// The audit events, in their chains: one per settlement, in order, then the refused requests'.
    pub(crate) events: Vec<ChainedEvent>,
    /// Where each chain the batch appended to now ends, in tenant id order.
    pub(crate) heads: BTreeMap<String, ChainHead>,
    /// The responses to store for the settlements' idempotency keys ([`crate::queries::COMPLETE_IDEMPOTENCY`]),
    /// in (scope, key) order, the order renewals lock records in; usually none.
    pub(crate) completions: Vec<CompletionRow<'a>>,
}

/// One idempotent response a batch stores with its charge.
#[derive(Debug)]
pub(crate) struct CompletionRow<'a> {
    /// The claim and its response.
    pub(crate) completion: &'a Completion,
    /// The response's headers as stored ([`crate::rows::headers_json`]).
    pub(crate) headers: String,
}

impl CompletionRow<'_> {
    /// The response's status as stored.
    pub(crate) fn status(&self) -> i64 {
        i64::from(self.completion.response.status)
    }
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

/// The tenants whose audit chains a batch appends to (every settlement's and every event's), in id order: the
/// order in which a backend that locks their heads must lock them (after the balances).
pub(crate) fn chained_tenants<'a>(
    batch: &'a [Settlement],
    events: &'a [AuditEvent],
) -> BTreeSet<&'a str> {
    batch
        .iter()
        .map(|s| s.tenant_id.as_str())
        .chain(events.iter().map(|e| e.tenant_id.as_str()))
        .collect()
}

/// A settled request's `request.completed` event, with what it was actually charged.
fn completed(s: &Settlement, charge: Micros) -> AuditEvent {
    let mut event = AuditEvent::request_completed(
        &s.tenant_id,
        &s.key_id,
        &s.key_last4,
        s.at,
        &s.origin,
        s.status,
        s.latency_ms,
    );
    if !s.project_id.is_empty() {
        event.project_id = Some(s.project_id.clone());
    }
    event.model = Some(s.model.clone());
    event.prompt_tokens = Some(s.prompt_tokens);
    event.completion_tokens = Some(s.completion_tokens);
    event.cost = Some(charge);
    event
}

/// The charges of capped keys among `usage`, per key ([`Plan::key_charges`]).
fn key_charges<'a>(usage: &[UsageRow<'a>]) -> Vec<KeyCharge<'a>> {
    let mut keys: BTreeMap<&'a str, KeyCharge<'a>> = BTreeMap::new();
    for u in usage {
        let s = u.settlement;
        let Some(period) = s.spend_period else {
            continue;
        };
        if u.charge <= Micros::ZERO {
            continue;
        }
        let start = period.start(s.at);
        let key = keys.entry(&s.key_id).or_insert(KeyCharge {
            key_id: &s.key_id,
            period_start: start,
            spent: Micros::ZERO,
            leased: Micros::ZERO,
        });
        if start > key.period_start {
            *key = KeyCharge {
                period_start: start,
                spent: Micros::ZERO,
                ..*key
            };
        }
        if start == key.period_start {
            key.spent = key.spent.plus(u.charge);
        }
        key.leased = key.leased.plus(u.charge);
    }
    keys.into_values().collect()
}

/// Works out what `batch` and `events` write, given the stored balance of each of the batch's [`charged_tenants`]
/// (a tenant without a balance row has nothing to spend) and the chain head of each of their [`chained_tenants`]
/// (one without a head has no chain: an error, and nothing is written).
pub(crate) fn plan<'a>(
    batch: &'a [Settlement],
    events: &[AuditEvent],
    stored: &BTreeMap<&'a str, Balance>,
    mut heads: BTreeMap<String, ChainHead>,
) -> Result<Plan<'a>, StoreError> {
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
    let completed = usage.iter().map(|u| completed(u.settlement, u.charge));
    let chained = crate::audit::chain_owned(&mut heads, completed.chain(events.iter().cloned()))
        .map_err(|tenant| StoreError::Backend(format!("no audit chain for tenant {tenant}")))?;
    let key_charges = key_charges(&usage);
    let mut last_used: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for s in batch {
        let at = last_used.entry(&s.key_id).or_insert(s.at);
        *at = (*at).max(s.at);
    }
    let mut completions = batch
        .iter()
        .filter_map(|s| s.idempotency.as_deref())
        .map(|completion| {
            Ok(CompletionRow {
                completion,
                headers: crate::rows::headers_json(&completion.response.headers)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    completions.sort_by_key(|c| (c.completion.scope.as_str(), c.completion.key.as_str()));
    let changed: Vec<(&str, (Balance, Micros))> = balances
        .into_iter()
        .filter(|(_, (_, charged))| *charged > Micros::ZERO)
        .collect();
    Ok(Plan {
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
        key_charges,
        last_used: last_used.into_iter().collect(),
        events: chained,
        heads,
        completions,
    })
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
            key_last4: "abcd".into(),
            model: "fast".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            cost: Micros(cost),
            at,
            status: 200,
            latency_ms: 7,
            origin: Default::default(),
            spend_period: None,
            idempotency: None,
        }
    }

    #[test]
    fn capped_keys_charges_count_in_their_latest_period_and_all_come_off_the_lease() {
        use tollgate_core::tenant::SpendPeriod;
        // 2024-02-29 and 2024-03-01 (UTC), one day apart across a month's end.
        let (feb, mar) = (1_709_164_800, 1_709_251_200);
        let capped = |key: &str, cost, at, period| Settlement {
            spend_period: Some(period),
            idempotency: None,
            ..settlement("org_a", key, cost, at)
        };
        let batch = [
            capped("key_m", 100, feb, SpendPeriod::Month),
            settlement("org_a", "key_free", 50, feb),
            capped("key_m", 30, mar, SpendPeriod::Month),
            capped("key_m", 7, feb + 1, SpendPeriod::Month),
            capped("key_t", 40, feb, SpendPeriod::Total),
            capped("key_t", 2, mar, SpendPeriod::Total),
            capped("key_zero", 0, feb, SpendPeriod::Month),
        ];
        let stored = BTreeMap::from([(
            "org_a",
            Balance {
                balance: Micros(1_000),
                version: 1,
            },
        )]);
        let heads = BTreeMap::from([("org_a".to_owned(), ChainHead::default())]);
        let plan = plan(&batch, &[], &stored, heads).unwrap();
        let charge = |key_id, period_start, spent, leased| KeyCharge {
            key_id,
            period_start,
            spent: Micros(spent),
            leased: Micros(leased),
        };
        assert_eq!(
            plan.key_charges,
            vec![charge("key_m", mar, 30, 137), charge("key_t", 0, 42, 42),],
            "uncapped and free requests have none"
        );
    }

    #[test]
    fn completions_are_written_in_key_order_with_their_headers_as_json() {
        use tollgate_core::idempotency::{Completion, StoredResponse};
        let completing = |key: &str, at| Settlement {
            idempotency: Some(Box::new(Completion {
                scope: "org_a".into(),
                key: key.into(),
                claim_id: format!("clm_{key}"),
                response: StoredResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "text/event-stream".into())],
                    body: b"data: [DONE]".to_vec(),
                },
            })),
            ..settlement("org_a", "key_1", 0, at)
        };
        let batch = [
            completing("b", 1),
            settlement("org_a", "key_1", 0, 2),
            completing("a", 3),
        ];
        let heads = BTreeMap::from([("org_a".to_owned(), ChainHead::default())]);
        let plan = plan(&batch, &[], &BTreeMap::new(), heads.clone()).unwrap();
        let written: Vec<(&str, &str)> = plan
            .completions
            .iter()
            .map(|c| (c.completion.key.as_str(), c.headers.as_str()))
            .collect();
        assert_eq!(
            written,
            vec![
                ("a", r#"[["content-type","text/event-stream"]]"#),
                ("b", r#"[["content-type","text/event-stream"]]"#),
            ]
        );
        let plain = super::plan(&batch[1..2], &[], &BTreeMap::new(), heads).unwrap();
        assert!(plain.completions.is_empty());
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
        let refused =
            AuditEvent::request_completed("org_a", "key_1", "abcd", 8, &Default::default(), 402, 1);
        let heads = chained_tenants(&batch, std::slice::from_ref(&refused))
            .into_iter()
            .map(|t| (t.to_owned(), ChainHead::default()))
            .collect();
        let plan = plan(&batch, std::slice::from_ref(&refused), &stored, heads).unwrap();
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
        // One event per settlement with its charge, then the refusal; each in its tenant's chain.
        let events: Vec<(&str, i64, Option<i64>, Option<u16>)> = plan
            .events
            .iter()
            .map(|c| {
                (
                    c.event.tenant_id.as_str(),
                    c.seq,
                    c.event.cost.map(Micros::get),
                    c.event.status,
                )
            })
            .collect();
        assert_eq!(
            events,
            vec![
                ("org_b", 1, Some(700), Some(200)),
                ("org_a", 1, Some(0), Some(200)),
                ("org_b", 2, Some(300), Some(200)),
                ("org_c", 1, Some(0), Some(200)),
                ("org_a", 2, None, Some(402)),
            ]
        );
        assert_eq!(plan.heads["org_b"].hash, plan.events[2].hash);
        let missing = super::plan(&batch, &[], &stored, BTreeMap::new());
        assert!(missing.is_err(), "a tenant without a chain fails the batch");
    }
}
