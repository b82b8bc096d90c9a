//! Settlement on PostgreSQL: one transaction per batch, correct with any number of nodes settling for the same
//! tenants at once. The batch locks the balance rows it charges (`FOR UPDATE`, in tenant id order) before reading
//! them, so a concurrent batch waits and then reads the balance this one left; then it writes the plan
//! ([`crate::settle`]) with one statement per table, whatever the batch's size (arrays bound as `unnest`),
//! the node's lease rows included.

use super::{PgStore, db_error};
use crate::settle;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use tollgate_core::credits::{Balance, Settlement};
use tollgate_core::ports::{SettledBatch, StoreError};

impl PgStore {
    /// Writes a non-empty batch in one transaction on the settlement pool.
    pub(super) async fn settle_batch(
        &self,
        node_id: &str,
        batch: &[Settlement],
    ) -> Result<SettledBatch, StoreError> {
        let mut tx = self.settler.begin().await.map_err(db_error)?;
        let tenants: Vec<&str> = settle::charged_tenants(batch).into_iter().collect();
        let mut found: HashMap<String, Balance> = HashMap::new();
        if !tenants.is_empty() {
            // The sort sits below the row locks in the plan, so rows are locked in tenant id order.
            let rows = sqlx::query(
                "SELECT tenant_id, balance_micros, version FROM credit_balances \
                 WHERE tenant_id = ANY($1) ORDER BY tenant_id FOR UPDATE",
            )
            .bind(&tenants)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            for row in &rows {
                found.insert(
                    row.try_get("tenant_id").map_err(db_error)?,
                    crate::rows::balance(row)?,
                );
            }
        }
        // A tenant without a balance row has nothing to spend.
        let stored: BTreeMap<&str, Balance> = tenants
            .iter()
            .map(|t| (*t, found.remove(*t).unwrap_or_default()))
            .collect();
        let plan = settle::plan(batch, &stored);

        if !plan.ledger.is_empty() {
            let column = |f: fn(&tollgate_core::credits::LedgerEntry) -> i64| {
                plan.ledger.iter().map(f).collect::<Vec<i64>>()
            };
            sqlx::query(
                "INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, reason, \
                 created_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], \
                 $5::bigint[], $6::text[], $7::bigint[])",
            )
            .bind(plan.ledger.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .bind(plan.ledger.iter().map(|e| e.tenant_id.as_str()).collect::<Vec<_>>())
            .bind(plan.ledger.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(column(|e| e.amount.get()))
            .bind(column(|e| e.balance_after.get()))
            .bind(plan.ledger.iter().map(|e| e.reason.as_deref()).collect::<Vec<_>>())
            .bind(column(|e| e.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }

        let text = |f: fn(&Settlement) -> &str| {
            plan.usage
                .iter()
                .map(|u| f(u.settlement))
                .collect::<Vec<&str>>()
        };
        let (prompt, completion): (Vec<i64>, Vec<i64>) =
            plan.usage.iter().map(|u| u.tokens()).unzip();
        sqlx::query(
            "INSERT INTO usage_records (id, request_id, tenant_id, project_id, key_id, model, prompt_tokens, \
             completion_tokens, cost_micros, created_at) SELECT * FROM unnest($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], \
             $10::bigint[])",
        )
        .bind(plan.usage.iter().map(|u| u.id.as_str()).collect::<Vec<_>>())
        .bind(text(|s| &s.request_id))
        .bind(text(|s| &s.tenant_id))
        .bind(text(|s| &s.project_id))
        .bind(text(|s| &s.key_id))
        .bind(text(|s| &s.model))
        .bind(prompt)
        .bind(completion)
        .bind(plan.usage.iter().map(|u| u.charge.get()).collect::<Vec<i64>>())
        .bind(plan.usage.iter().map(|u| u.settlement.at).collect::<Vec<i64>>())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;

        if !plan.balances.is_empty() {
            // Rows this transaction already locked: the order of these writes cannot deadlock.
            sqlx::query(
                "UPDATE credit_balances b SET balance_micros = v.balance, version = v.version \
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS v (tenant_id, balance, version) \
                 WHERE b.tenant_id = v.tenant_id",
            )
            .bind(plan.balances.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            .bind(
                plan.balances
                    .iter()
                    .map(|(_, b)| b.balance.get())
                    .collect::<Vec<_>>(),
            )
            .bind(plan.balances.iter().map(|(_, b)| b.version).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }

        if !plan.lease_charges.is_empty() {
            // Only this node writes its lease rows, and its batches run one at a time: no lock order to keep.
            let (tenants, charged): (Vec<&str>, Vec<i64>) = plan
                .lease_charges
                .iter()
                .map(|(t, c)| (*t, c.get()))
                .unzip();
            sqlx::query(
                "UPDATE credit_leases l SET amount_micros = GREATEST(0, l.amount_micros - v.charged) \
                 FROM unnest($1::text[], $2::bigint[]) AS v (tenant_id, charged) \
                 WHERE l.tenant_id = v.tenant_id AND l.node_id = $3",
            )
            .bind(tenants)
            .bind(charged)
            .bind(node_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }

        // Keys are locked in id order first (a free request locks no balance, so two batches naming the same keys
        // could otherwise lock them in opposite orders), and only rows whose last use moves are written.
        let (keys, used_at): (Vec<&str>, Vec<i64>) = plan.last_used.iter().copied().unzip();
        sqlx::query(
            "WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS v (id, at)), \
             locked AS MATERIALIZED (SELECT k.id FROM api_keys k JOIN v ON v.id = k.id \
                 WHERE k.last_used_at IS NULL OR k.last_used_at < v.at ORDER BY k.id FOR NO KEY UPDATE OF k) \
             UPDATE api_keys k SET last_used_at = v.at FROM locked, v \
             WHERE k.id = locked.id AND v.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
        )
        .bind(keys)
        .bind(used_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;

        tx.commit().await.map_err(db_error)?;
        Ok(plan.outcome())
    }
}
