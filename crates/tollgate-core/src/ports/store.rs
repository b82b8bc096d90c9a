//! The storage port: the system of record for tenants, projects, members and keys.
//!
//! Split by resource so each backend (SQLite, PostgreSQL) implements small traits, and [`Store`] is all of them.
//! The domain generates ids and timestamps; a store writes what it is given and never invents either.

use crate::key::KeyDigest;
use crate::tenant::{ApiKey, KeyOwner, Member, NewTenant, Principal, Project, Tenant, Timestamp};
use async_trait::async_trait;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. the same email twice in a tenant).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed; the detail is for logs.
    #[error("storage failed: {0}")]
    Backend(String),
}

/// Cursor pagination: items after the id `after`, at most `limit` of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The previous page's last id.
    pub after: Option<String>,
    /// 1–100.
    pub limit: u32,
}

/// One page of items, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Whether more items follow the last one.
    pub has_more: bool,
}

/// Tenants.
#[async_trait]
pub trait TenantStore {
    /// Writes a tenant with its first project, owner and admin key, all or nothing.
    async fn create_tenant(&self, new: &NewTenant) -> Result<(), StoreError>;
    /// One tenant.
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError>;
    /// Tenants, oldest first.
    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError>;
}

/// Projects.
#[async_trait]
pub trait ProjectStore {
    /// One project of a tenant (`None` for another tenant's project).
    async fn get_project(
        &self,
        tenant_id: &str,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError>;
    /// A project by id alone, for operator tools (the CLI) that are not acting inside a tenant.
    async fn find_project(&self, project_id: &str) -> Result<Option<Project>, StoreError>;
}

/// Members.
#[async_trait]
pub trait MemberStore {
    /// One member of a tenant (`None` for another tenant's member).
    async fn get_member(
        &self,
        tenant_id: &str,
        member_id: &str,
    ) -> Result<Option<Member>, StoreError>;
}

/// API keys, project and admin.
#[async_trait]
pub trait KeyStore {
    /// Writes a new key.
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    /// One key of a tenant (`None` for another tenant's key).
    async fn get_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// A key by id alone, for operator tools (the CLI) that are not acting inside a tenant.
    async fn find_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// A project's or member's keys, oldest first, revoked and expired ones included.
    async fn list_keys(
        &self,
        tenant_id: &str,
        owner: &KeyOwner,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, StoreError>;
    /// Revokes a key at `at` (a key already revoked keeps its first time) and returns it; `None` if no such key.
    async fn revoke_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        at: Timestamp,
    ) -> Result<Option<ApiKey>, StoreError>;
    /// The key with this digest and the state of its tenant and owner: the authentication lookup.
    async fn principal_by_digest(
        &self,
        digest: &KeyDigest,
    ) -> Result<Option<Principal>, StoreError>;
}

/// The whole system of record.
#[async_trait]
pub trait Store:
    TenantStore + ProjectStore + MemberStore + KeyStore + Send + Sync + 'static
{
    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
