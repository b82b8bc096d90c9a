#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`audit`]: audit events, who caused them, and each tenant's hash chain.
//! - [`id`]: prefixed, time-ordered ids (`org_…`, `proj_…`, `key_…`).
//! - [`idempotency`]: `Idempotency-Key` claims, fingerprints and stored responses.
//! - [`key`]: the API key format: generation, checksum, digest; secrets that refuse to print.
//! - [`tenant`]: tenants, projects, members, API keys and the principal a key authenticates as.
//! - [`money`]: micro-cents in an `i64`, exact costs, exact decimal display.
//! - [`credits`]: ledger entries, settlements, the hold policy, usage queries.
//! - [`password`]: Argon2id hashes of member passwords.
//! - [`session`]: dashboard sessions: tokens (only their digests stored), the member a session acts as.
//! - [`role`]: owner ⊇ admin ⊇ member, and what each may do.
//! - [`plan`]: plan tiers (key limits, rate limits, features).
//! - [`catalog`]: the public models and where each is served.
//! - [`ports`]: traits implemented outside the core: [`ports::Store`], [`ports::Provider`], [`ports::Clock`].

pub mod audit;
pub mod catalog;
pub mod credits;
pub mod id;
pub mod idempotency;
pub mod key;
pub mod money;
pub mod password;
pub mod plan;
pub mod ports;
pub mod role;
pub mod session;
pub mod tenant;
