//! The audit log's rows, for both backends: the columns, and how appended events take their places in their
//! tenants' chains ([`tollgate_core::audit::chain_hash`]). Each backend reads the heads of the chains it appends to
//! under a lock (PostgreSQL: `FOR UPDATE`; SQLite: its single writer), chains the events with [`chain`], inserts
//! them and moves the heads, in the transaction of the change they record.

use std::collections::BTreeMap;
use tollgate_core::audit::{AuditEvent, ChainHead, ChainedEvent, chain_hash};

/// The columns of `audit_events`, in insert order (binds `$1`…`$22`).
pub(crate) const EVENT_FIELDS: &str = "id, tenant_id, seq, type, effective_at, actor_type, actor_id, target_id, \
    project_id, key_id, key_last4, model, status, prompt_tokens, completion_tokens, cost_micros, latency_ms, \
    request_id, source_ip, user_agent, details, hash";

/// `INSERT` of one event row.
pub(crate) const INSERT_EVENT: &str = "INSERT INTO audit_events (id, tenant_id, seq, type, effective_at, \
    actor_type, actor_id, target_id, project_id, key_id, key_last4, model, status, prompt_tokens, \
    completion_tokens, cost_micros, latency_ms, request_id, source_ip, user_agent, details, hash) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)";

/// A tenant's events, newest first (in chain order: the order they committed in, whichever node wrote them),
/// narrowed by optional filters (`$2` type, `$3` actor, `$4` key, `$5` since, `$6` until, `$7` older than this
/// event, by id: an id not in the tenant's log matches nothing), at most `$8`. The `(tenant_id, seq)` index serves
/// it: appends maintain no index for listing alone.
pub(crate) static LIST_EVENTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {EVENT_FIELDS} FROM audit_events WHERE tenant_id = $1 AND ($2 IS NULL OR type = $2) \
         AND ($3 IS NULL OR actor_id = $3) AND ($4 IS NULL OR key_id = $4) \
         AND ($5 IS NULL OR effective_at >= $5) AND ($6 IS NULL OR effective_at < $6) \
         AND ($7 IS NULL OR seq < (SELECT c.seq FROM audit_events c WHERE c.tenant_id = $1 AND c.id = $7)) \
         ORDER BY seq DESC LIMIT $8"
    )
});

/// A stretch of a tenant's chain in chain order: after `$2`, at most `$3`.
pub(crate) static CHAIN_EVENTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {EVENT_FIELDS} FROM audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    )
});

/// Gives each event, in order, the next place in its tenant's chain, starting from `heads` (which it moves to
/// the new ends). A tenant missing from `heads` has no chain: `Err` with its id.
pub(crate) fn chain(
    heads: &mut BTreeMap<String, ChainHead>,
    events: &[AuditEvent],
) -> Result<Vec<ChainedEvent>, String> {
    chain_owned(heads, events.iter().cloned())
}

/// [`chain`] for events the caller gives up (a settled batch's own events), so none is copied.
pub(crate) fn chain_owned(
    heads: &mut BTreeMap<String, ChainHead>,
    events: impl IntoIterator<Item = AuditEvent>,
) -> Result<Vec<ChainedEvent>, String> {
    events
        .into_iter()
        .map(|event| {
            let head = heads
                .get_mut(&event.tenant_id)
                .ok_or_else(|| event.tenant_id.clone())?;
            let seq = head.seq + 1;
            let hash = chain_hash(&head.hash, seq, &event);
            *head = ChainHead {
                seq,
                hash: hash.clone(),
            };
            Ok(ChainedEvent { event, seq, hash })
        })
        .collect()
}
