#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`config`]: the TOML configuration and its environment overrides, validated.
//! - [`app`]: `AppState`, built once: store, providers, catalog, key cache, clock.
//! - [`router`]: every route and the layers around them.
//! - [`server`]: `serve(listener, state, shutdown)`, shared by `main` and the tests: the accept loop, the connection
//!   cap and timeouts, the drain on shutdown.
//! - [`middleware`]: request ids, access logs, client addresses, body limits, authentication extractors.
//! - [`routes`]: one file per action under `inference/`, `management/`, `operator/`.
//! - [`dashboard`]: the tenant dashboard at `/dashboard`: server-rendered pages for a session cookie, one module per
//!   page, calling the same services as the management API.
//! - [`service`]: the operations routes and the CLI share (create a tenant, issue and revoke keys).
//! - [`extract`]: JSON and pagination extractors that fail with `ApiError`.
//! - [`objects`]: the JSON objects of API.md.
//! - [`pipeline`]: the inference stages every inference route goes through (policy, rate limit, idempotency, hold,
//!   settle and record).
//! - [`rate_limit`]: the rate limiters (in process; the one place that picks which runs).
//! - [`credits`]: balances and holds in memory, and the group-committing recorder of charges and usage.
//! - [`key_cache`]: authenticated keys in memory: misses coalesced, invalidated exactly on revocation.
//! - [`change_log`]: follows the store's change log, so changes made on other nodes and by the CLI reach the key
//!   cache within a second.
//! - [`retention`]: prunes the audit log past `audit_retention_days`.
//! - [`idempotency`]: `Idempotency-Key`: a request's claim, replays, and the node's renewal and pruning of claims.
//! - [`error`]: `ApiError`, the one mapping from failures to HTTP.
//! - `outage`: one log line per outage of a background store call.

pub mod app;
pub mod change_log;
pub mod config;
pub mod credits;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod key_cache;
pub mod middleware;
pub mod objects;
mod outage;
pub mod pipeline;
pub mod rate_limit;
pub mod retention;
pub mod router;
pub mod routes;
pub mod server;
pub mod service;
#[cfg(test)]
mod test_support;

pub use app::{App, AppState};
pub use config::Config;
pub use error::ApiError;
pub use server::serve;
