//! SQLite: one file, WAL mode, `synchronous = FULL` (a committed charge survives power loss), foreign keys on.

mod credits;
mod keys;
mod members;
mod projects;
mod rows;
mod tenants;
mod usage;

use crate::OpenError;
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use tollgate_core::ports::{Store, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Readers run in parallel under WAL; writers queue on SQLite's single write lock.
const MAX_CONNECTIONS: u32 = 8;
/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH` or `sqlite::memory:`), without migrating.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| OpenError::Open(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let path = options.get_filename();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Open(format!("cannot create {}: {e}", dir.display())))?;
        }
        // An in-memory database exists per connection, so it must be exactly one.
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { MAX_CONNECTIONS })
            .connect_with(options)
            .await
            .map_err(|e| OpenError::Open(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; returns how many ran.
    pub async fn migrate(&self) -> Result<usize, OpenError> {
        let before = self.applied_migrations().await?;
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| OpenError::Migrate(e.to_string()))?;
        let after = self.applied_migrations().await?;
        Ok(after.saturating_sub(before))
    }

    async fn applied_migrations(&self) -> Result<usize, OpenError> {
        let exists: i64 = sqlx::query(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| OpenError::Migrate(e.to_string()))?;
        if exists == 0 {
            return Ok(0);
        }
        let applied: i64 = sqlx::query("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| OpenError::Migrate(e.to_string()))?;
        Ok(usize::try_from(applied).unwrap_or(0))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// A database error as the domain sees it: a broken uniqueness rule is a conflict, anything else a backend failure.
fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}
