//! Credits: grants, the ledger, and settling batches of finished requests (usage row, charge, `last_used_at`) in
//! one transaction each. The balance row can never go below zero (a CHECK backs the arithmetic).

use super::rows::{self, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use std::collections::BTreeMap;
use tollgate_core::credits::{Balance, LedgerEntry, LedgerKind, Settlement};
use tollgate_core::id;
use tollgate_core::money::Micros;
use tollgate_core::ports::{CreditStore, Page, PageRequest, SettledBatch, StoreError};
use tollgate_core::tenant::Timestamp;

/// Adds a grant or adjustment to the tenant's balance (and to what it was granted) and appends its ledger entry,
/// inside `tx`. Charges go through [`settle_batch`].
async fn append(
    tx: &mut Transaction<'_, Sqlite>,
    tenant_id: &str,
    kind: LedgerKind,
    amount: Micros,
    reason: Option<&str>,
    at: Timestamp,
) -> Result<LedgerEntry, StoreError> {
    let query = sqlx::query(
        "INSERT INTO credit_balances (tenant_id, balance_micros, granted_micros, version) VALUES (?1, ?2, ?2, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET balance_micros = balance_micros + ?2, \
         granted_micros = granted_micros + ?2, version = version + 1 RETURNING balance_micros",
    );
    let balance_after: i64 = query
        .bind(tenant_id)
        .bind(amount.get())
        .fetch_one(&mut **tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db_error)?;
    let entry = LedgerEntry {
        id: id::new_id(id::LEDGER_ENTRY),
        tenant_id: tenant_id.to_owned(),
        kind,
        amount,
        balance_after: Micros(balance_after),
        reason: reason.map(str::to_owned),
        created_at: at,
    };
    sqlx::query(
        "INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, reason, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&entry.id)
    .bind(&entry.tenant_id)
    .bind(kind.as_str())
    .bind(amount.get())
    .bind(balance_after)
    .bind(&entry.reason)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(entry)
}

/// Rows per multi-row `INSERT`, well under SQLite's limit of bound variables.
const ROWS_PER_INSERT: usize = 200;

/// The tenant's balance inside `tx` (zero without a row).
async fn balance_in(
    tx: &mut Transaction<'_, Sqlite>,
    tenant_id: &str,
) -> Result<Balance, StoreError> {
    let row =
        sqlx::query("SELECT balance_micros, version FROM credit_balances WHERE tenant_id = ?")
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    row.map(|r| balance_of(&r))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A `(balance_micros, version)` row.
fn balance_of(row: &sqlx::sqlite::SqliteRow) -> Result<Balance, StoreError> {
    Ok(Balance {
        balance: Micros(row.try_get(0).map_err(db_error)?),
        version: row.try_get(1).map_err(db_error)?,
    })
}

/// Settles a batch inside `tx` with a handful of statements whatever its size: one balance read and write per
/// tenant, multi-row inserts for ledger and usage, one `last_used_at` write per key. Returns what each request was
/// charged, in order, and the new balances.
async fn settle_batch(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &[Settlement],
) -> Result<SettledBatch, StoreError> {
    let mut balances: BTreeMap<&str, (Balance, bool)> = BTreeMap::new();
    for s in batch {
        if s.cost > Micros::ZERO && !balances.contains_key(s.tenant_id.as_str()) {
            balances.insert(&s.tenant_id, (balance_in(tx, &s.tenant_id).await?, false));
        }
    }
    let mut charged = Vec::with_capacity(batch.len());
    let mut ledger = Vec::new();
    for s in batch {
        // Holds make a charge above the balance impossible on one node; if another process spent the money
        // meanwhile, the balance stops at zero and the caller sees the charge fall short of the cost.
        let charge = match balances.get_mut(s.tenant_id.as_str()) {
            Some((stored, changed)) if s.cost > Micros::ZERO => {
                let balance = &mut stored.balance;
                let charge = s.cost.min(*balance);
                if charge > Micros::ZERO {
                    *balance = balance.minus(charge);
                    *changed = true;
                    ledger.push(LedgerEntry {
                        id: id::new_id(id::LEDGER_ENTRY),
                        tenant_id: s.tenant_id.clone(),
                        kind: LedgerKind::Charge,
                        amount: Micros(-charge.get()),
                        balance_after: *balance,
                        reason: Some(s.request_id.clone()),
                        created_at: s.at,
                    });
                }
                charge
            }
            _ => Micros::ZERO,
        };
        charged.push(charge);
    }
    let mut after = Vec::new();
    for (tenant_id, (stored, changed)) in &mut balances {
        if *changed {
            stored.version += 1;
            sqlx::query(
                "UPDATE credit_balances SET balance_micros = ?, version = ? WHERE tenant_id = ?",
            )
            .bind(stored.balance.get())
            .bind(stored.version)
            .bind(tenant_id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            after.push(((*tenant_id).to_owned(), *stored));
        }
    }
    for rows in ledger.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, reason, created_at) ",
        );
        insert.push_values(rows, |mut row, e| {
            row.push_bind(&e.id)
                .push_bind(&e.tenant_id)
                .push_bind(e.kind.as_str())
                .push_bind(e.amount.get())
                .push_bind(e.balance_after.get())
                .push_bind(&e.reason)
                .push_bind(e.created_at);
        });
        insert.build().execute(&mut **tx).await.map_err(db_error)?;
    }
    let settled: Vec<(&Settlement, Micros)> = batch.iter().zip(charged.iter().copied()).collect();
    for rows in settled.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO usage_records (id, request_id, tenant_id, project_id, key_id, model, prompt_tokens, \
             completion_tokens, cost_micros, created_at) ",
        );
        insert.push_values(rows, |mut row, (s, charge)| {
            row.push_bind(id::new_id(id::USAGE))
                .push_bind(&s.request_id)
                .push_bind(&s.tenant_id)
                .push_bind(&s.project_id)
                .push_bind(&s.key_id)
                .push_bind(&s.model)
                .push_bind(i64::try_from(s.prompt_tokens).unwrap_or(i64::MAX))
                .push_bind(i64::try_from(s.completion_tokens).unwrap_or(i64::MAX))
                .push_bind(charge.get())
                .push_bind(s.at);
        });
        insert.build().execute(&mut **tx).await.map_err(db_error)?;
    }
    let mut last_used: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for s in batch {
        let at = last_used.entry(&s.key_id).or_insert(s.at);
        *at = (*at).max(s.at);
    }
    for (key_id, at) in last_used {
        sqlx::query(
            // Only when it moves: an unchanged row dirties no page, so no WAL frame is written for it.
            "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
        )
        .bind(at)
        .bind(key_id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    Ok(SettledBatch {
        charged,
        balances: after,
    })
}

#[async_trait]
impl CreditStore for SqliteStore {
    async fn balance(&self, tenant_id: &str) -> Result<Balance, StoreError> {
        let row =
            sqlx::query("SELECT balance_micros, version FROM credit_balances WHERE tenant_id = ?")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        row.map(|r| balance_of(&r))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    async fn grant(
        &self,
        tenant_id: &str,
        amount: Micros,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Option<LedgerEntry>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if exists.is_none() {
            return Ok(None);
        }
        let entry = append(&mut tx, tenant_id, LedgerKind::Grant, amount, reason, at).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(entry))
    }

    async fn ledger(
        &self,
        tenant_id: &str,
        page: &PageRequest,
    ) -> Result<Page<LedgerEntry>, StoreError> {
        let query = sqlx::query(
            "SELECT * FROM ledger_entries WHERE tenant_id = ?1 AND (?2 IS NULL OR id < ?2) \
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(tenant_id)
        .bind(&page.after)
        .bind(fetch_limit(page));
        rows::page(&self.pool, query, page, rows::ledger_entry).await
    }

    async fn settle(&self, batch: &[Settlement]) -> Result<SettledBatch, StoreError> {
        if batch.is_empty() {
            return Ok(SettledBatch::default());
        }
        let mut tx = self
            .settler
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let charged = settle_batch(&mut tx, batch).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(charged)
    }
}
