//! `/v1/organization/credits`: the tenant's balance and ledger.

pub mod get;
