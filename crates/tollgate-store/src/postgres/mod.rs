//! PostgreSQL: the system of record that several nodes share. Statements are the shared ones
//! (`queries`); what differs from SQLite is concurrency: here many writers run at once under READ COMMITTED,
//! where each statement reads its own snapshot, so every rule-checked write first locks its tenant's row, and
//! settlement locks the balance rows it changes (in tenant id order, so that no two batches deadlock).

mod settle;

use crate::OpenError;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;
use tollgate_core::ports::{ChangeSignal, Durability, StoreError};

// `FOR NO KEY UPDATE` conflicts with itself, which serialises the tenant's rule-checked writes, but not with the
// `FOR KEY SHARE` lock that foreign keys take: settlements inserting ledger and usage rows for the tenant never wait
// for it, so they cannot deadlock with a grant that holds it while waiting for their balance row.
crate::queries::store_queries!(
    PgStore,
    sqlx::Postgres,
    begin = "BEGIN",
    lock_tenant = "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
    migrations_table = "SELECT count(*) FROM pg_tables \
        WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'",
    now_ms = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    lock_key = "SELECT spend_limit_micros, spend_limit_period, spent_micros, spent_period_start \
        FROM api_keys WHERE id = $1 FOR NO KEY UPDATE",
    lock_chain = "SELECT seq, hash FROM audit_chains WHERE tenant_id = $1 FOR UPDATE",
    for_update = "FOR UPDATE",
);

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections for reads and management writes, per node.
const MAX_CONNECTIONS: u32 = 16;
/// Connections for settlements, apart from the rest so that key-cache misses and management calls cannot take
/// every connection from the writer that records charges.
const SETTLER_CONNECTIONS: u32 = 2;
/// How long a caller waits for a free connection (or for a connection to a server that does not answer).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a settlement waits for a lock another writer holds before it fails as unavailable, as SQLite's
/// settlement connection waits for the write lock: the recorder retries with backoff and refuses new paid requests
/// meanwhile, so waiting longer would only delay noticing that the store cannot be written.
const SETTLER_LOCK_TIMEOUT: &str = "1s";

/// The channel migration 0005's triggers notify when a change-log row commits.
const CHANGES_CHANNEL: &str = "tollgate_changes";

/// The PostgreSQL implementation of [`tollgate_core::ports::Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Reads and management writes.
    pool: PgPool,
    /// Settlements.
    settler: PgPool,
    /// The one connection a change signal LISTENs on, for as long as it lives: apart from `pool`, so that it
    /// never takes a connection from requests, and never closed for being idle or old.
    listener: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://…` or `postgresql://…`; the database must exist), without
    /// migrating. Connections are opened on demand, so this succeeds while the server is still starting; the first
    /// call that needs one reports an unreachable server.
    pub async fn open(url: &str, durability: Durability) -> Result<Self, OpenError> {
        // PostgreSQL's own terms for the two promises: `on` waits for the commit's WAL to reach the disk (a charge
        // survives power loss); `off` answers once the commit is in the server's memory, which outlives a crash
        // of Tollgate (the promise of "process") and reaches the disk within three `wal_writer_delay`s (0.6 s by
        // default): only a crash of the database server inside that window loses it, never a torn transaction.
        // (`local` would be no faster than `on` without synchronous replicas.)
        let synchronous_commit = match durability {
            Durability::Fsync => "on",
            Durability::Process => "off",
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| OpenError::Open(format!("{}: {e}", crate::redact_password(url))))?
            .application_name("tollgate")
            .options([("synchronous_commit", synchronous_commit)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        let settler = PgPoolOptions::new()
            .max_connections(SETTLER_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone().options([
                ("lock_timeout", SETTLER_LOCK_TIMEOUT),
                // Settlement statements take arrays whose lengths vary from batch to batch: a custom plan
                // per length only re-plans the same plan, which cost a tenth of the server's time per
                // request (BENCHMARKS.md, issue 11).
                ("plan_cache_mode", "force_generic_plan"),
            ]));
        let listener = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            settler,
            listener,
        })
    }

    /// A signal on [`CHANGES_CHANNEL`]: LISTEN on a connection of its own.
    async fn listen_for_changes(&self) -> Result<Option<Box<dyn ChangeSignal>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.listener)
            .await
            .map_err(db_error)?;
        listener.listen(CHANGES_CHANNEL).await.map_err(db_error)?;
        Ok(Some(Box::new(Notifications(listener))))
    }
}

/// NOTIFYs on [`CHANGES_CHANNEL`] as a [`ChangeSignal`].
struct Notifications(PgListener);

#[async_trait::async_trait]
impl ChangeSignal for Notifications {
    async fn wait(&mut self) -> Result<(), StoreError> {
        // `None` is a lost connection, already re-established (and LISTENing again): whatever was notified in
        // between is lost, so it wakes the reader as a notification would.
        if self.0.try_recv().await.map_err(db_error)?.is_none() {
            tracing::warn!(
                "the connection listening for change notifications was lost and is back: reading the change log now"
            );
        }
        Ok(())
    }
}

/// SQLSTATE classes and codes that mean "not now" rather than "not this": connection exceptions (08), insufficient
/// resources such as a full disk or too many connections (53), operator intervention such as a shutdown or a
/// cancelled statement (57), a read-only transaction (25006: a standby after failover), serialization failure and
/// deadlock (40001, 40P01), a lock not available in time (55P03), a database that does not accept connections for
/// now (55000: `ALLOW_CONNECTIONS false` during maintenance).
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
fn is_transient(code: &str) -> bool {
    ["08", "53", "57"]
        .iter()
        .any(|class| code.starts_with(class))
        || ["25006", "40001", "40P01", "55000", "55P03"].contains(&code)
}

/// A database error as the domain sees it (see [`crate::store_error`]). sqlx's messages name neither the URL nor its
/// password.
fn db_error(e: sqlx::Error) -> StoreError {
    crate::store_error(e, is_transient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScratchDatabase;
    use sqlx::Row;

    #[test]
    fn lost_connections_shutdowns_deadlocks_and_lock_timeouts_are_transient() {
        for code in [
            "08006", "08001", "53100", "53300", "57P01", "57014", "25006", "40001", "40P01",
            "55000", "55P03",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "23503", "23514", "42P01", "22003"] {
            assert!(!is_transient(code), "{code}");
        }
        assert!(db_error(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!db_error(sqlx::Error::RowNotFound).is_transient());
    }

    async fn setting(pool: &PgPool, name: &str) -> String {
        sqlx::query(&format!("SHOW {name}"))
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn durability_sets_how_every_connection_commits() {
        let Some(db) = ScratchDatabase::from_env().await.unwrap() else {
            return;
        };
        for (durability, expected) in [(Durability::Fsync, "on"), (Durability::Process, "off")] {
            let store = PgStore::open(db.url(), durability).await.unwrap();
            assert_eq!(setting(&store.pool, "synchronous_commit").await, expected);
            assert_eq!(
                setting(&store.settler, "synchronous_commit").await,
                expected
            );
            assert_eq!(setting(&store.settler, "lock_timeout").await, "1s");
            assert_eq!(setting(&store.pool, "lock_timeout").await, "0");
            assert_eq!(
                setting(&store.settler, "plan_cache_mode").await,
                "force_generic_plan"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_not_a_failure() {
        // A socket directory that does not exist: nothing listens there.
        let store = PgStore::open(
            "postgres://tollgate@localhost/x?host=/nonexistent/tollgate",
            Durability::Fsync,
        )
        .await
        .unwrap();
        let err = tollgate_core::ports::Store::ping(&store).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }
}
