//! Settlement on PostgreSQL: one transaction per batch, correct with any number of nodes settling for the same
//! tenants at once. The batch locks the balance rows it charges, then the audit chain heads it appends to (each
//! `FOR UPDATE`, in tenant id order, so two batches never wait for each other in a cycle) before reading them, so
//! a concurrent batch waits and then reads the balance and head this one left; then it writes the plan
//! ([`crate::settle`]) in one statement, whatever the batch's size (a data-modifying CTE per table, arrays bound
//! as `unnest`), the node's lease rows and the audit events included: five round trips per batch (begin, two
//! locks, write, commit), one more when the batch charged capped keys (their spending and lease rows), and one per
//! response stored for an `Idempotency-Key` (rare: none for a batch without one).

use super::{PgStore, db_error};
use crate::settle;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use tollgate_core::audit::{AuditEvent, ChainHead, ChainedEvent};
use tollgate_core::credits::{Balance, Settlement};
use tollgate_core::money::Micros;
use tollgate_core::ports::{SettledBatch, StoreError};

impl PgStore {
    /// Writes a non-empty batch in one transaction on the settlement pool.
    pub(super) async fn settle_batch(
        &self,
        node_id: &str,
        batch: &[Settlement],
        events: &[AuditEvent],
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
        // After the balances, always in that order: every writer that takes both (grants with their events too)
        // takes the balance first.
        let chained: Vec<&str> = settle::chained_tenants(batch, events).into_iter().collect();
        let rows = sqlx::query(
            "SELECT tenant_id, seq, hash FROM audit_chains WHERE tenant_id = ANY($1) \
             ORDER BY tenant_id FOR UPDATE",
        )
        .bind(&chained)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut heads = BTreeMap::new();
        for row in &rows {
            heads.insert(
                row.try_get::<String, _>("tenant_id").map_err(db_error)?,
                ChainHead {
                    seq: row.try_get("seq").map_err(db_error)?,
                    hash: row.try_get("hash").map_err(db_error)?,
                },
            );
        }
        let plan = settle::plan(batch, events, &stored, heads)?;

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
        let query = sqlx::query(
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
             events AS (\
               INSERT INTO audit_events (id, tenant_id, seq, type, effective_at, actor_type, actor_id, target_id, \
               project_id, key_id, key_last4, model, status, prompt_tokens, completion_tokens, cost_micros, \
               latency_ms, request_id, source_ip, user_agent, details, hash) SELECT * FROM unnest($26::text[], \
               $27::text[], $28::bigint[], $29::text[], $30::bigint[], $31::text[], $32::text[], $33::text[], \
               $34::text[], $35::text[], $36::text[], $37::text[], $38::bigint[], $39::bigint[], $40::bigint[], \
               $41::bigint[], $42::bigint[], $43::text[], $44::text[], $45::text[], $46::text[], $47::text[])), \
             chains AS (\
               UPDATE audit_chains c SET seq = v.seq, hash = v.hash \
               FROM unnest($48::text[], $49::bigint[], $50::text[]) AS v (tenant_id, seq, hash) \
               WHERE c.tenant_id = v.tenant_id), \
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
        .bind(used_at);
        let query = bind_events(query, &plan.events);
        let (head_tenants, (head_seqs, head_hashes)): (Vec<&str>, (Vec<i64>, Vec<&str>)) = plan
            .heads
            .iter()
            .map(|(t, h)| (t.as_str(), (h.seq, h.hash.as_str())))
            .unzip();
        query
            .bind(head_tenants)
            .bind(head_seqs)
            .bind(head_hashes)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;

        if !plan.key_charges.is_empty() {
            // Its own statement: a statement may not update a key row twice (its last use above). Only batches
            // with capped keys pay this round trip; the keys' tenants' balance rows, locked above, serialise
            // every batch that charges them.
            let charges = &plan.key_charges;
            sqlx::query(
                "WITH spent AS (\
                   UPDATE api_keys k SET spent_micros = CASE WHEN k.spent_period_start = v.start \
                     THEN k.spent_micros + v.spent WHEN k.spent_period_start < v.start THEN v.spent \
                     ELSE k.spent_micros END, spent_period_start = GREATEST(k.spent_period_start, v.start) \
                   FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS v (id, start, spent) WHERE k.id = v.id) \
                 UPDATE key_leases l SET amount_micros = GREATEST(0, l.amount_micros - v.leased) \
                 FROM unnest($1::text[], $4::bigint[]) AS v (id, leased) \
                 WHERE l.key_id = v.id AND l.node_id = $5",
            )
            .bind(charges.iter().map(|k| k.key_id).collect::<Vec<_>>())
            .bind(charges.iter().map(|k| k.period_start).collect::<Vec<_>>())
            .bind(charges.iter().map(|k| k.spent.get()).collect::<Vec<_>>())
            .bind(charges.iter().map(|k| k.leased.get()).collect::<Vec<_>>())
            .bind(node_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        // In (scope, key) order, as renewals lock records, so the two never wait for each other in a cycle. Matching
        // no row is fine: the claim was taken over or released; the charge stands regardless.
        for c in &plan.completions {
            let done = c.completion;
            sqlx::query(crate::queries::COMPLETE_IDEMPOTENCY)
                .bind(c.status())
                .bind(&c.headers)
                .bind(&done.response.body[..])
                .bind(&done.scope)
                .bind(&done.key)
                .bind(&done.claim_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(plan.outcome())
    }
}

/// Binds the events' 22 columns (`$26`…`$47`), one array each, in [`crate::audit::EVENT_FIELDS`]' order.
fn bind_events<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    events: &'q [ChainedEvent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let text =
        |f: fn(&'q ChainedEvent) -> Option<&'q str>| events.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&ChainedEvent) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
    let count = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    query
        .bind(text(|c| Some(&c.event.id)))
        .bind(text(|c| Some(&c.event.tenant_id)))
        .bind(int(|c| Some(c.seq)))
        .bind(text(|c| Some(c.event.kind.as_str())))
        .bind(int(|c| Some(c.event.effective_at)))
        .bind(text(|c| Some(c.event.actor.kind.as_str())))
        .bind(text(|c| c.event.actor.id.as_deref()))
        .bind(text(|c| c.event.target_id.as_deref()))
        .bind(text(|c| c.event.project_id.as_deref()))
        .bind(text(|c| c.event.key_id.as_deref()))
        .bind(text(|c| c.event.key_last4.as_deref()))
        .bind(text(|c| c.event.model.as_deref()))
        .bind(int(|c| c.event.status.map(i64::from)))
        .bind(
            events
                .iter()
                .map(|c| count(c.event.prompt_tokens))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|c| count(c.event.completion_tokens))
                .collect::<Vec<_>>(),
        )
        .bind(int(|c| c.event.cost.map(Micros::get)))
        .bind(
            events
                .iter()
                .map(|c| count(c.event.latency_ms))
                .collect::<Vec<_>>(),
        )
        .bind(text(|c| c.event.origin.request_id.as_deref()))
        .bind(text(|c| c.event.origin.source_ip.as_deref()))
        .bind(text(|c| c.event.origin.user_agent.as_deref()))
        .bind(text(|c| c.event.details.as_deref()))
        .bind(text(|c| Some(&c.hash)))
}
