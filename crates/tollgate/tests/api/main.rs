//! Black-box tests: a real server on a random port, a temporary SQLite database, the mock upstream.
//! Folders mirror the routes.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failing step should stop the test"
)]

mod auth;
mod connections;
mod errors;
mod inference;
mod management;
mod operator;
