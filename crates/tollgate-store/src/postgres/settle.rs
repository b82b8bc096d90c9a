//! Settlement on PostgreSQL: one transaction per batch, correct with any number of nodes settling for the same
//! tenants at once. The batch locks the balance rows it charges (`FOR UPDATE`, in tenant id order) before reading
//! them, so a concurrent batch waits and then reads the balance this one left; then it writes the plan
//! ([`crate::settle`]) in one statement, whatever the batch's size (a data-modifying CTE per table, arrays bound
//! as `unnest`), the node's lease rows included: four round trips per batch (begin, lock, write, commit).

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

        // Everything the plan writes, in one statement (one round trip): data-modifying CTEs on separate tables,
        // each fed by arrays (`unnest`; an empty array writes nothing). The balance rows are this transaction's
        // already; lease rows are written only by their node, one batch at a time; keys are locked in id order
        // (a free request locks no balance, so two batches naming the same keys could otherwise lock them in
        // opposite orders), and only rows whose last use moves are written.
        let ledger_ints = |f: fn(&tollgate_core::credits::LedgerEntry) -> i64| {
            plan.ledger.iter().map(f).collect::<Vec<i64>>()
        };
        let usage_text = |f: fn(&Settlement) -> &str| {
            plan.usage
                .iter()
                .map(|u| f(u.settlement))
                .collect::<Vec<&str>>()
        };
        let (prompt, completion): (Vec<i64>, Vec<i64>) =
            plan.usage.iter().map(|u| u.tokens()).unzip();
        let (lease_tenants, lease_charged): (Vec<&str>, Vec<i64>) = plan
            .lease_charges
            .iter()
            .map(|(t, c)| (*t, c.get()))
            .unzip();
        let (keys, used_at): (Vec<&str>, Vec<i64>) = plan.last_used.iter().copied().unzip();
        sqlx::query(
            "WITH ledger AS (\
               INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, reason, \
               created_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
               $6::text[], $7::bigint[])), \
             usage AS (\
               INSERT INTO usage_records (id, request_id, tenant_id, project_id, key_id, model, prompt_tokens, \
               completion_tokens, cost_micros, created_at) SELECT * FROM unnest($8::text[], $9::text[], \
               $10::text[], $11::text[], $12::text[], $13::text[], $14::bigint[], $15::bigint[], $16::bigint[], \
               $17::bigint[])), \
             balances AS (\
               UPDATE credit_balances b SET balance_micros = v.balance, version = v.version \
               FROM unnest($18::text[], $19::bigint[], $20::bigint[]) AS v (tenant_id, balance, version) \
               WHERE b.tenant_id = v.tenant_id), \
             leases AS (\
               UPDATE credit_leases l SET amount_micros = GREATEST(0, l.amount_micros - v.charged) \
               FROM unnest($21::text[], $22::bigint[]) AS v (tenant_id, charged) \
               WHERE l.tenant_id = v.tenant_id AND l.node_id = $23), \
             used AS (SELECT * FROM unnest($24::text[], $25::bigint[]) AS v (id, at)), \
             locked AS MATERIALIZED (SELECT k.id FROM api_keys k JOIN used ON used.id = k.id \
               WHERE k.last_used_at IS NULL OR k.last_used_at < used.at ORDER BY k.id FOR NO KEY UPDATE OF k) \
             UPDATE api_keys k SET last_used_at = used.at FROM locked, used \
             WHERE k.id = locked.id AND used.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < used.at)",
        )
        .bind(plan.ledger.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(plan.ledger.iter().map(|e| e.tenant_id.as_str()).collect::<Vec<_>>())
        .bind(plan.ledger.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .bind(ledger_ints(|e| e.amount.get()))
        .bind(ledger_ints(|e| e.balance_after.get()))
        .bind(plan.ledger.iter().map(|e| e.reason.as_deref()).collect::<Vec<_>>())
        .bind(ledger_ints(|e| e.created_at))
        .bind(plan.usage.iter().map(|u| u.id.as_str()).collect::<Vec<_>>())
        .bind(usage_text(|s| &s.request_id))
        .bind(usage_text(|s| &s.tenant_id))
        .bind(usage_text(|s| &s.project_id))
        .bind(usage_text(|s| &s.key_id))
        .bind(usage_text(|s| &s.model))
        .bind(prompt)
        .bind(completion)
        .bind(plan.usage.iter().map(|u| u.charge.get()).collect::<Vec<i64>>())
        .bind(plan.usage.iter().map(|u| u.settlement.at).collect::<Vec<i64>>())
        .bind(plan.balances.iter().map(|(t, _)| *t).collect::<Vec<_>>())
        .bind(
            plan.balances
                .iter()
                .map(|(_, b)| b.balance.get())
                .collect::<Vec<_>>(),
        )
        .bind(plan.balances.iter().map(|(_, b)| b.version).collect::<Vec<_>>())
        .bind(lease_tenants)
        .bind(lease_charged)
        .bind(node_id)
        .bind(keys)
        .bind(used_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;

        tx.commit().await.map_err(db_error)?;
        Ok(plan.outcome())
    }
}
