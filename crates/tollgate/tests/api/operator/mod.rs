//! `/operator/v1/*`.

mod tenants;
