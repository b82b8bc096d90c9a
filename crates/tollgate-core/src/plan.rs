//! Plan tiers: what a tenant may do.

use crate::tenant::RateLimits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One plan, as `[plans.NAME]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Active project keys per tenant across its projects; `None` is unlimited.
    #[serde(default)]
    pub max_keys: Option<u32>,
    /// Requests per minute for the whole tenant.
    pub requests_per_minute: u32,
    /// Tokens per minute for the whole tenant.
    pub tokens_per_minute: u64,
    /// Whether keys may carry `allowed_ips`.
    #[serde(default)]
    pub ip_allowlist: bool,
}

impl Plan {
    /// The per-minute request and token limits of a tenant on this plan: the operator's `overrides` where set,
    /// else the plan's.
    pub fn tenant_limits(&self, overrides: RateLimits) -> (u64, u64) {
        (
            overrides
                .requests_per_minute
                .unwrap_or(u64::from(self.requests_per_minute)),
            overrides
                .tokens_per_minute
                .unwrap_or(self.tokens_per_minute),
        )
    }
}

/// The plans a deployment offers, by name.
pub type Plans = BTreeMap<String, Plan>;

/// The three plans in force when the config defines none.
pub fn default_plans() -> Plans {
    let mut plans = Plans::new();
    plans.insert(
        "free".to_owned(),
        Plan {
            max_keys: Some(50),
            requests_per_minute: 60,
            tokens_per_minute: 100_000,
            ip_allowlist: false,
        },
    );
    plans.insert(
        "pro".to_owned(),
        Plan {
            max_keys: None,
            requests_per_minute: 3_000,
            tokens_per_minute: 2_000_000,
            ip_allowlist: false,
        },
    );
    plans.insert(
        "enterprise".to_owned(),
        Plan {
            max_keys: None,
            requests_per_minute: 10_000,
            tokens_per_minute: 10_000_000,
            ip_allowlist: true,
        },
    );
    plans
}
