//! Operations shared by the HTTP routes and the command line, so both apply the same rules: create a tenant,
//! issue, look up and revoke keys. They take the `App`, validate, call the domain for ids and secrets, write
//! through the store, and keep the key cache in step. Each action that changes something builds its audit event
//! here, once, from the [`Caller`] (routes and the CLI only say who is calling), and hands it to the store, which
//! writes it in the change's transaction.

pub mod admin_keys;
pub mod audit;
pub mod credits;
pub mod keys;
pub mod members;
pub mod projects;
pub mod secret_scanning;
pub mod tenants;
pub mod usage;

use crate::error::ApiError;
use crate::middleware::auth::AdminKey;
use crate::middleware::origin::RequestOrigin;
use tollgate_core::audit::{Actor, AuditEvent, Cause, EventType, Origin};
use tollgate_core::tenant::Timestamp;

/// Who acts and from where: every audit event an action causes starts from it ([`Caller::event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who acts.
    pub actor: Actor,
    /// The request it came in, if any.
    pub origin: Origin,
}

impl Caller {
    /// The member an admin key acts as, in a request to the management API.
    pub fn member(admin: &AdminKey, origin: RequestOrigin) -> Self {
        Self::acting_member(&admin.member_id, origin)
    }

    /// A member by id, from a request: what an admin key or a dashboard session acts as.
    pub fn acting_member(member_id: &str, RequestOrigin(origin): RequestOrigin) -> Self {
        Self {
            actor: Actor::member(member_id),
            origin,
        }
    }

    /// The operator, in a request to the operator API.
    pub fn operator(RequestOrigin(origin): RequestOrigin) -> Self {
        Self {
            actor: Actor::operator(),
            origin,
        }
    }

    /// GitHub's secret scanning, reporting leaked keys: the deployment acts on the report (`operator`, with
    /// [`secret_scanning::ACTOR_ID`] as its id, so these events can be told from the operator's own).
    pub fn secret_scanning(RequestOrigin(origin): RequestOrigin) -> Self {
        Self {
            actor: Actor {
                kind: tollgate_core::audit::ActorType::Operator,
                id: Some(secret_scanning::ACTOR_ID.to_owned()),
            },
            origin,
        }
    }

    /// The operator at the command line: no request, so no origin.
    pub fn cli() -> Self {
        Self {
            actor: Actor::operator(),
            origin: Origin::default(),
        }
    }

    /// The member acting, if a member is.
    pub fn member_id(&self) -> Option<&str> {
        match self.actor.kind {
            tollgate_core::audit::ActorType::Member => self.actor.id.as_deref(),
            _ => None,
        }
    }

    /// What this caller does at `at`, for a store call that builds its events itself.
    pub fn at(&self, at: Timestamp) -> Cause {
        Cause {
            actor: self.actor.clone(),
            at,
            origin: self.origin.clone(),
        }
    }

    /// An event of `kind` in `tenant_id`'s log, caused by this caller at `at`: the line an action adds for its
    /// event (then the setters: `.target(…)`, `.project(…)`, `.key(…)`, `.details(…)`).
    pub fn event(&self, kind: EventType, tenant_id: &str, at: Timestamp) -> AuditEvent {
        self.at(at).event(kind, tenant_id)
    }
}

/// A display name, trimmed: 1 to 256 characters, or 400 naming `param`.
pub fn name(raw: &str, param: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err(ApiError::bad_request(
            format!("{param} must be 1 to 256 characters"),
            Some(param),
        ));
    }
    Ok(name.to_owned())
}

/// At most 64 characters of a client's string, for echoing it in a message.
pub fn excerpt(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(at, _)| &s[..at])
}
