//! `/v1/organization/usage`: the tenant's usage.

pub mod get;
