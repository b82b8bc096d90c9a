//! Black-box tests: a real server on a random port, a temporary database (SQLite, or PostgreSQL with
//! `TOLLGATE_TEST_DATABASE=postgres`: see `tollgate-testkit`), the mock upstream. Folders mirror the routes.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test helpers: a failing step should stop the test; spawned tasks are awaited"
)]

mod auth;
mod connections;
mod dashboard;
mod errors;
mod idempotency;
mod inference;
mod management;
mod nodes;
mod operator;
mod readyz;
mod secret_scanning;
