//! Credits on the hot path: holds against each tenant's balance ([`wallets`]) and the group-committing recorder
//! that makes each charge durable before its response ends ([`recorder`]).
//!
//! The store's ledger is the truth. This node keeps each tenant's balance and holds in memory, so a hold costs no
//! storage round trip: a node is the only one charging its SQLite store, and grants made elsewhere (the CLI, the
//! operator API) only ever add, which a wallet picks up from the store before it refuses a request. Holds live
//! only in memory, so a crash releases them with the process.

pub mod recorder;
pub mod wallets;

pub use recorder::Recorder;
pub use wallets::{Hold, HoldError, Wallets};
