//! SQLite: one file, WAL mode, `synchronous = FULL` (a committed charge survives power loss; `NORMAL` with
//! `durability = "process"`: it survives a crash of the process), foreign keys on.

mod settler;

use crate::OpenError;
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;
use tollgate_core::audit::AuditEvent;
use tollgate_core::credits::Settlement;
use tollgate_core::ports::{Durability, SettledBatch, StoreError};

// SQLite has one writer at a time: `BEGIN IMMEDIATE` takes the write lock first, so whatever a transaction reads
// stays true until it commits; the tenant row need not be locked as well.
crate::queries::store_queries!(
    SqliteStore,
    sqlx::Sqlite,
    begin = "BEGIN IMMEDIATE",
    lock_tenant = "SELECT 1 FROM tenants WHERE id = $1",
    migrations_table =
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    now_ms = "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    lock_key = "SELECT spend_limit_micros, spend_limit_period, spent_micros, spent_period_start \
        FROM api_keys WHERE id = $1",
    lock_chain = "SELECT seq, hash FROM audit_chains WHERE tenant_id = $1",
    for_update = "",
);

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Readers run in parallel under WAL; writers queue on SQLite's single write lock.
const MAX_CONNECTIONS: u32 = 8;
/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`Store`](tollgate_core::ports::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads and management writes.
    pool: SqlitePool,
    /// A connection of its own for settlements, so that key-cache misses and management calls, which anyone with a
    /// well-formed key can cause, can never take every connection from the writer that records charges.
    settler: settler::Settler,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `url` (`sqlite://PATH`), without migrating.
    pub async fn open(url: &str, durability: Durability) -> Result<Self, OpenError> {
        let synchronous = match durability {
            Durability::Fsync => SqliteSynchronous::Full,
            // In WAL mode NORMAL syncs only at checkpoints: a commit survives the process, not the machine.
            Durability::Process => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| OpenError::Open(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let path = options.get_filename().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Open(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Settlements are written through a connection of their own, which an in-memory database cannot share.
        if url.contains(":memory:") {
            return Err(OpenError::Open(
                "in-memory databases are not supported: give database_url a file (sqlite://PATH)"
                    .to_owned(),
            ));
        }
        let settler = settler::Settler::open(&path, durability)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| OpenError::Open(e.to_string()))?;
        Ok(Self { pool, settler })
    }
}

impl SqliteStore {
    /// Settlement goes through its own connection and thread ([`settler`]).
    async fn settle_batch(
        &self,
        node_id: &str,
        batch: &[Settlement],
        events: &[AuditEvent],
    ) -> Result<SettledBatch, StoreError> {
        self.settler.settle(node_id, batch, events).await
    }

    /// SQLite has no way to tell another process that a commit happened: readers of the change log poll it.
    async fn listen_for_changes(
        &self,
    ) -> Result<Option<Box<dyn tollgate_core::ports::ChangeSignal>>, StoreError> {
        Ok(None)
    }
}

/// SQLite's primary result codes that mean "not now" rather than "not this": BUSY, LOCKED, READONLY, IOERR, FULL,
/// CANTOPEN, PROTOCOL (<https://www.sqlite.org/rescode.html>).
const TRANSIENT_CODES: [i64; 7] = [5, 6, 8, 10, 13, 14, 15];

/// A database error as the domain sees it (see [`crate::store_error`]).
fn db_error(e: sqlx::Error) -> StoreError {
    // sqlx reports SQLite's extended result code; its low byte is the primary code.
    crate::store_error(e, |code| {
        code.parse::<i64>()
            .is_ok_and(|c| TRANSIENT_CODES.contains(&(c & 0xff)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn synchronous(pool: &SqlitePool) -> i64 {
        sqlx::query("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_a_reason() {
        let Err(error) = SqliteStore::open("sqlite::memory:", Durability::Fsync).await else {
            unreachable!("settlements need a file");
        };
        assert!(error.to_string().contains("in-memory"), "{error}");
    }

    #[tokio::test]
    async fn durability_sets_how_every_connection_syncs() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, expected) in [(Durability::Fsync, 2), (Durability::Process, 1)] {
            let url = format!("sqlite://{}/{durability:?}.db", dir.path().display());
            let store = SqliteStore::open(&url, durability).await.unwrap();
            // SQLite's codes: 2 = FULL, 1 = NORMAL (the settlement connection applies the same mapping).
            assert_eq!(synchronous(&store.pool).await, expected, "{durability:?}");
        }
    }

    /// The rebuild of the hot tables (migration 0010) keeps every row and the ledger's rule; run again here over
    /// tables with rows, as it runs over an existing deployment's.
    #[tokio::test]
    async fn rebuilding_the_hot_tables_keeps_their_rows_and_the_kind_rule() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/l.db", dir.path().display());
        let store = SqliteStore::open(&url, Durability::Fsync).await.unwrap();
        store.migrate().await.unwrap();
        let pool = &store.pool;
        sqlx::query("INSERT INTO tenants (id, name, plan, status, created_at) VALUES ('org_1', 'T', 'pro', 'active', 1)")
            .execute(pool)
            .await
            .unwrap();
        for (id, kind) in [
            ("ledg_1", "grant"),
            ("ledg_2", "charge"),
            ("ledg_3", "adjustment"),
        ] {
            sqlx::query(
                "INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, reason, \
                 created_at) VALUES (?1, 'org_1', ?2, 5, 5, 'r', 1)",
            )
            .bind(id)
            .bind(kind)
            .execute(pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO usage_records (id, request_id, tenant_id, project_id, key_id, model, prompt_tokens, \
             completion_tokens, cost_micros, created_at) VALUES ('use_1', 'req_1', 'org_1', 'proj_1', 'key_1', \
             'fast', 12, 7, 6, 1)",
        )
        .execute(pool)
        .await
        .unwrap();
        sqlx::raw_sql(include_str!("../../migrations/sqlite/0010_hot_tables.sql"))
            .execute(pool)
            .await
            .unwrap();
        let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM ledger_entries ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(kinds, ["grant", "charge", "adjustment"]);
        let usage: (String, i64, i64) =
            sqlx::query_as("SELECT id, prompt_tokens, cost_micros FROM usage_records")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(usage, ("use_1".to_owned(), 12, 6));
        let refused = sqlx::query(
            "INSERT INTO ledger_entries (id, tenant_id, kind, amount_micros, balance_after_micros, created_at) \
             VALUES ('ledg_4', 'org_1', 'gift', 1, 1, 1)",
        )
        .execute(pool)
        .await;
        assert!(refused.is_err(), "an unknown kind is still refused");
    }
}
