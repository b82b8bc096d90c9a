//! Operator routes (`/operator/v1/*`), for the operator token only; all 404 when no token is configured.

pub mod tenants;
