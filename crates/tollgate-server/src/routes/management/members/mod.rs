//! `/v1/organization/members[/{member_id}]`: everyone may read; only owners add, change or remove members.

pub mod add;
pub mod get;
pub mod list;
pub mod remove;
pub mod update;
