//! The audit log as the domain sees it: what an event says, who caused it, and the hash chain that makes each
//! tenant's log tamper-evident.
//!
//! Every action that changes something, and every inference request that identified a key, emits one
//! [`AuditEvent`], built here with [`AuditEvent::new`] and the setters, and handed to the store with the change
//! itself: the store appends it in the same transaction (a failed change leaves no event; a change never lacks
//! one). Appending gives the event the next sequence number of its tenant's chain and the hash
//! [`chain_hash`]`(previous hash, sequence, event)`, so an edited, deleted or reordered row breaks the chain at that
//! point ([`verify_chain`]).

use crate::id;
use crate::money::Micros;
use crate::tenant::Timestamp;
use sha2::{Digest, Sha256};

/// What happened. The names are API.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// A project key was created.
    ApiKeyCreated,
    /// A project key's settings changed.
    ApiKeyUpdated,
    /// A project key was rolled: `key_id` the old key, `target_id` its successor.
    ApiKeyRolled,
    /// A project key was revoked.
    ApiKeyRevoked,
    /// A project key's first refused request after its expiry.
    ApiKeyExpired,
    /// A key (project or admin) was reported leaked and revoked.
    ApiKeyLeaked,
    /// An admin key was created.
    AdminApiKeyCreated,
    /// An admin key was revoked.
    AdminApiKeyRevoked,
    /// A project was created.
    ProjectCreated,
    /// A project was renamed.
    ProjectUpdated,
    /// A project was archived.
    ProjectArchived,
    /// A member was added.
    MemberAdded,
    /// A member's role changed.
    MemberRoleChanged,
    /// An owner set (or cleared) a member's dashboard password.
    MemberPasswordChanged,
    /// A member was removed.
    MemberRemoved,
    /// The operator changed the tenant's plan.
    TenantPlanChanged,
    /// The operator suspended the tenant.
    TenantSuspended,
    /// The operator reactivated the tenant.
    TenantReactivated,
    /// The operator granted credits.
    CreditsGranted,
    /// A member signed in to the dashboard.
    LoginSucceeded,
    /// A sign-in failed.
    LoginFailed,
    /// A dashboard session was signed out.
    SessionRevoked,
    /// An inference request that identified a key, answered or refused.
    RequestCompleted,
    /// A request answered from its idempotency record.
    RequestReplayed,
}

impl EventType {
    /// Every type, for parsing and listings.
    pub const ALL: [Self; 24] = [
        Self::ApiKeyCreated,
        Self::ApiKeyUpdated,
        Self::ApiKeyRolled,
        Self::ApiKeyRevoked,
        Self::ApiKeyExpired,
        Self::ApiKeyLeaked,
        Self::AdminApiKeyCreated,
        Self::AdminApiKeyRevoked,
        Self::ProjectCreated,
        Self::ProjectUpdated,
        Self::ProjectArchived,
        Self::MemberAdded,
        Self::MemberRoleChanged,
        Self::MemberPasswordChanged,
        Self::MemberRemoved,
        Self::TenantPlanChanged,
        Self::TenantSuspended,
        Self::TenantReactivated,
        Self::CreditsGranted,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::SessionRevoked,
        Self::RequestCompleted,
        Self::RequestReplayed,
    ];

    /// The API and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyUpdated => "api_key.updated",
            Self::ApiKeyRolled => "api_key.rolled",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::ApiKeyExpired => "api_key.expired",
            Self::ApiKeyLeaked => "api_key.leaked",
            Self::AdminApiKeyCreated => "admin_api_key.created",
            Self::AdminApiKeyRevoked => "admin_api_key.revoked",
            Self::ProjectCreated => "project.created",
            Self::ProjectUpdated => "project.updated",
            Self::ProjectArchived => "project.archived",
            Self::MemberAdded => "member.added",
            Self::MemberRoleChanged => "member.role_changed",
            Self::MemberPasswordChanged => "member.password_changed",
            Self::MemberRemoved => "member.removed",
            Self::TenantPlanChanged => "tenant.plan_changed",
            Self::TenantSuspended => "tenant.suspended",
            Self::TenantReactivated => "tenant.reactivated",
            Self::CreditsGranted => "credits.granted",
            Self::LoginSucceeded => "login.succeeded",
            Self::LoginFailed => "login.failed",
            Self::SessionRevoked => "session.revoked",
            Self::RequestCompleted => "request.completed",
            Self::RequestReplayed => "request.replayed",
        }
    }

    /// Parses an API or storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Who acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorType {
    /// A member, through an admin key or a dashboard session.
    Member,
    /// A project key, on an inference route.
    ProjectKey,
    /// The operator: the operator API or the command line.
    Operator,
}

impl ActorType {
    /// The API and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::ProjectKey => "project_key",
            Self::Operator => "operator",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Member, Self::ProjectKey, Self::Operator]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// Who caused an event: a member (`user_…`), a project key (`key_…`), or the operator (no id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorType,
    /// Its id; `None` for the operator.
    pub id: Option<String>,
}

impl Actor {
    /// The operator (operator API or CLI).
    pub fn operator() -> Self {
        Self {
            kind: ActorType::Operator,
            id: None,
        }
    }

    /// A member.
    pub fn member(member_id: &str) -> Self {
        Self {
            kind: ActorType::Member,
            id: Some(member_id.to_owned()),
        }
    }

    /// A project key.
    pub fn project_key(key_id: &str) -> Self {
        Self {
            kind: ActorType::ProjectKey,
            id: Some(key_id.to_owned()),
        }
    }
}

/// Where a request came from, as far as the audit log records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The request's id (`X-Request-Id`).
    pub request_id: Option<String>,
    /// The client's address, as the server resolved it (trusted proxies honoured).
    pub source_ip: Option<String>,
    /// The `User-Agent` header, cut to [`MAX_USER_AGENT`] bytes.
    pub user_agent: Option<String>,
    /// The `Idempotency-Key` claim the request holds, if it holds one: not stored with the event; the store locks
    /// the claim in the transaction that writes the event.
    pub claim: crate::idempotency::ClaimMark,
}

/// The longest `User-Agent` kept: a header is the client's to fill, the log is ours to bound.
pub const MAX_USER_AGENT: usize = 512;

impl Origin {
    /// An origin, with the user agent cut at a character boundary within [`MAX_USER_AGENT`] bytes.
    pub fn new(
        request_id: Option<String>,
        source_ip: Option<String>,
        user_agent: Option<&str>,
    ) -> Self {
        let user_agent = user_agent.map(|ua| {
            let mut end = ua.len().min(MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_owned()
        });
        Self {
            request_id,
            source_ip,
            user_agent,
            claim: Default::default(),
        }
    }
}

/// What the events of one action share: who acts, when, and from where. A store method that decides itself which
/// events a change makes (because only its transaction knows what changes) takes this instead of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Who acts.
    pub actor: Actor,
    /// When (Unix seconds).
    pub at: Timestamp,
    /// Where the request came from.
    pub origin: Origin,
}

impl Cause {
    /// An event of `kind` in `tenant_id`'s log with this cause; every other field unset.
    pub fn event(&self, kind: EventType, tenant_id: &str) -> AuditEvent {
        AuditEvent::new(kind, tenant_id, self.actor.clone(), self.at, &self.origin)
    }
}

/// One event, as emitted (before the store gives it its place in the chain). Fields that do not apply are `None`;
/// none ever holds a key value, a password or an upstream credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `evt_…`.
    pub id: String,
    /// Whose log it belongs to.
    pub tenant_id: String,
    /// What happened.
    pub kind: EventType,
    /// When (Unix seconds).
    pub effective_at: Timestamp,
    /// Who did it.
    pub actor: Actor,
    /// The object changed.
    pub target_id: Option<String>,
    /// The project concerned.
    pub project_id: Option<String>,
    /// The project key used or changed.
    pub key_id: Option<String>,
    /// Its last four characters.
    pub key_last4: Option<String>,
    /// The public model id of a request.
    pub model: Option<String>,
    /// A request's HTTP status.
    pub status: Option<u16>,
    /// A request's prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// A request's completion tokens.
    pub completion_tokens: Option<u64>,
    /// What a request was charged, or what was granted.
    pub cost: Option<Micros>,
    /// How long a request took until it was settled or refused.
    pub latency_ms: Option<u64>,
    /// Where the request came from.
    pub origin: Origin,
    /// A small JSON object of the event's own facts, as text.
    pub details: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` in `tenant_id`'s log, caused by `actor` at `at` from `origin`; every other field unset.
    pub fn new(
        kind: EventType,
        tenant_id: &str,
        actor: Actor,
        at: Timestamp,
        origin: &Origin,
    ) -> Self {
        Self {
            id: id::new_id(id::AUDIT_EVENT),
            tenant_id: tenant_id.to_owned(),
            kind,
            effective_at: at,
            actor,
            target_id: None,
            project_id: None,
            key_id: None,
            key_last4: None,
            model: None,
            status: None,
            prompt_tokens: None,
            completion_tokens: None,
            cost: None,
            latency_ms: None,
            origin: origin.clone(),
            details: None,
        }
    }

    /// A `request.completed` event: an inference request made with the project key `key_id` (its last four
    /// characters `key_last4`), which acts, answered with `status` after `latency_ms`; tokens, cost and model unset.
    pub fn request_completed(
        tenant_id: &str,
        key_id: &str,
        key_last4: &str,
        at: Timestamp,
        origin: &Origin,
        status: u16,
        latency_ms: u64,
    ) -> Self {
        let mut event = Self::new(
            EventType::RequestCompleted,
            tenant_id,
            Actor::project_key(key_id),
            at,
            origin,
        )
        .key(key_id, key_last4);
        event.status = Some(status);
        event.latency_ms = Some(latency_ms);
        event
    }

    /// The object changed.
    pub fn target(mut self, id: &str) -> Self {
        self.target_id = Some(id.to_owned());
        self
    }

    /// The project concerned.
    pub fn project(mut self, id: &str) -> Self {
        self.project_id = Some(id.to_owned());
        self
    }

    /// The project key used or changed, and its last four characters.
    pub fn key(mut self, id: &str, last4: &str) -> Self {
        self.key_id = Some(id.to_owned());
        self.key_last4 = Some(last4.to_owned());
        self
    }

    /// The event's own facts (a JSON object).
    pub fn details(mut self, details: &serde_json::Value) -> Self {
        self.details = Some(details.to_string());
        self
    }
}

/// An event in its tenant's chain, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    /// The event.
    pub event: AuditEvent,
    /// Its place in the tenant's chain: 1, 2, 3, … (pruning removes a prefix).
    pub seq: i64,
    /// [`chain_hash`] of the previous event's hash, `seq` and the event (hex).
    pub hash: String,
}

/// The hash before a tenant's first event.
pub const GENESIS: &str = "";

/// The hash of the event at `seq` that follows an event whose hash was `previous` ([`GENESIS`] for the first):
/// SHA-256 (hex) over the previous hash and a canonical encoding of every stored field. The encoding is a JSON
/// array in a fixed order of strings, integers and nulls only (`details` is hashed as the text stored), so it does
/// not depend on any map's order.
pub fn chain_hash(previous: &str, seq: i64, e: &AuditEvent) -> String {
    // A tuple struct serialises as a JSON array: the same bytes as `json!([...])` of these fields, written
    // straight into the hash (no intermediate value, no string): the recorder hashes every request's event.
    #[derive(serde::Serialize)]
    struct Canonical<'a>(
        &'a str,
        i64,
        &'a str,
        &'a str,
        &'a str,
        Timestamp,
        &'a str,
        &'a Option<String>,
        &'a Option<String>,
        &'a Option<String>,
        &'a Option<String>,
        &'a Option<String>,
        &'a Option<String>,
        Option<u16>,
        Option<u64>,
        Option<u64>,
        Option<i64>,
        Option<u64>,
        &'a Option<String>,
        &'a Option<String>,
        &'a Option<String>,
        &'a Option<String>,
    );
    /// Feeds what serde_json writes to the hash.
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let canonical = Canonical(
        previous,
        seq,
        &e.id,
        &e.tenant_id,
        e.kind.as_str(),
        e.effective_at,
        e.actor.kind.as_str(),
        &e.actor.id,
        &e.target_id,
        &e.project_id,
        &e.key_id,
        &e.key_last4,
        &e.model,
        e.status,
        e.prompt_tokens,
        e.completion_tokens,
        e.cost.map(Micros::get),
        e.latency_ms,
        &e.origin.request_id,
        &e.origin.source_ip,
        &e.origin.user_agent,
        &e.details,
    );
    let mut hashing = Hashing(Sha256::new());
    // Writing to a hash cannot fail, and these types always serialise.
    let _ = serde_json::to_writer(&mut hashing, &canonical);
    hex(&hashing.0.finalize())
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Where a chain stands: the last event's place and hash (the anchor's, after pruning, or [`GENESIS`] at 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainHead {
    /// The last event's `seq`.
    pub seq: i64,
    /// The last event's hash.
    pub hash: String,
}

/// The first place where a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenLink {
    /// An event's stored hash is not the hash of its content after the previous one: it was edited, or an event
    /// before it was deleted or moved.
    #[error("event {id} (seq {seq}): its hash does not match its content and the event before it")]
    Hash {
        /// The event.
        id: String,
        /// Its place.
        seq: i64,
    },
    /// Events are missing or out of place between two sequence numbers.
    #[error("event {id}: seq {seq} follows seq {previous}")]
    Gap {
        /// The event after the gap.
        id: String,
        /// Its place.
        seq: i64,
        /// The place before it.
        previous: i64,
    },
    /// The chain ends before its head: its last events were deleted.
    #[error(
        "the chain ends at seq {last}, but its head says {head}: events were deleted from its end"
    )]
    Truncated {
        /// The last event found.
        last: i64,
        /// Where the head says it ends.
        head: i64,
    },
}

/// Checks events of one chain, in `seq` order, that follow `start` (the anchor: where pruning left the chain, or
/// genesis), against the chain's recorded `head`. Feed it in pages with [`ChainCheck::next`], then
/// [`ChainCheck::finish`].
#[derive(Debug, Clone)]
pub struct ChainCheck {
    at: ChainHead,
}

impl ChainCheck {
    /// A check from `start`.
    pub fn new(start: ChainHead) -> Self {
        Self { at: start }
    }

    /// Checks the next event.
    pub fn next(&mut self, e: &ChainedEvent) -> Result<(), BrokenLink> {
        if e.seq != self.at.seq + 1 {
            return Err(BrokenLink::Gap {
                id: e.event.id.clone(),
                seq: e.seq,
                previous: self.at.seq,
            });
        }
        if chain_hash(&self.at.hash, e.seq, &e.event) != e.hash {
            return Err(BrokenLink::Hash {
                id: e.event.id.clone(),
                seq: e.seq,
            });
        }
        self.at = ChainHead {
            seq: e.seq,
            hash: e.hash.clone(),
        };
        Ok(())
    }

    /// Checks that the events reached the chain's `head`; returns how far they reached.
    pub fn finish(self, head: &ChainHead) -> Result<i64, BrokenLink> {
        if self.at.seq != head.seq || self.at.hash != head.hash {
            return Err(BrokenLink::Truncated {
                last: self.at.seq,
                head: head.seq,
            });
        }
        Ok(self.at.seq)
    }
}

/// Checks a whole chain held in memory (see [`ChainCheck`]).
pub fn verify_chain(
    start: ChainHead,
    events: &[ChainedEvent],
    head: &ChainHead,
) -> Result<i64, BrokenLink> {
    let mut check = ChainCheck::new(start);
    for e in events {
        check.next(e)?;
    }
    check.finish(head)
}

/// Which events to list: a tenant's, newest first, narrowed by the filters that are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Whose log.
    pub tenant_id: String,
    /// Only events of this type.
    pub kind: Option<EventType>,
    /// Only events of this actor.
    pub actor_id: Option<String>,
    /// Only events naming this project key.
    pub key_id: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
    /// Only events older than this one (the previous page's last id).
    pub before_id: Option<String>,
    /// At most this many.
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> (Vec<ChainedEvent>, ChainHead) {
        let mut head = ChainHead::default();
        let mut events = Vec::new();
        for i in 0..n {
            let event = AuditEvent::new(
                EventType::ApiKeyCreated,
                "org_1",
                Actor::member("user_1"),
                1_000 + i64::try_from(i).unwrap_or(0),
                &Origin::default(),
            )
            .target(&format!("key_{i}"));
            let seq = head.seq + 1;
            let hash = chain_hash(&head.hash, seq, &event);
            head = ChainHead {
                seq,
                hash: hash.clone(),
            };
            events.push(ChainedEvent { event, seq, hash });
        }
        (events, head)
    }

    #[test]
    fn an_intact_chain_verifies_and_every_kind_of_tampering_names_its_link() {
        let (events, head) = chain(4);
        assert_eq!(verify_chain(ChainHead::default(), &events, &head), Ok(4));

        let mut edited = events.clone();
        edited[1].event.target_id = Some("key_x".into());
        assert!(matches!(
            verify_chain(ChainHead::default(), &edited, &head),
            Err(BrokenLink::Hash { seq: 2, .. })
        ));

        let mut deleted = events.clone();
        deleted.remove(2);
        assert!(matches!(
            verify_chain(ChainHead::default(), &deleted, &head),
            Err(BrokenLink::Gap {
                seq: 4,
                previous: 2,
                ..
            })
        ));

        // Swapping two events' places (their seq moved with them) breaks the hash of the first moved.
        let mut reordered = events.clone();
        reordered.swap(1, 2);
        reordered[1].seq = 2;
        reordered[2].seq = 3;
        assert!(matches!(
            verify_chain(ChainHead::default(), &reordered, &head),
            Err(BrokenLink::Hash { seq: 2, .. })
        ));

        assert!(matches!(
            verify_chain(ChainHead::default(), &events[..3], &head),
            Err(BrokenLink::Truncated { last: 3, head: 4 })
        ));

        // A pruned prefix: the rest verifies from the anchor.
        let anchor = ChainHead {
            seq: 2,
            hash: events[1].hash.clone(),
        };
        assert_eq!(verify_chain(anchor, &events[2..], &head), Ok(4));
    }

    #[test]
    fn the_hash_is_sha256_of_the_json_array_of_every_field() {
        let mut e = AuditEvent::new(
            EventType::RequestCompleted,
            "org_1",
            Actor::project_key("key_1"),
            7,
            &Origin::new(Some("req_1".into()), None, Some("ua \"x\"")),
        )
        .key("key_1", "ab12")
        .details(&serde_json::json!({"u": "é"}));
        e.status = Some(200);
        e.cost = Some(Micros(-5));
        let json = serde_json::json!([
            "prev",
            3,
            e.id,
            "org_1",
            "request.completed",
            7,
            "project_key",
            "key_1",
            null,
            null,
            "key_1",
            "ab12",
            null,
            200,
            null,
            null,
            -5,
            null,
            "req_1",
            null,
            "ua \"x\"",
            "{\"u\":\"é\"}"
        ]);
        let expected: String = Sha256::digest(json.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(chain_hash("prev", 3, &e), expected);
    }

    #[test]
    fn names_round_trip_and_user_agents_are_bounded_on_a_character_boundary() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        let long = "é".repeat(MAX_USER_AGENT);
        let origin = Origin::new(None, None, Some(&long));
        let kept = origin.user_agent.unwrap_or_default();
        assert!(kept.len() <= MAX_USER_AGENT && kept.len() >= MAX_USER_AGENT - 1);
    }
}
