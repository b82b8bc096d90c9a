//! The system of record behind the core's [`Store`] traits.
//!
//! # Layout
//! - [`sqlite`]: SQLite, embedded, the default: one file, one writer at a time.
//! - [`postgres`]: PostgreSQL, for several nodes sharing one database.
//! - `queries`: the SQL both run, written once; `rows`: their rows to domain values; `settle`: what a batch of
//!   settlements writes; `audit`: the audit log's rows and how appends extend each tenant's hash chain. A backend adds only what truly differs: how a tenant's writes are serialised, how
//!   settlements are written, its migrations (`migrations/{sqlite,postgres}`) and its error codes.
//! - [`testing`]: throwaway PostgreSQL databases for the test suites.
//!
//! The change log (`ChangeLog`) is the one table no caller writes: migration 0005's triggers fill it in the same
//! transaction as each change that concerns cached keys, whoever makes it, and PostgreSQL's also NOTIFY.
//!
//! [`connect`] picks the backend from the URL scheme (`sqlite:`, `postgres:` or `postgresql:`) and applies pending
//! migrations, so a caller only ever holds an `Arc<dyn Store>`.

mod audit;
pub mod postgres;
mod queries;
mod rows;
mod settle;
pub mod sqlite;
pub mod testing;

use std::sync::Arc;
use tollgate_core::ports::{Durability, Store, StoreError};

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names a backend this build does not have, or is not a URL at all.
    #[error(
        "unsupported database_url {0:?}: this version supports sqlite://PATH and postgres://USER@HOST/DATABASE"
    )]
    Unsupported(String),
    /// The database could not be opened or created.
    #[error("cannot open the database: {0}")]
    Open(String),
    /// A migration failed; the database is left at the last migration that succeeded.
    #[error("migration failed: {0}")]
    Migrate(String),
}

/// A database error as the domain sees it, by one rule for both backends: a broken uniqueness rule is a conflict;
/// an error whose code the backend calls `transient` (locked, full, read-only, shutting down, deadlocked…) and a
/// lost, refused or exhausted connection are unavailable (retrying may succeed); anything else is a backend failure.
fn store_error(e: sqlx::Error, transient: fn(&str) -> bool) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| transient(&c)) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Opens the store at `url` (creating an SQLite file and its directory if missing; a PostgreSQL database must
/// exist) and applies pending migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, OpenError> {
    connect_with(url, Durability::default()).await
}

/// [`connect`], with commits as durable as `durability` asks.
pub async fn connect_with(url: &str, durability: Durability) -> Result<Arc<dyn Store>, OpenError> {
    match backend(url)? {
        Backend::Sqlite => {
            let store = sqlite::SqliteStore::open(url, durability).await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        Backend::Postgres => {
            let store = postgres::PgStore::open(url, durability).await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
    }
}

/// Applies pending migrations to the store at `url` and returns how many ran (0 when already up to date).
pub async fn migrate(url: &str) -> Result<usize, OpenError> {
    match backend(url)? {
        Backend::Sqlite => {
            sqlite::SqliteStore::open(url, Durability::default())
                .await?
                .migrate()
                .await
        }
        Backend::Postgres => {
            postgres::PgStore::open(url, Durability::default())
                .await?
                .migrate()
                .await
        }
    }
}

enum Backend {
    Sqlite,
    Postgres,
}

fn backend(url: &str) -> Result<Backend, OpenError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(OpenError::Unsupported(redact_password(url)))
    }
}

/// The URL with any password replaced, so a rejected database URL can be shown in an error. Parsed by the `url`
/// crate, as a database driver would: the user information ends at the *last* `@` of the authority, so a password
/// containing `@` is still found. A URL that does not parse shows only its scheme.
pub(crate) fn redact_password(raw: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(mut url) = url::Url::parse(raw) else {
        return match raw.split_once(':') {
            Some((scheme, _))
                if scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                format!("{scheme}:{HIDDEN}")
            }
            _ => HIDDEN.to_owned(),
        };
    };
    if url.password().is_some() {
        // Only URLs with a host can carry a password, and those accept a new one.
        let _ = url.set_password(Some(HIDDEN));
    }
    // libpq also takes `?password=…` (and `sslpassword`) in the query string.
    if url.query_pairs().any(|(k, _)| k.contains("password")) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.contains("password") {
                    HIDDEN.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_postgres_schemes_select_postgres() {
        for url in ["postgres://app@db/tollgate", "postgresql://app@db/tollgate"] {
            assert!(matches!(backend(url), Ok(Backend::Postgres)), "{url}");
        }
        assert!(matches!(backend("sqlite://x.db"), Ok(Backend::Sqlite)));
    }

    #[test]
    fn unsupported_urls_do_not_show_passwords_and_name_what_is_supported() {
        let Err(err) = backend("mysql://app:hunter2@db:3306/tollgate") else {
            unreachable!("mysql is not supported");
        };
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("mysql://app:***@db:3306/tollgate"), "{text}");
        assert!(
            text.contains("sqlite://") && text.contains("postgres://"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_malformed_postgres_url_is_an_open_error_without_its_password() {
        let Err(err) = connect("postgres://app:hunter2@db:notaport/tollgate").await else {
            unreachable!("the port does not parse");
        };
        let text = err.to_string();
        assert!(matches!(err, OpenError::Open(_)), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn passwords_with_at_signs_or_percent_encoding_are_redacted() {
        for (raw, secrets, shown) in [
            (
                "postgres://app:p@ss@word@db/x",
                &["p@ss", "ss@word", "word@", "p%40ss"][..],
                "postgres://app:***@db/x",
            ),
            (
                "postgres://app:p%40ss%3Aw0rd@db:5432/x",
                &["p%40ss", "p@ss", "w0rd"][..],
                "postgres://app:***@db:5432/x",
            ),
            (
                "postgres://app:%F0%9F%94%91key@db/x",
                &["%F0%9F%94%91", "key@"][..],
                "postgres://app:***@db/x",
            ),
            (
                "postgres://db/x?user=app&password=hunter2&sslmode=require",
                &["hunter2"][..],
                "postgres://db/x?user=app&password=***&sslmode=require",
            ),
            ("postgres://app@db/x", &[][..], "postgres://app@db/x"),
            (
                "postgres:// app:hunter2@[db/x",
                &["hunter2"][..],
                "postgres:***",
            ),
        ] {
            let text = redact_password(raw);
            for secret in secrets {
                assert!(!text.contains(secret), "{raw} → {text}");
            }
            assert_eq!(text, shown, "{raw}");
        }
    }
}
