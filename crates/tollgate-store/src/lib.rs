//! The system of record behind the core's [`Store`] traits.
//!
//! SQLite (embedded, the default) lives in [`sqlite`]; PostgreSQL will sit beside it as another implementation
//! of the same traits. [`connect`] picks the backend from the URL scheme and applies pending migrations, so a
//! caller only ever holds an `Arc<dyn Store>`.

pub mod sqlite;

use std::sync::Arc;
use tollgate_core::ports::Store;

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names a backend this build does not have, or is not a URL at all.
    #[error(
        "unsupported database_url {0:?}: this version supports sqlite://PATH (PostgreSQL support is planned)"
    )]
    Unsupported(String),
    /// The database could not be opened or created.
    #[error("cannot open the database: {0}")]
    Open(String),
    /// A migration failed; the database is left at the last migration that succeeded.
    #[error("migration failed: {0}")]
    Migrate(String),
}

/// Opens the store at `url` (creating an SQLite file and its directory if missing) and applies pending
/// migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, OpenError> {
    match backend(url)? {
        Backend::Sqlite => {
            let store = sqlite::SqliteStore::open(url).await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
    }
}

/// Applies pending migrations to the store at `url` and returns how many ran (0 when already up to date).
pub async fn migrate(url: &str) -> Result<usize, OpenError> {
    match backend(url)? {
        Backend::Sqlite => sqlite::SqliteStore::open(url).await?.migrate().await,
    }
}

enum Backend {
    Sqlite,
}

fn backend(url: &str) -> Result<Backend, OpenError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        Err(OpenError::Unsupported(redact_password(url)))
    }
}

/// The URL with any password replaced, so a rejected PostgreSQL URL can be shown in an error.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_urls_do_not_show_passwords() {
        let Err(err) = backend("postgres://app:hunter2@db:5432/tollgate") else {
            unreachable!("postgres is not built yet");
        };
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("postgres://app:***@db:5432/tollgate"),
            "{text}"
        );
    }
}
