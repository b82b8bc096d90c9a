//! The system of record behind the core's [`Store`] traits.
//!
//! SQLite (embedded, the default) lives in [`sqlite`]; PostgreSQL will sit beside it as another implementation
//! of the same traits. [`connect`] picks the backend from the URL scheme and applies pending migrations, so a
//! caller only ever holds an `Arc<dyn Store>`.

pub mod sqlite;

use std::sync::Arc;
use tollgate_core::ports::{Durability, Store};

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

/// The URL with any password replaced, so a rejected database URL can be shown in an error. Parsed by the `url`
/// crate, as a database driver would: the user information ends at the *last* `@` of the authority, so a password
/// containing `@` is still found. A URL that does not parse shows only its scheme.
fn redact_password(raw: &str) -> String {
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
