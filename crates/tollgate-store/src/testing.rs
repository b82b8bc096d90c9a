//! Throwaway PostgreSQL databases for the test suites: each test gets a database of its own on the server that
//! `TOLLGATE_TEST_POSTGRES_URL` names (any URL whose user may `CREATE DATABASE`; `scripts/postgres` starts one),
//! dropped again when the test is done with it. Without the variable, PostgreSQL cases are skipped, and say so.
//! Never used by the server itself.

use crate::OpenError;
use sqlx::{Connection, Executor, PgConnection};
use std::io::Write;
use std::sync::Once;

/// The environment variable naming the test server.
pub const POSTGRES_URL_VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";

/// A database created for one test, dropped (with any connections still open to it) when this is dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The server's URL, to connect to for the drop.
    server: String,
    /// The database's URL: the server's, naming the new database.
    url: String,
    /// `tollgate_test_<uuid>`: safe to splice into SQL (lowercase letters, digits, `_`).
    name: String,
}

impl ScratchDatabase {
    /// A fresh database on the server in [`POSTGRES_URL_VAR`], or `None` when the variable is unset (noted once
    /// per process on stderr, past the test harness's capture, so that a skipped leg is seen).
    pub async fn from_env() -> Result<Option<Self>, OpenError> {
        match std::env::var(POSTGRES_URL_VAR) {
            Ok(server) if !server.is_empty() => Self::create(&server).await.map(Some),
            _ => {
                static NOTE: Once = Once::new();
                NOTE.call_once(|| {
                    let _ = writeln!(
                        std::io::stderr(),
                        "note: {POSTGRES_URL_VAR} is not set: PostgreSQL cases are skipped \
                         (scripts/test runs them when PostgreSQL is installed)"
                    );
                });
                Ok(None)
            }
        }
    }

    /// Creates `tollgate_test_<uuid>` on the server at `server_url`.
    pub async fn create(server_url: &str) -> Result<Self, OpenError> {
        let name = tollgate_core::id::new_id("tollgate_test_");
        let mut url = url::Url::parse(server_url)
            .map_err(|e| OpenError::Open(format!("{}: {e}", crate::redact_password(server_url))))?;
        url.set_path(&format!("/{name}"));
        let mut admin = PgConnection::connect(server_url)
            .await
            .map_err(|e| OpenError::Open(e.to_string()))?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .map_err(|e| OpenError::Open(format!("cannot create the test database: {e}")))?;
        let _ = admin.close().await;
        Ok(Self {
            server: server_url.to_owned(),
            url: url.into(),
            name,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A real outage of this database, for a test: with `refuse` the server refuses new connections to it and
    /// ends every open one (as a database that went away would); without, it accepts them again.
    pub async fn refuse_connections(&self, refuse: bool) -> Result<(), OpenError> {
        let mut admin = PgConnection::connect(&self.server)
            .await
            .map_err(|e| OpenError::Open(e.to_string()))?;
        let allow = if refuse { "false" } else { "true" };
        let mut statements = vec![format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
            self.name
        )];
        if refuse {
            statements.push(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                self.name
            ));
        }
        for statement in statements {
            admin
                .execute(statement.as_str())
                .await
                .map_err(|e| OpenError::Open(format!("{statement}: {e}")))?;
        }
        let _ = admin.close().await;
        Ok(())
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one being dropped: the database is dropped from a
        // thread with a runtime of its own, waited for so that it is gone when the test ends.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::Builder::new()
            .name("tollgate-drop-test-db".to_owned())
            .spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let mut admin = PgConnection::connect(&server)
                        .await
                        .map_err(|e| e.to_string())?;
                    admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = admin.close().await;
                    Ok(())
                })
            })
            .map_err(|e| e.to_string())
            .and_then(|thread| thread.join().unwrap_or(Err("the drop panicked".to_owned())));
        if let Err(e) = dropped {
            let _ = writeln!(
                std::io::stderr(),
                "warning: test database {} was not dropped: {e}",
                self.name
            );
        }
    }
}
