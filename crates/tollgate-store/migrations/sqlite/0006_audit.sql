-- The audit log (tollgate_core::audit): one row per event, appended in the same transaction as the change or the
-- charge it records, never updated. Each tenant's events form a hash chain: `seq` counts 1, 2, 3, … per tenant and
-- `hash` is SHA-256 over the previous event's hash, `seq` and every other column (chain_hash). `audit_chains`
-- holds each chain's head (its last `seq` and `hash`), which every append locks and moves, so appends for one
-- tenant are serialised on every backend, and the anchor where pruning cut the chain (`anchor_seq` 0 and
-- `anchor_hash` '' before any pruning). Every tenant has its head from its creation on.
CREATE TABLE audit_events (
    id                 TEXT NOT NULL UNIQUE,
    tenant_id          TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    type               TEXT NOT NULL,
    effective_at       INTEGER NOT NULL,
    actor_type         TEXT NOT NULL,
    actor_id           TEXT,
    target_id          TEXT,
    project_id         TEXT,
    key_id             TEXT,
    key_last4          TEXT,
    model              TEXT,
    status             INTEGER,
    prompt_tokens      INTEGER,
    completion_tokens  INTEGER,
    cost_micros        INTEGER,
    latency_ms         INTEGER,
    request_id         TEXT,
    source_ip          TEXT,
    user_agent         TEXT,
    details            TEXT,
    hash               TEXT NOT NULL,
    -- The chain's order, which listings follow newest first. The table is stored in it (WITHOUT ROWID), so an
    -- append writes the row and one index (the id's), not a rowid table and two indexes.
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;

CREATE TABLE audit_chains (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants (id),
    seq          INTEGER NOT NULL,
    hash         TEXT NOT NULL,
    anchor_seq   INTEGER NOT NULL DEFAULT 0,
    anchor_hash  TEXT NOT NULL DEFAULT ''
);
INSERT INTO audit_chains (tenant_id, seq, hash) SELECT id, 0, '' FROM tenants;
