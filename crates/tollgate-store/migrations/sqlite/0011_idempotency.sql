-- Idempotency keys (IdempotencyStore): one record per key a scope (a tenant, or the operator) used, from its first
-- request's claim to the end of its window, holding the response that retries replay.
--
-- * A claim is one upsert on the primary key, so of two requests racing with one key exactly one gets it; a record
--   past its window, or running but no longer renewed by its node (`locked_until` passed), is claimed over.
-- * `state` is checked with equalities: an IN list builds a temporary index on every insert (see 0010).
-- * Clustered on (scope, idem_key), as every claim, completion and release finds it (`WITHOUT ROWID`: one b-tree
--   per insert). A stored body larger than a page spills into overflow pages either way.
-- * `headers` is a JSON array of [name, value] pairs; `status`, `headers` and `body` are set once it is done.
CREATE TABLE idempotency_records (
    scope         TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    fingerprint   BLOB NOT NULL CHECK (length(fingerprint) = 32),
    claim_id      TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    instance      TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state = 'running' OR state = 'done'),
    locked_until  INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    status        INTEGER,
    headers       TEXT,
    body          BLOB,
    PRIMARY KEY (scope, idem_key)
) WITHOUT ROWID;
-- Pruning reads records by the end of their window.
CREATE INDEX idempotency_records_by_expiry ON idempotency_records (expires_at);
-- A node renews its running claims; a restarted server releases its predecessor's. Done records need neither.
CREATE INDEX idempotency_records_running_by_node ON idempotency_records (node_id) WHERE state = 'running';
CREATE INDEX idempotency_records_running_by_instance ON idempotency_records (instance) WHERE state = 'running';
