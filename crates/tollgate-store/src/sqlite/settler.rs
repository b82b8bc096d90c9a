//! The settlement writer: a SQLite connection of its own on a dedicated thread, where a batch's statements run
//! back to back from cached prepared statements.
//!
//! Through sqlx every statement is a round trip to its worker thread; a batch is about seven of them, one after
//! another, and every answered request waits for its batch. Here a batch costs one hop there and one back, which is
//! what the group commit's latency is made of. Written with rusqlite because sqlx has no way to run several
//! statements with bound parameters in one hop; the connection shares the file (WAL) with sqlx's pool, which runs
//! the migrations and every other query.

use super::TRANSIENT_CODES;
use crate::OpenError;
use crate::settle;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tollgate_core::audit::{AuditEvent, ChainHead};
use tollgate_core::credits::{Balance, Settlement};
use tollgate_core::money::Micros;
use tollgate_core::ports::{Durability, SettledBatch, StoreError};

/// The writer waits this long for SQLite's write lock: its caller (the recorder) retries with backoff and refuses
/// new paid requests meanwhile, so a long wait here would only delay noticing that the store cannot be written.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the writer sleeps between two tries of a lock another connection holds. SQLite's own busy handler
/// sleeps 1, 2, 5, 10, 15, 20… ms between tries, so a lease or management write of a few milliseconds would stall
/// every request of the batch behind it for tens of them; another writer's transaction is short, so look often.
const BUSY_RETRY: Duration = Duration::from_micros(200);

/// Whether to try the lock again after `tries` failed tries: until [`BUSY_TIMEOUT`] has passed.
fn busy(tries: i32) -> bool {
    let waited = BUSY_RETRY.saturating_mul(u32::try_from(tries).unwrap_or(u32::MAX));
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(BUSY_RETRY);
    true
}
/// Batches waiting for the thread.
const QUEUE: usize = 64;

struct Job {
    node_id: String,
    batch: Vec<Settlement>,
    events: Vec<AuditEvent>,
    done: oneshot::Sender<Result<SettledBatch, StoreError>>,
}

/// A handle on the settlement thread; the thread ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Settler {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("settlements", &self.batch.len())
            .field("events", &self.events.len())
            .finish()
    }
}

impl Settler {
    /// Opens the database file at `path` (already created and migrated) and starts the thread.
    pub(crate) fn open(path: &Path, durability: Durability) -> Result<Self, OpenError> {
        let connection = connect(path, durability).map_err(|e| OpenError::Open(e.to_string()))?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("tollgate-settler".to_owned())
            .spawn(move || run(connection, queue))
            .map_err(|e| OpenError::Open(format!("cannot start the settlement thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Writes `batch` and `events` in one transaction and returns what it did.
    pub(crate) async fn settle(
        &self,
        node_id: &str,
        batch: &[Settlement],
        events: &[AuditEvent],
    ) -> Result<SettledBatch, StoreError> {
        let (done, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the settlement thread has stopped".to_owned());
        self.jobs
            .send(Job {
                node_id: node_id.to_owned(),
                batch: batch.to_vec(),
                events: events.to_vec(),
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The settlement connection, set up as sqlx's pool is: WAL, `synchronous` by durability, foreign keys on.
fn connect(path: &Path, durability: Durability) -> Result<Connection, rusqlite::Error> {
    let connection = Connection::open(path)?;
    connection.busy_handler(Some(busy))?;
    let synchronous = match durability {
        Durability::Fsync => "FULL",
        Durability::Process => "NORMAL",
    };
    connection.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
    ))?;
    Ok(connection)
}

fn run(mut connection: Connection, mut queue: mpsc::Receiver<Job>) {
    while let Some(job) = queue.blocking_recv() {
        let result = settle_batch(&mut connection, &job.node_id, &job.batch, &job.events);
        let _ = job.done.send(result);
    }
}

/// A rusqlite error as the domain sees it, by the same rule as sqlx's (`super::db_error`).
fn error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, _)
            if TRANSIENT_CODES.contains(&i64::from(failure.extended_code & 0xff)) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Settles a batch in one `BEGIN IMMEDIATE` transaction (the write lock serialises it with every other writer, so
/// the balances and chain heads it reads stay its own): one balance read and write per tenant and its charges off
/// `node_id`'s lease, each capped key's charges onto its spending and off `node_id`'s lease on it, one ledger and
/// one usage row and one audit event per settlement, then the refused requests'
/// events, one chain head read and write per tenant, one `last_used_at` write per key (only when it moves: an
/// unchanged row dirties no page), and the response of each request with an idempotency completion. Returns what
/// each request was charged, in order, and the new balances.
fn settle_batch(
    connection: &mut Connection,
    node_id: &str,
    batch: &[Settlement],
    events: &[AuditEvent],
) -> Result<SettledBatch, StoreError> {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(error)?;
    let plan = read_and_plan(&tx, batch, events)?;
    write(&tx, node_id, &plan).map_err(error)?;
    tx.commit().map_err(error)?;
    Ok(plan.outcome())
}

/// Reads what the batch starts from (balances, chain heads) inside `tx` and plans it.
fn read_and_plan<'a>(
    tx: &rusqlite::Transaction<'_>,
    batch: &'a [Settlement],
    events: &[AuditEvent],
) -> Result<settle::Plan<'a>, StoreError> {
    let mut stored = BTreeMap::new();
    {
        let mut read = tx
            .prepare_cached(
                "SELECT balance_micros, version FROM credit_balances WHERE tenant_id = ?1",
            )
            .map_err(error)?;
        for tenant in settle::charged_tenants(batch) {
            let balance = read
                .query_row(params![tenant], |row| {
                    Ok(Balance {
                        balance: Micros(row.get(0)?),
                        version: row.get(1)?,
                    })
                })
                .optional()
                .map_err(error)?
                .unwrap_or_default();
            stored.insert(tenant, balance);
        }
    }
    let mut heads = BTreeMap::new();
    {
        let mut read = tx
            .prepare_cached("SELECT seq, hash FROM audit_chains WHERE tenant_id = ?1")
            .map_err(error)?;
        for tenant in settle::chained_tenants(batch, events) {
            let head = read
                .query_row(params![tenant], |row| {
                    Ok(ChainHead {
                        seq: row.get(0)?,
                        hash: row.get(1)?,
                    })
                })
                .optional()
                .map_err(error)?;
            if let Some(head) = head {
                heads.insert(tenant.to_owned(), head);
            }
        }
    }
    settle::plan(batch, events, &stored, heads)
}

/// Writes a plan inside `tx`.
fn write(
    tx: &rusqlite::Transaction<'_>,
    node_id: &str,
    plan: &settle::Plan<'_>,
) -> Result<(), rusqlite::Error> {
    {
        let mut ledger = tx.prepare_cached(
            "INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, reason, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for entry in &plan.ledger {
            ledger.execute(params![
                entry.id,
                entry.tenant_id,
                entry.kind.as_str(),
                entry.amount.get(),
                entry.balance_after.get(),
                entry.reason,
                entry.created_at,
            ])?;
        }
        let mut usage = tx.prepare_cached(
            "INSERT INTO usage_records (id, request_id, tenant_id, project_id, key_id, model, prompt_tokens, \
             completion_tokens, cost_micros, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for row in &plan.usage {
            let (s, (prompt, completion)) = (row.settlement, row.tokens());
            usage.execute(params![
                row.id,
                s.request_id,
                s.tenant_id,
                s.project_id,
                s.key_id,
                s.model,
                prompt,
                completion,
                row.charge.get(),
                s.at,
            ])?;
        }
        let mut write = tx.prepare_cached(
            "UPDATE credit_balances SET balance_micros = ?1, version = ?2 WHERE tenant_id = ?3",
        )?;
        for (tenant_id, balance) in &plan.balances {
            write.execute(params![balance.balance.get(), balance.version, tenant_id])?;
        }
        let mut lease = tx.prepare_cached(
            "UPDATE credit_leases SET amount_micros = MAX(0, amount_micros - ?1) \
             WHERE tenant_id = ?2 AND node_id = ?3",
        )?;
        for (tenant_id, charged) in &plan.lease_charges {
            lease.execute(params![charged.get(), tenant_id, node_id])?;
        }
        // Capped keys only: a batch of uncapped keys prepares nothing more.
        if !plan.key_charges.is_empty() {
            let mut spent = tx.prepare_cached(
                "UPDATE api_keys SET spent_micros = CASE WHEN spent_period_start = ?2 THEN spent_micros + ?1 \
                 WHEN spent_period_start < ?2 THEN ?1 ELSE spent_micros END, \
                 spent_period_start = MAX(spent_period_start, ?2) WHERE id = ?3",
            )?;
            let mut lease = tx.prepare_cached(
                "UPDATE key_leases SET amount_micros = MAX(0, amount_micros - ?1) \
                 WHERE key_id = ?2 AND node_id = ?3",
            )?;
            for k in &plan.key_charges {
                spent.execute(params![k.spent.get(), k.period_start, k.key_id])?;
                lease.execute(params![k.leased.get(), k.key_id, node_id])?;
            }
        }
        let mut used = tx.prepare_cached(
            "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2 \
             AND (last_used_at IS NULL OR last_used_at < ?1)",
        )?;
        for (key_id, at) in &plan.last_used {
            used.execute(params![at, key_id])?;
        }
        let mut event = tx.prepare_cached(crate::audit::INSERT_EVENT)?;
        let int = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        for c in &plan.events {
            let e = &c.event;
            event.execute(params![
                e.id,
                e.tenant_id,
                c.seq,
                e.kind.as_str(),
                e.effective_at,
                e.actor.kind.as_str(),
                e.actor.id,
                e.target_id,
                e.project_id,
                e.key_id,
                e.key_last4,
                e.model,
                e.status,
                int(e.prompt_tokens),
                int(e.completion_tokens),
                e.cost.map(Micros::get),
                int(e.latency_ms),
                e.origin.request_id,
                e.origin.source_ip,
                e.origin.user_agent,
                e.details,
                c.hash,
            ])?;
        }
        let mut head =
            tx.prepare_cached("UPDATE audit_chains SET seq = ?1, hash = ?2 WHERE tenant_id = ?3")?;
        for (tenant_id, h) in &plan.heads {
            head.execute(params![h.seq, h.hash, tenant_id])?;
        }
        // Requests with an `Idempotency-Key` only: a batch without one prepares nothing more.
        if !plan.completions.is_empty() {
            let mut complete = tx.prepare_cached(crate::queries::COMPLETE_IDEMPOTENCY)?;
            for c in &plan.completions {
                let done = c.completion;
                // Matching no row is fine: the claim was taken over or released; the charge stands regardless.
                complete.execute(params![
                    c.status(),
                    c.headers,
                    done.response.body,
                    done.scope,
                    done.key,
                    done.claim_id,
                ])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settlement_connection_syncs_as_durability_says() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, expected) in [(Durability::Fsync, 2), (Durability::Process, 1)] {
            let connection = connect(&dir.path().join("s.db"), durability).unwrap();
            let synchronous: i64 = connection
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            // SQLite's codes: 2 = FULL, 1 = NORMAL.
            assert_eq!(synchronous, expected, "{durability:?}");
            let foreign_keys: i64 = connection
                .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
                .unwrap();
            assert_eq!(foreign_keys, 1);
        }
    }

    #[test]
    fn locked_full_or_read_only_is_transient_and_a_constraint_is_not() {
        let failure = |code| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".to_owned()))
        };
        assert!(error(failure(rusqlite::ffi::SQLITE_BUSY)).is_transient());
        assert!(error(failure(rusqlite::ffi::SQLITE_FULL)).is_transient());
        assert!(error(failure(rusqlite::ffi::SQLITE_READONLY)).is_transient());
        assert!(!error(failure(rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER)).is_transient());
    }
}
