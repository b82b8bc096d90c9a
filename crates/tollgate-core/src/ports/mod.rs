//! Traits the core needs and the outer crates implement: storage, model providers, rate limits, time.

pub mod clock;
pub mod provider;
pub mod rate_limit;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use provider::{ChatCall, ChunkStream, Provider, ProviderError};
pub use rate_limit::{Bucket, BucketState, Decision, RateLimitError, RateLimiter, Scope, Unit};
pub use store::{
    Account, AuditChain, AuditLog, Change, ChangeLog, ChangeSignal, Changed, CreditStore,
    Durability, IdempotencyStore, KeyLimit, KeyScope, KeyStore, LeaseGrant, LeaseRequest,
    MemberStore, Page, PageRequest, ProjectStore, RemovedMember, SessionStore, SettledBatch, Store,
    StoreError, TenantStore, TenantUpdate, UsageStore,
};
