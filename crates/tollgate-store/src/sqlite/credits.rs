//! Credits: grants, the ledger, and settling batches of finished requests (usage row, charge, `last_used_at`) in
//! one transaction each, written by the settlement thread (`settler`). The balance row can never go below zero (a
//! CHECK backs the arithmetic).

use super::rows::{self, fetch_limit};
use super::{SqliteStore, db_error, leases};
use async_trait::async_trait;
use sqlx::{Row, Sqlite, Transaction};
use tollgate_core::credits::{Balance, LedgerEntry, LedgerKind, Settlement};
use tollgate_core::id;
use tollgate_core::money::Micros;
use tollgate_core::ports::{
    CreditStore, LeaseGrant, LeaseRequest, Page, PageRequest, SettledBatch, StoreError,
};
use tollgate_core::tenant::Timestamp;

/// Adds a grant or adjustment to the tenant's balance (and to what it was granted) and appends its ledger entry,
/// inside `tx`. Charges go through the settlement thread (`super::settler`).
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

/// A `(balance_micros, version)` row.
fn balance_of(row: &sqlx::sqlite::SqliteRow) -> Result<Balance, StoreError> {
    Ok(Balance {
        balance: Micros(row.try_get(0).map_err(db_error)?),
        version: row.try_get(1).map_err(db_error)?,
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

    async fn settle(
        &self,
        node_id: &str,
        batch: &[Settlement],
    ) -> Result<SettledBatch, StoreError> {
        if batch.is_empty() {
            return Ok(SettledBatch::default());
        }
        self.settler.settle(node_id, batch).await
    }

    async fn lease(&self, request: &LeaseRequest<'_>) -> Result<LeaseGrant, StoreError> {
        leases::grant(&self.pool, request).await
    }

    async fn release_lease(
        &self,
        tenant_id: &str,
        node_id: &str,
        amount: Micros,
    ) -> Result<(), StoreError> {
        leases::release(&self.pool, tenant_id, node_id, amount).await
    }

    async fn renew_leases(&self, node_id: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        leases::renew(&self.pool, node_id, expires_at).await
    }
}
