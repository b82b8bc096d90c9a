//! Member roles: owner ⊇ admin ⊇ member.

use serde::{Deserialize, Serialize};

/// A member's role in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only: may list and read keys, projects and usage.
    Member,
    /// May also create, update, roll and revoke keys and manage projects.
    Admin,
    /// May also manage members and other members' admin keys.
    Owner,
}

impl Role {
    /// The lowercase name used in JSON and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }

    /// May create, update, roll and revoke keys and change projects.
    pub fn can_write_keys(self) -> bool {
        self >= Self::Admin
    }

    /// May add, change and remove members.
    pub fn can_manage_members(self) -> bool {
        self == Self::Owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        assert!(Role::Owner.can_write_keys() && Role::Admin.can_write_keys());
        assert!(!Role::Member.can_write_keys());
        assert!(Role::Owner.can_manage_members() && !Role::Admin.can_manage_members());
        for r in [Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
