//! Leases: each node's reservation of part of a tenant's balance, granted in one `BEGIN IMMEDIATE` transaction
//! against the balance less every live lease, so the nodes together never reserve more than the tenant has.

use super::db_error;
use sqlx::{Row, SqlitePool};
use tollgate_core::credits::lease_grant;
use tollgate_core::money::Micros;
use tollgate_core::ports::{LeaseGrant, LeaseRequest, StoreError};
use tollgate_core::tenant::Timestamp;

/// See `CreditStore::lease`.
pub(super) async fn grant(
    pool: &SqlitePool,
    request: &LeaseRequest<'_>,
) -> Result<LeaseGrant, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    sqlx::query("DELETE FROM credit_leases WHERE tenant_id = ?1 AND expires_at < ?2")
        .bind(request.tenant_id)
        .bind(request.now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let row = sqlx::query(
            "SELECT \
               COALESCE((SELECT balance_micros FROM credit_balances WHERE tenant_id = ?1), 0), \
               COALESCE((SELECT SUM(amount_micros) FROM credit_leases WHERE tenant_id = ?1), 0), \
               COALESCE((SELECT amount_micros FROM credit_leases WHERE tenant_id = ?1 AND node_id = ?2), 0)",
        )
        .bind(request.tenant_id)
        .bind(request.node_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    let balance = Micros(row.try_get(0).map_err(db_error)?);
    let leased = Micros(row.try_get(1).map_err(db_error)?);
    let own = Micros(row.try_get(2).map_err(db_error)?);
    let free = balance.minus(leased).max(Micros::ZERO);
    let granted = lease_grant(free, request.need, request.want);
    let lease = own.plus(granted);
    // An empty lease is no row: a refused first ask leaves nothing behind.
    let write = if lease > Micros::ZERO {
        sqlx::query(
            "INSERT INTO credit_leases (tenant_id, node_id, amount_micros, expires_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (tenant_id, node_id) DO UPDATE SET amount_micros = ?3, expires_at = ?4",
        )
    } else {
        sqlx::query("DELETE FROM credit_leases WHERE tenant_id = ?1 AND node_id = ?2")
    };
    write
        .bind(request.tenant_id)
        .bind(request.node_id)
        .bind(lease.get())
        .bind(request.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(LeaseGrant {
        granted,
        lease,
        free: free.minus(granted),
    })
}

/// See `CreditStore::release_lease`.
pub(super) async fn release(
    pool: &SqlitePool,
    tenant_id: &str,
    node_id: &str,
    amount: Micros,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    sqlx::query(
        "UPDATE credit_leases SET amount_micros = MAX(0, amount_micros - ?3) \
             WHERE tenant_id = ?1 AND node_id = ?2",
    )
    .bind(tenant_id)
    .bind(node_id)
    .bind(amount.get())
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "DELETE FROM credit_leases WHERE tenant_id = ?1 AND node_id = ?2 AND amount_micros = 0",
    )
    .bind(tenant_id)
    .bind(node_id)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}

/// See `CreditStore::renew_leases`.
pub(super) async fn renew(
    pool: &SqlitePool,
    node_id: &str,
    expires_at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE credit_leases SET expires_at = ?2 WHERE node_id = ?1")
        .bind(node_id)
        .bind(expires_at)
        .execute(pool)
        .await
        .map_err(db_error)?;
    Ok(())
}
