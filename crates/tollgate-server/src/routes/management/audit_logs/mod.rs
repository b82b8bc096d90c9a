//! `/v1/organization/audit_logs`: the tenant's audit log, listed or exported.

pub mod get;
