//! `/v1/usage`: the calling project's usage.

pub mod get;
