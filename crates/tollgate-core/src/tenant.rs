//! Tenants, projects, members and API keys as the domain sees them, and the principal a key authenticates as.

use crate::id;
use crate::key::{KeyDigest, KeyKind, KeyPrefixes, PlainKey};
use crate::role::Role;
use ipnet::IpNet;
use std::fmt;

/// Unix seconds.
pub type Timestamp = i64;

/// Whether a tenant's keys work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantStatus {
    /// Normal.
    Active,
    /// Every key of the tenant is refused until reactivated.
    Suspended,
}

impl TenantStatus {
    /// Storage and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

/// Whether a project's keys work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectStatus {
    /// Normal.
    Active,
    /// Its keys are refused.
    Archived,
}

impl ProjectStatus {
    /// Storage and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// A customer of the deployment (OpenAI: an organization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// `org_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// A plan name the config defines.
    pub plan: String,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A tenant's project: keys belong to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// `proj_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// Data-residency expansion point; `"global"` for now.
    pub region: String,
    /// Active or archived.
    pub status: ProjectStatus,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A person in a tenant. Its `Debug` never prints the password hash (an offline-crackable secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Member {
    /// `user_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Normalised (trimmed, lowercase) email, unique per tenant.
    pub email: String,
    /// What the member may do.
    pub role: Role,
    /// Argon2id PHC string for the dashboard, if a password was set.
    pub password_hash: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written out rather than derived: the field stays a plain `Option<String>` for the store's sake, so the
        // redaction lives here.
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "[redacted]"),
            )
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// What a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    /// A project key: inference in this project.
    Project(String),
    /// An admin key: management as this member.
    Member(String),
}

/// Whether a key works, as shown in its `status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Works.
    Active,
    /// Revoked by someone.
    Revoked,
    /// Past `expires_at`.
    Expired,
}

impl KeyStatus {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// A key's stored record: everything but the secret, which exists only as its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_…` or `admin_key_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Project or member it belongs to.
    pub owner: KeyOwner,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// SHA-256 of the whole key.
    pub digest: KeyDigest,
    /// First 12 characters.
    pub prefix: String,
    /// Last 4 characters.
    pub last4: String,
    /// Member who created it, if a member did.
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last request made with it (coarse).
    pub last_used_at: Option<Timestamp>,
    /// The key stops working at this time.
    pub expires_at: Option<Timestamp>,
    /// Set when revoked.
    pub revoked_at: Option<Timestamp>,
    /// The key this one replaced by a roll.
    pub rolled_from: Option<String>,
    /// Source networks allowed to use it; empty means any.
    pub allowed_ips: Vec<IpNet>,
    /// Public model ids it may use; `None` means all.
    pub models: Option<Vec<String>>,
}

impl ApiKey {
    /// Project or admin.
    pub fn kind(&self) -> KeyKind {
        match self.owner {
            KeyOwner::Project(_) => KeyKind::Project,
            KeyOwner::Member(_) => KeyKind::Admin,
        }
    }

    /// Status at `now`: revoked wins over expired.
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        key_status(self.revoked_at, self.expires_at, now)
    }
}

/// A key's status from its revocation and expiry times.
pub fn key_status(
    revoked_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> KeyStatus {
    if revoked_at.is_some() {
        KeyStatus::Revoked
    } else if expires_at.is_some_and(|at| now >= at) {
        KeyStatus::Expired
    } else {
        KeyStatus::Active
    }
}

/// Who a presented key acts as: the key with its tenant's and owner's state, as one cacheable value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's record.
    pub key: ApiKey,
    /// Its tenant's plan name.
    pub tenant_plan: String,
    /// Its tenant's status.
    pub tenant_status: TenantStatus,
    /// For a project key: its project's status.
    pub project_status: Option<ProjectStatus>,
    /// For an admin key: its member's current role.
    pub role: Option<Role>,
}

/// The initial objects of a new tenant, written in one transaction.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its first project, "Default".
    pub project: Project,
    /// Its owner.
    pub owner: Member,
    /// The owner's first admin key.
    pub admin_key: ApiKey,
}

/// What a caller chooses when creating a key; the rest (id, secret, times) the domain decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// When the key stops working.
    pub expires_at: Option<Timestamp>,
    /// Source networks allowed to use it; empty means any.
    pub allowed_ips: Vec<IpNet>,
    /// Public model ids it may use; `None` means all.
    pub models: Option<Vec<String>>,
}

impl ApiKey {
    /// A new key for `owner` with a fresh secret. The secret is returned once, beside the record that stores
    /// only its digest.
    pub fn issue(
        prefixes: &KeyPrefixes,
        tenant_id: &str,
        owner: KeyOwner,
        spec: KeySpec,
        created_by: Option<String>,
        now: Timestamp,
    ) -> (Self, PlainKey) {
        let kind = match owner {
            KeyOwner::Project(_) => KeyKind::Project,
            KeyOwner::Member(_) => KeyKind::Admin,
        };
        let secret = prefixes.generate(kind);
        let id_prefix = match kind {
            KeyKind::Project => id::PROJECT_KEY,
            KeyKind::Admin => id::ADMIN_KEY,
        };
        let key = Self {
            id: id::new_id(id_prefix),
            tenant_id: tenant_id.to_owned(),
            owner,
            name: spec.name,
            description: spec.description,
            digest: secret.digest(),
            prefix: secret.visible_prefix().to_owned(),
            last4: secret.last4().to_owned(),
            created_by,
            created_at: now,
            last_used_at: None,
            expires_at: spec.expires_at,
            revoked_at: None,
            rolled_from: None,
            allowed_ips: spec.allowed_ips,
            models: spec.models,
        };
        (key, secret)
    }
}

/// An email trimmed and lowercased, if it looks like one (`local@domain`, no spaces, at most 254 characters).
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let plausible = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(char::is_whitespace);
    plausible.then_some(email)
}

impl NewTenant {
    /// A tenant with its "Default" project, its owner and the owner's first admin key (whose secret is returned).
    /// `owner_email` must already be normalised.
    pub fn build(
        prefixes: &KeyPrefixes,
        name: String,
        plan: String,
        owner_email: String,
        owner_password_hash: Option<String>,
        now: Timestamp,
    ) -> (Self, PlainKey) {
        let tenant = Tenant {
            id: id::new_id(id::TENANT),
            name,
            plan,
            status: TenantStatus::Active,
            created_at: now,
        };
        let project = Project {
            id: id::new_id(id::PROJECT),
            tenant_id: tenant.id.clone(),
            name: "Default".to_owned(),
            region: "global".to_owned(),
            status: ProjectStatus::Active,
            created_at: now,
        };
        let owner = Member {
            id: id::new_id(id::MEMBER),
            tenant_id: tenant.id.clone(),
            email: owner_email,
            role: Role::Owner,
            password_hash: owner_password_hash,
            created_at: now,
        };
        let (admin_key, secret) = ApiKey::issue(
            prefixes,
            &tenant.id,
            KeyOwner::Member(owner.id.clone()),
            KeySpec {
                name: "Owner key".to_owned(),
                ..KeySpec::default()
            },
            Some(owner.id.clone()),
            now,
        );
        (
            Self {
                tenant,
                project,
                owner,
                admin_key,
            },
            secret,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("a@b@c"), None);
        assert_eq!(normalize_email("a b@c"), None);
        assert_eq!(normalize_email("@c"), None);
    }

    #[test]
    fn a_new_tenant_is_wired_together() {
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let (t, secret) = NewTenant::build(
            &prefixes,
            "Acme".into(),
            "pro".into(),
            "o@acme.io".into(),
            None,
            7,
        );
        assert_eq!(t.project.tenant_id, t.tenant.id);
        assert_eq!(t.owner.role, Role::Owner);
        assert_eq!(t.admin_key.owner, KeyOwner::Member(t.owner.id.clone()));
        assert_eq!(t.admin_key.kind(), KeyKind::Admin);
        assert_eq!(t.admin_key.digest, secret.digest());
        assert_eq!(t.admin_key.prefix, secret.visible_prefix());
        assert!(t.admin_key.id.starts_with("admin_key_"));
        assert_eq!(t.project.name, "Default");
    }

    #[test]
    fn a_members_password_hash_never_prints() {
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        let (t, _) = NewTenant::build(
            &prefixes,
            "Acme".into(),
            "pro".into(),
            "o@acme.io".into(),
            Some(phc.to_owned()),
            7,
        );
        for shown in [
            format!("{:?}", t.owner),
            format!("{:#?}", t.owner),
            format!("{t:?}"),
        ] {
            assert!(
                !shown.contains("aGFzaGhh") && !shown.contains("argon2"),
                "{shown}"
            );
            assert!(
                shown.contains("[redacted]") && shown.contains("o@acme.io"),
                "{shown}"
            );
        }
    }

    #[test]
    fn status_from_times() {
        assert_eq!(key_status(None, None, 10), KeyStatus::Active);
        assert_eq!(key_status(None, Some(11), 10), KeyStatus::Active);
        assert_eq!(key_status(None, Some(10), 10), KeyStatus::Expired);
        assert_eq!(key_status(Some(5), Some(1), 10), KeyStatus::Revoked);
    }
}
