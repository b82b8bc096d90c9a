//! Tenants, projects, members and API keys as the domain sees them, and the principal a key authenticates as.

use crate::id;
use crate::key::{KeyDigest, KeyKind, KeyPrefixes, PlainKey};
use crate::money::Micros;
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
    /// The operator's override of its plan's per-minute limits; `None` fields follow the plan.
    pub rate_limits: RateLimits,
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

/// A key's own per-minute limits. Each tightens its tenant's plan for this key's requests; `None` leaves the plan's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Prompt and completion tokens per minute.
    pub tokens_per_minute: Option<u64>,
}

/// The period a key's spend limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpendPeriod {
    /// The UTC calendar month.
    Month,
    /// The key's whole life.
    Total,
}

impl SpendPeriod {
    /// Storage and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// Parses the storage and JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "month" => Some(Self::Month),
            "total" => Some(Self::Total),
            _ => None,
        }
    }

    /// When the period that contains `at` began: the start of its UTC calendar month, or 0 for `total` (one period
    /// for the key's whole life). Spending counted from another start is a past period's.
    pub fn start(self, at: Timestamp) -> Timestamp {
        match self {
            Self::Total => 0,
            Self::Month => {
                let days = at.div_euclid(86_400);
                days.saturating_sub(day_of_month(days) - 1)
                    .saturating_mul(86_400)
            }
        }
    }
}

/// The day of the month (1–31) of `days` since 1970-01-01, in the proleptic Gregorian calendar (Howard Hinnant's
/// `civil_from_days`, which needs no calendar library).
fn day_of_month(days: i64) -> i64 {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    doy - (153 * mp + 2) / 5 + 1
}

/// What a capped key has spent in the period starting at `period_start` (see [`SpendPeriod::start`]); the store
/// adds each charge in the transaction that records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySpent {
    /// Start of the period `amount` counts.
    pub period_start: Timestamp,
    /// Charged in it.
    pub amount: Micros,
}

/// What one key may spend per period (its `spend_limit_cents` and `spend_limit_period`, which exist together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendLimit {
    /// The cap, zero or more.
    pub amount: Micros,
    /// What it counts over.
    pub period: SpendPeriod,
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
    /// Its own rate limits, within the plan's.
    pub rate_limits: Option<RateLimits>,
    /// Its spend cap.
    pub spend_limit: Option<SpendLimit>,
    /// What it has spent against its cap (counted while it has one).
    pub spent: KeySpent,
    /// When its `api_key.expired` event was written (by its first request refused as expired), so it is written
    /// once.
    pub expiry_recorded_at: Option<Timestamp>,
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

    /// What it has spent in its cap's period at `now`: zero without a cap, and at the start of a new period.
    pub fn spent_at(&self, now: Timestamp) -> Micros {
        match self.spend_limit {
            Some(limit) if self.spent.period_start == limit.period.start(now) => self.spent.amount,
            _ => Micros::ZERO,
        }
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
    /// The operator's override of its tenant's plan limits.
    pub tenant_rate_limits: RateLimits,
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
    /// Its own rate limits, within the plan's.
    pub rate_limits: Option<RateLimits>,
    /// Its spend cap.
    pub spend_limit: Option<SpendLimit>,
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
            rate_limits: spec.rate_limits,
            spend_limit: spec.spend_limit,
            spent: KeySpent::default(),
            expiry_recorded_at: None,
        };
        (key, secret)
    }

    /// The successor a roll issues for this key (created by `created_by` at `now`): a fresh secret and id, the same
    /// name, description, networks, models and limits, no expiry, and `rolled_from` this key. The secret is
    /// returned once.
    pub fn successor(
        &self,
        prefixes: &KeyPrefixes,
        created_by: Option<String>,
        now: Timestamp,
    ) -> (Self, PlainKey) {
        let spec = KeySpec {
            name: self.name.clone(),
            description: self.description.clone(),
            expires_at: None,
            allowed_ips: self.allowed_ips.clone(),
            models: self.models.clone(),
            rate_limits: self.rate_limits,
            spend_limit: self.spend_limit,
        };
        let (mut key, secret) = Self::issue(
            prefixes,
            &self.tenant_id,
            self.owner.clone(),
            spec,
            created_by,
            now,
        );
        key.rolled_from = Some(self.id.clone());
        (key, secret)
    }
}

/// When a rolled key stops working: at the end of its grace period, or at its own expiry if that comes first (a
/// roll never extends a key's life).
pub fn rolled_expiry(expires_at: Option<Timestamp>, grace_ends: Timestamp) -> Timestamp {
    expires_at.map_or(grace_ends, |at| at.min(grace_ends))
}

/// What an update changes on a key; `None` leaves a field as it is, `Some(None)` clears a nullable one. Never
/// the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    /// A new display name.
    pub name: Option<String>,
    /// New free text, or none.
    pub description: Option<Option<String>>,
    /// A new expiry, or none.
    pub expires_at: Option<Option<Timestamp>>,
    /// New source networks (empty: any).
    pub allowed_ips: Option<Vec<IpNet>>,
    /// A new model allow-list, or none (all models).
    pub models: Option<Option<Vec<String>>>,
    /// New rate limits, or none.
    pub rate_limits: Option<Option<RateLimits>>,
    /// A new spend cap, or none.
    pub spend_limit: Option<Option<SpendLimit>>,
}

impl KeyChanges {
    /// `key` with these changes, and the API names of the fields whose values they change (in API.md's order;
    /// empty when nothing changes).
    pub fn apply(&self, key: &ApiKey) -> (ApiKey, Vec<&'static str>) {
        /// Sets `field` to `to` if given, and names it when its value changes.
        fn set<T: PartialEq + Clone>(
            changed: &mut Vec<&'static str>,
            name: &'static str,
            field: &mut T,
            to: Option<&T>,
        ) {
            if let Some(to) = to
                && field != to
            {
                *field = to.clone();
                changed.push(name);
            }
        }
        let mut after = key.clone();
        let mut changed = Vec::new();
        set(&mut changed, "name", &mut after.name, self.name.as_ref());
        set(
            &mut changed,
            "description",
            &mut after.description,
            self.description.as_ref(),
        );
        set(
            &mut changed,
            "expires_at",
            &mut after.expires_at,
            self.expires_at.as_ref(),
        );
        set(
            &mut changed,
            "allowed_ips",
            &mut after.allowed_ips,
            self.allowed_ips.as_ref(),
        );
        set(
            &mut changed,
            "models",
            &mut after.models,
            self.models.as_ref(),
        );
        set(
            &mut changed,
            "rate_limits",
            &mut after.rate_limits,
            self.rate_limits.as_ref(),
        );
        if let Some(limit) = self.spend_limit {
            let (before, to) = (key.spend_limit, limit);
            if before.map(|l| l.amount) != to.map(|l| l.amount) {
                changed.push("spend_limit_cents");
            }
            if before.map(|l| l.period) != to.map(|l| l.period) {
                changed.push("spend_limit_period");
            }
            after.spend_limit = to;
        }
        (after, changed)
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
            rate_limits: RateLimits::default(),
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
    fn a_month_starts_at_its_first_utc_midnight_and_total_never_restarts() {
        // 2024-02-29 12:00:00 UTC (a leap day) is in the month that began 2024-02-01 00:00:00 UTC.
        assert_eq!(SpendPeriod::Month.start(1_709_208_000), 1_706_745_600);
        assert_eq!(SpendPeriod::Month.start(1_706_745_600), 1_706_745_600);
        assert_eq!(
            SpendPeriod::Month.start(1_706_745_599),
            1_704_067_200,
            "2024-01"
        );
        assert_eq!(SpendPeriod::Month.start(0), 0);
        assert_eq!(SpendPeriod::Month.start(-1), -2_678_400, "1969-12-01");
        assert_eq!(SpendPeriod::Total.start(1_709_208_000), 0);
        let mut key = ApiKey::issue(
            &KeyPrefixes::new("sk_live_", "sk_admin_").unwrap(),
            "org_1",
            KeyOwner::Project("proj_1".into()),
            KeySpec::default(),
            None,
            0,
        )
        .0;
        key.spent = KeySpent {
            period_start: 1_706_745_600,
            amount: Micros(5),
        };
        assert_eq!(
            key.spent_at(1_709_208_000),
            Micros::ZERO,
            "no cap, no spend"
        );
        key.spend_limit = Some(SpendLimit {
            amount: Micros(10),
            period: SpendPeriod::Month,
        });
        assert_eq!(key.spent_at(1_709_208_000), Micros(5));
        assert_eq!(
            key.spent_at(1_709_251_200),
            Micros::ZERO,
            "March: a new period"
        );
    }

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

    fn a_key(now: Timestamp) -> ApiKey {
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let spec = KeySpec {
            name: "ci".into(),
            description: Some("runner".into()),
            expires_at: Some(now + 100),
            allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
            models: Some(vec!["echo".into()]),
            rate_limits: Some(RateLimits {
                requests_per_minute: Some(5),
                tokens_per_minute: None,
            }),
            spend_limit: Some(SpendLimit {
                amount: Micros(1_500_000),
                period: SpendPeriod::Month,
            }),
        };
        ApiKey::issue(
            &prefixes,
            "org_1",
            KeyOwner::Project("proj_1".into()),
            spec,
            None,
            now,
        )
        .0
    }

    #[test]
    fn a_successor_keeps_the_settings_and_gets_a_new_secret() {
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let old = a_key(10);
        let (new, secret) = old.successor(&prefixes, Some("user_1".into()), 20);
        assert_ne!(new.id, old.id);
        assert_ne!(new.digest, old.digest);
        assert_eq!(new.digest, secret.digest());
        assert_eq!(new.rolled_from.as_deref(), Some(old.id.as_str()));
        assert_eq!(
            (&new.name, &new.description, &new.allowed_ips, &new.models),
            (&old.name, &old.description, &old.allowed_ips, &old.models)
        );
        assert_eq!(
            (new.rate_limits, new.spend_limit),
            (old.rate_limits, old.spend_limit)
        );
        assert_eq!((new.expires_at, new.created_at), (None, 20));
        assert_eq!(new.created_by.as_deref(), Some("user_1"));
    }

    #[test]
    fn a_roll_never_extends_a_keys_life() {
        assert_eq!(rolled_expiry(None, 50), 50);
        assert_eq!(rolled_expiry(Some(40), 50), 40);
        assert_eq!(rolled_expiry(Some(60), 50), 50);
    }

    #[test]
    fn changes_name_only_the_fields_whose_values_change() {
        let key = a_key(10);
        let (same, changed) = KeyChanges::default().apply(&key);
        assert_eq!((same, changed.len()), (key.clone(), 0));
        let changes = KeyChanges {
            name: Some("ci".into()),
            description: Some(None),
            models: Some(Some(vec!["echo".into()])),
            spend_limit: Some(Some(SpendLimit {
                amount: Micros(1_500_000),
                period: SpendPeriod::Total,
            })),
            rate_limits: Some(None),
            ..KeyChanges::default()
        };
        let (after, changed) = changes.apply(&key);
        assert_eq!(
            changed,
            ["description", "rate_limits", "spend_limit_period"]
        );
        assert_eq!(after.description, None);
        assert_eq!(after.rate_limits, None);
        assert_eq!(
            after.spend_limit.map(|l| l.period),
            Some(SpendPeriod::Total)
        );
        let (cleared, changed) = KeyChanges {
            spend_limit: Some(None),
            ..KeyChanges::default()
        }
        .apply(&key);
        assert_eq!(changed, ["spend_limit_cents", "spend_limit_period"]);
        assert_eq!(cleared.spend_limit, None);
    }

    #[test]
    fn status_from_times() {
        assert_eq!(key_status(None, None, 10), KeyStatus::Active);
        assert_eq!(key_status(None, Some(11), 10), KeyStatus::Active);
        assert_eq!(key_status(None, Some(10), 10), KeyStatus::Expired);
        assert_eq!(key_status(Some(5), Some(1), 10), KeyStatus::Revoked);
    }
}
