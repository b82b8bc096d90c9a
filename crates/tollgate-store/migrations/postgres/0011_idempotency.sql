-- Idempotency keys: the same table as migrations/sqlite/0011_idempotency.sql, which explains it. A claim's upsert
-- (ON CONFLICT DO UPDATE) locks the conflicting row and re-checks its WHERE on the latest version, so of two nodes
-- racing with one key exactly one claims it.
-- `status` is a BIGINT, as audit_events' is, so that one decoder reads it on both backends.
CREATE TABLE idempotency_records (
    scope         TEXT COLLATE "C" NOT NULL,
    idem_key      TEXT COLLATE "C" NOT NULL,
    fingerprint   BYTEA NOT NULL CHECK (octet_length(fingerprint) = 32),
    claim_id      TEXT COLLATE "C" NOT NULL,
    node_id       TEXT COLLATE "C" NOT NULL,
    instance      TEXT COLLATE "C" NOT NULL,
    request_id    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state = 'running' OR state = 'done'),
    locked_until  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    status        BIGINT,
    headers       TEXT,
    body          BYTEA,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_records_by_expiry ON idempotency_records (expires_at);
CREATE INDEX idempotency_records_running_by_node ON idempotency_records (node_id) WHERE state = 'running';
CREATE INDEX idempotency_records_running_by_instance ON idempotency_records (instance) WHERE state = 'running';
