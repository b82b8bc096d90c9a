//! Credits: grants, the ledger, and settling batches of finished requests (usage row, charge, `last_used_at`) in
//! one transaction each. The balance row can never go below zero (a CHECK backs the arithmetic).

use super::rows::{self, fetch_limit};
use super::{SqliteStore, db_error};
use async_trait::async_trait;
use sqlx::{Row, Sqlite, Transaction};
use tollgate_core::credits::{Balance, LedgerEntry, LedgerKind, Settlement};
use tollgate_core::id;
use tollgate_core::money::Micros;
use tollgate_core::ports::{CreditStore, Page, PageRequest, StoreError};
use tollgate_core::tenant::Timestamp;

/// Moves `amount` into or out of the tenant's balance and appends the ledger entry, inside `tx`.
async fn append(
    tx: &mut Transaction<'_, Sqlite>,
    tenant_id: &str,
    kind: LedgerKind,
    amount: Micros,
    reason: Option<&str>,
    at: Timestamp,
) -> Result<LedgerEntry, StoreError> {
    // A charge only ever meets an existing row (it is never above the balance); SQLite checks an upsert's insert
    // values against the CHECK before it sees the conflict, so a charge is a plain update.
    let query = if kind == LedgerKind::Charge {
        sqlx::query(
            "UPDATE credit_balances SET balance_micros = balance_micros + ?2 WHERE tenant_id = ?1 \
             RETURNING balance_micros",
        )
    } else {
        sqlx::query(
            "INSERT INTO credit_balances (tenant_id, balance_micros, granted_micros) VALUES (?1, ?2, ?2) \
             ON CONFLICT (tenant_id) DO UPDATE SET balance_micros = balance_micros + ?2, \
             granted_micros = granted_micros + ?2 RETURNING balance_micros",
        )
    };
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

/// The tenant's balance inside `tx` (zero without a row).
async fn balance_in(
    tx: &mut Transaction<'_, Sqlite>,
    tenant_id: &str,
) -> Result<Micros, StoreError> {
    let row = sqlx::query("SELECT balance_micros FROM credit_balances WHERE tenant_id = ?")
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    row.map(|r| r.try_get(0).map(Micros).map_err(db_error))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Settles one request inside `tx`; returns what was charged.
async fn settle_one(
    tx: &mut Transaction<'_, Sqlite>,
    s: &Settlement,
) -> Result<Micros, StoreError> {
    // Holds make a charge above the balance impossible; if an estimate was ever short, the balance stops at zero.
    let charged = if s.cost > Micros::ZERO {
        let balance = balance_in(tx, &s.tenant_id).await?;
        let charged = s.cost.min(balance);
        if charged > Micros::ZERO {
            append(
                tx,
                &s.tenant_id,
                LedgerKind::Charge,
                Micros(-charged.get()),
                Some(&s.request_id),
                s.at,
            )
            .await?;
        }
        charged
    } else {
        Micros::ZERO
    };
    sqlx::query(
        "INSERT INTO usage_records (id, request_id, tenant_id, project_id, key_id, model, prompt_tokens, \
         completion_tokens, cost_micros, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id::new_id(id::USAGE))
    .bind(&s.request_id)
    .bind(&s.tenant_id)
    .bind(&s.project_id)
    .bind(&s.key_id)
    .bind(&s.model)
    .bind(i64::try_from(s.prompt_tokens).unwrap_or(i64::MAX))
    .bind(i64::try_from(s.completion_tokens).unwrap_or(i64::MAX))
    .bind(charged.get())
    .bind(s.at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
    )
    .bind(s.at)
    .bind(&s.key_id)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(charged)
}

#[async_trait]
impl CreditStore for SqliteStore {
    async fn balance(&self, tenant_id: &str) -> Result<Balance, StoreError> {
        let row = sqlx::query(
            "SELECT balance_micros, granted_micros FROM credit_balances WHERE tenant_id = ?",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(Balance::default());
        };
        Ok(Balance {
            balance: Micros(row.try_get(0).map_err(db_error)?),
            granted: Micros(row.try_get(1).map_err(db_error)?),
        })
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

    async fn settle(&self, batch: &[Settlement]) -> Result<Vec<Micros>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        let mut charged = Vec::with_capacity(batch.len());
        for s in batch {
            charged.push(settle_one(&mut tx, s).await?);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(charged)
    }
}
